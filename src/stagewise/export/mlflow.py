"""`stagewise export DIR --mlflow URI`: the study as an MLflow experiment.

One MLflow experiment per study, one MLflow run per stagewise run (stage x condition x seed x
host), with the run's runner options as params, its place in the protocol as tags (stage, gate
and the gate's decision for the condition, seed, host, condition, role, status), its summary as
metrics and its train loss as a step metric. The export is idempotent: every MLflow run carries
the stagewise run key as a tag, runs are looked up by it before one is created, and only what
differs from the store is written, so a second export of an unchanged study writes nothing and
an export after new results updates the runs in place.

`desired_runs` (what the store should hold) is pure; `export_mlflow` compares it with the store
through `mlflow.tracking.MlflowClient` (the optional extra `stagewise[mlflow]`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stagewise.errors import ExportError
from stagewise.ledger import Ledger, RunRecord
from stagewise.report.context import GateView, ReportContext, report_context
from stagewise.report.loss_curves import LossCurve, load_curves
from stagewise.snapshot import StudySnapshot
from stagewise.study import load_study

STUDY_TAG = "stagewise.study"
RUN_KEY_TAG = "stagewise.run_key"
CURVE_METRIC = "train_loss"
# The summary fields a researcher compares runs by.
METRICS = (
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "mfu_percent",
    "peak_vram_mb",
)
# MLflow's own run states; a planned run without a result is SCHEDULED.
MLFLOW_STATUS = {
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "interrupted": "KILLED",
    "running": "RUNNING",
    "pending": "SCHEDULED",
}
TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
# A 12-hour run logs ~10^5 steps; every k-th step (and the last) keeps the curve's shape while
# the export stays a few batches per run.
CURVE_MAX_POINTS = 5000
BATCH = 1000  # MLflow's log_batch limit on metrics per call (params and tags: 100)
INSTALL_HINT = "pip install 'stagewise[mlflow]'"


@dataclass(frozen=True)
class DesiredRun:
    """What one stagewise run should look like in MLflow."""

    key: str  # stage/condition/seed/host
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    curve: tuple[tuple[int, float], ...]  # (step, train loss)
    status: str  # an MLflow run status
    start_ms: int
    end_ms: int | None


@dataclass
class ExportResult:
    uri: str
    experiment: str
    experiment_id: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    curves: int = 0
    conflicts: list[str] = field(default_factory=list)  # params MLflow cannot change

    @property
    def runs(self) -> int:
        return self.created + self.updated + self.unchanged

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "runs": self.runs,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "curves": self.curves,
            "conflicts": self.conflicts,
        }


def run_key(rec: RunRecord) -> str:
    return f"{rec.stage}/{rec.condition_id}/{rec.seed}/{rec.host}"


def _ms(stamp: str | None) -> int | None:
    if not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def gate_decision(ctx: ReportContext, view: GateView, condition_id: str) -> str:
    """The gate's word on one condition: promote/stop, pass/fail, or pending."""
    result = view.gate_result
    verdicts = {c.condition_id: c.verdict.value for c in result.conditions} if result else {}
    if view.active is None:
        return "pending"
    if view.gate.kind == "confirm" and condition_id in verdicts:
        return verdicts[condition_id]
    return "promote" if condition_id in view.active.promoted else "stop"


def thin(curve: LossCurve, limit: int = CURVE_MAX_POINTS) -> tuple[tuple[int, float], ...]:
    points = list(zip(curve.steps, curve.loss, strict=True))
    if len(points) <= limit:
        return tuple(points)
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return tuple(kept)


def desired_runs(ctx: ReportContext, curves: dict[Any, LossCurve]) -> list[DesiredRun]:
    """Every ledger run as the MLflow run it should be (pure: no MLflow here)."""
    from stagewise.executors.command import PATH_KEYS, runner_values

    pooled = {s: v for v in ctx.gates for s in v.gate.stages}  # the widest gate last wins
    conditions = {c.condition_id: c for c in ctx.study.conditions}
    out = []
    for rec in ctx.runs:
        cond = conditions.get(rec.condition_id)
        stage = ctx.study.stages.get(rec.stage)
        params: dict[str, str] = {}
        if cond is not None:
            values = runner_values(ctx.study, cond)
            params = {k: _param(v) for k, v in values.items() if k not in PATH_KEYS}
        if stage is not None:
            params["time_budget"] = _param(stage.budget_seconds)
        tags = {
            STUDY_TAG: ctx.study.name,
            RUN_KEY_TAG: run_key(rec),
            "stage": rec.stage,
            "condition": rec.condition_id,
            "label": ctx.label(rec.condition_id),
            "role": cond.role if cond is not None else "",
            "seed": str(rec.seed),
            "host": rec.host,
            "status": rec.status,
        }
        view = pooled.get(rec.stage)
        if view is not None:
            tags["gate"] = view.gate_id
            tags["gate_decision"] = gate_decision(ctx, view, rec.condition_id)
        for name in ("cause", "source", "checkpoint_sha256"):
            value = getattr(rec, name)
            if value:
                tags[name] = str(value)
        metrics = {}
        for name in METRICS:
            value = getattr(rec, name)
            if isinstance(value, int | float) and math.isfinite(value):
                metrics[name] = float(value)
        curve = curves.get(rec.key)
        start = _ms(rec.started_at) or _ms(rec.created_at) or 0
        out.append(
            DesiredRun(
                key=run_key(rec),
                name=f"{rec.stage}/{ctx.label(rec.condition_id)}/seed{rec.seed}/{rec.host}",
                params=params,
                tags=tags,
                metrics=metrics,
                curve=thin(curve) if curve is not None else (),
                status=MLFLOW_STATUS.get(rec.status, "SCHEDULED"),
                start_ms=start,
                end_ms=_ms(rec.finished_at),
            )
        )
    return out


