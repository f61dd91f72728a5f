"""The export tests reuse the report tests' half-done synthetic study."""

from tests.report.conftest import synthetic

__all__ = ["synthetic"]
