"""Checkpoints: safetensors weights with the run's config in the metadata, and their check.

`verify_checkpoint` answers "is this file the model that run produced?": the sha256 must match
summary.json, the weights must load into the model the config describes, and val_bpb on the
first few validation batches must reproduce the value the run recorded right after training
(a fresh or foreign model lands far away).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stagewise.errors import CheckpointError, StagewiseError

CHECKPOINT_FILE = "model.safetensors"
FORMAT = "stagewise-gpt/1"
META_KEY = "stagewise"  # the one metadata entry: format, config and vocab size as sorted JSON
CHECK_BATCHES = 2  # validation batches re-evaluated by verify (cheap, yet model-specific)
# A reload on another device or precision moves bpb in the third decimal; a different model
# moves it by tenths.
CHECK_ABS_TOL = 5e-3
CHECK_REL_TOL = 5e-3


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    model: Any, config: dict[str, Any], vocab_size: int, out: Path
) -> tuple[Path, str]:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors writes its metadata map in a per-process hash order, so
    # several keys would give the same weights a different file (and sha256) in every process.
    fields = {"format": FORMAT, "config": config, "vocab_size": vocab_size}
    meta = {META_KEY: json.dumps(fields, sort_keys=True)}
    path = out / CHECKPOINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path, file_sha256(path)


def load_checkpoint(path: Path, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model with the weights, the run's config dict)."""
    from safetensors import SafetensorError, safe_open

    from stagewise.runner.config import TrainConfig
    from stagewise.runner.model import GPT, GPTConfig

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc})") from exc
    if META_KEY in meta:  # checkpoints written before it kept three keys (read below)
        packed = json.loads(meta[META_KEY])
        meta = {
            "format": packed.get("format"),
            "config": json.dumps(packed.get("config"), sort_keys=True),
            "vocab_size": str(packed.get("vocab_size")),
        }
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stagewise checkpoint (format={meta.get('format')!r})")
    config = json.loads(meta["config"])
    cfg = TrainConfig.from_dict(config)
    model = GPT(GPTConfig.from_train_config(cfg, int(meta["vocab_size"])))
    embed_dtype = tensors["transformer.wte.weight"].dtype
    model.cast_embeddings(embed_dtype)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded config ({exc})") from exc
    model.to(device)
    model.reset_rotary()
    return model, config


def check_bpb(model: Any, cfg: Any, data_dir: Path, setup: Any, batches: int) -> float:
    """val_bpb on the first `batches` validation batches, eagerly (no compile)."""
    import numpy as np
    import torch

    from stagewise.data.loader import TOKENIZER_DIR, make_loader
    from stagewise.data.metric import evaluate_bpb
    from stagewise.data.tokenizer import load_token_bytes

    token_bytes = torch.from_numpy(load_token_bytes(data_dir / TOKENIZER_DIR).astype(np.int64)).to(
        setup.device
    )
    loader = make_loader(data_dir, "val", cfg.device_batch_size, cfg.sequence_len, setup.device)
    model.eval()
    with setup.autocast_ctx():
        return evaluate_bpb(
            lambda x, y: model(x, y, reduction="none"), loader, batches, token_bytes
        )


def verify_checkpoint(
    path: str | Path, data: str | Path | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Check a run's checkpoint; raises CheckpointError on any mismatch, else returns findings."""
    from stagewise.protocol import SUMMARY_FILE, read_summary
    from stagewise.runner.config import TrainConfig
    from stagewise.runner.device import setup_device

    path = Path(path)
    ckpt = path / CHECKPOINT_FILE if path.is_dir() else path
    if not ckpt.is_file():
        raise CheckpointError(f"no checkpoint at {ckpt}")
    run_dir = ckpt.parent
    if not (run_dir / SUMMARY_FILE).is_file():
        raise CheckpointError(f"no {SUMMARY_FILE} beside {ckpt}: nothing to verify it against")
    summary = read_summary(run_dir)
    sha = file_sha256(ckpt)
    if sha != summary.get("checkpoint_sha256"):
        raise CheckpointError(
            f"{ckpt}: sha256 {sha[:16]}... does not match summary.json "
            f"({str(summary.get('checkpoint_sha256'))[:16]}...): the file was changed or replaced"
        )
    setup = setup_device(device, False)
    model, config = load_checkpoint(ckpt, setup.device)
    if summary.get("config_sha256") is not None:
        from stagewise.runner.config import config_sha256

        if config_sha256(config) != summary["config_sha256"]:
            raise CheckpointError(f"{ckpt}: the config inside differs from summary.json's")
    model.cast_embeddings(setup.dtype)
    cfg = TrainConfig.from_dict(config)
    check = summary.get("checkpoint_check") or {}
    data_dir = Path(data) if data is not None else Path(summary.get("data_path") or cfg.data)
    if not data_dir.is_dir():
        raise CheckpointError(f"data folder {data_dir} not found; pass --data DIR")
    batches = int(check.get("batches") or CHECK_BATCHES)
    try:
        bpb = check_bpb(model, cfg, data_dir, setup, batches)
    except StagewiseError as exc:
        raise CheckpointError(f"could not evaluate {ckpt}: {exc}") from exc
    recorded = check.get("val_bpb")
    result = {
        "checkpoint": str(ckpt),
        "sha256": sha,
        "val_bpb": round(bpb, 6),
        "recorded_val_bpb": recorded,
        "batches": batches,
        "ok": True,
    }
    if recorded is not None and abs(bpb - recorded) > CHECK_ABS_TOL + CHECK_REL_TOL * abs(recorded):
        raise CheckpointError(
            f"{ckpt}: val_bpb on {batches} validation batches is {bpb:.6f}, but the run recorded "
            f"{recorded:.6f}: these are not the trained weights"
        )
    return result
