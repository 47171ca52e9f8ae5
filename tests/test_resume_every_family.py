"""Every search family, killed with SIGKILL at a random point and rerun, ends as an uninterrupted run.

One toy run per family (gradient, SPOS, FBNet, the sample-based strategies with
a table, scratch and supernet estimator): an uninterrupted reference, then the
same command killed (``kill -9``) a random moment after its first checkpoint
appears and rerun until it finishes. The genotype, the stored weights and
architecture parameters, and every evaluated candidate's score are compared
with the reference byte for byte (what a run measures in wall-clock seconds is
left out). Slow (each family compiles three times): ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jnas import checkpoint

ROOT = Path(__file__).resolve().parents[1]
EVERY = "--config.search.checkpoint_every_s=0"  # a checkpoint after every epoch or round
TINY_DARTS = ["--config.search.epochs=3", "--config.search.batch_size=256",
              "--config.search.channels=4", "--config.search.layers=2",
              "--config.space.num_nodes=2", "--config.retrain.enabled=false"]
TINY_SPOS = ["--config.search.epochs=3", "--config.search.batch_size=256",
             "--config.search.channels=4", "--config.search.cells_per_stage=1",
             "--config.search.pool_size=16", "--config.evolution.population=4",
             "--config.evolution.top_k=2", "--config.evolution.evals=8",
             "--config.evolution.calib_batches=1", "--config.evolution.val_batches=1",
             "--config.retrain.enabled=false"]
FAMILIES = {
    "darts": ("darts_mnist1d.py", TINY_DARTS),
    "gdas": ("darts_mnist1d.py", TINY_DARTS + ["--config.search.strategy=gdas"]),
    "snas": ("darts_mnist1d.py", TINY_DARTS + ["--config.search.strategy=snas"]),
    "spos": ("nb201_mnist1d.py", TINY_SPOS),
    "rea:supernet": ("nb201_mnist1d.py", TINY_SPOS + [
        "--config.search.strategy=rea", "--config.search.estimator=supernet",
        "--config.search.evals=8"]),
    "fbnet": ("fbnet_mnist1d.py", ["--config.search.epochs=3", "--config.search.warmup_epochs=1",
                                   "--config.retrain.enabled=false"]),
    "rea:table": ("rea_table_mnist1d.py", ["--config.search.evals=40",
                                           "--config.retrain.enabled=false"]),
    "rea:predictor": ("rea_predictor_mnist1d.py", ["--config.search.evals=300",
                                                   "--config.search.predictor_warmup=10",
                                                   "--config.retrain.enabled=false"]),
    "random:table+synflow": ("rea_table_mnist1d.py", [
        "--config.search.strategy=random", "--config.search.strategy_settings=",
        "--config.search.prefilter=synflow", "--config.search.prefilter_pool=100",
        "--config.search.evals=60", "--config.retrain.enabled=false"]),
    "reinforce:scratch": ("reinforce_scratch_mnist1d.py", [
        "--config.search.evals=6", "--config.search.scratch_epochs=1",
        "--config.search.channels=4", "--config.search.layers=2",
        "--config.search.batch_size=512", "--config.retrain.enabled=false"]),
}
# Files whose bytes must match; JSON files are compared without their wall-clock fields.
ARRAYS = ("arch_params.npz", "supernet.npz", "alpha_history.npz")
JSONS = ("genotype.json", "evaluations.json", "evolution.json")
CLOCK = {"time", "elapsed_s", "cpu_s", "cost_s", "spent", "spent_s", "train_seconds", "wall_seconds",
         "search_seconds", "supernet_seconds", "evolution_seconds", "evolution_cpu_seconds",
         "budget_spent_s"}


def _cmd(family: str, wd: Path) -> list[str]:
  config, extra = FAMILIES[family]
  return [sys.executable, "-m", "jnas", "search", "--config", str(ROOT / "experiments" / config),
          "--workdir", str(wd), EVERY, *extra]


def _env() -> dict[str, str]:
  return {**os.environ, "JNAS_PROGRESS": "off"}


def _without_clock(x):
  if isinstance(x, dict):
    return {k: _without_clock(v) for k, v in x.items() if k not in CLOCK}
  if isinstance(x, list):
    return [_without_clock(v) for v in x]
  return x


def _same(a: Path, b: Path) -> None:
  compared = 0
  for name in ARRAYS:
    if (a / name).exists() or (b / name).exists():
      with np.load(a / name) as fa, np.load(b / name) as fb:
        assert sorted(fa.files) == sorted(fb.files), name
        for k in fa.files:
          assert fa[k].dtype == fb[k].dtype and fa[k].tobytes() == fb[k].tobytes(), (name, k)
      compared += 1
  for name in JSONS:
    if (a / name).exists() or (b / name).exists():
      ja, jb = (json.loads((d / name).read_text()) for d in (a, b))
      assert _without_clock(ja) == _without_clock(jb), name
      compared += 1
  assert compared >= 2 and (a / "genotype.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_sigkill_at_a_random_point_then_rerun_ends_as_uninterrupted(tmp_path, family):
  ref = tmp_path / "ref"
  done = subprocess.run(_cmd(family, ref), env=_env(), capture_output=True, text=True,
                        timeout=900)
  assert done.returncode == 0, done.stderr[-2000:]

  wd = tmp_path / "killed"
  if (ref / "latency_table.json").exists():
    # FBNet measures latencies on this machine: the killed run uses the reference's, as a
    # rerun uses its own, so that only the kill differs.
    wd.mkdir()
    shutil.copy(ref / "latency_table.json", wd / "latency_table.json")
  proc = subprocess.Popen(_cmd(family, wd), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckdir = wd / "checkpoints" / "search"
  deadline = time.time() + 900
  while time.time() < deadline and proc.poll() is None and not checkpoint.all_steps(ckdir):
    time.sleep(0.02)
  # A random moment after the first checkpoint: mid-epoch, mid-save or between rounds.
  time.sleep(random.Random(family).uniform(0.0, 0.3))
  assert proc.poll() is None, "the run ended before it could be killed: make it longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and not (wd / "summary.json").exists()
  rerun = subprocess.run(_cmd(family, wd), env=_env(), capture_output=True, text=True,
                         timeout=900)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  _same(ref, wd)