def tracking_uri(uri: str) -> str:
    """A URI MLflow accepts; a plain path becomes a SQLite store (`<folder>/mlflow.db`, or the
    .db file itself), since MLflow no longer writes its old folder store."""
    if "://" in uri or uri.startswith(("databricks", "sqlite:")):
        return uri
    path = Path(uri).expanduser().resolve()
    if path.suffix not in (".db", ".sqlite"):
        path.mkdir(parents=True, exist_ok=True)
        path = path / "mlflow.db"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ExportError(f"--mlflow needs the MLflow extra: {INSTALL_HINT}") from exc
    return MlflowClient


def _experiment(client: Any, name: str, study: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return str(client.create_experiment(name, tags={STUDY_TAG: study}))
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


def _existing_runs(client: Any, experiment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="", max_results=1000, page_token=token
        )
        for run in page:
            key = run.data.tags.get(RUN_KEY_TAG)
            if key is not None and key not in found:
                found[key] = run
        token = page.token
        if not token:
            return found


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def _sync(client: Any, run: Any, want: DesiredRun, result: ExportResult) -> bool:
    """Write what differs between `run` (as stored) and `want`; True if anything was written."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = run.info.run_id
    data = run.data
    params = [Param(k, v) for k, v in want.params.items() if k not in data.params]
    result.conflicts += [
        f"{want.key}: param {k} is {data.params[k]!r} in MLflow, {v!r} in the study"
        for k, v in want.params.items()
        if k in data.params and data.params[k] != v
    ]
    tags = [RunTag(k, v) for k, v in want.tags.items() if data.tags.get(k) != v]
    stamp = want.end_ms or want.start_ms
    metrics = [
        Metric(k, v, stamp, 0) for k, v in want.metrics.items() if not _same(data.metrics.get(k), v)
    ]
    if want.curve:
        logged = {m.step: m.value for m in client.get_metric_history(run_id, CURVE_METRIC)}
        metrics += [
            Metric(CURVE_METRIC, v, stamp, s) for s, v in want.curve if not _same(logged.get(s), v)
        ]
    for i in range(0, max(len(params), len(tags)), 100):
        client.log_batch(run_id, params=params[i : i + 100], tags=tags[i : i + 100])
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])
    status_changed = run.info.status != want.status or (
        want.status in TERMINAL and run.info.end_time != want.end_ms
    )
    if status_changed:
        if want.status in TERMINAL:
            client.set_terminated(run_id, status=want.status, end_time=want.end_ms)
        else:
            client.update_run(run_id, status=want.status)
    return bool(params or tags or metrics or status_changed)


def export_mlflow(folder: Path, uri: str, experiment: str | None = None) -> ExportResult:
    """Export the study in `folder` to the MLflow tracking store at `uri` (idempotent)."""
    client_class = _client_class()  # a missing extra fails first, before anything is read
    study = load_study(folder)
    with Ledger.open(study.root, create=False) as ledger:
        ctx = report_context(StudySnapshot.read_intact(study, ledger))
    curves, _ = load_curves(ctx)
    name = experiment or study.name
    store = tracking_uri(uri)  # only now: a wrong study folder leaves no store behind
    try:
        client = client_class(tracking_uri=store)
        experiment_id = _experiment(client, name, study.name)
        result = ExportResult(store, name, experiment_id)
        existing = _existing_runs(client, experiment_id)
        for want in desired_runs(ctx, curves):
            run = existing.get(want.key)
            if run is None:
                info = client.create_run(
                    experiment_id, start_time=want.start_ms, tags=want.tags, run_name=want.name
                )
                run = client.get_run(info.info.run_id)
                _sync(client, run, want, result)
                result.created += 1
            elif _sync(client, run, want, result):
                result.updated += 1
            else:
                result.unchanged += 1
            result.curves += bool(want.curve)
    except ExportError:
        raise
    except Exception as exc:  # MLflow's own errors (store refused, server down) in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"--mlflow {uri}: {type(exc).__name__}: {first}") from exc
    return result
