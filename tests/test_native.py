"""The native XLA:CPU depthwise kernels (jnas.ops.native) against the pure-JAX forms."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.ops import native
from jnas.ops import primitives as P

needs_native = pytest.mark.skipif(not native.available(),
                                  reason="native kernels unavailable (no C++ compiler?)")


def _loss(x, ws, impl, **kw):
  y = P.depthwise_multi(x, ws, impl=impl, **kw)
  return jnp.sum(jnp.sin(y)), y


@needs_native
@pytest.mark.parametrize("ndim, stride, shared, repeat", [
    (1, 1, True, 1), (2, 2, True, 1), (2, 1, False, 1), (1, 2, False, 1),
    (2, 1, True, 3), (2, 2, True, 2), (1, 1, True, 4)])
def test_multi_depthwise_matches_taps_with_gradients_and_vmap(ndim, stride, shared, repeat):
  # The DARTS mixed op's two uses: four kernels on one input (that `repeat` edges read, as a
  # cell input feeds several edges), or one kernel per input block.
  kernels, dilations = ((3, 5, 3, 5), (1, 1, 2, 2)) if shared else ((3, 5), (1, 1))
  e, k = 2 * repeat, len(kernels)
  key = jax.random.key(0)
  x = jax.random.normal(key, ((e // repeat if shared else k * e), 2) + (7,) * ndim + (8,))
  ws = [jax.random.normal(jax.random.fold_in(key, q), (e, kk**ndim, 8))
        for q, kk in enumerate(kernels)]
  kw = dict(kernels=kernels, dilations=dilations, stride=stride, shared=shared, relu=True,
            repeat=repeat)
  grad = lambda impl: jax.value_and_grad(  # noqa: E731
      lambda x, ws: _loss(x, ws, impl, **kw), argnums=(0, 1), has_aux=True)
  (_, y_taps), g_taps = jax.jit(grad("taps"))(x, ws)
  (_, y_nat), g_nat = jax.jit(grad("native"))(x, ws)
  assert y_nat.shape == (k * e, 2) + ((7 - 1) // stride + 1,) * ndim + (8,)
  np.testing.assert_allclose(y_nat, y_taps, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(g_nat, g_taps, rtol=1e-5, atol=2e-5)
  # vmap adds a leading axis that the kernels treat as independent problems: the batched
  # call equals one call per problem.
  xs, wss = jnp.stack([x, -0.5 * x]), [jnp.stack([w, 2 * w]) for w in ws]
  batched = jax.jit(jax.vmap(lambda a, b: grad("native")(a, b)[1]))(xs, wss)
  for i in range(2):
    one = jax.jit(grad("native"))(xs[i], [w[i] for w in wss])[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-6),
                 batched, one)


@needs_native
@pytest.mark.parametrize("ndim, stride, shared, repeat, relu", [
    (2, 1, True, 1, True), (2, 2, True, 2, False), (1, 1, False, 1, True)])
def test_multi_depthwise_second_order_matches_taps(ndim, stride, shared, repeat, relu):
  # A gradient of a gradient (DARTS's reverse-over-reverse Hessian-vector product) runs on the
  # native kernels, whose backward kernels differentiate into one another.
  kernels, dilations = (3, 5), (1, 2)
  e, k = 2, 2
  key = jax.random.key(0)
  x = jax.random.normal(key, ((e // repeat if shared else k * e), 2) + (6,) * ndim + (3,))
  ws = [jax.random.normal(jax.random.fold_in(key, q), (e, kk**ndim, 3))
        for q, kk in enumerate(kernels)]
  v = [jax.random.normal(jax.random.fold_in(key, 9 + q), t.shape) for q, t in enumerate([x, *ws])]
  kw = dict(kernels=kernels, dilations=dilations, stride=stride, shared=shared, relu=relu,
            repeat=repeat)

  def second(impl):
    def directional(x, a, b):
      g = jax.grad(lambda *z: _loss(z[0], list(z[1:]), impl, **kw)[0], argnums=(0, 1, 2))(x, a, b)
      return sum(jnp.vdot(p, q) for p, q in zip(g, v))
    return jax.jit(jax.grad(directional, argnums=(0, 1, 2)))(x, *ws)

  for got, want in zip(second("native"), second("taps")):
    assert float(jnp.max(jnp.abs(want))) > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


@needs_native
def test_single_depthwise_conv_native_odd_channels():
  # 12 channels take the kernels' generic (not channel-specialised) loops.
  x = jax.random.normal(jax.random.key(0), (2, 3, 7, 6, 12))
  w = jax.random.normal(jax.random.key(1), (2, 25, 12))
  f = lambda x, w, impl: jnp.sum(jnp.cos(P.depthwise_conv(  # noqa: E731
      x, w, kernel=5, dilation=2, stride=2, impl=impl)))
  a = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=2)(x, w, "native")
  b = jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=2)(x, w, "taps")
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=2e-5)


@needs_native
@pytest.mark.parametrize("ndim, stride, repeat", [(1, 2, 1), (2, 1, 1), (2, 2, 1), (2, 1, 3)])
def test_pool_multi_matches_pool_with_ties(ndim, stride, repeat):
  x = jax.random.normal(jax.random.key(0), (2, 2) + (7,) * ndim + (16,))
  x = P.pool(x, "max")  # chained max pools make exact ties
  kinds = ("max", "avg")
  # sin(y) * edge index: the `repeat` edges reading one input get different gradients.
  scale = jnp.arange(1.0, 1 + len(kinds) * 2 * repeat).reshape((-1,) + (1,) * (ndim + 2))
  f = lambda impl: lambda x: jnp.sum(scale * jnp.sin(  # noqa: E731
      P.pool_multi(x, kinds, stride=stride, repeat=repeat, impl=impl)))
  (v_n, g_n), (v_t, g_t) = (jax.jit(jax.value_and_grad(f(i)))(x) for i in ("native", "taps"))
  np.testing.assert_allclose(v_n, v_t, rtol=1e-6)
  # Ties route the gradient to the same (first maximal) input as the pure-JAX max pool.
  # (Summing the `repeat` edges' gradients in another order moves the last bits.)
  np.testing.assert_allclose(g_n, g_t, rtol=1e-5, atol=1e-5)
  batched = jax.jit(jax.vmap(jax.grad(f("native"))))(jnp.stack([x, -x]))
  np.testing.assert_allclose(batched[1], jax.jit(jax.grad(f("native")))(-x), atol=1e-7)
  with pytest.raises(ValueError, match="unknown pool kind 'min'"):
    P.pool_multi(x, ("min",))


def _bn_problem(shape, offset):
  """Batch-norm checks' inputs (x of mean ``offset``, scale, bias) and a loss of them.

  The loss, ``f(x, scale, bias) -> (sum(probe * sin(y)), (y, new_stats))``, follows the
  process-wide implementation choice.
  """
  key = jax.random.key(0)
  x = offset + 2.0 * jax.random.normal(key, shape)
  e, c = shape[0], shape[-1]
  scale = 1.0 + jax.random.normal(jax.random.fold_in(key, 1), (e, c))
  bias = jax.random.normal(jax.random.fold_in(key, 2), (e, c))
  probe = jax.random.normal(jax.random.fold_in(key, 3), shape)

  def f(x, scale, bias):
    y, stats = P.batch_norm(x, jnp.zeros((e, c)), jnp.ones((e, c)), train=True, scale=scale,
                            bias=bias)
    return jnp.sum(probe * jnp.sin(y)), (y, stats)

  return (x, scale, bias), f


@needs_native
@pytest.mark.parametrize("shape", [(3, 4, 7, 6, 8), (2, 5, 11, 12), (1, 64, 9, 9, 16)])
def test_batch_norm_native_matches_jax_with_gradients_and_vmap(shape):
  # An offset mean tests the variance's precision.
  (x, scale, bias), f = _bn_problem(shape, offset=3.0)

  grad = lambda: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))  # noqa: E731
  before = P._DEFAULT_IMPL[0]
  try:
    P.set_depthwise_impl("taps")  # batch norm follows the process-wide choice
    want = grad()(x, scale, bias)
    P.set_depthwise_impl("native")
    got = grad()(x, scale, bias)
  finally:
    P.set_depthwise_impl(before)
  # Sums over up to 5184 rows: the native kernels accumulate in double, XLA in float.
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=5e-4)
  one = lambda x: jax.grad(lambda x: f(x, scale, bias)[0])(x)  # noqa: E731
  batched = jax.jit(jax.vmap(one))(jnp.stack([x, -2.0 * x]))
  np.testing.assert_allclose(batched[1], jax.jit(one)(-2.0 * x), rtol=1e-6, atol=1e-6)


def _second_order(f, args, impl):
  """grad of <grad f(args), v>: a gradient of a gradient (an HVP), traced as DARTS's is."""
  v = [jax.random.normal(jax.random.fold_in(jax.random.key(7), i), a.shape)
       for i, a in enumerate(args)]
  argnums = tuple(range(len(args)))

  def directional(*z):
    g = jax.grad(f, argnums=argnums)(*z)
    return sum(jnp.vdot(p, q) for p, q in zip(g, v))

  before = P._DEFAULT_IMPL[0]
  try:
    P.set_depthwise_impl(impl)  # pooling and batch norm follow the process-wide choice
    with P.twice_differentiable():
      return jax.jit(jax.grad(directional, argnums=argnums))(*args)
  finally:
    P.set_depthwise_impl(before)


