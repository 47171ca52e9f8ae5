"""The DARTS supernet and the shared evaluator."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas.ops import primitives as P
from jnas.spaces.darts import DartsSpace
from jnas.supernet import DartsSupernet, make_apply, make_evaluator, split_model


def tiny(ndim=1, num_nodes=2, channels=4, layers=2, in_channels=1):
  space = DartsSpace(num_nodes=num_nodes)
  net = DartsSupernet(space, in_channels, 10, ndim=ndim, channels=channels, layers=layers,
                      rngs=nnx.Rngs(0))
  return space, split_model(net)


@pytest.mark.parametrize("ndim, shape", [(1, (3, 40, 1)), (2, (3, 8, 8, 3))])
def test_forward_shapes_and_state_update(ndim, shape):
  space, s = tiny(ndim=ndim, in_channels=shape[-1])
  apply = make_apply(s.graphdef)
  enc = {k: jnp.full(v, 1.0 / v[1]) for k, v in space.encoding_shape().items()}
  x = jax.random.normal(jax.random.key(0), shape)
  logits, new_state = jax.jit(apply, static_argnums=4)(s.params, s.state, enc, x, True)
  assert logits.shape == (3, 10)
  assert np.all(np.isfinite(logits))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), s.state, new_state)
  assert any(jax.tree.leaves(changed)), "training-mode forward must update BN statistics"


def test_depthwise_impls_agree():
  x = jax.random.normal(jax.random.key(0), (2, 3, 9, 7, 4))
  for kernel, dil, stride in [(3, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 2)]:
    w = jax.random.normal(jax.random.key(1), (2, kernel * kernel, 4))
    a = P.depthwise_conv(x, w, kernel=kernel, dilation=dil, stride=stride, impl="taps")
    b = P.depthwise_conv(x, w, kernel=kernel, dilation=dil, stride=stride, impl="xla")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_max_pool_custom_gradient_matches_autodiff():
  x = jax.random.normal(jax.random.key(0), (2, 3, 7, 6, 4))
  for stride in (1, 2):
    f = lambda x: jnp.sum(jnp.sin(P.pool(x, "max", stride=stride)))
    g = lambda x: jnp.sum(jnp.sin(P._max_pool_autodiff(x, 3, stride)))
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x), atol=1e-6)
    # Average pooling's backward pass (the depthwise one) against plain autodiff.
    f = lambda x: jnp.sum(jnp.sin(P.pool(x, "avg", stride=stride)))
    with P.forward_mode_compatible():
      plain = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(P.pool(x, "avg", stride=stride)))))(x)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), plain, atol=1e-6)


def test_max_pool_routes_tied_gradients_to_one_input():
  """Chained max pools create exact ties; each window's gradient must reach exactly one input."""
  x = jax.random.normal(jax.random.key(0), (1, 2, 9, 3))
  x = P.pool(x, "max")  # now full of ties
  ones = jnp.ones_like(x)
  _, vjp_custom = jax.vjp(lambda x: P.pool(x, "max"), x)
  _, vjp_plain = jax.vjp(lambda x: P._max_pool_autodiff(x, 3, 1), x)
  (dx_custom,), (dx_plain,) = vjp_custom(ones), vjp_plain(ones)
  # Gradient mass is conserved (one unit per output), not duplicated or split.
  assert float(jnp.sum(dx_custom)) == ones.size
  np.testing.assert_array_equal(dx_custom, dx_plain)
  # The reduction-cell (stride 2) pool uses the same convention.
  _, vjp_s2 = jax.vjp(lambda x: P.pool(x, "max", stride=2), x)
  (dx_s2,) = vjp_s2(jnp.ones((1, 2, 5, 3)))
  assert float(jnp.sum(dx_s2)) == 1 * 2 * 5 * 3


