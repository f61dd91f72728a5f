"""The training loop: data -> model -> optimizer -> timed loop -> evaluation -> summary.

Behaviour follows autoresearch's `train.py`: the budget counts training time only; the steps that
compile (and the first step, allocator warm-up) are not counted, at most MAX_UNTIMED_STEPS of
them, and the summary says how many (`untimed_steps`) and how long compiling took
(`compile_seconds`); evaluation time is reported apart (`eval_seconds`); gradients are
accumulated to `total_batch_size` tokens per optimizer step; LR, Muon weight decay follow
progress = training_time / budget (or step / steps with --deterministic); the run stops at the
first NaN or a loss above 100 (status "diverged") instead of burning the rest of the budget.
"""

from __future__ import annotations

import gc
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stagewise.bounds import eval_rows
from stagewise.errors import RunnerError, StagewiseError
from stagewise.protocol import (
    Progress,
    format_block,
    format_progress,
    normalize_fields,
    write_summary,
)
from stagewise.runner.config import TrainConfig, config_sha256
from stagewise.runner.eval_batch import EvalBatch, choose, with_fallback

# autoresearch leaves steps 0..10 out of the budget to hide compilation. We leave out only the
# steps that did hide something: the first (allocator warm-up, and compilation when on) and any
# later one during which torch.compile built a graph; at most this many, so a model that
# recompiles every step cannot hide the budget.
MAX_UNTIMED_STEPS = 10
DIVERGED_LOSS = 100.0  # far above ln(vocab) at init: the run has blown up
PRINT_EVERY_S = 1.0  # progress lines at most this often (and on the last step)
EMA_BETA = 0.9  # smoothing of the printed train loss
MUON_MOMENTUM_START, MUON_MOMENTUM_END, MUON_MOMENTUM_STEPS = 0.85, 0.95, 300
LOSS_LOG = "train_loss.csv"


class Diverged(Exception):
    pass


# ---------------------------------------------------------------------------
# Schedules (functions of progress in [0, 1])
# ---------------------------------------------------------------------------


def lr_multiplier(progress: float, cfg: TrainConfig) -> float:
    if progress < cfg.warmup_ratio:
        return progress / cfg.warmup_ratio
    if progress < 1.0 - cfg.warmdown_ratio:
        return 1.0
    cooldown = (1.0 - progress) / cfg.warmdown_ratio
    return cooldown + (1.0 - cooldown) * cfg.final_lr_frac


def muon_momentum(step: int) -> float:
    frac = min(step / MUON_MOMENTUM_STEPS, 1.0)
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM_END


def weight_decay(progress: float, cfg: TrainConfig) -> float:
    return cfg.weight_decay * (1.0 - progress)


