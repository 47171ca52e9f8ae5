"""Search checkpoints by wall time (search.checkpoint_every_s), and exact resume when epochs went unsaved."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jnas import checkpoint
from jnas.search import workdir
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
  real = workdir.progress
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
  mp.setattr(workdir, "progress", progress_that_dies)
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
  mp.setattr(workdir, "progress", sigterm_after_steps(workdir.progress, 17, []))
  try:
    assert _search(wd) == 130
  finally:
    mp.undo()
  assert checkpoint.all_steps(wd / CKPT) == [7, 17]  # epoch 2 unsaved, the stop saved
  copy = tmp_path / "copy"
  shutil.copytree(wd, copy)
  assert _search(copy) == 0
  _same_result(ref, copy)
