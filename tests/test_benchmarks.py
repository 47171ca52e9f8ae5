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


@pytest.mark.slow  # compiles one network per cell and setting; run with -m slow
def test_latency_columns_measure_resume_and_report(tmp_path):
  script = str(ROOT / "benchmarks" / "nb201_latency_columns.py")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}

  def run(*args):
    proc = subprocess.run([sys.executable, script, *args, "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout

  run("measure", "--setting", "server", "--limit", "3", "--repeats", "3")
  run("measure", "--setting", "edge", "--limit", "2", "--repeats", "3")
  run("measure", "--setting", "edge", "--limit", "1", "--repeats", "3")  # resumes: a third cell
  rows = (tmp_path / "latency-edge-r0.csv").read_text().splitlines()
  assert len(rows) == 1 + 3 and len({r.split(",")[0] for r in rows[1:]}) == 3
  out = run("report")
  assert "edge vs server" in out
  res = json.loads((tmp_path / "latency.json").read_text())
  assert res["cells"] == {"edge": 3, "server": 3} and res["between_settings"]["cells"] == 3
  assert all(r["latency_ms"] > 0 for f in res["fronts"].values() for r in f)


def test_every_jnas_name_the_scripts_import_exists():
  """Benchmarks import jnas inside functions, so a renamed API breaks them only when run:
  every ``from jnas... import name`` in benchmarks/ and experiments/ must resolve."""
  import ast
  import importlib

  missing = []
  for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "experiments").glob("*.py")]):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jnas":
        module = importlib.import_module(node.module)
        for alias in node.names:
          if not hasattr(module, alias.name):
            try:
              importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
              missing.append(f"{path.name}:{node.lineno} {node.module}.{alias.name}")
  assert not missing, missing
