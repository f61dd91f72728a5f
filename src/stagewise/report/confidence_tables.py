"""Per gate: each condition's verdict confidence, and the variance of the gaps to the reference."""

from __future__ import annotations

from stagewise.gates.records import CONFIDENCE_COLUMNS as RECORD_CONFIDENCE_COLUMNS
from stagewise.gates.results import INTERVAL_KEYS, GateResult
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Table
from stagewise.study.model import Gate

CONFIDENCE_COLUMNS = ("condition_id", "label", "verdict", *RECORD_CONFIDENCE_COLUMNS)
VARIANCE_COLUMNS = (
    "scope",
    "sd_host",
    "df_host",
    "sd_seed",
    "df_seed",
    "var_host",
    "var_seed",
    "n_hosts",
    "n_cells",
)


def confidence_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """Each condition's p_verdict, decisive and intervals (issue 13), where computed from cells."""
    if gate_result is None or gate_result.confidence is None:
        return None
    conf = gate_result.confidence
    rows = []
    for cond in gate_result.conditions:
        c = cond.confidence
        row: dict[str, object] = {
            "condition_id": cond.condition_id,
            "label": cond.label,
            "verdict": cond.verdict.value,
            "p_verdict": c.p_verdict if c else None,
            "decisive": c.decisive if c else None,
        }
        for key in INTERVAL_KEYS:
            pair = c.interval.bounds(key) if c and c.interval else None
            row[f"{key}_low"], row[f"{key}_high"] = pair or (None, None)
        rows.append(row)
    note = conf.method_sentence
    if conf.notes:
        note += "; " + "; ".join(conf.notes)
    return Table(
        f"confidence_{gate.gate_id}",
        f"Gate {gate.gate_id}: verdict confidence",
        list(CONFIDENCE_COLUMNS),
        rows,
        note=note,
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )


def variance_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """Condition-by-host and within-host (seed) components of the gaps to the reference."""
    if gate_result is None or gate_result.confidence is None:
        return None
    conf = gate_result.confidence
    scoped = [("pooled", conf.variance)]
    scoped += [(c.condition_id, c.variance) for c in conf.conditions]
    rows = [
        {"scope": scope, **{k: v.to_json().get(k) for k in VARIANCE_COLUMNS[1:]}}
        for scope, v in scoped
        if v is not None
    ]
    if not rows:
        return None
    return Table(
        f"variance_{gate.gate_id}",
        f"Gate {gate.gate_id}: variance of the gaps to the reference",
        list(VARIANCE_COLUMNS),
        rows,
        note="random-effects components with hosts as blocks (method of moments): sd_host is "
        "the condition-by-host effect more seeds never average away, sd_seed the seed-to-seed "
        "scatter within a host; blank where its degrees of freedom are 0; variances in "
        "scientific notation (1.9e-7), standard deviations at six decimals",
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )
