"""Runner commands: `params`, `train`, `verify-checkpoint` and `data prepare`.

torch is imported inside the commands, so `stagewise --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stagewise.bounds import model_size_problem, seed_problem
from stagewise.defaults import VOCAB_SIZE
from stagewise.errors import DataError, RunnerError
from stagewise.paths import out_folder_problem
from stagewise.runner.config import TrainConfig

_D = TrainConfig()  # the defaults every option below shows


def params(
    depth: Annotated[int, typer.Option(help="Transformer layers.")],
    aspect_ratio: Annotated[
        int, typer.Option(help="model_dim = depth * aspect ratio (rounded up to head_dim).")
    ],
    vocab_size: Annotated[
        int, typer.Option(help="Vocabulary size incl. the 4 special tokens.")
    ] = VOCAB_SIZE,
    head_dim: Annotated[int, typer.Option(help="Attention head width.")] = _D.head_dim,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Parameter count, model_dim and heads of a configuration, without building the model."""
    from stagewise.model_size import count_params

    # Bounded before counting: a depth of 1e9 would loop over a billion layers.
    problem = model_size_problem(depth, aspect_ratio, head_dim, vocab_size)
    if problem is not None:
        raise RunnerError(problem)
    result = count_params(depth, aspect_ratio, vocab_size=vocab_size, head_dim=head_dim)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"num_params: {result['num_params']:,}\nmodel_dim:  {result['model_dim']}\n"
            f"n_head:     {result['n_head']}"
        )


def train(
    depth: Annotated[int, typer.Option(help="Transformer layers.")] = _D.depth,
    aspect_ratio: Annotated[
        int, typer.Option(help="model_dim = depth * aspect ratio.")
    ] = _D.aspect_ratio,
    matrix_lr: Annotated[float, typer.Option(help="Muon LR for the matrices.")] = _D.matrix_lr,
    total_batch_size: Annotated[
        int, typer.Option(help="Tokens per optimizer step.")
    ] = _D.total_batch_size,
    time_budget: Annotated[
        str, typer.Option(help="Training time: seconds or 90s, 10m, 12h.")
    ] = "300",
    seed: Annotated[int, typer.Option(help="Seeds Python, NumPy and torch.")] = _D.seed,
    head_dim: Annotated[int, typer.Option(help="Attention head width.")] = _D.head_dim,
    window_pattern: Annotated[
        str, typer.Option(help="Per-layer S (half window) / L (full); last layer is L.")
    ] = _D.window_pattern,
    embedding_lr: Annotated[
        float, typer.Option(help="Adam LR, token and value embeddings.")
    ] = _D.embedding_lr,
    unembedding_lr: Annotated[float, typer.Option(help="Adam LR, lm_head.")] = _D.unembedding_lr,
    scalar_lr: Annotated[float, typer.Option(help="Adam LR, per-layer scalars.")] = _D.scalar_lr,
    adam_beta1: Annotated[float, typer.Option(help="Adam beta1.")] = _D.adam_beta1,
    adam_beta2: Annotated[float, typer.Option(help="Adam beta2.")] = _D.adam_beta2,
    weight_decay: Annotated[
        float, typer.Option(help="Cautious Muon weight decay (decays to 0).")
    ] = _D.weight_decay,
    warmup_ratio: Annotated[
        float, typer.Option(help="Budget fraction of LR warmup.")
    ] = _D.warmup_ratio,
    warmdown_ratio: Annotated[
        float, typer.Option(help="Budget fraction of LR warmdown.")
    ] = _D.warmdown_ratio,
    final_lr_frac: Annotated[
        float, typer.Option(help="LR multiplier at the end.")
    ] = _D.final_lr_frac,
    device_batch_size: Annotated[
        int, typer.Option(help="Rows per forward/backward.")
    ] = _D.device_batch_size,
    sequence_len: Annotated[int, typer.Option(help="Context length.")] = _D.sequence_len,
    eval_tokens: Annotated[
        int, typer.Option(help="Validation tokens for val_bpb.")
    ] = _D.eval_tokens,
    eval_batch_size: Annotated[
        int | None,
        typer.Option(help="Rows per evaluation forward (default: sized for the device)."),
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Expected vocab (default: the data's tokenizer).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:N or cpu.")] = _D.device,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile", help="torch.compile (default: on for CUDA, off for CPU)."
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="Folder made by `stagewise data prepare`.")] = Path(
        _D.data
    ),
    out: Annotated[Path, typer.Option(help="Where summary.json and the checkpoint go.")] = Path(
        _D.out
    ),
    condition_id: Annotated[
        str | None, typer.Option(help="Study condition recorded in summary.json.")
    ] = None,
    deterministic: Annotated[
        bool,
        typer.Option(
            "--deterministic", help="Progress by step count (--steps) instead of wall clock."
        ),
    ] = False,
    steps: Annotated[int | None, typer.Option(help="Step count of a --deterministic run.")] = None,
    token_budget: Annotated[
        str | None,
        typer.Option(help="Train this many tokens instead of a time: 50000000, 50M, 32K."),
    ] = None,
    step_budget: Annotated[
        str | None, typer.Option(help="Train this many optimizer steps instead of a time.")
    ] = None,
) -> None:
    """Train one model for a time budget; prints progress lines and the `---` summary.

    Exit codes: 0 succeeded, 1 failed, 2 bad input, 3 diverged, 4 out of memory."""
    # Checked before anything runs: the RNGs overflow on larger seeds, a file cannot hold a run.
    for option, problem in (
        ("--seed", seed_problem(seed)),
        ("--out", out_folder_problem(out)),
        ("--depth", model_size_problem(depth, aspect_ratio, head_dim, vocab_size or VOCAB_SIZE)),
    ):
        if problem is not None:
            raise RunnerError(f"{option}: {problem}")
    from stagewise.protocol import EXIT_CODES
    from stagewise.runner.config import parse_budget, parse_count
    from stagewise.runner.loop import train as run_training

    cfg = TrainConfig(
        depth=depth,
        aspect_ratio=aspect_ratio,
        head_dim=head_dim,
        window_pattern=window_pattern,
        sequence_len=sequence_len,
        vocab_size=vocab_size,
        total_batch_size=total_batch_size,
        device_batch_size=device_batch_size,
        matrix_lr=matrix_lr,
        embedding_lr=embedding_lr,
        unembedding_lr=unembedding_lr,
        scalar_lr=scalar_lr,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        warmdown_ratio=warmdown_ratio,
        final_lr_frac=final_lr_frac,
        time_budget=parse_budget(time_budget),
        eval_tokens=eval_tokens,
        eval_batch_size=eval_batch_size,
        seed=seed,
        deterministic=deterministic,
        steps=steps,
        token_budget=parse_count("--token-budget", token_budget),
        step_budget=parse_count("--step-budget", step_budget),
        device=device,
        compile=compile,
        data=str(data),
        out=str(out),
        condition_id=condition_id,
    )
    _sigterm_as_interrupt()
    summary = run_training(cfg)
    if summary["status"] != "succeeded":
        typer.echo(f"{summary['status'].upper()}: {summary['cause']}", err=True)
    raise typer.Exit(EXIT_CODES[summary["status"]])


