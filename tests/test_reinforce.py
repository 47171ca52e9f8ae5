"""The REINFORCE controller: it learns, respects the space's rules, and its reward is MnasNet's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.spaces.darts import DartsSpace
from jnas.strategies.reinforce import (controller_policy, distinct_pairs, mnasnet_reward,
                                       reinforce)

SIZES = (5, 5, 5, 5, 5, 3)


def _reward_table():
  w = np.random.default_rng(0).normal(size=(len(SIZES), max(SIZES))).astype(np.float32)
  for t, s in enumerate(SIZES):
    w[t, s:] = -100.0  # never valid
  return jnp.asarray(w)


@pytest.fixture(scope="module")
def jitted():
  # One strategy (and one compilation) shared by the tests of this module.
  s = reinforce(SIZES, batch_size=4, learning_rate=0.03)
  return jax.jit(s.init), jax.jit(s.ask), jax.jit(s.tell)


def test_controller_reward_rises_and_greedy_beats_random(jitted):
  w = _reward_table()
  score = jax.jit(lambda d: jnp.sum(w[jnp.arange(len(SIZES)), d], axis=-1))
  init, ask, tell = jitted
  state = init(jax.random.key(0))
  means = []
  for _ in range(60):
    state, d = ask(state)
    assert d.shape == (4, len(SIZES)) and d.dtype == jnp.int32
    assert bool(jnp.all(d < jnp.asarray(SIZES)))
    r = score(d)
    means.append(float(jnp.mean(r)))
    state = tell(state, d, r)
  first, last = np.mean(means[:10]), np.mean(means[-10:])
  optimum = float(sum(jnp.max(w[t, :n]) for t, n in enumerate(SIZES)))
  assert last > first + 1.0, (first, last)
  greedy = controller_policy(SIZES, state).greedy()
  rng = np.random.default_rng(1)
  random_scores = [float(score(jnp.asarray([rng.integers(0, n) for n in SIZES])))
                   for _ in range(50)]
  assert float(score(greedy)) > np.percentile(random_scores, 90)
  assert float(score(greedy)) <= optimum + 1e-5
  assert int(state.step) == 60 and bool(state.has_baseline)


def test_normalised_updates_do_not_depend_on_the_reward_scale():
  # Normalised advantages: accuracies near 0.9 that differ by hundredths move
  # the policy as far as the same rewards stretched to unit spread would.
  s = reinforce(SIZES, batch_size=4, learning_rate=0.03, normalize_advantage=True)
  init, ask, tell = jax.jit(s.init), jax.jit(s.ask), jax.jit(s.tell)
  raw = jnp.asarray([0.3, -1.2, 0.8, 0.1])
  states = []
  for scale, shift in ((1.0, 0.0), (0.01, 0.9)):
    state = init(jax.random.key(3))
    for k in range(3):
      state, d = ask(state)
      state = tell(state, d, shift + scale * jnp.roll(raw, k))
    states.append(state)
  flat = lambda st: jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(st.params)])
  start = flat(init(jax.random.key(3)))
  moved = float(jnp.linalg.norm(flat(states[0]) - start))
  # Adam magnifies float rounding in near-zero gradients, so compare in norm.
  assert float(jnp.linalg.norm(flat(states[0]) - flat(states[1]))) < 0.05 * moved
  assert moved > 0.1


def test_same_key_same_samples_and_no_retrace(jitted):
  init, ask, _ = jitted
  a = ask(init(jax.random.key(5)))[1]
  b = ask(init(jax.random.key(5)))[1]
  c = ask(init(jax.random.key(6)))[1]
  assert np.array_equal(a, b) and not np.array_equal(a, c)
  assert ask._cache_size() == 1


def test_darts_samples_are_valid_genotypes():
  space = DartsSpace(num_nodes=2)
  assert distinct_pairs(space) == ((3, 1), (7, 5), (11, 9), (15, 13))
  s = reinforce(space, batch_size=64)
  _, d = jax.jit(s.ask)(s.init(jax.random.key(0)))
  for row in np.asarray(d):
    space.decode_indices(row)  # raises if a node reads one input twice


def test_mnasnet_reward_matches_the_paper():
  # Soft constraint alpha = beta = -0.07 (Tan et al. 2019, section 3.1).
  assert float(mnasnet_reward(0.8, 1.0, 1.0)) == pytest.approx(0.8)
  assert float(mnasnet_reward(0.8, 2.0, 1.0)) == pytest.approx(0.8 * 2 ** -0.07)
  assert float(mnasnet_reward(0.8, 0.5, 1.0)) == pytest.approx(0.8 * 0.5 ** -0.07)
  # Hard constraint: alpha = 0, beta = -1.
  assert float(mnasnet_reward(0.8, 0.5, 1.0, alpha=0.0, beta=-1.0)) == pytest.approx(0.8)
  assert float(mnasnet_reward(0.8, 2.0, 1.0, alpha=0.0, beta=-1.0)) == pytest.approx(0.4)
  with pytest.raises(ValueError, match="target"):
    mnasnet_reward(0.8, 1.0, 0.0)


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="at least one step"):
    reinforce(())
  with pytest.raises(ValueError, match="batch_size"):
    reinforce(SIZES, batch_size=0)
  with pytest.raises(ValueError, match="baseline_decay"):
    reinforce(SIZES, baseline_decay=1.0)
