"""Gumbel-softmax search (GDAS, SNAS) and the supernet's single-path mode."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas.spaces.darts import PRIMITIVES, DartsSpace
from jnas.strategies.darts import arch_optimizer, weight_optimizer
from jnas.strategies.gumbel import (exponential_tau, fbnet_loss, gdas, gumbel_softmax,
                                    linear_tau, sample_encoding, snas)
from jnas.supernet import DartsSupernet, make_apply, split_model


# One op of each kind (max pooling included): compiles much faster than all eight.
FIVE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny(ndim=1, layers=3, primitives=PRIMITIVES):
  space = DartsSpace(num_nodes=2, primitives=primitives)
  c_in = 1 if ndim == 1 else 3
  net = DartsSupernet(space, c_in, 10, ndim=ndim, channels=4, layers=layers, rngs=nnx.Rngs(0))
  return space, split_model(net)


def test_gumbel_softmax_hard_is_one_hot_with_soft_gradient():
  logits = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
  key = jax.random.key(0)
  hard = gumbel_softmax(key, logits, 0.5, hard=True)
  soft = gumbel_softmax(key, logits, 0.5, hard=False)
  np.testing.assert_allclose(hard.sum(-1), 1.0, rtol=1e-6)
  assert set(np.unique(np.round(np.asarray(hard), 5))) <= {0.0, 1.0}
  np.testing.assert_array_equal(jnp.argmax(hard, -1), jnp.argmax(soft, -1))
  # Straight-through: the hard sample's gradient is the soft sample's.
  w = jnp.array([1.0, -2.0, 0.5])
  g_hard = jax.grad(lambda l: jnp.sum(gumbel_softmax(key, l, 0.5, hard=True) * w))(logits)
  g_soft = jax.grad(lambda l: jnp.sum(gumbel_softmax(key, l, 0.5, hard=False) * w))(logits)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)


def test_gumbel_samples_follow_the_softmax():
  logits = jnp.log(jnp.array([0.6, 0.3, 0.1]))
  keys = jax.random.split(jax.random.key(1), 4000)
  picks = jax.vmap(lambda k: jnp.argmax(gumbel_softmax(k, logits, 1.0, hard=True)))(keys)
  freq = np.bincount(np.asarray(picks), minlength=3) / 4000
  np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.03)


def test_schedules():
  lin = linear_tau(10.0, 0.1, 100)
  assert float(lin(jnp.array(0))) == pytest.approx(10.0, rel=1e-5)
  assert float(lin(jnp.array(50))) == pytest.approx(5.05, rel=1e-5)
  assert float(lin(jnp.array(1000))) == pytest.approx(0.1, rel=1e-5)
  exp = exponential_tau(5.0, 0.956, steps_per_epoch=10)
  assert float(exp(jnp.array(9))) == pytest.approx(5.0, rel=1e-5)
  assert float(exp(jnp.array(10))) == pytest.approx(5.0 * 0.956, rel=1e-5)
  assert float(fbnet_loss(jnp.float32(1.0), jnp.float32(100.0))) == pytest.approx(
      0.2 * np.log(100.0) ** 0.6, rel=1e-5)


@pytest.mark.parametrize("ndim, primitives", [
    # Chained max pools make exact ties, where the gradient convention matters.
    (1, FIVE),
    pytest.param(1, PRIMITIVES, marks=pytest.mark.slow),
    pytest.param(2, PRIMITIVES, marks=pytest.mark.slow),
])
def test_single_path_equals_full_mixed_op_for_one_hot_encodings(ndim, primitives):
  space, s = tiny(ndim=ndim, primitives=primitives)
  full = jax.jit(make_apply(s.graphdef), static_argnums=4)
  single = jax.jit(make_apply(s.graphdef, single_path=True), static_argnums=4)
  x = jax.random.normal(jax.random.key(0), (3, 12, 1) if ndim == 1 else (3, 8, 8, 3))
  y = jnp.array([1, 2, 3])
  rng = np.random.default_rng(0)
  for _ in range(1):  # each sample recompiles (fresh lambdas); one keeps the suite short
    enc = {k: jnp.asarray(v) for k, v in space.sample_encoding(rng).items()}
    a, _ = full(s.params, s.state, enc, x, False)
    b, _ = single(s.params, s.state, enc, x, False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    def loss(apply, p, e):
      logits, _ = apply(p, s.state, e, x, True)
      return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y])

    ga = jax.jit(jax.grad(lambda p, e: loss(make_apply(s.graphdef), p, e), argnums=(0, 1)))(
        s.params, enc)
    gb = jax.jit(jax.grad(lambda p, e: loss(make_apply(s.graphdef, single_path=True), p, e),
                          argnums=(0, 1)))(s.params, enc)
    chex.assert_trees_all_close(ga[0], gb[0], rtol=2e-3, atol=1e-5)
    # The encoding's gradient reaches the chosen entries (as in GDAS).
    for k in enc:
      chosen = np.asarray(enc[k]) > 0
      np.testing.assert_allclose(np.asarray(ga[1][k])[chosen], np.asarray(gb[1][k])[chosen],
                                 rtol=2e-3, atol=1e-5)
    # The architecture step's form: no weight gradient asked for, so the
    # single path's backward skips it; the encoding's gradient is unchanged.
    ge = jax.jit(jax.grad(lambda e: loss(make_apply(s.graphdef, single_path=True), s.params, e)))(
        enc)
    chex.assert_trees_all_close(ge, gb[1], rtol=1e-5, atol=1e-7)


def test_single_path_updates_only_the_chosen_ops_statistics():
  space, s = tiny(layers=1)
  single = jax.jit(make_apply(s.graphdef, single_path=True), static_argnums=4)
  full = jax.jit(make_apply(s.graphdef), static_argnums=4)
  enc = {k: jnp.asarray(v) for k, v in space.sample_encoding(np.random.default_rng(1)).items()}
  x = jax.random.normal(jax.random.key(0), (4, 12, 1))
  _, st_single = single(s.params, s.state, enc, x, True)
  _, st_full = full(s.params, s.state, enc, x, True)
  n_changed = lambda st: sum(int(jnp.sum(jnp.any(a != b, axis=-1)))
                             for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(s.state))
                             if a.ndim == 2)
  assert 0 < n_changed(st_single) < n_changed(st_full)
  # The unrolled form (separate edges, for scoring) computes the same, statistics included.
  unrolled = jax.jit(make_apply(s.graphdef, single_path=True, unroll=True), static_argnums=4)
  for train in (True, False):
    a, st_a = single(s.params, s.state, enc, x, train)
    b, st_b = unrolled(s.params, s.state, enc, x, train)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(st_a, st_b, rtol=1e-5, atol=1e-6)


def _strategy(kind, apply_kw):
  space, s = tiny(primitives=FIVE)
  apply = make_apply(s.graphdef, **apply_kw)
  alpha = space.init_alpha(jax.random.key(0))
  kw = dict(w_opt=weight_optimizer(total_steps=10), a_opt=arch_optimizer(lr=0.01))
  if kind == "gdas":
    return space, gdas(apply, s.params, s.state, alpha, total_steps=10, **kw)
  return space, snas(apply, s.params, s.state, alpha, steps_per_epoch=5, **kw)


@pytest.mark.parametrize("kind, apply_kw", [("gdas", {"single_path": True}), ("snas", {})])
def test_gumbel_strategies_step_and_reproduce(kind, apply_kw):
  space, strat = _strategy(kind, apply_kw)
  x = jax.random.normal(jax.random.key(1), (8, 12, 1))
  y = jnp.arange(8) % 10
  step = jax.jit(strat.step)

  def run(seed):
    state = strat.init(jax.random.key(seed))
    for _ in range(2):
      state, m = step(state, (x, y), (x[::-1], y[::-1]))
    return state, m

  s1, m = run(0)
  s1b, _ = run(0)
  s2, _ = run(1)
  assert np.isfinite(float(m["train_loss"])) and float(m["tau"]) > 0
  chex.assert_trees_all_equal(s1.alpha, s1b.alpha)
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), s1.alpha, s2.alpha)))
  init_alpha = strat.init(jax.random.key(0)).alpha
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), s1.alpha,
                                          init_alpha)))
  space.encoding_to_genotype(jax.device_get(strat.encoding(s1)))


def test_sample_encoding_is_per_leaf_and_keyed():
  alpha = {"normal": jnp.zeros((5, 4)), "reduce": jnp.zeros((5, 4))}
  a = sample_encoding(jax.random.key(0), alpha, 1.0, hard=True)
  b = sample_encoding(jax.random.key(0), alpha, 1.0, hard=True)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a["normal"], a["reduce"])
