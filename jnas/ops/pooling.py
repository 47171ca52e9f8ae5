"""Max and average pooling of edge-batched activations, and max pooling's custom gradient.

Part of the primitives; import them from :mod:`jnas.ops.primitives`.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

import jnas.ops.native as native
from jnas.ops._impl import _CUSTOM_VJPS
from jnas.ops._impl import DepthwiseImpl
from jnas.ops._impl import _materialize
from jnas.ops._impl import _native_ok
from jnas.ops._impl import _native_out_shape
from jnas.ops._impl import _shifted_views
from jnas.ops._impl import _upsample_pad_config
from jnas.ops._impl import resolve_depthwise_impl
from jnas.ops._impl import spatial_ndim
from jnas.ops.depthwise import depthwise_conv
from jnas.ops.depthwise import repeat_rows

def pool(x: jax.Array, kind: str, *, kernel: int = 3, stride: int = 1,
         impl: DepthwiseImpl | None = None) -> jax.Array:
  """'Same'-padded max or average pooling over the spatial axes.

  Average pooling divides by the number of real (non-padding) inputs under the
  window, as DARTS does (``count_include_pad=False``). Max pooling sends each
  window's gradient to its first maximal input. ``impl`` picks as for
  :func:`depthwise_conv`: ``"native"`` (the CPU default) runs jnas's C++
  kernels, anything else the pure-JAX forms below.

  Example:
    >>> pool(jnp.ones((1, 1, 4, 4, 2)), "avg").shape
    (1, 1, 4, 4, 2)
  """
  if kind in _POOL_CODES and resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    return _pool_native(x, (_POOL_CODES[kind],), kernel, stride, 1)
  if kind == "max":
    if _CUSTOM_VJPS[0]:
      return _max_pool(x, kernel, stride)
    return _max_pool_autodiff(x, kernel, stride)
  if kind == "avg":
    # A depthwise conv with unit weights: its hand-written backward pass (one
    # fused correlation) replaces autodiff's one padded scatter per tap.
    nd = spatial_ndim(x)
    unit = jnp.ones((x.shape[0], kernel**nd, x.shape[-1]), x.dtype)
    total = depthwise_conv(x, unit, kernel=kernel, stride=stride, impl=impl)
    ones = jnp.ones((1, 1) + x.shape[2:-1] + (1,), x.dtype)
    count_views, _ = _shifted_views(ones, kernel, 1, stride)
    count = count_views[0]
    for v in count_views[1:]:
      count = count + v
    return total / count
  raise ValueError(f"unknown pool kind {kind!r} (known: avg, max)")


_POOL_CODES = {"max": 0, "avg": 1}


def pool_multi(x: jax.Array, kinds: Sequence[str], *, kernel: int = 3, stride: int = 1,
               repeat: int = 1, impl: DepthwiseImpl | None = None) -> jax.Array:
  """Several :func:`pool` kinds of one input, stacked: ``[len(kinds) * E, B, *S_out, C]``.

  Block ``p`` (rows ``p*E .. (p+1)*E``) is ``pool(repeat_rows(x, repeat),
  kinds[p])``: with ``repeat`` > 1, ``x`` has ``E / repeat`` rows, each read
  by ``repeat`` consecutive edges (see :func:`depthwise_multi`). On CPU the
  native kernels (:mod:`jnas.ops.native`) compute all kinds in one pass over
  the input and their input gradients in one more; elsewhere (or without the
  kernels) this stacks :func:`pool` results, with the same numbers. ``impl``
  picks as for :func:`depthwise_conv` (``"native"`` or not).

  Example:
    >>> pool_multi(jnp.ones((2, 1, 4, 4, 3)), ("max", "avg"), stride=2).shape
    (4, 1, 2, 2, 3)
  """
  kinds = tuple(kinds)
  unknown = [k for k in kinds if k not in _POOL_CODES]
  if not kinds or unknown:
    raise ValueError(f"unknown pool kind {unknown[0] if unknown else None!r} (known: avg, max)")
  if repeat < 1:
    raise ValueError(f"pool_multi: repeat must be >= 1, got {repeat}")
  if resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    return _pool_native(x, tuple(_POOL_CODES[k] for k in kinds), kernel, stride, repeat)
  x = repeat_rows(x, repeat)
  outs = [pool(x, k, kernel=kernel, stride=stride, impl=impl) for k in kinds]
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _pool_native(x, codes, kernel, stride, repeat):
  with jax.named_scope("pool"):
    return native.call("jnas_pool_fwd",
                       _native_out_shape(x, len(codes), x.shape[0] * repeat, stride), x,
                       **_pool_native_kw(x, codes, kernel, stride, repeat))


def _pool_native_fwd(x, codes, kernel, stride, repeat):
  return _pool_native(x, codes, kernel, stride, repeat), x


def _pool_native_bwd(codes, kernel, stride, repeat, x, g):
  return (_pool_native_dx(g, x, codes, kernel, stride, repeat),)


# The input gradient is linear in g with a mask that depends on x only through which tap wins
# (a zero derivative almost everywhere): dx = M(x)^T g. So its derivative in g is M(x), the
# gather kernel (max: the value at x's first maximal tap; average: the window mean), and the
# gather's is M(x)^T again. A gradient of a gradient stays on the native kernels.
def _pool_native_kw(x, codes, kernel, stride, repeat):
  return dict(nd=spatial_ndim(x), stride=stride, kernel=kernel, repeat=repeat, kinds=codes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _pool_native_dx(g, x, codes, kernel, stride, repeat):
  with jax.named_scope("pool_dx"):
    return native.call("jnas_pool_dx", jax.ShapeDtypeStruct(x.shape, x.dtype), g, x,
                       **_pool_native_kw(x, codes, kernel, stride, repeat))


def _pool_native_dx_fwd(g, x, *attrs):
  return _pool_native_dx(g, x, *attrs), x


def _pool_native_dx_bwd(codes, kernel, stride, repeat, x, c):
  return _pool_gather(x, c, codes, kernel, stride, repeat), jnp.zeros_like(x)


_pool_native_dx.defvjp(_pool_native_dx_fwd, _pool_native_dx_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _pool_gather(x, v, codes, kernel, stride, repeat):
  with jax.named_scope("pool_gather"):
    return native.call("jnas_pool_gather",
                       _native_out_shape(x, len(codes), x.shape[0] * repeat, stride), x, v,
                       **_pool_native_kw(x, codes, kernel, stride, repeat))


def _pool_gather_fwd(x, v, *attrs):
  return _pool_gather(x, v, *attrs), x


def _pool_gather_bwd(codes, kernel, stride, repeat, x, c):
  return jnp.zeros_like(x), _pool_native_dx(c, x, codes, kernel, stride, repeat)


_pool_gather.defvjp(_pool_gather_fwd, _pool_gather_bwd)


_pool_native.defvjp(_pool_native_fwd, _pool_native_bwd)


@jax.named_scope("max_pool")
def _max_pool_argmax(x, kernel, stride):
  """Window maxima and, per output, the index of the first tap that attains it."""
  views, _ = _shifted_views(x, kernel, 1, stride, pad_value=-jnp.inf)
  out = views[0]
  idx = jnp.zeros(out.shape, jnp.int8)
  for k, v in enumerate(views[1:], start=1):
    # Strictly greater keeps the first maximal tap, so ties route the whole
    # gradient to one input (as cuDNN and PyTorch do) instead of duplicating
    # or splitting it; chained max pools create many exact ties.
    better = v > out
    out = jnp.where(better, v, out)
    idx = jnp.where(better, jnp.int8(k), idx)
  return views, out, idx


def _max_pool_autodiff(x, kernel, stride):
  # Selecting the winning view by index differentiates (forward and reverse
  # mode) to the same first-maximum convention as the custom VJP below.
  views, _, idx = _max_pool_argmax(x, kernel, stride)
  idx = lax.stop_gradient(idx)
  out = jnp.zeros_like(views[0])
  for k, v in enumerate(views):
    out = out + jnp.where(idx == k, v, 0.0)
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, kernel, stride):
  return _max_pool_argmax(x, kernel, stride)[1]


def _max_pool_fwd(x, kernel, stride):
  _, out, idx = _max_pool_argmax(x, kernel, stride)
  return out, (idx, x.shape[2:-1])


@jax.named_scope("max_pool_dx")
def _max_pool_bwd(kernel, stride, res, g):
  # "Pull" form: each input gathers the gradient of every window whose (first)
  # maximum it is. Unlike autodiff (one padded scatter per tap), this is one
  # fused loop, ~20x faster on XLA:CPU. For stride 2 the output gradient and
  # the argmax are zero-upsampled first (as in the depthwise backward pass).
  idx, spatial = res
  nd = len(spatial)
  pad = (kernel - 1) // 2
  cfg = _upsample_pad_config(spatial, g.shape[2:-1], pad, stride)
  gp = _materialize(lax.pad(g, jnp.zeros((), g.dtype), cfg))
  ip = lax.pad(idx, jnp.int8(-1), cfg)
  in_shape = g.shape[:2] + tuple(spatial) + g.shape[-1:]
  dx = None
  for k, offs in enumerate(itertools.product(range(kernel), repeat=nd)):
    start = (0, 0) + tuple(2 * pad - o for o in offs) + (0,)
    limit = tuple(st + n for st, n in zip(start, in_shape))
    term = jnp.where(lax.slice(ip, start, limit) == k, lax.slice(gp, start, limit), 0.0)
    dx = term if dx is None else dx + term
  return (dx.astype(g.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
