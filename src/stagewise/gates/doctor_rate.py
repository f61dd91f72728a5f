"""`stagewise doctor`'s measured training throughput, kept for `freeze` to estimate steps with.

Before a study has any finished run, `freeze` has no throughput of its own; the seconds per
optimizer step that doctor's smoke training measured (with the config it measured) stand in.
Doctor writes `doctor.json` into the study folder when given `--study`, else into the user
cache: `$STAGEWISE_CACHE/doctor.json`, else `$XDG_CACHE_HOME/stagewise/doctor.json`, else
`~/.cache/stagewise/doctor.json`. `freeze` reads the study's file first, then the cache's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stagewise.json_types import JsonObject

FILE_NAME = "doctor.json"
CACHE_ENV = "STAGEWISE_CACHE"


@dataclass(frozen=True)
class DoctorRate:
    """One smoke training's seconds per timed optimizer step, and what it trained."""

    seconds_per_step: float
    device: str
    total_batch_size: int  # tokens per optimizer step
    sequence_len: int
    device_batch_size: int
    depth: int | None
    aspect_ratio: int | None
    measured_at: str  # UTC, ISO 8601

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> DoctorRate | None:
        """The record, or None when the file is not one doctor wrote (never an error: a hint)."""
        if not isinstance(obj, dict):
            return None
        try:
            rate = cls(
                seconds_per_step=float(obj["seconds_per_step"]),
                device=str(obj["device"]),
                total_batch_size=int(obj["total_batch_size"]),
                sequence_len=int(obj["sequence_len"]),
                device_batch_size=int(obj["device_batch_size"]),
                depth=None if obj.get("depth") is None else int(obj["depth"]),
                aspect_ratio=None if obj.get("aspect_ratio") is None else int(obj["aspect_ratio"]),
                measured_at=str(obj["measured_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if rate.seconds_per_step <= 0 or rate.total_batch_size <= 0:
            return None
        return rate


def cache_path() -> Path:
    """The user cache's doctor.json ($STAGEWISE_CACHE, else XDG_CACHE_HOME, else ~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / FILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "stagewise" / FILE_NAME


def write_rate(rate: DoctorRate, study_root: Path | None = None) -> Path:
    """Write the record into the study folder (when given) or the user cache; its path."""
    path = study_root / FILE_NAME if study_root is not None else cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rate.to_json(), indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a file
    return path


def read_rate(study_root: Path | None = None) -> tuple[DoctorRate, Path] | None:
    """The study's doctor.json, else the user cache's; None when neither is a valid record."""
    paths = ([study_root / FILE_NAME] if study_root is not None else []) + [cache_path()]
    for path in paths:
        try:
            rate = DoctorRate.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if rate is not None:
            return rate, path
    return None


__all__ = ["CACHE_ENV", "DoctorRate", "cache_path", "read_rate", "write_rate"]
