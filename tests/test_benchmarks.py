"""Benchmark scripts run end to end (slow: they compile the MNIST-1D search step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two compilations of the MNIST-1D DARTS step; run with -m slow
def test_seeds_benchmark_reports_a_checked_ratio():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seeds.py"), "--seeds", "2",
                         "--steps", "2", "--rounds", "1", "--devices", "auto", "--json"],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["ratio"] == pytest.approx(r["vmapped_s"] / r["sequential_s"])
  assert r["vmapped_s"] > 0 and r["sequential_s"] > 0
  assert r["max_alpha_diff"] < 1e-2  # both variants did the same two steps
  assert len(r["genotypes"]) == 2
  cores = len(os.sched_getaffinity(0))
  if cores >= 2:  # two seeds on two host devices; the baseline in its own process
    assert r["vmapped_devices"] == 2 and r["per_device"] == "map"
    assert r["sequential_process"].startswith("child")