@needs_native
@pytest.mark.parametrize("ndim, stride, repeat", [(1, 2, 1), (2, 1, 1), (2, 2, 3)])
def test_pool_multi_second_order_matches_pure_jax(ndim, stride, repeat):
  # The input gradient's VJP is a gather at the winning taps (max) or a window mean (avg).
  x = jax.random.normal(jax.random.key(0), (2, 2) + (7,) * ndim + (16,))
  scale = jnp.arange(1.0, 1 + 2 * 2 * repeat).reshape((-1,) + (1,) * (ndim + 2))
  f = lambda x: jnp.sum(scale * jnp.sin(  # noqa: E731
      P.pool_multi(x, ("max", "avg"), stride=stride, repeat=repeat)))
  got, = _second_order(f, [x], "native")
  want, = _second_order(f, [x], "taps")
  assert float(jnp.max(jnp.abs(want))) > 1e-2
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@needs_native
@pytest.mark.parametrize("shape", [(3, 4, 7, 6, 8), (2, 5, 11, 12)])
def test_batch_norm_second_order_matches_pure_jax(shape):
  # The native backward kernel's VJP: its own kernel for the cotangent plus closed-form terms,
  # x's statistics included.
  (x, scale, bias), f = _bn_problem(shape, offset=1.0)
  loss = lambda *z: f(*z)[0]  # noqa: E731
  got = _second_order(loss, [x, scale, bias], "native")
  want = _second_order(loss, [x, scale, bias], "taps")
  for a, b in zip(got, want):
    assert float(jnp.max(jnp.abs(b))) > 1e-2
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(b))))


