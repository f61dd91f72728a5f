"""`stagewise curves --from-mlflow URI --experiment NAME_OR_ID`: runs of an MLflow experiment.

Runs are listed with `MlflowClient.search_runs`, page by page (1,000 a page, following the
page token); each run's metric history with `MlflowClient.get_metric_history`, which returns
every logged point (the client pages through a tracking server's history itself). Params and
tags both serve as keys (a param wins over a tag of the same name). A point's seconds are its
timestamp minus the run's start time. Extra `stagewise[mlflow]`.
"""

from __future__ import annotations

from typing import Any

from stagewise.backtest.table import CurvesError
from stagewise.backtest.trackers.history import Point, RunHistory

INSTALL = "pip install 'stagewise[mlflow]'"
PAGE = 1000


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise CurvesError(f"--from-mlflow needs MLflow ({INSTALL})") from None
    return MlflowClient(tracking_uri=uri)


def read_mlflow(uri: str, experiment: str, metric: str) -> list[RunHistory]:
    client = _client(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None and experiment.isdigit():
            exp = client.get_experiment(experiment)
    except Exception as exc:  # the store's own error (unreachable server, bad URI)
        raise CurvesError(f"--from-mlflow {uri}: cannot read the store ({exc})") from None
    if exp is None:
        raise CurvesError(f"--from-mlflow {uri}: no experiment named or numbered {experiment!r}")
    runs: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    out = []
    for run in runs:
        info = run.info
        params = {**{k: str(v) for k, v in run.data.tags.items()}, **dict(run.data.params)}
        history = client.get_metric_history(info.run_id, metric)
        # Logging order: by timestamp (a resumed run's later value for a step comes later).
        ordered = sorted(history, key=lambda m: m.timestamp)
        start = (info.start_time or (ordered[0].timestamp if ordered else 0)) / 1000.0
        points = tuple(
            Point(float(m.step), float(m.value), m.timestamp / 1000.0 - start) for m in ordered
        )
        if points:
            out.append(RunHistory(info.run_id, params, points, info.status, f"mlflow {experiment}"))
    return out


__all__ = ["INSTALL", "read_mlflow"]
