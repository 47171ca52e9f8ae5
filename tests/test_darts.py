"""DARTS strategy: alternating updates, separate optimizers, exact second order."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jnas.ops.primitives import forward_mode_compatible
from jnas.spaces.darts import PRIMITIVES, DartsSpace
from jnas.strategies.darts import arch_optimizer, darts, grad_and_mixed_hvp, mixed_hvp
from jnas.strategies.darts import weight_optimizer
from jnas.supernet import DartsSupernet, make_apply, split_model


def setup(order=1, layers=1, primitives=None):
  space = DartsSpace(num_nodes=2) if primitives is None else DartsSpace(num_nodes=2,
                                                                         primitives=primitives)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=layers, rngs=nnx.Rngs(0))
  s = split_model(net)
  apply = make_apply(s.graphdef)
  alpha = space.init_alpha(jax.random.key(0))
  strat = darts(apply, s.params, s.state, alpha, w_opt=weight_optimizer(total_steps=10),
                a_opt=arch_optimizer(lr=0.01), order=order)
  x = jax.random.normal(jax.random.key(1), (8, 12, 1))
  y = jnp.arange(8) % 10
  return space, strat, apply, (x, y), (x[::-1], y[::-1])


def changed(a, b):
  return any(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.any(u != v)), a, b)))


def test_first_order_step_updates_both_pytrees_and_compiles_once():
  space, strat, _, bt, bv = setup()
  state0 = strat.init(jax.random.key(0))

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def step(state, bt, bv):
    return strat.step(state, bt, bv)

  jstep = jax.jit(step)
  state1, m = jstep(state0, bt, bv)
  state2, _ = jstep(state1, bt, bv)
  assert changed(state0.alpha, state1.alpha) and changed(state0.params, state1.params)
  assert int(state2.step) == 2
  assert set(m) >= {"train_loss", "train_acc", "val_loss"}
  # alpha is not inside the weight pytree: the weight optimizer cannot touch it.
  assert not any("alpha" in str(p) for p, _ in jax.tree_util.tree_leaves_with_path(state0.params))
  space.encoding_to_genotype(jax.device_get(strat.encoding(state2)))


def test_mixed_hvp_matches_finite_differences():
  # Float64, so that central differences with a small step are accurate.
  jax.config.update("jax_enable_x64", True)
  try:
    # One reduction cell: see the issue note on deeper networks.
    # One op of each kind keeps the float64 compilation short.
    _, strat, apply, bt, _ = setup(layers=1, primitives=("none", "avg_pool_3x3", "skip_connect",
                                                          "sep_conv_3x3"))
    state = strat.init(jax.random.key(0))
    f64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64), t)
    p, a, stats = f64(state.params), f64(state.alpha), f64(state.batch_stats)
    x = bt[0].astype(jnp.float64)

    def loss(p, a):
      logits, _ = apply(p, stats, jax.tree.map(jax.nn.softmax, a), x, True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, bt[1]).mean()

    v = jax.tree.map(lambda t: jax.random.normal(jax.random.key(3), t.shape, jnp.float64), p)
    # Jitted: eager autodiff of the supernet compiles op by op and takes minutes.
    exact = jax.jit(lambda p, v: mixed_hvp(loss, p, a, v))(p, v)
    # DARTS's finite-difference approximation, done out of place.
    eps = 1e-5
    ga = jax.jit(lambda q: jax.grad(loss, argnums=1)(q, a))
    # Plain autodiff throughout: the custom VJPs accumulate some reductions in
    # float32, whose rounding the 1/(2 eps) of central differences amplifies.
    with forward_mode_compatible():
      plus = ga(jax.tree.map(lambda w, d: w + eps * d, p, v))
      minus = ga(jax.tree.map(lambda w, d: w - eps * d, p, v))
    for k in ("reduce",):  # a one-cell network has no normal cell
      approx = (plus[k] - minus[k]) / (2 * eps)
      assert float(jnp.max(jnp.abs(exact[k]))) > 1e-3, f"{k}: trivial Hessian product"
      np.testing.assert_allclose(exact[k], approx, atol=2e-3 * float(jnp.max(jnp.abs(approx))))
  finally:
    jax.config.update("jax_enable_x64", False)


def tiny_loss(num_nodes, channels, layers, batch, length, recompute=False):
  """A small DARTS supernet's cross-entropy ``loss(params, alpha)``, its weights and alpha."""
  space = DartsSpace(num_nodes=num_nodes)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=channels, layers=layers,
                      recompute=recompute, rngs=nnx.Rngs(0))
  s = split_model(net)
  apply = make_apply(s.graphdef)
  a = space.init_alpha(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (batch, length, 1))
  y = jnp.arange(batch) % 10

  def loss(p, a):
    logits, _ = apply(p, s.state, jax.tree.map(jax.nn.softmax, a), x, True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  v = jax.tree.map(lambda t: jax.random.normal(jax.random.key(3), t.shape), s.params)
  return loss, s.params, a, v


def test_grad_and_mixed_hvp_match_jax_hessian():
  # The default (reverse over reverse, native kernels, float32) against jax.hessian's mixed
  # block in plain autodiff, on a one-cell, one-node supernet with every DARTS op.
  loss, params, a, v = tiny_loss(num_nodes=1, channels=2, layers=1, batch=6, length=8)
  g, hvp = jax.jit(lambda p, a, v: (lambda gh: (gh[0], gh[1](v)))(
      grad_and_mixed_hvp(loss, p, a)))(params, a, v)
  # jax.hessian's mixed block alone (jax.hessian is jacfwd of jacrev): mixed[k] is a tree like
  # the weights whose leaves are d2 loss / d alpha[k] d w, shaped alpha[k].shape + w.shape.
  with forward_mode_compatible():
    mixed = jax.jit(jax.jacfwd(jax.jacrev(loss, argnums=1), argnums=0))(params, a)
  want = {k: sum(jnp.tensordot(block, vw, axes=vw.ndim) for block, vw in
                 zip(jax.tree.leaves(mixed[k]), jax.tree.leaves(v)))
          for k in a}
  assert set(hvp) == set(a)
  scale = float(jnp.max(jnp.abs(want["reduce"])))
  assert scale > 1e-3  # a one-cell network has no normal cell: that block is zero
  for k in a:
    np.testing.assert_allclose(hvp[k], want[k], atol=1e-4 * scale)
  chex.assert_trees_all_close(g, jax.grad(loss)(params, a), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="hvp_mode must be"):
    darts(None, {}, {}, {}, w_opt=optax.sgd(0.1), a_opt=optax.sgd(0.1), hvp_mode="fd")


@pytest.mark.slow
def test_mixed_hvp_reverse_over_reverse_matches_forward_over_reverse():
  # Float32 on the native kernels (reverse over reverse) against plain autodiff (forward over
  # reverse), on a network with every DARTS op, a normal and a reduction cell.
  loss, params, a, v = tiny_loss(num_nodes=2, channels=4, layers=3, batch=8, length=12)
  hvp = lambda mode: jax.jit(lambda p, a, v: mixed_hvp(loss, p, a, v, mode=mode))(params, a, v)
  fr, rr = hvp("forward_over_reverse"), hvp("reverse_over_reverse")
  rf = hvp("reverse_over_forward")
  for k in ("normal", "reduce"):
    scale = float(jnp.max(jnp.abs(fr[k])))
    assert scale > 1e-3
    np.testing.assert_allclose(rr[k], fr[k], atol=1e-3 * scale)
    np.testing.assert_allclose(rf[k], fr[k], atol=1e-3 * scale)
  with pytest.raises(ValueError, match="mode must be"):
    mixed_hvp(loss, params, a, v, mode="finite_differences")


@pytest.mark.parametrize("size", [
    (1, 2, 1, 6, 8),  # one reduction cell, one node: fast
    pytest.param((2, 4, 3, 8, 12), marks=pytest.mark.slow),  # normal and reduction cells
])
def test_recomputed_cells_give_the_same_gradient_and_hvp(size):
  # DartsSupernet(recompute=True) rebuilds each cell in both backward passes: same numbers.
  def run(recompute):
    loss, params, a, v = tiny_loss(*size, recompute=recompute)
    return jax.jit(lambda p, a, v: (lambda gh: (gh[0], gh[1](v)))(
        grad_and_mixed_hvp(loss, p, a)))(params, a, v)
  (g0, h0), (g1, h1) = run(False), run(True)
  chex.assert_trees_all_close(g1, g0, rtol=1e-5, atol=1e-6)
  for k in (("normal", "reduce") if size[2] > 1 else ("reduce",)):
    scale = float(jnp.max(jnp.abs(h0[k])))
    assert scale > 1e-3
    np.testing.assert_allclose(h1[k], h0[k], atol=1e-4 * scale)


def test_second_order_step_differs_from_first_order():
  _, s1, _, bt, bv = setup(order=1)
  _, s2, _, _, _ = setup(order=2)
  a1 = jax.jit(s1.step)(s1.init(jax.random.key(0)), bt, bv)[0].alpha
  st2, m2 = jax.jit(s2.step)(s2.init(jax.random.key(0)), bt, bv)
  assert np.isfinite(float(m2["val_loss"]))
  assert changed(a1, st2.alpha)


def test_bad_order():

  with pytest.raises(ValueError, match="order must be 1 or 2"):
    darts(None, {}, {}, {}, w_opt=optax.sgd(0.1), a_opt=optax.sgd(0.1), order=3)


@pytest.mark.slow
@pytest.mark.parametrize("with_max_pool", [False, True])
def test_mixed_hvp_on_normal_and_reduction_cells(with_max_pool):
  # Three cells (normal, reduce, reduce). The exact product must equal
  # reverse-over-reverse everywhere. Central differences are only a valid
  # reference where the gradient is continuous: with max pooling they jump
  # at argmax switches (measured: off by 1e3-1e4x at eps=1e-6), so that
  # comparison runs on the space without it (agreement ~0.5% at eps=1e-6).
  jax.config.update("jax_enable_x64", True)
  try:
    prims = tuple(p for p in PRIMITIVES if with_max_pool or p != "max_pool_3x3")
    space = DartsSpace(num_nodes=2, primitives=prims)
    net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=3, rngs=nnx.Rngs(0))
    s = split_model(net)
    apply = make_apply(s.graphdef)
    f64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64), t)
    p, stats = f64(s.params), f64(s.state)
    a = f64(space.init_alpha(jax.random.key(0)))
    x = jax.random.normal(jax.random.key(1), (8, 12, 1), jnp.float64)
    y = jnp.arange(8) % 10

    def loss(p, a):
      logits, _ = apply(p, stats, jax.tree.map(jax.nn.softmax, a), x, True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    v = jax.tree.map(lambda t: jax.random.normal(jax.random.key(3), t.shape, jnp.float64), p)
    exact = jax.jit(lambda p, a, v: mixed_hvp(loss, p, a, v))(p, a, v)
    rr = jax.jit(jax.grad(lambda a_: optax.tree_utils.tree_vdot(jax.grad(loss)(p, a_), v)))(a)
    for k in ("normal", "reduce"):
      scale = float(jnp.max(jnp.abs(exact[k])))
      assert scale > 1e-3
      np.testing.assert_allclose(exact[k], rr[k], atol=1e-6 * scale)
    if not with_max_pool:
      ga = jax.jit(lambda q: jax.grad(loss, argnums=1)(q, a))
      eps = 1e-6
      with forward_mode_compatible():  # float64 throughout (see the test above)
        plus = ga(jax.tree.map(lambda w, d: w + eps * d, p, v))
        minus = ga(jax.tree.map(lambda w, d: w - eps * d, p, v))
      for k in ("normal", "reduce"):
        scale = float(jnp.max(jnp.abs(exact[k])))
        np.testing.assert_allclose(exact[k], (plus[k] - minus[k]) / (2 * eps), atol=2e-2 * scale)
  finally:
    jax.config.update("jax_enable_x64", False)