def test_hand_written_backward_passes_match_autodiff():
  """Every custom VJP (depthwise taps, BN, pools, the mixing sum) against plain autodiff."""
  space, s = tiny(ndim=2, in_channels=3)
  apply = make_apply(s.graphdef)
  enc = space.init_alpha(jax.random.key(1), scale=1.0)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
  y = jnp.array([1, 2, 3])

  def loss(params, enc):
    w = {k: jax.nn.softmax(v, -1) for k, v in enc.items()}
    logits, _ = apply(params, s.state, w, x, True)
    return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), y])

  custom = jax.jit(jax.grad(loss, argnums=(0, 1)))(s.params, enc)
  with P.forward_mode_compatible():
    # A fresh function object, so jit traces again inside the context.
    plain = jax.jit(jax.grad(lambda p, e: loss(p, e), argnums=(0, 1)))(s.params, enc)
  chex.assert_trees_all_close(custom, plain, rtol=2e-3, atol=2e-5)


def test_sum_many_and_mix():
  a, b = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  s1, s2 = P.sum_many([a, a * b], (1, 2))
  np.testing.assert_allclose(s1, a.sum((1, 2)), rtol=1e-5)
  np.testing.assert_allclose(s2, (a * b).sum((1, 2)), rtol=1e-5, atol=1e-6)
  w = jax.random.normal(jax.random.key(1), (3, 2))
  f = lambda ys, w: jnp.sum(jnp.sin(P.mix(ys, w)))
  g = lambda ys, w: jnp.sum(jnp.sin(P._mix_fwd_only(ys, w)))
  np.testing.assert_allclose(f((a, b), w), g((a, b), w), rtol=1e-6)
  chex.assert_trees_all_close(jax.grad(f, argnums=(0, 1))((a, b), w),
                              jax.grad(g, argnums=(0, 1))((a, b), w), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="mixing weights"):
    P.mix((a, b), w[:, :1])


def test_vmapped_evaluator_compiles_once_and_matches_one_by_one():
  space, s = tiny()
  evaluate = make_evaluator(make_apply(s.graphdef))
  rng = np.random.default_rng(0)
  encs = space.sample_encodings(rng, 64)
  assert len({tuple(e.ravel()) for e in encs["normal"]}) > 1  # really different architectures
  x = jax.random.normal(jax.random.key(0), (8, 40, 1))
  y = jnp.arange(8) % 10
  # Evaluating new architectures must not retrace: a second trace fails the test.
  many = jax.jit(jax.vmap(chex.assert_max_traces(evaluate, n=1), in_axes=(None, None, 0, None)))
  out = many(s.params, s.state, encs, (x, y))
  out2 = many(s.params, s.state, space.sample_encodings(rng, 64), (x, y))
  assert out["loss"].shape == (64,) and out2["loss"].shape == (64,)
  one = jax.jit(evaluate)
  for i in range(0, 64, 9):
    single = one(s.params, s.state, {k: v[i] for k, v in encs.items()}, (x, y))
    np.testing.assert_allclose(single["loss"], out["loss"][i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single["accuracy"], out["accuracy"][i])


def test_zero_encoding_rows_drop_edges():
  # A one-hot encoding of a derived cell computes exactly that cell: rows of
  # zeros contribute nothing, so changing an unused edge's weights does nothing.
  space, s = tiny()  # two cells, both reduction cells
  apply = jax.jit(make_apply(s.graphdef), static_argnums=4)
  g = space.random_genotype(np.random.default_rng(1))
  enc = space.genotype_to_encoding(g)
  x = jax.random.normal(jax.random.key(0), (4, 40, 1))
  base, _ = apply(s.params, s.state, enc, x, False)
  unused = np.where(enc["reduce"].sum(1) == 0)[0]
  assert len(unused) > 0
  enc2 = {k: v.copy() for k, v in enc.items()}
  enc2["reduce"][unused[0]] = 0.0
  again, _ = apply(s.params, s.state, enc2, x, False)
  np.testing.assert_allclose(base, again, rtol=1e-6)
  # The same edge with a nonzero row does change the output: the edge is wired in.
  enc2["reduce"][unused[0], 1] = 1.0
  moved, _ = apply(s.params, s.state, enc2, x, False)
  assert float(jnp.max(jnp.abs(moved - base))) > 1e-6


def test_bad_primitive_in_supernet():
  with pytest.raises(ValueError, match="unknown op"):
    DartsSpace(primitives=("none", "conv_9x9"))
