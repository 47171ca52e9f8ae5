"""Search checkpoints by wall time (search.checkpoint_every_s), and exact resume when epochs went unsaved."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from jnas import checkpoint
from jnas.search import loop, workdir
from jnas.search.workdir import CheckpointClock
from jnas.utils.metrics import read_metrics, read_tensorboard_scalars

from tiny_search import reference_run
from tiny_search import search as _search

CKPT = "checkpoints/search"


def _same_result(a, b) -> None:
  assert (a / "genotype.json").read_text() == (b / "genotype.json").read_text()
  for name in ("arch_params.npz", "alpha_history.npz", "supernet.npz"):
    with np.load(a / name) as pa, np.load(b / name) as pb:
      assert sorted(pa) == sorted(pb), name
      for k in pa:
        assert np.array_equal(pa[k], pb[k]), (name, k)
  ma, mb = read_metrics(str(a)), read_metrics(str(b))
  assert [r["step"] for r in mb] == [r["step"] for r in ma] == [7, 14, 21]
  for ra, rb in zip(ma, mb):
    assert ra["train_loss"] == rb["train_loss"] and ra["genotype"] == rb["genotype"]
  # The CPU seconds carry over a resume, as the wall seconds do: they only grow.
  cpu = [r["cpu_s"] for r in mb]
  assert 0 < cpu[0] <= cpu[1] <= cpu[2], cpu
  tb = read_tensorboard_scalars(str(b / "tb/search"))
  assert [s for s, _ in tb["train_loss"]] == [7, 14, 21]  # no line twice after the resume


def test_clock():
  clock = CheckpointClock(60.0)
  assert clock.due()  # nothing saved yet by this process: the first epoch is saved
  clock.saved()
  assert not clock.due() and clock.due(force=True)
  every = CheckpointClock(0.0)
  every.saved()
  assert every.due()


def test_default_saves_first_and_last_epoch_only():
  # 3 epochs of seconds each: the 60 s default saves after epochs 1 and 3, not 2.
  assert checkpoint.all_steps(reference_run() / CKPT) == [7, 21]


@pytest.mark.parametrize("every", ["0", "1e-6"])
def test_zero_or_elapsed_interval_saves_every_epoch(tmp_path, every):
  wd = tmp_path / "run"
  assert _search(wd, f"--config.search.checkpoint_every_s={every}") == 0
  assert checkpoint.all_steps(wd / CKPT) == [14, 21]  # the newest two of 7, 14, 21
  assert json.loads((wd / "config.json").read_text())["search"]["checkpoint_every_s"] == \
      float(every)


def test_negative_interval_is_refused_before_config_json(tmp_path, capsys):
  wd = tmp_path / "run"
  assert _search(wd, "--config.search.checkpoint_every_s=-1") == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "checkpoint_every_s=-1.0 must be >= 0" in err, err
  assert not (wd / "config.json").exists()


def test_crash_after_an_unsaved_epoch_resumes_bit_identical(tmp_path):
  """Killed (no handler runs) during epoch 3: epoch 2's metrics are on disk, its checkpoint is not.

  The rerun resumes from step 7, rewrites metrics.jsonl and TensorBoard from the
  checkpoint's records, and ends with the files of an uninterrupted run.
  """
  ref = reference_run()
  wd = tmp_path / "run"
  real = loop.progress
  steps = []

  def progress_that_dies(*args, **kwargs):
    bar = real(*args, **kwargs)
    update = bar.update

    def dying_update(n=1):
      update(n)
      if n == 1 and kwargs.get("unit") == "step":
        steps.append(1)
        if len(steps) == 17:
          raise SystemExit("killed")  # like kill -9: no checkpoint on the way out

    bar.update = dying_update
    return bar

  mp = pytest.MonkeyPatch()
  mp.setattr(loop, "progress", progress_that_dies)
  try:
    with pytest.raises(SystemExit, match="killed"):
      _search(wd)
  finally:
    mp.undo()
  assert checkpoint.all_steps(wd / CKPT) == [7]
  assert [r["step"] for r in read_metrics(str(wd))] == [7, 14]  # line 14 has no checkpoint
  assert not (wd / workdir.LOCK_FILE).exists()
  assert _search(wd) == 0
  _same_result(ref, wd)


def test_sigterm_after_an_unsaved_epoch_saves_and_resumes(tmp_path):
  from tiny_search import sigterm_after_steps

  ref = reference_run()
  wd = tmp_path / "run"
  mp = pytest.MonkeyPatch()
  mp.setattr(loop, "progress", sigterm_after_steps(loop.progress, 17, []))
  try:
    assert _search(wd) == 130
  finally:
    mp.undo()
  assert checkpoint.all_steps(wd / CKPT) == [7, 17]  # epoch 2 unsaved, the stop saved
  copy = tmp_path / "copy"
  shutil.copytree(wd, copy)
  assert _search(copy) == 0
  _same_result(ref, copy)


# ---------------------------------------------------------------------------
# FBNet (chain spaces): resumed instead of restarted
# ---------------------------------------------------------------------------

FBNET = [f"--config={Path(__file__).resolve().parents[1] / 'experiments' / 'fbnet_mnist1d.py'}",
         "--config.space.stem_channels=4", "--config.space.stages=((4,1,1),(8,1,2))",
         "--config.space.head_channels=8", "--config.search.epochs=3",
         "--config.search.warmup_epochs=1", "--config.search.batch_size=200",
         "--config.latency.repeats=3", "--config.retrain.enabled=false"]


def _fbnet(wd) -> int:
  from jnas.cli import main

  return main(["search", *FBNET, "--workdir", str(wd)])


@pytest.fixture(scope="module")
def fbnet_reference(tmp_path_factory):
  wd = tmp_path_factory.mktemp("fbnet") / "ref"
  assert _fbnet(wd) == 0
  return wd


def _fbnet_interrupted(ref, wd, at_epoch: int, action) -> int:
  """Runs the FBNet search in ``wd`` (with ``ref``'s latency table) and calls ``action`` when
  the epoch ``at_epoch`` (0-based) logs its line: after that epoch, before its checkpoint."""
  from jnas.search import chain

  wd.mkdir(parents=True)
  shutil.copy(ref / "latency_table.json", wd / "latency_table.json")
  real = chain.log

  class Log:
    def __getattr__(self, name):
      return getattr(real, name)

    def info(self, msg, *args):
      real.info(msg, *args)
      if str(msg).startswith(f"epoch {at_epoch}:"):
        action()

  mp = pytest.MonkeyPatch()
  mp.setattr(chain, "log", Log())
  try:
    return _fbnet(wd)
  finally:
    mp.undo()


def _same_fbnet(a, b) -> None:
  assert (a / "genotype.json").read_text() == (b / "genotype.json").read_text()
  with np.load(a / "arch_params.npz") as pa, np.load(b / "arch_params.npz") as pb:
    assert np.array_equal(pa["blocks"], pb["blocks"])
  sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
  assert sa["supernet_val_accuracy"] == sb["supernet_val_accuracy"]
  assert sa["predicted_ms"] == sb["predicted_ms"]
  ma, mb = read_metrics(str(a)), read_metrics(str(b))
  assert [r["step"] for r in mb] == [r["step"] for r in ma] == [1, 2, 3]
  for ra, rb in zip(ma, mb):
    assert ra["train_loss"] == rb["train_loss"] and ra["expected_ms"] == rb["expected_ms"]
  tb = read_tensorboard_scalars(str(b / "tb/search"))
  assert [s for s, _ in tb["train_loss"]] == [1, 2, 3]


# Several minutes on 2 busy cores (FBNet compiles slowly); run with -m slow.
@pytest.mark.slow
def test_fbnet_stopped_by_sigterm_resumes_to_the_same_result(fbnet_reference, tmp_path, caplog):
  import os
  import signal

  wd = tmp_path / "run"
  sigterm = lambda: os.kill(os.getpid(), signal.SIGTERM)
  assert _fbnet_interrupted(fbnet_reference, wd, 1, sigterm) == 130  # the CLI's "interrupted"
  steps = checkpoint.all_steps(wd / CKPT)
  assert len(steps) == 2 and not (wd / "summary.json").exists()  # after epochs 1 and 2
  with caplog.at_level(logging.INFO):
    assert _fbnet(wd) == 0
  assert any("resuming the FBNet search" in r.getMessage() and "after epoch 2 of 3" in
             r.getMessage() for r in caplog.records)
  _same_fbnet(fbnet_reference, wd)


@pytest.mark.slow
def test_fbnet_crash_after_an_unsaved_epoch_resumes_to_the_same_result(fbnet_reference,
                                                                       tmp_path):
  def crash():
    raise SystemExit("killed")

  wd = tmp_path / "run"
  with pytest.raises(SystemExit, match="killed"):
    _fbnet_interrupted(fbnet_reference, wd, 2, crash)
  assert len(checkpoint.all_steps(wd / CKPT)) == 1  # epoch 1 only: epoch 2 went unsaved
  assert [r["step"] for r in read_metrics(str(wd))] == [1, 2]
  assert _fbnet(wd) == 0
  _same_fbnet(fbnet_reference, wd)


@pytest.mark.parametrize("per_call", ["0", "3"])
def test_steps_per_call_gives_the_same_search_and_resumes_bit_identical(tmp_path, per_call):
  """search.steps_per_call runs steps in one compiled scan per call (0: per epoch): the same
  search as one step per call up to float rounding (XLA compiles the scan's body apart); a
  SIGTERM takes effect after the call in flight (steps 15-17 of 21 with 3 per call: calls
  aligned to the epoch's start end at steps 3, 6, 7 of each 7-step epoch), and the rerun ends
  with the files of an uninterrupted run with the same steps per call."""
  ref = reference_run()
  whole = tmp_path / "whole"
  assert _search(whole, f"--config.search.steps_per_call={per_call}") == 0
  assert (whole / "genotype.json").read_text() == (ref / "genotype.json").read_text()
  # jax 0.10's XLA gives the scan bit-identical results; jax 0.12's (Python 3.12+) fuses the scan
  # body differently, and after 21 steps weights differ by up to 1e-4 and alphas by 1e-5 (Adam
  # moves a near-zero-gradient alpha by up to its learning rate, 3e-4, whatever the rounding).
  for name in ("arch_params.npz", "supernet.npz"):
    with np.load(ref / name) as pa, np.load(whole / name) as pb:
      for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-3, atol=1e-4, err_msg=f"{name} {k}")
  assert [r["step"] for r in read_metrics(str(whole))] == [7, 14, 21]
  assert (whole / "traced" / "search_scan.jaxexport").exists()  # a resume loads, not traces
  if per_call == "0":
    return
  from tiny_search import sigterm_after_steps

  wd = tmp_path / "run"
  mp = pytest.MonkeyPatch()
  mp.setattr(loop, "progress", sigterm_after_steps(loop.progress, 16, []))
  try:
    assert _search(wd, "--config.search.steps_per_call=3") == 130
  finally:
    mp.undo()
  assert checkpoint.all_steps(wd / CKPT)[-1] == 17  # epoch 3's call of steps 15-17 finished
  assert _search(wd, "--config.search.steps_per_call=3") == 0
  _same_result(whole, wd)


def test_bad_steps_per_call_is_refused(tmp_path, capsys):
  assert _search(tmp_path / "run", "--config.search.steps_per_call=-2") == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "steps_per_call=-2 must be an integer >= 0" in err, err
