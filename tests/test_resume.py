"""Checkpoints and exact resume: jnas.checkpoint on its own, and `jnas search` stopped and rerun."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnas import checkpoint
from jnas.checkpoint import Checkpoints
from jnas.cli import main
from jnas.utils.metrics import read_metrics, read_tensorboard_scalars

from tiny_search import CONFIG, TINY, reference_run, sigterm_after_steps
from tiny_search import search as _search


def _same_result(a: Path, b: Path) -> None:
  assert (a / "genotype.json").read_text() == (b / "genotype.json").read_text()
  with np.load(a / "arch_params.npz") as pa, np.load(b / "arch_params.npz") as pb:
    assert sorted(pa) == sorted(pb)
    for k in pa:
      assert np.array_equal(pa[k], pb[k]), k
  with np.load(a / "alpha_history.npz") as ha, np.load(b / "alpha_history.npz") as hb:
    for k in ha:
      assert np.array_equal(ha[k], hb[k]), k
  ma, mb = read_metrics(str(a)), read_metrics(str(b))
  # One line per epoch, no duplicates from the stopped run, same numbers.
  assert [r["step"] for r in mb] == [r["step"] for r in ma] == [7, 14, 21]
  for ra, rb in zip(ma, mb):
    assert ra["train_loss"] == rb["train_loss"] and ra["genotype"] == rb["genotype"]


# ---------------------------------------------------------------------------
# jnas.checkpoint
# ---------------------------------------------------------------------------


def _tree():
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  return {"params": params, "opt": tx.init(params), "key": jax.random.key(7),
          "step": jnp.asarray(5, jnp.int32)}


def test_checkpoint_round_trip_keeps_structure_keys_and_last_two(tmp_path):
  tree = _tree()
  ck = Checkpoints(tmp_path / "c", max_to_keep=2)
  for step in (1, 2, 3):
    ck.save(step, tree, {"epoch": step, "history": [0.5, 0.25]})
  assert ck.steps() == [2, 3]
  step, got, meta = ck.latest_good(jax.tree.map(jnp.zeros_like, tree))
  ck.close()
  assert step == 3 and meta == {"epoch": 3, "history": [0.5, 0.25]}
  assert jax.tree.structure(got) == jax.tree.structure(tree)
  assert isinstance(got["opt"][1][0], optax.ScaleByAdamState)
  assert jax.dtypes.issubdtype(got["key"].dtype, jax.dtypes.prng_key)
  assert np.array_equal(jax.random.key_data(got["key"]), jax.random.key_data(tree["key"]))
  for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(tree["params"])):
    assert np.array_equal(a, b)
    # Placed like fresh arrays: a jitted step lowers (and is cached) as before the stop.
    assert isinstance(a, jax.Array) and not a.committed


def test_corrupt_newest_checkpoint_is_skipped_with_warning(tmp_path, caplog):
  tree = {"w": jnp.arange(4.0)}
  d = tmp_path / "c"
  checkpoint.save(d, 1, tree, {"epoch": 1})
  checkpoint.save(d, 2, {"w": jnp.arange(4.0) + 1}, {"epoch": 2})
  data_files = [p for p in (d / "2" / "state" / "d").iterdir()]
  for p in data_files:
    p.write_bytes(p.read_bytes()[:5])  # a save cut short by a kill, or a damaged disk
  with caplog.at_level(logging.WARNING, logger="jnas.checkpoint"):
    step, got, meta = checkpoint.latest_good(d, tree)
  assert step == 1 and meta["epoch"] == 1 and np.array_equal(got["w"], tree["w"])
  assert any(str(d / "2") in r.getMessage() for r in caplog.records)
  # Moved aside, not deleted: nothing is lost silently.
  assert checkpoint.all_steps(d) == [1]
  assert len(list((tmp_path / "c-corrupt").iterdir())) == 1


def test_partial_save_directory_is_ignored(tmp_path, caplog):
  d = tmp_path / "c"
  checkpoint.save(d, 1, {"w": jnp.ones(2)}, {"epoch": 1})
  partial = d / "2.orbax-checkpoint-tmp"  # what a kill during a save leaves
  (partial / "state").mkdir(parents=True)
  with caplog.at_level(logging.WARNING, logger="jnas.checkpoint"):
    with Checkpoints(d) as ck:
      assert ck.steps() == [1]
      ck.save(2, {"w": jnp.zeros(2)}, {"epoch": 2})
  assert not partial.exists() and checkpoint.all_steps(d) == [1, 2]
  assert any("partial checkpoint" in r.getMessage() for r in caplog.records)


def test_save_interrupted_before_its_rename_leaves_no_step(tmp_path, monkeypatch):
  """Orbax writes a step into a temporary directory and renames it last: atomic."""
  async_path = pytest.importorskip("orbax.checkpoint._src.path.async_path")
  d = tmp_path / "c"
  checkpoint.save(d, 1, {"w": jnp.ones(2)}, {"epoch": 1})

  async def killed(*args, **kwargs):
    raise RuntimeError("killed during the save")

  monkeypatch.setattr(async_path, "rename", killed)
  with pytest.raises(RuntimeError, match="killed"):
    checkpoint.save(d, 2, {"w": jnp.zeros(2)}, {"epoch": 2})
  monkeypatch.undo()
  assert checkpoint.all_steps(d) == [1]
  assert any(".orbax-checkpoint-tmp" in p.name for p in d.iterdir())
  step, tree, meta = checkpoint.latest_good(d, {"w": jnp.zeros(2)})
  assert step == 1 and meta == {"epoch": 1} and np.array_equal(tree["w"], np.ones(2))


def test_no_checkpoint_gives_none(tmp_path):
  assert checkpoint.latest_good(tmp_path / "missing", {"w": jnp.ones(1)}) is None


# ---------------------------------------------------------------------------
# jnas search: stop, resume, finished, refused
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
  """An uninterrupted tiny search (a private copy: one test reruns it in place)."""
  wd = tmp_path_factory.mktemp("ref") / "run"
  shutil.copytree(reference_run(), wd)
  return wd


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
  """A tiny search that gets SIGTERM during the 3rd step of epoch 2 (global step 10)."""
  from jnas.search import loop

  wd = tmp_path_factory.mktemp("stopped") / "run"
  steps = []
  progress_that_signals = sigterm_after_steps(loop.progress, 10, steps)

  mp = pytest.MonkeyPatch()
  mp.setattr(loop, "progress", progress_that_signals)
  try:
    assert _search(wd) == 130  # the CLI's "interrupted"
  finally:
    mp.undo()
  # The handler let the step finish, saved a mid-epoch checkpoint and stopped.
  assert len(steps) == 10 and checkpoint.all_steps(wd / "checkpoints/search") == [7, 10]
  assert not (wd / "genotype.json").exists()
  assert [r["step"] for r in read_metrics(str(wd))] == [7]
  return wd


def test_stopped_search_resumes_bit_identical(reference, stopped, tmp_path, capsys):
  wd = tmp_path / "run"
  shutil.copytree(stopped, wd)
  assert _search(wd) == 0
  _same_result(reference, wd)
  tb = read_tensorboard_scalars(str(wd / "tb/search"))
  assert [s for s, _ in tb["train_loss"]] == [7, 14, 21]
  ref_losses = [r["train_loss"] for r in read_metrics(str(reference))]
  assert np.allclose([v for _, v in tb["train_loss"]], ref_losses, rtol=1e-6)


def test_corrupt_checkpoint_in_run_falls_back_to_previous(reference, stopped, tmp_path, caplog):
  wd = tmp_path / "run"
  shutil.copytree(stopped, wd)
  newest = wd / "checkpoints/search/10"
  (newest / "meta" / "metadata").write_text('{"epoch": ')  # torn JSON
  with caplog.at_level(logging.INFO):
    assert _search(wd) == 0
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any(str(newest) in m and "skipping checkpoint" in m for m in warnings), warnings
  assert any("from checkpoint step 7" in r.getMessage() for r in caplog.records)
  _same_result(reference, wd)
  assert len(list((wd / "checkpoints/search-corrupt").iterdir())) == 1


def test_finished_run_reports_and_changes_nothing(reference, capsys):
  def snapshot():
    return {str(p.relative_to(reference)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(reference.rglob("*")) if p.is_file()}

  before = snapshot()
  capsys.readouterr()
  assert _search(reference) == 0
  out = capsys.readouterr().out
  assert "finished" in out
  assert snapshot() == before


def test_other_config_in_same_workdir_is_refused(reference, capsys):
  assert _search(reference, "--config.seed=5") == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "another config" in err and str(reference) in err


@pytest.mark.slow
def test_retrain_resumes_after_stop(tmp_path):
  """Retraining stopped after its first epoch and rerun ends with the same report."""
  args = ["--config.retrain.epochs=2", "--config.retrain.channels=4",
          "--config.retrain.layers=1", "--config.retrain.batch_size=512"]

  def train(wd):
    return main(["train", "--config", CONFIG, "--workdir", str(wd), "--genotype", "DARTS_V2",
                 *args])

  assert train(tmp_path / "ref") == 0
  original = Checkpoints.save
  mp = pytest.MonkeyPatch()

  def save_then_sigterm(self, step, pytree, metadata=None):
    original(self, step, pytree, metadata)
    os.kill(os.getpid(), signal.SIGTERM)

  mp.setattr(Checkpoints, "save", save_then_sigterm)
  try:
    assert train(tmp_path / "run") == 130
  finally:
    mp.undo()
  assert checkpoint.all_steps(tmp_path / "run/checkpoints/retrain") == [1]
  assert train(tmp_path / "run") == 0
  ref = json.loads((tmp_path / "ref/report.json").read_text())
  got = json.loads((tmp_path / "run/report.json").read_text())
  assert got["test_accuracy"] == ref["test_accuracy"]
  assert [r["retrain_loss"] for r in read_metrics(str(tmp_path / "run"))] == \
      [r["retrain_loss"] for r in read_metrics(str(tmp_path / "ref"))]


@pytest.mark.slow
def test_search_killed_with_sigkill_resumes_bit_identical(reference, tmp_path):
  """A real `kill -9` of `python -m jnas search` after its first checkpoint, then a rerun."""
  wd = tmp_path / "run"
  cmd = [sys.executable, "-m", "jnas", "search", "--config", CONFIG, "--workdir", str(wd), *TINY]
  env = {**os.environ, "JNAS_PROGRESS": "off"}
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckdir = wd / "checkpoints/search"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if checkpoint.all_steps(ckdir):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the search ended before its first checkpoint was seen"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (wd / "summary.json").exists()
  killed_at = checkpoint.all_steps(ckdir)
  assert killed_at and max(killed_at) < 21
  rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  assert "resuming the search from checkpoint step" in rerun.stderr
  _same_result(reference, wd)
