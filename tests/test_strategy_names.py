"""Every strategy name `jnas search` accepts reaches its search family, from a config alone."""

from __future__ import annotations

import json

import pytest

from jnas.config import apply_overrides, load_config
from jnas.search import loop
from jnas.validate import validate_config

DARTS = "experiments/darts_mnist1d.py"
FAMILY = {  # strategy (and estimator) -> the plan of jnas.search.loop.PLANS that runs it
    ("darts", ""): "gradient", ("darts2", ""): "gradient",
    ("gdas", ""): "gradient", ("snas", ""): "gradient",
    ("spos", ""): "spos", ("rea", "supernet"): "spos",
    ("reinforce", "supernet"): "spos", ("rea", "scratch"): "ask_tell",
    ("random", "scratch"): "ask_tell", ("nsga2", "scratch"): "ask_tell",
    ("topk", "scratch"): "ask_tell", ("pnas", "scratch"): "ask_tell",
}


class _Reached(Exception):
  pass


@pytest.mark.parametrize("strategy, estimator", sorted(FAMILY))
def test_each_strategy_name_validates_and_reaches_its_family(tmp_path, monkeypatch, strategy,
                                                             estimator):
  overrides = [f"search.strategy={strategy}"] + ([f"search.estimator={estimator}",
                                                  "search.evals=4"] if estimator else [])
  cfg = apply_overrides(load_config(DARTS), overrides)
  validate_config(cfg, "search")
  reached = []

  def plan_of(name):
    def make(c, wd):
      reached.append((name, c))
      raise _Reached
    return make

  monkeypatch.setattr(loop, "PLANS", {name: plan_of(name) for name in loop.PLANS})
  with pytest.raises(_Reached):
    loop.search(cfg, str(tmp_path / "run"))
  (name, ran), = reached
  assert name == FAMILY[(strategy, estimator)]
  recorded = json.loads((tmp_path / "run" / "config.json").read_text())["search"]
  if strategy == "darts2":  # second order by name: what ran and what config.json says
    assert (ran.search.strategy, ran.search.order) == ("darts", 2)
    assert (recorded["strategy"], recorded["order"]) == ("darts", 2)
  else:
    assert ran.search.strategy == recorded["strategy"] == strategy
