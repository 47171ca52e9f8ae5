"""Predictor, PNAS and DPP-Net on synthetic NAS-Bench-201 problems."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jnas.estimation.pareto import plot_pareto, save_pareto_json
from jnas.estimation.predictor import encode_decisions, fit_predictor, kendall_tau, predict
from jnas.spaces.darts import DartsSpace
from jnas.spaces.nb201 import NB201Space
from jnas.strategies.progressive import default_fill, dpp_net, measured_front, pnas

SPACE = NB201Space()
W = np.random.default_rng(0).normal(size=(6, 5))


def score(x):
  return W[np.arange(6), np.asarray(x)].sum(-1)


def latency(x):
  x = np.asarray(x)
  return 1.0 + (x == 2).sum(-1) * 1.0 + (x == 3).sum(-1) * 3.0  # conv 1x1, conv 3x3


def test_predictor_ranks_better_than_chance_and_takes_partials():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 5, (300, 6))
  y = score(x) + 0.1 * rng.normal(size=300)
  params = fit_predictor(jax.random.key(0), SPACE.index_sizes(), x[:64], y[:64])
  mean, std = predict(params, SPACE.index_sizes(), x[64:])
  tau = kendall_tau(mean, y[64:])
  assert tau > 0.3, tau  # chance is 0
  assert (std >= 0).all()
  partial = x[64:70].copy()
  partial[:, 3:] = -1
  m, _ = predict(params, SPACE.index_sizes(), partial)
  assert m.shape == (6,) and np.isfinite(m).all()
  assert encode_decisions((5, 3), [[-1, 2]]).shape == (1, 12)


def test_kendall_tau_matches_scipy():
  from scipy.stats import kendalltau
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=40), rng.normal(size=40)
  b[:5] = a[:5]
  assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b)[0])


def _drive(strategy, n, with_cost=False, key=0, state=None):
  state = strategy.init(jax.random.key(key)) if state is None else state
  seen = []
  while len(seen) < n:
    state, arch = strategy.ask(state)
    assert len(arch) > 0
    s = score(arch)
    told = np.stack([s, latency(arch)], 1) if with_cost else s
    state = strategy.tell(state, arch, told)
    seen += [tuple(a) for a in np.asarray(arch)]
  return state, seen


def test_pnas_grows_edge_by_edge_and_never_measures_twice():
  strategy = pnas(SPACE, beam_size=4, predictor_members=3, predictor_steps=100)
  state = strategy.init(jax.random.key(0))
  state, first = strategy.ask(state)
  # Level 0 sets edge 0 only; every other edge takes the fill (skip_connect).
  assert (first[:, 1:] == default_fill(SPACE)[1:]).all() and len(first) == 4
  state = strategy.tell(state, first, score(first))
  state, seen = _drive(strategy, 40, state=state)
  seen = [tuple(a) for a in first] + seen
  assert len(set(seen)) == len(seen)
  best = max(score(np.asarray(seen)))
  rng = np.random.default_rng(0)
  random_best = [score(rng.integers(0, 5, (len(seen), 6))).max() for _ in range(20)]
  assert best > np.median(random_best)


def test_pnas_on_darts_keeps_inputs_distinct():
  space = DartsSpace(num_nodes=2)
  strategy = pnas(space, beam_size=3, predictor_members=2, predictor_steps=50)
  state = strategy.init(jax.random.key(0))
  for _ in range(3):
    state, arch = strategy.ask(state)
    for row in arch:
      space.decode_indices(row)  # raises on a repeated input
    # A PNAS level is one node: 4 decisions (two ops, two inputs).
    state = strategy.tell(state, arch, np.arange(len(arch), dtype=float))
  assert int(state.level) == 3


def test_dpp_front_is_non_dominated_and_saved(tmp_path):
  strategy = dpp_net(SPACE, latency, beam_size=5, predictor_members=3, predictor_steps=100)
  state, _ = _drive(strategy, 30, with_cost=True)
  front = measured_front(state)
  acc, lat, mask = front["score"], front["cost"][:, 0], front["mask"]
  assert mask.any()
  for i in np.flatnonzero(mask):
    dominated = (acc >= acc[i]) & (lat <= lat[i]) & ((acc > acc[i]) | (lat < lat[i]))
    assert not dominated.any()
  for i in np.flatnonzero(~mask):
    dom = (acc[mask] >= acc[i]) & (lat[mask] <= lat[i])
    assert dom.any()
  # The front spans the latency range: DPP keeps cheap candidates too.
  assert lat[mask].min() <= 2.0
  points = [{"arch": SPACE.format(SPACE.decode_indices(x)), "accuracy": float(a),
             "latency": float(c[0])} for x, a, c in zip(front["x"], acc, front["cost"])]
  on = [p for p, m in zip(points, mask) if m]
  objectives = [("accuracy", "max"), ("latency", "min")]
  save_pareto_json(str(tmp_path / "pareto.json"), on, objectives)
  plot_pareto(str(tmp_path / "pareto.png"), points, on, objectives)
  assert len(json.loads((tmp_path / "pareto.json").read_text())["front"]) == mask.sum()
  assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="cost_fn"):
    dpp_net(SPACE, None)
  with pytest.raises(ValueError, match="beam_size"):
    pnas(SPACE, beam_size=0)
  with pytest.raises(ValueError, match="fill"):
    pnas(SPACE, fill=[9] * 6)
  with pytest.raises(ValueError, match="at least one measured"):
    fit_predictor(jax.random.key(0), (5,), np.zeros((0, 1)), np.zeros(0))
