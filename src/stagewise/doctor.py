"""`stagewise doctor`: a user's first minute on a new machine or GPU.

Each check is a tiny real call, reported on one line as PASS, FAIL (with the fix), WARN (works,
but not as tested) or SKIP (not used on this device): torch and CUDA versions, the versions of
torch, typer, numpy, pandas and the installed extras beside the tested set (constraints.txt),
the device, bf16, torch.compile and flex attention, the data folder, then a short smoke training
(20 steps) that measures what a study will see: tokens/s, MFU where the GPU's peak is known,
peak memory, and how many steps a 5-minute budget would train. The smoke run goes the way a
study's runs go: a spawned warm worker (`stagewise worker`) is sent the run over the runner
protocol by the local executor's code (executors/warm.py), so a worker that cannot start or
cannot parse a run fails here, not in the middle of a study. It runs on CPU too (a tiny
model), and CI runs it there.
"""

from __future__ import annotations

import contextlib
import io
import math
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from stagewise.words import plural

Status = Literal["PASS", "FAIL", "SKIP", "WARN"]  # WARN: works, but not as tested

SMOKE_STEPS = 20  # enough to get past the untimed first steps and time a dozen
REFERENCE_BUDGET_SECONDS = 300.0  # the budget whose step count the smoke run estimates
# A tiny CPU model: the smoke run takes seconds on two cores (the demo's scale).
CPU_SMOKE = {"depth": 2, "aspect_ratio": 32, "sequence_len": 128, "device_batch_size": 16}
GPU_SMOKE = {"depth": 8, "aspect_ratio": 64}  # autoresearch's default model
SAMPLE_VOCAB = {"cpu": 1024, "cuda": 8192}  # vocab of the sample data prepared when none given
SMOKE_TIMEOUT_SECONDS = 900.0  # the worker's start, 20 steps and the evaluation, on a slow CPU
# The TrainConfig fields the smoke run sets, passed to `stagewise train` as options.
SMOKE_OPTIONS = (
    "depth",
    "aspect_ratio",
    "sequence_len",
    "device_batch_size",
    "total_batch_size",
    "eval_tokens",
    "step_budget",
    "seed",
    "device",
    "data",
    "out",
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.status} {self.name}: {self.detail}"
        return text + (f" -> fix: {self.fix}" if self.fix else "")


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    smoke: dict[str, Any] | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "smoke": self.smoke,
            "versions": self.versions,
        }


def _attempt(name: str, fix: str, call: Callable[[], str]) -> Check:
    """PASS with what `call` says, or FAIL with its error's first line and the fix."""
    try:
        return Check(name, "PASS", call())
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return Check(name, "FAIL", f"{type(exc).__name__}: {first}", fix)


def check_torch() -> tuple[Check, Any]:
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "FAIL", str(exc), "pip install torch"), None
    cuda = torch.version.cuda or "none (CPU build)"
    return Check("torch", "PASS", f"torch {torch.__version__}, CUDA {cuda}"), torch


def check_versions(pins: dict[str, str] | None = None) -> tuple[Check, list[dict[str, Any]]]:
    """torch, typer, numpy, pandas and each installed extra's packages beside the tested set
    (`pins`, default the shipped constraints.txt); WARN naming each one outside it, with the
    command that installs the tested set."""
    from stagewise.tested_set import shipped_constraints_path, versions

    rows = versions(pins)
    table = [{**asdict(row), "as_tested": row.as_tested} for row in rows]
    base = ", ".join(row.text() for row in rows if row.extra is None)
    extras = sorted({row.extra for row in rows if row.extra is not None})
    added = ", ".join(
        row.text() + ("" if row.package == row.extra else f" [{row.extra}]")
        for row in rows
        if row.extra is not None
    )
    detail = base + (f"; extras: {added}" if extras else "; no extras")
    outside = [row for row in rows if not row.as_tested]
    if not outside:
        return Check("versions", "PASS", f"{detail}: all as tested (constraints.txt)"), table
    named = ", ".join(row.text() for row in outside)
    wanted = f"stagewise[{','.join(extras)}]" if extras else "stagewise"
    return (
        Check(
            "versions",
            "WARN",
            f"{detail}; outside the tested set: {named}",
            f'pip install -c {shipped_constraints_path()} "{wanted}" (or -e . in a clone)',
        ),
        table,
    )


