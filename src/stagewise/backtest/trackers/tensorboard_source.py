"""`stagewise curves --from-tensorboard DIR`: event files of every run under DIR.

A run is an immediate sub-folder of DIR holding event files (anywhere below it: torch's
`SummaryWriter.add_hparams` writes its hparams to a child folder). Each folder's events are
read with TensorBoard's own `EventAccumulator` with `size_guidance` set to 0 for scalars and
tensors, which keeps **every** point (its default keeps 10,000 per tag by reservoir sampling).
A run's keys come from the hparams logged with `add_hparams` and from the run folder's name
through `--name-pattern REGEX` with named groups (TensorBoard users encode settings in run
names). Extra `stagewise[tensorboard]`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stagewise.backtest.table import CurvesError
from stagewise.backtest.trackers.history import Point, RunHistory

INSTALL = "pip install 'stagewise[tensorboard]'"
EVENTS = "events.out.tfevents"


def _accumulator(folder: Path) -> Any:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise CurvesError(f"--from-tensorboard needs TensorBoard ({INSTALL})") from None
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams(acc: Any) -> dict[str, str]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, str] = {}
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:
        return out
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if not data.HasField("session_start_info"):
            continue
        for name, value in data.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            if kind == "number_value":
                number = value.number_value
                out[name] = str(int(number)) if float(number).is_integer() else repr(number)
            elif kind == "bool_value":
                out[name] = "true" if value.bool_value else "false"
            elif kind == "string_value":
                out[name] = value.string_value
    return out


def _points(acc: Any, tag: str) -> list[tuple[float, float, float]]:
    """(wall_time, step, value) of every event of `tag`, scalars or tensors."""
    tags = acc.Tags()
    if tag in tags.get("scalars", []):
        return [(e.wall_time, float(e.step), float(e.value)) for e in acc.Scalars(tag)]
    if tag in tags.get("tensors", []):
        from tensorboard.util import tensor_util

        return [
            (e.wall_time, float(e.step), float(tensor_util.make_ndarray(e.tensor_proto)))
            for e in acc.Tensors(tag)
        ]
    return []


def _event_folders(run: Path) -> list[Path]:
    return sorted({p.parent for p in run.rglob(f"{EVENTS}*") if p.is_file()})


def read_tensorboard(root: Path, metric: str, name_pattern: str | None = None) -> list[RunHistory]:
    if not root.is_dir():
        raise CurvesError(f"--from-tensorboard {root}: no such folder")
    pattern = None
    if name_pattern:
        try:
            pattern = re.compile(name_pattern)
        except re.error as exc:
            raise CurvesError(f"--name-pattern: not a regular expression ({exc})") from None
        if not pattern.groupindex:
            raise CurvesError(
                "--name-pattern: expected named groups, e.g. (?P<optimizer>.+)__(?P<run>[0-9a-f]+)"
            )
    runs = [d for d in sorted(root.iterdir()) if d.is_dir() and _event_folders(d)]
    if not runs and _event_folders(root):
        runs = [root]
    if not runs:
        raise CurvesError(f"--from-tensorboard {root}: no event files ({EVENTS}*) under it")
    out = []
    for run in runs:
        params: dict[str, str] = {}
        events: list[tuple[float, float, float]] = []
        for folder in _event_folders(run):
            acc = _accumulator(folder)
            params.update(_hparams(acc))
            events.extend(_points(acc, metric))
        if pattern is not None:
            match = pattern.fullmatch(run.name)
            if match is None:
                raise CurvesError(
                    f"--name-pattern: run folder {run.name!r} does not match {name_pattern!r}"
                )
            params.update({k: v for k, v in match.groupdict().items() if v is not None})
        if not events:
            continue
        events.sort(key=lambda e: e[0])  # logging order: a resumed run's later value wins
        start = events[0][0]
        points = tuple(Point(step, value, wall - start) for wall, step, value in events)
        out.append(RunHistory(run.name, params, points, None, f"tensorboard {root}"))
    return out


__all__ = ["INSTALL", "read_tensorboard"]
