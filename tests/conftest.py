"""Shared test settings: keep XLA on the CPU and quiet."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JNAS_PROGRESS", "off")


import chex  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_trace_counters():
  """chex.assert_max_traces counts per function footprint: each test starts from zero."""
  chex.clear_trace_counter()
  yield