def check_device(torch: Any, choice: str) -> tuple[Check, str]:
    """The device the runner would pick; a CPU is fine, a missing requested GPU is not."""
    if choice.startswith("cuda") or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return (
                Check(
                    "device",
                    "FAIL",
                    f"--device {choice}, but torch sees no CUDA device",
                    "install a CUDA build of torch and the NVIDIA driver, or use --device cpu",
                ),
                "cpu",
            )
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        detail = f"{name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free)"
        return Check("device", "PASS", detail), "cuda"
    cores = len(_affinity()) or 1
    name = platform.processor() or platform.machine() or "cpu"
    return Check("device", "PASS", f"cpu ({name}), {cores} cores; no CUDA device"), "cpu"


def _affinity() -> set[int]:
    try:
        import os

        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set()


def check_bf16(torch: Any, kind: str) -> Check:
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Check("bf16", "PASS", "bf16 autocast supported")
        return Check(
            "bf16",
            "FAIL",
            "this GPU has no bf16 (pre-Ampere)",
            "use an Ampere or newer GPU; the runner trains in bf16 autocast",
        )
    from stagewise.runner.device import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return Check("bf16", "PASS", "native bf16 on this CPU (AVX512-BF16/AMX): autocast on")
    return Check("bf16", "PASS", "no native bf16 on this CPU: runs train in fp32 (slower, exact)")


def check_compile(torch: Any, kind: str, force: bool) -> Check:
    if kind != "cuda" and not force:
        return Check(
            "torch.compile",
            "SKIP",
            "off on CPU by default (compile time exceeds what it saves); --compile checks it",
        )

    def call() -> str:
        device = "cuda" if kind == "cuda" else "cpu"
        t0 = time.perf_counter()
        fn = torch.compile(lambda x: torch.nn.functional.relu(x) ** 2 + 1.0)
        x = torch.randn(64, 64, device=device)
        if not torch.allclose(fn(x), torch.relu(x) ** 2 + 1.0):
            raise RuntimeError("the compiled function computes a different result")
        return f"a tiny function compiled and ran in {time.perf_counter() - t0:.1f}s"

    fix = (
        "install Triton matching torch (pip install triton) and a C compiler (gcc), or run "
        "with --no-compile"
        if kind == "cuda"
        else "install a C++ compiler (gcc/g++) for inductor's CPU backend, or keep --no-compile"
    )
    return _attempt("torch.compile", fix, call)


def check_flex_attention(torch: Any, kind: str) -> Check:
    if kind != "cuda":
        return Check("flex attention", "SKIP", "CPU runs use SDPA attention")

    def call() -> str:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def causal(_b: Any, _h: Any, q: Any, kv: Any) -> Any:
            return q >= kv

        q = torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.bfloat16)
        mask = create_block_mask(causal, None, None, 256, 256, device="cuda")
        out = torch.compile(flex_attention)(q, q, q, block_mask=mask)
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError("flex attention returned non-finite values")
        return "a compiled sliding-window-style (block mask) attention ran"

    return _attempt(
        "flex attention",
        "upgrade torch (flex attention needs torch >= 2.5 with Triton); the runner needs it "
        "for sliding windows on CUDA",
        call,
    )


def check_data(data: Path | None) -> tuple[Check, Path | None]:
    """The given (or ./data) folder is a prepared data folder; SKIP when none exists."""
    folder = data if data is not None else Path("data")
    if data is None and not folder.exists():
        return (
            Check(
                "data",
                "SKIP",
                "no --data given and no ./data folder; the smoke run uses the embedded sample",
            ),
            None,
        )
    fix = f"stagewise data prepare --source sample --out {folder}"

    def call() -> str:
        from stagewise.data.prepare import read_manifest
        from stagewise.data.tokenizer import load_token_bytes

        manifest = read_manifest(folder)
        table = load_token_bytes(folder / "tokenizer")
        if len(table) != int(manifest["vocab_size"]):
            raise ValueError(
                f"the bytes-per-token table has {len(table)} entries for vocab "
                f"{manifest['vocab_size']}"
            )
        shards = len(manifest.get("train_shards", []))
        return f"{folder}: vocab {manifest['vocab_size']}, {plural(shards, 'train shard')} + validation"

    check = _attempt("data", fix, call)
    return check, folder if check.status == "PASS" else None