def budget_progress(cfg: TrainConfig, step: int, training_time: float) -> float:
    """How much of the budget is spent before `step` trains, in [0, 1]: tokens / target for a
    token budget, steps / target for a step (or deterministic) budget, else seconds / budget."""
    if cfg.token_budget is not None:
        return min(step * cfg.total_batch_size / cfg.token_budget, 1.0)
    target = cfg.target_steps
    if target is not None:
        return min(step / target, 1.0)
    return min(training_time / cfg.time_budget, 1.0)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _peak_rss_mb() -> float | None:
    try:
        import resource  # POSIX only: a Windows host reports no RSS
    except ImportError:
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training; returns the summary (also written to `cfg.out/summary.json`).

    Divergence and out-of-memory return a summary with that status; a bad configuration or data
    folder raises a StagewiseError (after writing a "failed" summary)."""
    t_start = time.time()
    out = Path(cfg.out)
    summary: dict[str, Any] = {
        "status": "failed",
        "cause": None,
        "condition_id": cfg.condition_id,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "config_sha256": config_sha256(cfg),
        "depth": cfg.depth,
        "num_params": None,
    }
    # Fewer fragmentation OOMs on CUDA (as autoresearch); must be set before CUDA starts.
    os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    if cfg.deterministic:
        # cuBLAS picks non-deterministic reductions unless told otherwise, before CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    gc_was_enabled = gc.isenabled()
    try:
        _run(cfg, summary, t_start)
    except Diverged as exc:
        summary.update(status="diverged", cause=str(exc))
    except StagewiseError as exc:
        summary.update(status="failed", cause=str(exc))
        _finish(summary, out, t_start)
        raise
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM from an executor (the CLI turns it into KeyboardInterrupt).
        summary.update(status="failed", cause="interrupted")
        _finish(summary, out, t_start)
        raise
    except Exception as exc:
        if not _is_oom(exc):
            summary.update(status="failed", cause=f"{type(exc).__name__}: {exc}")
            _finish(summary, out, t_start)
            raise
        summary.update(status="oom", cause=f"out of memory: {str(exc).splitlines()[0][:300]}")
    finally:
        gc.unfreeze()  # an in-process caller (tests, a Ray worker) gets a normal GC back
        if gc_was_enabled:
            gc.enable()
    _finish(summary, out, t_start)
    return summary


def _finish(summary: dict[str, Any], out: Path, t_start: float) -> None:
    summary.setdefault("total_seconds", time.time() - t_start)
    if summary["status"] != "succeeded":
        summary["total_seconds"] = time.time() - t_start
    for key in (
        "val_bpb",
        "training_seconds",
        "peak_vram_mb",
        "mfu_percent",
        "total_tokens_M",
        "num_steps",
        "num_params_M",
    ):
        summary.setdefault(key, None)
    summary.update(normalize_fields(summary))
    summary.setdefault("checkpoint_path", None)
    summary.setdefault("checkpoint_sha256", None)
    try:
        write_summary(out, summary)
    except OSError as exc:
        print(f"warning: could not write {out}/summary.json: {exc}", file=sys.stderr)


def _run(cfg: TrainConfig, summary: dict[str, Any], t_start: float) -> None:
    import numpy as np
    import torch

    from stagewise.data.loader import TOKENIZER_DIR, make_loader
    from stagewise.data.metric import evaluate_bpb
    from stagewise.data.prepare import read_manifest
    from stagewise.data.tokenizer import load_token_bytes
    from stagewise.runner.checkpoint import CHECK_BATCHES, check_bpb, save_checkpoint
    from stagewise.runner.device import setup_device, versions
    from stagewise.runner.optim import build_optimizer

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    setup = setup_device(cfg.device, cfg.compile)
    if setup.compile:
        # A warm worker trains many runs in one process: dynamo would count each fresh model as
        # a recompile of the last run's and fall back to eager after its limit. The compiled
        # kernels themselves come back from the inductor cache.
        torch._dynamo.reset()
    if cfg.deterministic and setup.kind == "cuda":
        # CPU kernels are deterministic already; this call also imports torch._inductor (~1 s).
        torch.use_deterministic_algorithms(True, warn_only=True)
    summary["versions"] = versions(setup)
    summary["device"] = {
        "kind": setup.kind,
        "autocast_bf16": setup.autocast,
        "compile": setup.compile,
        "peak_flops": setup.peak_flops,
    }

    # --- data ---
    data_dir = Path(cfg.data).resolve()
    manifest = read_manifest(data_dir)
    vocab_size = int(manifest["vocab_size"])
    if cfg.vocab_size is not None and cfg.vocab_size != vocab_size:
        raise RunnerError(
            f"vocab_size={cfg.vocab_size}, but the tokenizer in {data_dir} has {vocab_size}; "
            f"rerun `stagewise data prepare --vocab-size {cfg.vocab_size}` or drop --vocab-size"
        )
    summary["data_path"] = str(data_dir)
    token_bytes = torch.from_numpy(load_token_bytes(data_dir / TOKENIZER_DIR).astype(np.int64)).to(
        setup.device
    )
    train_loader = make_loader(
        data_dir, "train", cfg.device_batch_size, cfg.sequence_len, setup.device
    )

    # --- model ---
    model = build_model(cfg, vocab_size, setup)
    num_params = model.num_params()
    flops_per_token = model.estimate_flops()
    summary.update(num_params=num_params, num_params_M=num_params / 1e6)
    print(
        f"model: depth={cfg.depth} model_dim={cfg.model_dim} heads={cfg.n_head} "
        f"vocab={vocab_size} params={num_params:,} flops/token={flops_per_token:.3e}",
        flush=True,
    )

    # --- optimizer ---
    ortho_dtype = torch.bfloat16 if setup.autocast else torch.float32
    optimizer = build_optimizer(
        model, cfg, compile_steps=setup.compile and setup.kind == "cuda", ortho_dtype=ortho_dtype
    )
    fwd = torch.compile(model, dynamic=False) if setup.compile else model
    grad_accum = cfg.grad_accum_steps
    print(
        f"device: {setup.name} bf16_autocast={setup.autocast} compile={setup.compile} "
        f"grad_accum={grad_accum} budget={cfg.budget_text()}",
        flush=True,
    )

    # --- loop ---
    x, y, epoch = next(train_loader)
    step, training_time = 0, 0.0
    untimed_steps, compile_seconds = 0, 0.0
    graphs = _graph_counter(setup.compile)
    loss_log: list[tuple[int, float, float, float]] = []
    printer = ProgressPrinter(flops_per_token, setup.peak_flops)
    t_start_training = time.time()
    try:
        while True:
            setup.synchronize()
            t0 = time.time()
            graphs_before = graphs()
            for _ in range(grad_accum):
                with setup.autocast_ctx():
                    loss = fwd(x, y)
                train_loss = loss.detach()
                (loss / grad_accum).backward()
                x, y, epoch = next(train_loader)
            progress = budget_progress(cfg, step, training_time)
            lrm = lr_multiplier(progress, cfg)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lrm
                if group["kind"] == "muon":
                    group["momentum"] = muon_momentum(step)
                    group["weight_decay"] = weight_decay(progress, cfg)
            optimizer.step()
            model.zero_grad(set_to_none=True)

            loss_f = float(train_loss.item())
            if not math.isfinite(loss_f) or loss_f > DIVERGED_LOSS:
                loss_log.append((step, progress, loss_f, lrm))
                raise Diverged(
                    f"train loss {loss_f} at step {step} (NaN, inf or > {DIVERGED_LOSS:g})"
                )
            setup.synchronize()
            dt = time.time() - t0
            compiled = graphs() != graphs_before
            if step < MAX_UNTIMED_STEPS and (step == 0 or compiled):
                untimed_steps += 1
                compile_seconds += dt if compiled else 0.0
            else:
                training_time += dt
            loss_log.append((step, progress, loss_f, lrm))
            if step == 0:
                # Python's GC causes long pauses once many tensors exist; freeze what setup made.
                gc.collect()
                gc.freeze()
                gc.disable()
            step += 1
            target = cfg.target_steps
            if target is not None:
                done = step >= target
                remaining = (target - step) * (time.time() - t_start_training) / step
            else:
                done = step > untimed_steps and training_time >= cfg.time_budget
                remaining = max(0.0, cfg.time_budget - training_time)
            printer.update(
                step,
                1.0 if done else progress,
                loss_f,
                cfg.total_batch_size,
                dt,
                remaining,
                force=done,
            )
            if done:
                break
    finally:
        _write_loss_log(out, loss_log)
        summary.update(
            num_steps=step,
            training_seconds=training_time,
            total_tokens_M=step * cfg.total_batch_size / 1e6,
            untimed_steps=untimed_steps,
            compile_seconds=round(compile_seconds, 3),
        )

    # --- evaluation ---
    setup.synchronize()
    t_eval = time.time()
    model.eval()
    rows = eval_rows(cfg.eval_tokens, cfg.device_batch_size, cfg.sequence_len)

    def evaluate(batch_rows: int) -> float:
        loader = make_loader(data_dir, "val", batch_rows, cfg.sequence_len, setup.device)
        with setup.autocast_ctx():
            return evaluate_bpb(
                lambda a, b: fwd(a, b, reduction="none"), loader, rows // batch_rows, token_bytes
            )

    val_bpb, batch = with_fallback(
        evaluate,
        _eval_batch(cfg, setup, vocab_size, rows),
        cfg.device_batch_size,
        rows,
        _is_oom,
        setup.release_memory,
    )
    print(f"eval: {rows} rows, {batch.rows} per forward ({batch.why})", flush=True)
    check_batches = min(CHECK_BATCHES, cfg.eval_steps)
    check = check_bpb(model, cfg, data_dir, setup, check_batches)
    setup.synchronize()
    eval_seconds = time.time() - t_eval

    # --- checkpoint and summary ---
    ckpt_path, ckpt_sha = save_checkpoint(model, cfg.to_dict(), vocab_size, out)
    timed_steps = step - untimed_steps
    mfu_percent = None
    if setup.peak_flops and training_time > 0 and timed_steps > 0:
        mfu_percent = (
            100
            * flops_per_token
            * cfg.total_batch_size
            * timed_steps
            / training_time
            / setup.peak_flops
        )
    peak_vram = (
        torch.cuda.max_memory_allocated(setup.device) / 2**20 if setup.kind == "cuda" else 0.0
    )
    summary.update(
        status="succeeded",
        cause=None,
        val_bpb=val_bpb,
        total_seconds=time.time() - t_start,
        startup_seconds=round(t_start_training - t_start, 2),
        eval_seconds=round(eval_seconds, 3),
        eval_batch_size=batch.rows,
        peak_vram_mb=peak_vram,
        peak_rss_mb=_peak_rss_mb(),
        mfu_percent=mfu_percent,
        train_loss_final=round(loss_log[-1][2], 6) if loss_log else None,
        epoch=epoch,
        checkpoint_path=ckpt_path.name,
        checkpoint_sha256=ckpt_sha,
        checkpoint_check={"batches": check_batches, "val_bpb": round(check, 6)},
    )
    summary.update(normalize_fields(summary))
    print(format_block(summary), flush=True)


def _eval_batch(cfg: TrainConfig, setup: Any, vocab_size: int, rows: int) -> EvalBatch:
    """The evaluation batch: the configured one, or sized for the device after training.

    On CUDA the training peak says what one training row needed (peak minus what stays held:
    weights and optimizer state); evaluation needs less per row, so it is a safe bound.
    """
    if cfg.eval_batch_size is not None:
        size = cfg.eval_batch_size
        return EvalBatch(rows=size, steps=rows // size, why="eval_batch_size")
    free_bytes = row_bytes = None
    if setup.kind == "cuda":
        import torch

        held = torch.cuda.memory_allocated(setup.device)
        row_bytes = (torch.cuda.max_memory_allocated(setup.device) - held) / cfg.device_batch_size
        free_now, _total = torch.cuda.mem_get_info(setup.device)
        free_bytes = free_now + torch.cuda.memory_reserved(setup.device) - held
    return choose(
        rows,
        cfg.device_batch_size,
        cfg.sequence_len,
        vocab_size,
        kind=setup.kind,
        deterministic=cfg.deterministic,
        free_bytes=free_bytes,
        row_bytes=row_bytes,
    )


def _graph_counter(compiling: bool) -> Callable[[], int]:
    """How many graphs torch.compile has built so far (always 0 when compile is off).

    torch._dynamo is imported only when compiling: on CPU it is a second of start-up for nothing.
    """
    if not compiling:
        return lambda: 0
    from torch._dynamo.utils import counters

    return lambda: int(counters["stats"]["unique_graphs"])


def build_model(cfg: TrainConfig, vocab_size: int, setup: Any) -> Any:
    """A freshly initialised GPT on the device, embeddings in the compute dtype, masks ready."""
    import torch

    from stagewise.runner.model import GPT, GPTConfig

    gpt_config = GPTConfig.from_train_config(cfg, vocab_size)
    if setup.kind == "cuda":
        # Allocate on the meta device, then materialise once on the GPU (no CPU round trip).
        # Not on CPU: meta-device init imports torch._dynamo, a second of start-up for nothing.
        with torch.device("meta"):
            model = GPT(gpt_config)
        model.to_empty(device=setup.device)
    else:
        model = GPT(gpt_config)
    model.init_weights()
    if setup.autocast:
        model.cast_embeddings(torch.bfloat16)
    model.prepare_attention(cfg.sequence_len, flex=setup.kind == "cuda" and setup.compile)
    return model


class ProgressPrinter:
    """The `progress:` line executors parse: at most every PRINT_EVERY_S, always when forced."""

    def __init__(self, flops_per_token: float, peak_flops: float | None) -> None:
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.smooth = 0.0
        self.last = time.time()
        self.tokens = 0
        self.seconds = 0.0

    def update(
        self,
        step: int,
        progress: float,
        loss: float,
        tokens: int,
        dt: float,
        remaining: float,
        force: bool,
    ) -> None:
        self.smooth = EMA_BETA * self.smooth + (1 - EMA_BETA) * loss
        self.tokens += tokens
        self.seconds += dt
        now = time.time()
        if not (force or step == 1 or now - self.last >= PRINT_EVERY_S):
            return
        tok_s = self.tokens / max(self.seconds, 1e-9)
        mfu = 100 * self.flops_per_token * tok_s / self.peak_flops if self.peak_flops else None
        line = Progress(
            step=step,
            progress=progress,
            loss=self.smooth / (1 - EMA_BETA**step),
            tok_per_s=tok_s,
            mfu=mfu,
            remaining_s=remaining,
        )
        print(format_progress(line), flush=True)
        self.last, self.tokens, self.seconds = now, 0, 0.0


def _write_loss_log(out: Path, rows: list[tuple[int, float, float, float]]) -> None:
    lines = ["step,progress,loss,lr_multiplier"]
    lines += [f"{s},{p:.6f},{loss!r},{lrm:.6f}" for s, p, loss, lrm in rows]
    (out / LOSS_LOG).write_text("\n".join(lines) + "\n")