def _sigterm_as_interrupt() -> None:
    """An executor stops a run with SIGTERM; raise KeyboardInterrupt so summary.json records it."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, handler)


def verify_checkpoint(
    path: Annotated[Path, typer.Argument(help="A run folder or its model.safetensors.")],
    data: Annotated[
        Path | None, typer.Option(help="Data folder (default: the one the run used).")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to re-evaluate: cpu, cuda, auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Check a checkpoint against its summary.json: sha256, reload, val_bpb on a few batches."""
    from stagewise.runner.checkpoint import verify_checkpoint as verify

    result = verify(path, data=data, device=device)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"ok: {result['checkpoint']} sha256 matches; val_bpb on {result['batches']} "
            f"batches {result['val_bpb']:.6f} (recorded {result['recorded_val_bpb']})"
        )


def data_prepare(
    source: Annotated[
        str,
        typer.Option(
            help="'sample' (embedded), 'climbmix' (download) or a folder of .parquet/.txt files."
        ),
    ] = "sample",
    out: Annotated[Path, typer.Option(help="Folder to prepare.")] = Path("data"),
    vocab_size: Annotated[
        int, typer.Option(help="Tokenizer vocabulary incl. 4 special tokens.")
    ] = VOCAB_SIZE,
    num_shards: Annotated[
        int | None,
        typer.Option(help="Training shards to use/download (validation is always added)."),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="climbmix mirror URL (default: Hugging Face).")
    ] = None,
) -> None:
    """Shards in the climbmix layout + a BPE tokenizer + the tokenised cache, in OUT."""
    from stagewise.data.prepare import prepare

    problem = out_folder_problem(out)
    if problem is not None:
        raise DataError(f"--out {problem}")
    manifest = prepare(source, out, vocab_size=vocab_size, num_shards=num_shards, base_url=base_url)
    typer.echo(
        f"prepared {out}: {len(manifest['train_shards'])} train shards + validation "
        f"{manifest['val_shard']}, vocab {manifest['vocab_size']}, {manifest['seconds']}s"
    )


def register(app: typer.Typer) -> None:
    app.command("params")(params)
    app.command("train")(train)
    app.command("verify-checkpoint")(verify_checkpoint)
    data_app = typer.Typer(
        help="Prepare training data: shards, tokenizer, token cache.", no_args_is_help=True
    )
    data_app.command("prepare")(data_prepare)
    app.add_typer(data_app, name="data")