def smoke_config(kind: str, data: Path, out: Path, size: dict[str, int], steps: int) -> Any:
    from stagewise.runner.config import TrainConfig

    base = dict(CPU_SMOKE if kind == "cpu" else GPU_SMOKE)
    base.update(size)
    probe = TrainConfig(**base)  # type: ignore[arg-type]
    rows = probe.device_batch_size
    return TrainConfig(
        **base,  # type: ignore[arg-type]
        total_batch_size=rows * probe.sequence_len,  # one forward/backward per step
        eval_tokens=4 * rows * probe.sequence_len,
        step_budget=steps,
        device="cuda" if kind == "cuda" else "cpu",
        data=str(data),
        out=str(out),
        seed=0,
    )


def smoke_argv(cfg: Any, python: str = sys.executable) -> tuple[str, ...]:
    """`<python> -m stagewise train ...` for the smoke config: what a study's run gets."""
    from stagewise.executors.command import format_value, kebab
    from stagewise.protocol import TRAIN_ARGS

    argv = [python, *TRAIN_ARGS]
    for name in SMOKE_OPTIONS:
        argv += [kebab(name), format_value(getattr(cfg, name))]
    return tuple(argv)


def smoke_training(
    kind: str,
    data: Path | None,
    size: dict[str, int],
    steps: int,
    *,
    python: str = sys.executable,
) -> tuple[Check, dict[str, Any] | None]:
    """The smoke run, trained by a spawned warm worker as the local executor runs a study's."""
    import os

    from stagewise.executors.base import RunTask
    from stagewise.executors.local import available_cores
    from stagewise.executors.warm import WarmWorker, run_warm, warm_env
    from stagewise.ledger import RunKey
    from stagewise.protocol import THREADS_ENV, TRAIN_ARGS

    with tempfile.TemporaryDirectory(prefix="stagewise-doctor-") as tmp:
        folder = Path(tmp).resolve()
        if data is None:
            from stagewise.data.prepare import prepare

            data = folder / "data"
            with contextlib.redirect_stdout(io.StringIO()):
                prepare("sample", data, vocab_size=SAMPLE_VOCAB[kind])
        cfg = smoke_config(kind, data.resolve(), folder / "out", size, steps)
        argv = smoke_argv(cfg, python)
        task = RunTask(
            key=RunKey("doctor", "smoke", 0, "local"),
            argv=argv,
            env={},
            workdir=str(folder),
            out_dir=cfg.out,
            log_path=str(folder / "smoke.log"),
            budget_seconds=SMOKE_TIMEOUT_SECONDS,
            timeout_seconds=SMOKE_TIMEOUT_SECONDS,
        )
        # One slot on this machine: all its cores, unless the caller pinned the thread count.
        slot_env = {} if THREADS_ENV in os.environ else {THREADS_ENV: str(available_cores())}
        worker = WarmWorker(python, warm_env(os.environ, slot_env), "doctor/smoke")
        try:
            outcome = run_warm(task, worker, lambda _event: None, slot="doctor/smoke")
        finally:
            worker.close()
    if outcome.status != "succeeded":
        by_hand = shlex.join(["stagewise", "train", *argv[1 + len(TRAIN_ARGS) :]])
        fix = (
            "lower --device-batch-size (or the model size)"
            if outcome.failure == "oom"
            else f"run it by hand to see the whole log: {by_hand}"
        )
        cause = " ".join((outcome.cause or outcome.status).split())[:300]
        return Check("smoke training", "FAIL", f"warm worker: {cause}", fix), None
    summary = dict(outcome.summary)
    wall = outcome.elapsed_seconds
    timed = summary["num_steps"] - summary.get("untimed_steps", 0)
    seconds = summary["training_seconds"] or 0.0
    tok_s = timed * cfg.total_batch_size / seconds if seconds > 0 and timed > 0 else None
    per_step = seconds / timed if timed > 0 and seconds > 0 else None
    result = {
        "device": kind,
        "depth": cfg.depth,
        "aspect_ratio": cfg.aspect_ratio,
        "sequence_len": cfg.sequence_len,
        "device_batch_size": cfg.device_batch_size,
        "total_batch_size": cfg.total_batch_size,
        "seconds_per_step": per_step,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "num_params": summary.get("num_params"),
        "steps": summary["num_steps"],
        "untimed_steps": summary.get("untimed_steps"),
        "tokens_per_second": tok_s,
        "mfu_percent": summary.get("mfu_percent"),
        "peak_vram_mb": summary.get("peak_vram_mb") if kind == "cuda" else None,
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "compile_seconds": summary.get("compile_seconds"),
        "eval_seconds": summary.get("eval_seconds"),
        "eval_batch_size": summary.get("eval_batch_size"),
        "steps_in_5_minutes": (
            math.floor(REFERENCE_BUDGET_SECONDS / per_step) if per_step else None
        ),
        "wall_seconds": round(wall, 2),
        "val_bpb": summary.get("val_bpb"),
        "executor": "local warm worker",  # spawned and spoken to as a study's runs are
        "startup_seconds": outcome.startup_seconds,
    }
    parts = [
        f"{summary['num_steps']} steps of depth {cfg.depth}/aspect {cfg.aspect_ratio} in a warm worker"
    ]
    if tok_s is not None:
        parts.append(f"{tok_s:,.0f} tokens/s")
    if result["mfu_percent"] is not None:
        parts.append(f"MFU {result['mfu_percent']:.1f}%")
    memory = result["peak_vram_mb"] if kind == "cuda" else result["peak_rss_mb"]
    if memory is not None:
        parts.append(f"peak {'VRAM' if kind == 'cuda' else 'RSS'} {memory:,.0f} MB")
    if result["steps_in_5_minutes"] is not None:
        parts.append(f"~{result['steps_in_5_minutes']:,} steps in a 5-minute budget")
    return Check("smoke training", "PASS", ", ".join(parts)), result


def run_doctor(
    *,
    data: Path | None = None,
    device: str = "auto",
    size: dict[str, int] | None = None,
    steps: int = SMOKE_STEPS,
    compile_check: bool = False,
    smoke: bool = True,
) -> Report:
    """Every check in order; later checks that need an earlier one's result are skipped."""
    report = Report()
    torch_check, torch = check_torch()
    report.checks.append(torch_check)
    versions_check, report.versions = check_versions()
    report.checks.append(versions_check)
    if torch is None:
        return report
    device_check, kind = check_device(torch, device)
    report.checks.append(device_check)
    if device_check.status == "FAIL":
        return report
    report.checks.append(check_bf16(torch, kind))
    report.checks.append(check_compile(torch, kind, compile_check))
    report.checks.append(check_flex_attention(torch, kind))
    data_check, folder = check_data(data)
    report.checks.append(data_check)
    if not smoke:
        report.checks.append(Check("smoke training", "SKIP", "--no-smoke given"))
    elif data_check.status == "FAIL":
        report.checks.append(Check("smoke training", "SKIP", "needs a valid data folder"))
    else:
        check, result = smoke_training(kind, folder, size or {}, steps)
        report.checks.append(check)
        report.smoke = result
    return report


def record_rate(smoke: dict[str, Any] | None, study_root: Path | None = None) -> Path | None:
    """Keep the smoke run's seconds per step for `freeze` (gates/doctor_rate.py): in the study
    folder when given, else the user cache. Its path, or None when nothing was measured."""
    from stagewise.gates.doctor_rate import DoctorRate, write_rate

    rate = DoctorRate.from_json(smoke) if smoke else None
    return write_rate(rate, study_root) if rate is not None else None


__all__ = ["Check", "Report", "record_rate", "run_doctor", "smoke_argv", "smoke_config"]
