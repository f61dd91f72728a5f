"""The executor contract, one suite run against every executor: local, Ray and Slurm where installed.

Each test drives the real CLI on a study whose runs are the fake trainer (an argv-only custom
trainer, started from a command template): outcomes and their causes, retries decided by the
driver alone, a timeout, and arguments that never pass through a shell. Faults (a killed
driver, trainer, node or head; a wrong address; a resource no node offers) are the fault suite's
(test_faults.py). The Ray case runs on a real local cluster (one node, two slots).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.executors.conftest import FAKE_COMMAND, journal, run_cli, runs, with_ledger

OK, NAN, CRASH, HANG, OOM, FLAKY, SUMMARY = range(7)
HAS_RAY = importlib.util.find_spec("ray") is not None

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def ray_address(shared_ray_cluster: Any) -> str:
    return str(shared_ray_cluster.address)


@pytest.fixture(
    params=[
        "local",
        pytest.param(
            "ray",
            marks=[
                pytest.mark.ray,
                pytest.mark.skipif(not HAS_RAY, reason="the ray extra is not installed"),
            ],
        ),
        pytest.param("slurm", marks=[pytest.mark.slurm]),
    ]
)
def host_block(request: pytest.FixtureRequest) -> str:
    """The `[hosts.block-a]` table of one executor, with two slots either way."""
    if request.param == "local":
        return '[hosts.block-a]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = 2\n'
    if request.param == "slurm":
        request.getfixturevalue("slurm")  # a real cluster, or a skip that says why
        return '[hosts.block-a]\nexecutor = "slurm"\npartition = "blk-a"\ncpus_per_task = 1\n'
    address = request.getfixturevalue("ray_address")
    return (
        f'[hosts.block-a]\nexecutor = "ray"\naddress = "{address}"\nresources = {{ "blk-a" = 1 }}\n'
    )


def study_with(
    folder: Path,
    host_block: str,
    modes: dict[str, int],
    *,
    sleep: float = 0.3,
    grace: float = 3,
    command: list[str] = FAKE_COMMAND,
    labels: dict[str, str] | None = None,
) -> Path:
    folder.mkdir(parents=True)
    first = next(iter(modes))
    rows = ["label,condition_id,role,mode,sleep"]
    for cid, mode in modes.items():
        label = (labels or {}).get(cid, cid)
        rows.append(f"{label},{cid},{'reference' if cid == first else 'variant'},{mode},{sleep}")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    (folder / "study.toml").write_text(
        f"""[study]
name = "contract"
reference = "{first}"
matrix = "matrix.csv"
[runner]
command = {json.dumps(command)}
device_batch_size = 16
grace_seconds = {grace}
{host_block}
[stages.s1]
budget = "1s"
seeds = [1]
hosts = ["block-a"]
candidates = "all"
"""
    )
    return with_ledger(folder)


def starts(study: Path) -> Counter[str]:
    return Counter(e[1] for e in journal(study) if e[0] == "start")


def test_outcomes_causes_and_retries(tmp_path: Path, host_block: str) -> None:
    modes = {"ok": OK, "nan": NAN, "crash": CRASH, "oom": OOM, "flaky": FLAKY, "summ": SUMMARY}
    study = study_with(tmp_path / "s", host_block, modes)
    proc = run_cli("run", study, "s1", "--retries", "2", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a run failed
    result = json.loads(proc.stdout)
    table = runs(study)
    status = {k.split("/")[0]: (r["status"], r["attempts"]) for k, r in table.items()}
    assert status == {
        "ok": ("succeeded", 1),
        "nan": ("failed", 1),  # divergence is deterministic: never retried
        "crash": ("failed", 3),  # transient: retried --retries times
        "oom": ("succeeded", 3),  # retried with half the device batch each time
        "flaky": ("succeeded", 2),
        "summ": ("succeeded", 1),
    }
    assert table["nan/1/block-a"]["cause"].startswith("diverged")
    assert table["nan/1/block-a"]["val_bpb"] is None
    crash = table["crash/1/block-a"]
    assert (
        crash["cause"].startswith("crash: exit code 1") and "something broke" in crash["log_tail"]
    )
    # The device batch went 16 -> 8 -> 4: the fake trainer reports it in val_bpb.
    assert table["oom/1/block-a"]["val_bpb"] == pytest.approx(2.0 + 0.01 + 4 / 1000)
    assert table["summ/1/block-a"]["checkpoint_sha256"] == "0" * 64
    assert table["ok/1/block-a"]["val_bpb"] == pytest.approx(2.0 + 0.01 + 16 / 1000)
    # The executor never retried anything itself: one start per recorded attempt.
    assert starts(study) == {f"{cid}/1/block-a": status[cid][1] for cid in modes}
    assert result["retries"] == 2 and len(result["failed"]) == 2
    assert all(row["worker"] for row in result["succeeded"])


def test_a_run_past_its_timeout_is_killed_and_recorded(tmp_path: Path, host_block: str) -> None:
    study = study_with(tmp_path / "s", host_block, {"hang": HANG, "ok": OK}, grace=2)
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    hang = runs(study)["hang/1/block-a"]
    assert hang["status"] == "failed" and hang["cause"].startswith("timeout: still running")
    assert runs(study)["ok/1/block-a"]["status"] == "succeeded"
    (pid,) = [int(e[2]) for e in journal(study) if e[1] == "hang/1/block-a"]
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


SHELL_BAIT = "a b;touch PWNED $(touch PWNED2) `touch PWNED3` |x>y"


def test_custom_trainer_arguments_never_pass_through_a_shell(
    tmp_path: Path, host_block: str
) -> None:
    command = [a.replace("{condition_id}/{seed}/{host}", "{label}") for a in FAKE_COMMAND]
    study = study_with(
        tmp_path / "s", host_block, {"c1": OK}, command=command, labels={"c1": SHELL_BAIT}
    )
    proc = run_cli("run", study, "s1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (study / "journal.txt").read_text()
    assert f"start {SHELL_BAIT} " in text and f"end {SHELL_BAIT}\n" in text  # one argv element
    for folder in (tmp_path, study, study / "runs/s1/c1/seed1-block-a"):
        assert not any(folder.glob("PWNED*")) and not (folder / "y").exists()
    log = (study / "runs/s1/c1/seed1-block-a/train.log").read_text()
    argv = json.loads(log.splitlines()[1].removeprefix("# argv: "))
    assert SHELL_BAIT in argv
