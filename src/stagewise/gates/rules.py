"""Built-in gate rules (parameter declarations; implementations land with the gate engine)."""

from __future__ import annotations

from typing import Any

from stagewise.gates.registry import register_rule


def _pending(*_args: Any) -> Any:
    raise NotImplementedError


register_rule("best_k", required={"k": int}, summary="the k lowest means")(_pending)
register_rule(
    "within_gap_of_best",
    required={"threshold": float},
    threshold_param="threshold",
    summary="mean - best mean <= threshold",
)(_pending)
register_rule("keep", summary="the targeted conditions regardless of rank")(_pending)
register_rule("rank_first_in_all_cells", summary="rank 1 in every cell")(_pending)
register_rule(
    "max_gap_to_reference",
    required={"threshold": float},
    threshold_param="threshold",
    summary="in every cell, value - reference value <= threshold",
)(_pending)
register_rule(
    "mean_gap_to_reference",
    required={"threshold": float},
    threshold_param="threshold",
    summary="mean over cells of the gap to the reference <= threshold",
)(_pending)
