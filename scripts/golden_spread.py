"""How far this CPU's kernels put our runner from the golden numbers of tests/runner/golden.

    python scripts/golden_spread.py            # from the repository root, stagewise importable

For each kernel setting this CPU supports (ATEN_CPU_CAPABILITY default/avx2/avx512 choose
ATen's and inductor's vector code; ONEDNN_MAX_CPU_ISA caps oneDNN's bf16 matmul kernels) it
runs, in a fresh process, the forward/backward of the golden model (float32, eager) and three
Muon steps (bf16 Newton-Schulz, eager and compiled), and prints each one's worst distance from
the golden file: relative for float32, in units of bf16 roundoff u = 2^-9 for Muon. The
tolerances of tests/runner/test_golden.py were set from this table (their comments say how).

Each setting gets its own inductor cache folder: inductor's cache is not keyed by
ATEN_CPU_CAPABILITY, and kernels built for one setting, loaded under another, gave NaNs and heap
corruption here (with torch 2.13.0). Takes a few minutes (one compile per setting).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    {},
    {"ATEN_CPU_CAPABILITY": "default"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "avx512"},
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
]
U = 2.0**-9


def measure() -> dict[str, Any]:
    """This process's distances from the golden numbers (run under one setting)."""
    import torch

    sys.path.insert(0, str(ROOT))
    import tests.runner.test_golden as tg
    from stagewise.runner.optim import muon_update

    torch.set_num_threads(1)
    out: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability()}
    forward = tg.forward_pair._get_wrapped_function()  # type: ignore[attr-defined]
    worst = {"loss": 0.0, "logits": 0.0, "grad_norms": 0.0}
    for param in ("rope_bf16_as_written", "rope_float32"):
        request = type("Request", (), {"param": param})()
        golden, ours = forward(request)

        def rel(a: float, b: float) -> float:
            return abs(a - b) / abs(b)

        losses = [rel(ours["loss"], golden["loss"])]
        losses.append(rel(ours["per_token_loss_sum"], golden["per_token_loss_sum"]))
        losses += [
            rel(a, b)
            for a, b in zip(
                ours["per_token_loss_first8"], golden["per_token_loss_first8"], strict=True
            )
        ]
        scale = golden["logits"]["abs_sum"]
        logits = [
            abs(ours["logits"][k] - golden["logits"][k]) / scale
            for k in ("sum", "abs_sum", "weighted_sum")
        ]
        logits.append(rel(ours["logits"]["sq_sum"], golden["logits"]["sq_sum"]))
        grads = [rel(ours["grad_norms"][n], v) for n, v in golden["grad_norms"].items()]
        for name, values in (("loss", losses), ("logits", logits), ("grad_norms", grads)):
            worst[name] = max(worst[name], *values)
    out["forward"] = worst
    compiled = torch.compile(muon_update, dynamic=False, fullgraph=True)
    muon: dict[str, float] = {}
    for key, spec in tg._golden("muon.json")["compiled_steps"].items():
        shape = tuple(int(v) for v in key.split("x"))
        ours = tg._muon_steps(compiled, shape, spec)
        eager = tg._muon_steps(muon_update, shape, spec)
        l1 = ours["update_l1"]
        rows = {
            "compiled_vs_golden_second_u": abs(ours["second_sum"] / spec["second_sum"] - 1) / U,
            "compiled_vs_golden_update_sum_u": abs(
                ours["update_sum"] - (spec["params_sum"] - ours["start_sum"])
            )
            / l1
            / U,
            "compiled_vs_golden_params_abs_u": abs(ours["params_abs_sum"] - spec["params_abs_sum"])
            / l1
            / U,
            "compiled_vs_eager_second_u": abs(ours["second_sum"] / eager["second_sum"] - 1) / U,
            "compiled_vs_eager_update_sum_u": abs(ours["update_sum"] - eager["update_sum"])
            / eager["update_l1"]
            / U,
            "momentum_rel": max(
                abs(r["momentum_sum"] / spec["momentum_sum"] - 1) for r in (ours, eager)
            ),
        }
        for name, value in rows.items():
            muon[name] = max(muon.get(name, 0.0), value)
    out["muon"] = muon
    return out


def main() -> None:
    if sys.argv[1:] == ["--one"]:
        print(json.dumps(measure()))
        return
    for setting in SETTINGS:
        label = " ".join(f"{k}={v}" for k, v in setting.items()) or "native"
        with tempfile.TemporaryDirectory(prefix="golden-spread-") as cache:
            env = {**os.environ, **setting, "TORCHINDUCTOR_CACHE_DIR": cache}
            env["PYTHONPATH"] = os.pathsep.join(
                [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]
            )
            proc = subprocess.run(
                [sys.executable, __file__, "--one"],
                capture_output=True,
                text=True,
                env=env,
                timeout=1800,
            )
        if proc.returncode != 0:
            print(f"{label}: failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        wanted = setting.get("ATEN_CPU_CAPABILITY")
        if wanted and result["capability"].lower() != wanted:
            print(f"{label}: not available on this CPU (runs as {result['capability']})")
            continue
        forward = ", ".join(f"{k} {v:.2g}" for k, v in result["forward"].items())
        muon = ", ".join(
            f"{k} {v:.2g}" if k == "momentum_rel" else f"{k} {v:.3f}"
            for k, v in result["muon"].items()
        )
        print(f"{label} ({result['capability']}): forward (relative) {forward}")
        print(f"    muon: {muon}")


if __name__ == "__main__":
    main()
