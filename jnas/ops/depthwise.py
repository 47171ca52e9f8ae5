"""Convolutions of edge-batched activations: depthwise (taps, native, XLA), pointwise and dense.

Part of the primitives; import them from :mod:`jnas.ops.primitives`, whose
docstring describes the three depthwise implementations.
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
from jnas.ops._impl import sum_many

def depthwise_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    kernel: int,
    dilation: int = 1,
    stride: int = 1,
    impl: DepthwiseImpl | None = None,
) -> jax.Array:
  """Depthwise ('same'-padded) convolution of edge-batched activations.

  Args:
    x: ``[E, B, *S, C]`` activations.
    w: ``[E, kernel**n, C]`` per-edge, per-tap, per-channel weights (taps in
      row-major order over the spatial axes).
    kernel: kernel size along every spatial axis.
    dilation: spacing between taps.
    stride: output stride along every spatial axis.
    impl: ``"taps"``, ``"xla"`` or ``"auto"``/``None`` (process default).

  Returns:
    ``[E, B, *S_out, C]`` activations.

  Example:
    >>> x = jnp.ones((1, 2, 8, 8, 4)); w = jnp.ones((1, 9, 4))
    >>> depthwise_conv(x, w, kernel=3).shape
    (1, 2, 8, 8, 4)
  """
  nd = spatial_ndim(x)
  if w.shape != (x.shape[0], kernel**nd, x.shape[-1]):
    raise ValueError(
        f"depthwise weights have shape {w.shape}, expected "
        f"{(x.shape[0], kernel**nd, x.shape[-1])}")
  resolved = resolve_depthwise_impl(impl)
  if resolved == "xla":
    return _depthwise_xla(x, w, kernel=kernel, dilation=dilation, stride=stride)
  if resolved == "native" and _native_ok(x):
    return _depthwise_native(x, w, (kernel,), (dilation,), stride, True, False, 1)
  if _CUSTOM_VJPS[0]:
    return _depthwise_taps(x, w, kernel, dilation, stride)
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride)


def _weighted_sum(views: list[jax.Array], w: jax.Array) -> jax.Array:
  bshape = (w.shape[0],) + (1,) * (views[0].ndim - 2) + (w.shape[-1],)
  acc = views[0] * w[:, 0].reshape(bshape)
  for t in range(1, len(views)):
    acc = acc + views[t] * w[:, t].reshape(bshape)
  return acc


def _depthwise_taps_fwd_only(x, w, kernel, dilation, stride):
  with jax.named_scope("depthwise"):
    views, _ = _shifted_views(x, kernel, dilation, stride)
    return _weighted_sum(views, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_taps(x, w, kernel, dilation, stride):
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride)


def _depthwise_taps_vjp_fwd(x, w, kernel, dilation, stride):
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride), (x, w)


def _depthwise_taps_vjp_bwd(kernel, dilation, stride, res, g):
  # Autodiff of the shifted slices gives one padded scatter per tap, which
  # XLA:CPU neither fuses nor compiles quickly. The input gradient is instead
  # a correlation of the (zero-upsampled, for stride 2) output gradient with
  # the flipped kernel: one fused loop like the forward pass.
  x, w = res
  nd = spatial_ndim(x)
  pad = dilation * (kernel - 1) // 2
  with jax.named_scope("depthwise_dx"):
    cfg = _upsample_pad_config(x.shape[2:-1], g.shape[2:-1], pad, stride)
    gp = _materialize(lax.pad(g, jnp.zeros((), g.dtype), cfg))
    w_flip = w[:, ::-1]
    views = []
    for offs in itertools.product(range(kernel), repeat=nd):
      start = (0, 0) + tuple(o * dilation for o in offs) + (0,)
      views.append(lax.slice(gp, start, tuple(s + n for s, n in zip(start, x.shape))))
    dx = _weighted_sum(views, w_flip)
  # Weight gradient: every tap's reduction over the batch and positions in one
  # pass (a variadic reduce), 4-7x faster on XLA:CPU than one reduction per tap.
  with jax.named_scope("depthwise_dw"):
    xviews, _ = _shifted_views(x, kernel, dilation, stride)
    axes = tuple(range(1, x.ndim - 1))
    dw = jnp.stack(sum_many([v * g for v in xviews], axes), axis=1)
  return dx, dw.astype(w.dtype)


_depthwise_taps.defvjp(_depthwise_taps_vjp_fwd, _depthwise_taps_vjp_bwd)


def depthwise_multi(
    x: jax.Array,
    ws: Sequence[jax.Array],
    *,
    kernels: Sequence[int],
    dilations: Sequence[int],
    stride: int = 1,
    shared: bool = True,
    relu: bool = False,
    repeat: int = 1,
    impl: DepthwiseImpl | None = None,
) -> jax.Array:
  """``K`` depthwise convolutions of edge-batched activations, stacked: ``[K*E, B, *S_out, C]``.

  The conv candidates of a DARTS mixed op apply ReLU and then depthwise
  kernels of different sizes and dilations to the same input; their second
  stages apply one kernel each to their own input. This computes either case
  as one operation, output block ``k`` (rows ``k*E .. (k+1)*E``) holding
  kernel ``k``'s result, so that on CPU the native kernels
  (:mod:`jnas.ops.native`) read the input once for all kernels, fold ReLU and
  padding into the convolution, and sum the input gradients of shared inputs
  in the same pass.

  Args:
    x: ``[E / repeat, B, *S, C]`` if ``shared`` (every kernel reads it; edge
      ``e`` reads row ``e // repeat``), else ``[K*E, B, *S, C]`` (kernel ``k``
      reads block ``k``).
    ws: ``K`` weight arrays ``[E, kernels[k]**n, C]``.
    kernels: odd kernel sizes, one per weight array.
    dilations: dilations, one per weight array.
    stride: output stride, shared by all kernels.
    shared: whether all kernels read the same input (see ``x``).
    relu: apply ReLU to the input first.
    repeat: with ``shared``, how many consecutive edges read each input row.
      A DARTS cell feeds each input to several edges; passing the input once
      spares the native kernels a broadcast copy forward and its reduction
      backward (their input gradient sums over the edges itself).
    impl: as for :func:`depthwise_conv`; without the native kernels the
      result is computed by :func:`depthwise_conv` per kernel (same numbers).

  Example:
    >>> x = jnp.ones((2, 1, 6, 6, 4))
    >>> ws = [jnp.ones((2, 9, 4)), jnp.ones((2, 25, 4))]
    >>> depthwise_multi(x, ws, kernels=(3, 5), dilations=(1, 1), relu=True).shape
    (4, 1, 6, 6, 4)
  """
  ws, kernels, dilations = tuple(ws), tuple(int(k) for k in kernels), tuple(
      int(d) for d in dilations)
  k_count = len(ws)
  if not k_count or len(kernels) != k_count or len(dilations) != k_count:
    raise ValueError(f"depthwise_multi wants one kernel size and dilation per weight array, got "
                     f"{k_count} arrays, kernels={kernels}, dilations={dilations}")
  nd = spatial_ndim(x)
  e = ws[0].shape[0]
  if repeat < 1 or (repeat > 1 and not shared) or e % repeat:
    raise ValueError(f"depthwise_multi: repeat={repeat} needs shared=True and must divide the "
                     f"{e} edges")
  rows = e // repeat if shared else k_count * e
  if x.shape[0] != rows:
    raise ValueError(f"depthwise_multi input has {x.shape[0]} edge rows, expected {rows} "
                     f"({'shared' if shared else 'one block per kernel'})")
  for w, k in zip(ws, kernels):
    if w.shape != (e, k**nd, x.shape[-1]):
      raise ValueError(f"depthwise weights have shape {w.shape}, expected {(e, k**nd, x.shape[-1])}")
  if resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    w_all = ws[0] if k_count == 1 else jnp.concatenate(ws, axis=1)
    return _depthwise_native(x, w_all.astype(x.dtype), kernels, dilations, stride, shared, relu,
                             repeat)
  r = jax.nn.relu(x) if relu else x
  r = repeat_rows(r, repeat)
  if shared:
    blocks = [r] * k_count
  else:
    blocks = jnp.split(r, k_count, axis=0) if k_count > 1 else [r]
  outs = [depthwise_conv(b, w, kernel=k, dilation=d, stride=stride, impl=impl)
          for b, w, k, d in zip(blocks, ws, kernels, dilations)]
  return outs[0] if k_count == 1 else jnp.concatenate(outs, axis=0)


def repeat_rows(x: jax.Array, repeat: int) -> jax.Array:
  """Row ``e`` of the result is ``x[e // repeat]`` (the edge layout of ``repeat``).

  Example:
    >>> repeat_rows(jnp.arange(2), 3).tolist()
    [0, 0, 0, 1, 1, 1]
  """
  if repeat == 1:
    return x
  return jnp.broadcast_to(x[:, None], (x.shape[0], repeat) + x.shape[1:]).reshape(
      (x.shape[0] * repeat,) + x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _depthwise_native(x, w_all, kernels, dilations, stride, shared, relu, repeat):
  with jax.named_scope("depthwise"):
    return native.call("jnas_depthwise_fwd", _native_out_shape(x, len(kernels), w_all.shape[0],
                                                                 stride),
                       x, w_all, **_native_kw(x, kernels, dilations, stride, shared, relu,
                                              repeat))


def _depthwise_native_fwd(x, w_all, kernels, dilations, stride, shared, relu, repeat):
  return (_depthwise_native(x, w_all, kernels, dilations, stride, shared, relu, repeat),
          (x, w_all))


def _depthwise_native_bwd(kernels, dilations, stride, shared, relu, repeat, res, g):
  x, w_all = res
  attrs = (kernels, dilations, stride, shared, relu, repeat)
  return _depthwise_native_dx(g, w_all, x, *attrs), _depthwise_native_dw(g, x, *attrs)


# The two backward kernels are themselves differentiable, so a gradient of a gradient (DARTS's
# second-order Hessian-vector product) runs on the native kernels too. The convolution is
# bilinear in (relu(x), w), so every derivative of its backward kernels is another of the three
# kernels: for y = B(x, w), dx(g, w) = d<g, B(x, w)>/dx and dw(g, x) = d<g, B(x, w)>/dw, and then
# d<c, dx(g, w)>/dg = B(c, w), d<c, dx(g, w)>/dw = dw(g, c), d<c, dw(g, x)>/dg = B(x, c),
# d<c, dw(g, x)>/dx = dx(g, c). With the ReLU folded in, x's ReLU mask gates c where it enters
# as an input, and the mask itself has a zero derivative.
def _native_kw(x, kernels, dilations, stride, shared, relu, repeat):
  return dict(nd=spatial_ndim(x), stride=stride, shared=shared, relu=relu, repeat=repeat,
              kernels=kernels, dilations=dilations)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7, 8))
def _depthwise_native_dx(g, w_all, x, kernels, dilations, stride, shared, relu, repeat):
  with jax.named_scope("depthwise_dx"):
    return native.call("jnas_depthwise_dx", jax.ShapeDtypeStruct(x.shape, x.dtype), g, w_all, x,
                       **_native_kw(x, kernels, dilations, stride, shared, relu, repeat))


def _depthwise_native_dx_fwd(g, w_all, x, *attrs):
  return _depthwise_native_dx(g, w_all, x, *attrs), (g, w_all, x)


def _depthwise_native_dx_bwd(kernels, dilations, stride, shared, relu, repeat, res, c):
  g, w_all, x = res
  if relu:
    c = jnp.where(x > 0, c, jnp.zeros((), c.dtype))
  plain = (kernels, dilations, stride, shared, False, repeat)
  return (_depthwise_native(c, w_all, *plain), _depthwise_native_dw(g, c, *plain),
          jnp.zeros_like(x))


_depthwise_native_dx.defvjp(_depthwise_native_dx_fwd, _depthwise_native_dx_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _depthwise_native_dw(g, x, kernels, dilations, stride, shared, relu, repeat):
  # g holds K blocks of E edges; w is [E, taps of all K kernels, C].
  w_shape = (g.shape[0] // len(kernels), sum(k**spatial_ndim(x) for k in kernels), x.shape[-1])
  with jax.named_scope("depthwise_dw"):
    return native.call("jnas_depthwise_dw", jax.ShapeDtypeStruct(w_shape, x.dtype), g, x,
                       **_native_kw(x, kernels, dilations, stride, shared, relu, repeat))


def _depthwise_native_dw_fwd(g, x, *attrs):
  return _depthwise_native_dw(g, x, *attrs), (g, x)


def _depthwise_native_dw_bwd(kernels, dilations, stride, shared, relu, repeat, res, c):
  g, x = res
  attrs = (kernels, dilations, stride, shared, relu, repeat)
  return _depthwise_native(x, c, *attrs), _depthwise_native_dx(g, c, x, *attrs)


_depthwise_native_dw.defvjp(_depthwise_native_dw_fwd, _depthwise_native_dw_bwd)


_depthwise_native.defvjp(_depthwise_native_fwd, _depthwise_native_bwd)


def _depthwise_xla(x, w, *, kernel, dilation, stride):
  """Grouped convolution with the edge axis folded into the channels."""
  e, b = x.shape[:2]
  nd = spatial_ndim(x)
  c = x.shape[-1]
  spatial = x.shape[2:-1]
  # [E, B, *S, C] -> [B, *S, E*C]: each (edge, channel) pair is its own group.
  xt = jnp.moveaxis(x, 0, -2).reshape((b,) + spatial + (e * c,))
  # [E, k^n, C] -> [*k, 1, E*C]
  wk = jnp.moveaxis(w, 0, 1).reshape((kernel,) * nd + (1, e * c))
  pad = dilation * (kernel - 1) // 2
  dims = "NWC" if nd == 1 else "NHWC"
  kdims = "WIO" if nd == 1 else "HWIO"
  y = lax.conv_general_dilated(
      xt, wk, window_strides=(stride,) * nd, padding=[(pad, pad)] * nd,
      rhs_dilation=(dilation,) * nd, dimension_numbers=(dims, kdims, dims),
      feature_group_count=e * c)
  out_spatial = y.shape[1:-1]
  return jnp.moveaxis(y.reshape((b,) + out_spatial + (e, c)), -2, 0)


def pointwise_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """1x1 convolution with per-edge weights ``w: [E, C_in, C_out]``.

  Example:
    >>> pointwise_conv(jnp.ones((2, 3, 5, 4)), jnp.ones((2, 4, 6))).shape
    (2, 3, 5, 6)
  """
  # Flattening to [E, N, C] first makes the weight gradient a plain batched
  # matmul; contracting several middle axes is ~3x slower on XLA:CPU.
  e, c = x.shape[0], x.shape[-1]
  with jax.named_scope("pointwise"):
    y = jnp.einsum("enc,ecd->end", x.reshape(e, -1, c), w)
  return y.reshape(x.shape[:-1] + (w.shape[-1],))


def dense_conv(
    x: jax.Array, w: jax.Array, *, stride: int = 1, padding: str | Sequence[tuple[int, int]] = "SAME"
) -> jax.Array:
  """Ordinary (dense) convolution of ``[B, *S, C_in]`` with ``w: [*k, C_in, C_out]``.

  Used for stems; XLA's dense convolution is fast on every backend.

  Example:
    >>> dense_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16))).shape
    (2, 8, 8, 16)
  """
  nd = x.ndim - 2
  dims = "NWC" if nd == 1 else "NHWC"
  kdims = "WIO" if nd == 1 else "HWIO"
  return lax.conv_general_dilated(
      x, w, (stride,) * nd, padding, dimension_numbers=(dims, kdims, dims))
