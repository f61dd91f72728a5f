"""The audit tests read the same two studies as the report tests: the paper06 replay and the
small half-done synthetic study (built by tests/report/conftest.py)."""

from __future__ import annotations

from tests.report.conftest import paper06, synthetic

__all__ = ["paper06", "synthetic"]
