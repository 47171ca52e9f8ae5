"""Every strategy name `jnas search` accepts reaches its search family, from a config alone."""

from __future__ import annotations

import json

import pytest

from jnas.config import apply_overrides, load_config
from jnas.search import dispatch
from jnas.validate import validate_config

DARTS = "experiments/darts_mnist1d.py"
FAMILY = {  # strategy (and estimator) -> the function of jnas.search.dispatch that runs it
    ("darts", ""): "search_gradient", ("darts2", ""): "search_gradient",
    ("gdas", ""): "search_gradient", ("snas", ""): "search_gradient",
    ("spos", ""): "search_spos", ("rea", "supernet"): "search_spos",
    ("reinforce", "supernet"): "search_spos", ("rea", "scratch"): "search_ask_tell",
    ("random", "scratch"): "search_ask_tell", ("nsga2", "scratch"): "search_ask_tell",
    ("topk", "scratch"): "search_ask_tell", ("pnas", "scratch"): "search_ask_tell",
}


@pytest.mark.parametrize("strategy, estimator", sorted(FAMILY))
def test_each_strategy_name_validates_and_reaches_its_family(tmp_path, monkeypatch, strategy,
                                                             estimator):
  overrides = [f"search.strategy={strategy}"] + ([f"search.estimator={estimator}",
                                                  "search.evals=4"] if estimator else [])
  cfg = apply_overrides(load_config(DARTS), overrides)
  validate_config(cfg, "search")
  reached = []
  for name in set(FAMILY.values()):
    monkeypatch.setattr(dispatch, name,
                        lambda c, wd, chash, name=name: reached.append((name, c)) or {})
  dispatch.search(cfg, str(tmp_path / "run"))
  (name, ran), = reached
  assert name == FAMILY[(strategy, estimator)]
  recorded = json.loads((tmp_path / "run" / "config.json").read_text())["search"]
  if strategy == "darts2":  # second order by name: what ran and what config.json says
    assert (ran.search.strategy, ran.search.order) == ("darts", 2)
    assert (recorded["strategy"], recorded["order"]) == ("darts", 2)
  else:
    assert ran.search.strategy == recorded["strategy"] == strategy
