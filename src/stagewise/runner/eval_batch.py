"""How many validation rows go through the model at once: sized for the device, same rows.

val_bpb is summed over a fixed set of rows: `eval_steps` batches of the training batch, i.e.
`eval_rows(cfg)` rows read in order from the pinned validation shard. The loader fills rows one
at a time, so any batch that divides that row count reads exactly the same rows; only the
float summation order changes (bpb moves in the 7th decimal). Which divisor is fastest depends
on the device:

- CPU: throughput falls once one forward's logits (rows x sequence_len x vocab fp32 values)
  outgrow the caches: measured with `benchmarks/bench_eval_batch.py`, 8 MiB of logits per
  forward is at or near the fastest over vocab 512-8192 and sequence 128-2048, and a 16K-32K
  token forward ran 2.8-4.2x slower than a 512-token one at vocab 8192. So the batch is the
  largest divisor within CPU_LOGITS_BYTES, which can be smaller than the training batch (it
  also keeps a CPU run's evaluation memory small).
- CUDA: a forward without gradients keeps no activations for backward, so the memory one
  training row needed is an upper bound for one evaluation row. The batch grows to what the
  free memory holds by that bound (at most GPU_MAX_GROWTH x the training batch, never below it);
  if it still runs out of memory the evaluation restarts at the training batch.
  A deterministic run keeps the training batch: free memory differs between a fresh process and
  a warm worker, and the bpb must not.

Evaluation goes through the compiled model with `reduction="none"` in eval mode, a graph of its
own whatever the batch (checked on CPU inductor in tests/runner/test_eval_batch.py), so a
different batch costs no extra compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stagewise.bounds import divisors

CPU_LOGITS_BYTES = 8 * 2**20
GPU_MAX_GROWTH = 4
GPU_MEMORY_SHARE = 0.8  # of the free memory: the allocator's fragmentation needs the rest
LOGIT_BYTES = 4  # the loss upcasts logits to fp32


@dataclass(frozen=True)
class EvalBatch:
    rows: int  # rows per forward
    steps: int  # forwards; rows * steps == eval_rows
    why: str  # one phrase for the log line


def choose(
    rows: int,
    train_rows: int,
    sequence_len: int,
    vocab_size: int,
    *,
    kind: str,
    deterministic: bool = False,
    free_bytes: float | None = None,
    row_bytes: float | None = None,
) -> EvalBatch:
    """The evaluation batch for `rows` validation rows (`stagewise.bounds.eval_rows`) on a
    `kind` ("cpu"/"cuda") device.

    free_bytes: device memory available to evaluation; row_bytes: what one training row needed
    at the training peak (both CUDA only; without them the training batch is kept).
    """
    options = divisors(rows)
    if kind == "cpu":
        row_logits = sequence_len * vocab_size * LOGIT_BYTES
        fits = [d for d in options if d * row_logits <= CPU_LOGITS_BYTES]
        size = max(fits, default=1)
        why = f"CPU: <= {CPU_LOGITS_BYTES // 2**20} MiB of logits per forward"
    elif deterministic or not free_bytes or not row_bytes or row_bytes <= 0:
        size = train_rows  # rows are whole training batches (bounds.eval_rows)
        why = "the training batch" + (" (deterministic run)" if deterministic else "")
    else:
        by_memory = int(free_bytes * GPU_MEMORY_SHARE / row_bytes)
        cap = max(train_rows, min(by_memory, GPU_MAX_GROWTH * train_rows))
        size = max(d for d in options if d <= cap)
        why = f"free memory holds {by_memory} rows (at most {GPU_MAX_GROWTH}x the training batch)"
    return EvalBatch(rows=size, steps=rows // size, why=why)


def with_fallback(
    evaluate: Callable[[int], float],
    chosen: EvalBatch,
    train_rows: int,
    rows: int,
    is_oom: Callable[[BaseException], bool],
    release: Callable[[], None],
) -> tuple[float, EvalBatch]:
    """evaluate(batch_rows) at the chosen batch; on out-of-memory, once more at the training batch.

    A larger-than-training batch is a guess from memory measurements; the training batch is known
    to fit (training needed more), so falling back to it cannot fail the same way.
    """
    try:
        return evaluate(chosen.rows), chosen
    except Exception as exc:
        if chosen.rows <= train_rows or not is_oom(exc):
            raise
    release()
    fallback = EvalBatch(
        rows=train_rows,
        steps=rows // train_rows,
        why=f"the training batch (out of memory at {chosen.rows} rows)",
    )
    return evaluate(fallback.rows), fallback
