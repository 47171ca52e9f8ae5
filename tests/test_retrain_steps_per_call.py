"""retrain.steps_per_call: the retraining's steps as one compiled scan per call, resumed
bit-identically (a stop takes effect at an epoch's end, where the checkpoint is)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from jnas.cli import main
from jnas.search import retrain
from jnas.utils.metrics import read_metrics
from tiny_search import CONFIG

# 4000 MNIST-1D training examples in batches of 512: 7 steps per epoch.
TINY = ["--genotype", "DARTS_V2", "--config.retrain.epochs=3", "--config.retrain.channels=4",
        "--config.retrain.layers=1", "--config.retrain.batch_size=512"]


def _train(wd, per_call: str) -> int:
  return main(["train", "--config", CONFIG, "--workdir", str(wd), *TINY,
               f"--config.retrain.steps_per_call={per_call}"])


def _record(wd) -> tuple[list, float]:
  losses = [(r["step"], r["retrain_loss"], r["retrain_acc"]) for r in read_metrics(str(wd))
            if r.get("phase") == "retrain"]
  return losses, json.loads((wd / "report.json").read_text())["test_accuracy"]


def test_retrain_epoch_per_call_trains_and_resumes_bit_identical(tmp_path, monkeypatch):
  from jnas.search import common

  calls = []
  real = common.scanned_steps

  def counting(fn, **kw):
    scanned = real(fn, **kw)

    def run(carry, *batches):
      calls.append(batches[0].shape[0])
      return scanned(carry, *batches)
    return run

  monkeypatch.setattr(common, "scanned_steps", counting)
  whole = tmp_path / "whole"
  assert _train(whole, "0") == 0
  assert calls == [7, 7, 7]  # one call per epoch, of the epoch's 7 steps
  losses, acc = _record(whole)
  assert [s for s, *_ in losses] == [1, 2, 3] and 0.0 <= acc <= 1.0

  # SIGTERM during epoch 2: the epoch ends, is checkpointed, and the run stops (exit 130).
  real_end = retrain.RetrainPlan.end_unit

  def end_unit(self, carry, unit, means):
    if unit == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_end(self, carry, unit, means)

  wd = tmp_path / "run"
  with monkeypatch.context() as mp:
    mp.setattr(retrain.RetrainPlan, "end_unit", end_unit)
    assert _train(wd, "0") == 130
  assert [s for s, *_ in _record_partial(wd)] == [1, 2]
  assert _train(wd, "0") == 0
  assert _record(wd) == (losses, acc)  # the same floats, to the bit


def _record_partial(wd) -> list:
  return [(r["step"], r["retrain_loss"]) for r in read_metrics(str(wd))
          if r.get("phase") == "retrain"]


def test_bad_retrain_steps_per_call_is_refused(tmp_path, capsys):
  assert _train(tmp_path / "run", "-1") == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "retrain.steps_per_call=-1 must be an integer >= 0" in err, err


@pytest.mark.parametrize("value", ["1", "5"])
def test_retrain_steps_per_call_override_needs_no_config_key(value):
  from jnas.config import apply_overrides, load_config
  from tiny_search import ROOT

  base = load_config(str(ROOT / "experiments/fbnet_mnist1d.py"))
  assert "steps_per_call" not in base.retrain
  cfg = apply_overrides(base, [f"retrain.steps_per_call={value}"])
  assert cfg.retrain.steps_per_call == int(value)


def test_a_unit_run_as_one_call_gets_one_bar_over_the_units():
  """A scanned epoch's own step bar would jump from empty to full; the phase's bar counts
  epochs instead (search.steps_per_call=0), and step bars stay where calls are shorter."""
  from jnas.search.plan import Plan

  class Units(Plan):
    def total_units(self):
      return 5

  plan = Units()
  assert plan.bar_unit() is None  # one step per call: a step bar per epoch
  plan.multi_step, plan.steps_per_call = (lambda c, *b: (c, {})), 3
  assert plan.bar_unit() is None
  plan.steps_per_call = 0
  assert plan.bar_unit() == "epoch"
  plan.unit_bar = "round"
  assert plan.bar_unit() == "round"
