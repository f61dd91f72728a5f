"""Device choice, precision, compilation and the peak-FLOPS table that MFU is measured against.

CUDA: bf16 autocast, TF32 matmuls (`set_float32_matmul_precision("high")`), torch.compile.
CPU: bf16 autocast only where the processor computes bf16 natively (AVX512-BF16 or AMX);
elsewhere bf16 is emulated and slower than fp32. Compilation is off by default on CPU: for the
small models a CPU can train, compile time exceeds what it saves in a short budget.
MFU is reported against the detected GPU's dense bf16 peak, and is null where unknown (CPU).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stagewise.errors import RunnerError
from stagewise.protocol import THREADS_ENV

# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name().
# Ordered: the more specific names first (an "H100 PCIe" is not an SXM H100).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.5e12),
    ("H200", 989.5e12),
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.5e12),  # SXM; autoresearch's reference figure
    ("H800", 989.5e12),
    ("H20", 148.0e12),
    ("B200", 2250.0e12),
    ("A100", 312.0e12),
    ("A800", 312.0e12),
    ("L40S", 362.05e12),
    ("L40", 181.05e12),
    ("L4", 121.0e12),
    ("A10G", 70.0e12),  # AWS A10G runs at lower clocks than the A10
    ("A10", 125.0e12),
    ("RTX 6000 Ada", 364.2e12),
    ("RTX A6000", 154.8e12),
    ("A6000", 154.8e12),
    ("RTX 4090", 165.2e12),
    ("RTX 3090", 71.0e12),
    ("V100", 125.0e12),  # fp16 tensor cores (no bf16 on Volta)
    ("T4", 65.0e12),
)


def peak_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return bool(words & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class DeviceSetup:
    device: Any  # torch.device
    kind: str  # "cuda" | "cpu"
    name: str  # GPU model or CPU description
    dtype: Any  # compute dtype under autocast (bf16) or float32
    autocast: bool
    compile: bool
    peak_flops: float | None

    def autocast_ctx(self) -> Any:
        import contextlib

        import torch

        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.kind, dtype=torch.bfloat16)

    def synchronize(self) -> None:
        import torch

        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)

    def release_memory(self) -> None:
        """Hand cached, now unreferenced device memory back (after an out-of-memory)."""
        import gc

        import torch

        gc.collect()
        if self.kind == "cuda":
            torch.cuda.empty_cache()


def set_threads() -> None:
    import torch

    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            threads = int(value)
        except ValueError as exc:
            raise RunnerError(
                f"{THREADS_ENV} must be a positive integer, but got {value!r}"
            ) from exc
        if threads < 1:
            raise RunnerError(f"{THREADS_ENV} must be a positive integer, but got {value!r}")
        torch.set_num_threads(threads)


def setup_device(choice: str, compile_flag: bool | None) -> DeviceSetup:
    import torch

    set_threads()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunnerError(f"--device {choice}: no CUDA device is available (use --device cpu)")
        device = torch.device(choice)
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
        name = torch.cuda.get_device_name(device)
        return DeviceSetup(
            device,
            "cuda",
            name,
            torch.bfloat16,
            True,
            True if compile_flag is None else compile_flag,
            peak_flops(name),
        )
    if compile_flag:
        # Inductor's pool of compile workers otherwise keeps competing with training for the
        # few cores of a CPU host long after compilation (measured: 3x slower steps on 2 cores).
        os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    native = cpu_has_native_bf16()
    name = platform.processor() or platform.machine() or "cpu"
    return DeviceSetup(
        torch.device("cpu"),
        "cpu",
        f"cpu ({name})",
        torch.bfloat16 if native else torch.float32,
        native,
        bool(compile_flag),
        None,
    )


def versions(setup: DeviceSetup) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": setup.name,
        "driver": None,
        "python": platform.python_version(),
    }
    if setup.kind == "cuda":
        try:
            import subprocess

            info["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                .stdout.strip()
                .splitlines()[0]
                or None
            )
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    return info
