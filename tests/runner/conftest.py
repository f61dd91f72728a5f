from tests.data.conftest import sample_data, stagewise  # noqa: F401  (shared fixture + helper)
