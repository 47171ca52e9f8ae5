"""Shared test settings: keep XLA on the CPU and quiet."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JNAS_PROGRESS", "off")