def test_auto_picks_native_on_cpu():
  # The supernet tests (tests/test_supernet.py) then check the native path's gradients against
  # plain autodiff, which forward_mode_compatible() traces through the pure-JAX forms.
  assert P.resolve_depthwise_impl("auto") == ("native" if native.available() else "taps")
  with P.forward_mode_compatible():
    assert not P._native_ok(jnp.ones((1, 1, 3, 2)))


def test_multi_depthwise_bad_shapes_name_the_problem():
  x = jnp.ones((2, 1, 6, 6, 4))
  with pytest.raises(ValueError, match="one kernel size and dilation per weight array"):
    P.depthwise_multi(x, [jnp.ones((2, 9, 4))], kernels=(3, 5), dilations=(1, 1))
  with pytest.raises(ValueError, match="edge rows"):
    P.depthwise_multi(x, [jnp.ones((2, 9, 4))] * 2, kernels=(3, 3), dilations=(1, 1),
                      shared=False)
  with pytest.raises(ValueError, match="depthwise weights have shape"):
    P.depthwise_multi(x, [jnp.ones((2, 25, 4))], kernels=(3,), dilations=(1,))
  with pytest.raises(ValueError, match="repeat=3 needs shared=True and must divide the 2 edges"):
    P.depthwise_multi(x, [jnp.ones((2, 9, 4))], kernels=(3,), dilations=(1,), repeat=3)


def test_native_off_by_environment_falls_back_to_taps():
  env = {**os.environ, "JNAS_NATIVE": "0", "JAX_PLATFORMS": "cpu"}
  code = ("from jnas.ops import native, primitives as P; "
          "print(native.available(), P.resolve_depthwise_impl('native'))")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ["False", "taps"]


def test_build_without_compiler_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("CXX", "/nonexistent/c++")
  monkeypatch.setattr(native.shutil, "which", lambda name: None)
  with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
    native.build()
