"""Batch norm of edge-batched activations: training (pure JAX or native), inference, recalibration.

Part of the primitives; import them from :mod:`jnas.ops.primitives`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

import jnas.ops.native as native
from jnas.ops._impl import _CUSTOM_VJPS
from jnas.ops._impl import _native_ok
from jnas.ops._impl import resolve_depthwise_impl
from jnas.ops._impl import spatial_ndim
from jnas.ops._impl import sum_many

def batch_norm(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Batch norm over every axis but the edge and channel axes.

  Args:
    x: ``[E, B, *S, C]``.
    mean, var: running statistics ``[E, C]``.
    train: normalise with batch statistics and return updated running ones
      (``running = momentum * running + (1 - momentum) * batch``, PyTorch's
      convention with its momentum 0.1 written as 0.9 here); otherwise use the
      running statistics.
    scale, bias: optional affine parameters ``[E, C]``.

  Returns:
    ``(y, (new_mean, new_var))``.

  Example:
    >>> y, _ = batch_norm(jnp.ones((1, 4, 3, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), train=True)
  """
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  recal = _RECALIBRATION[0]
  if train and recal is not None:
    recal.traced += 1
    return _bn_recalibrating(x, recal.calib_batches, recal.batch_size, eps=eps, scale=scale,
                             bias=bias)
  if train:
    n = x.size // (x.shape[0] * x.shape[-1])
    s = jnp.ones_like(mean) if scale is None else scale
    b = jnp.zeros_like(mean) if bias is None else bias
    if _native_ok(x) and resolve_depthwise_impl() == "native":
      y, bmean, bvar = _bn_train_native(x, s.astype(x.dtype), b.astype(x.dtype), eps)
    elif _CUSTOM_VJPS[0]:
      y, bmean, bvar = _bn_train(x, s, b, eps)
    else:
      y, bmean, bvar = _bn_train_fwd_only(x, s, b, eps)
    unbiased = bvar * (n / max(n - 1, 1))
    new_stats = (
        momentum * mean + (1 - momentum) * lax.stop_gradient(bmean),
        momentum * var + (1 - momentum) * lax.stop_gradient(unbiased),
    )
    return y, new_stats
  inv = lax.rsqrt(var + eps)
  if scale is not None:
    inv = inv * scale
  y = (x - mean.reshape(bshape).astype(x.dtype)) * inv.reshape(bshape).astype(x.dtype)
  if bias is not None:
    y = y + bias.reshape(bshape).astype(x.dtype)
  return y, (mean, var)


class _Recalibration:
  """The active :func:`recalibrating_batch_norm` setting, and a count of the BNs it traced."""

  _serials = itertools.count()

  def __init__(self, calib_batches: int, batch_size: int):
    self.calib_batches, self.batch_size = calib_batches, batch_size
    self.traced = 0
    # Names this context in trace caches (an id() could be reused by a later context).
    self.serial = next(self._serials)


_RECALIBRATION: list[_Recalibration | None] = [None]


@contextlib.contextmanager
def recalibrating_batch_norm(calib_batches: int, batch_size: int):
  """Traces training-mode batch norms as SPOS's BN recalibration fused into one pass.

  Inside this context, ``batch_norm(x, ..., train=True)`` reads the examples
  of ``x: [E, N, *S, C]`` as ``calib_batches`` calibration batches of
  ``batch_size`` examples, followed by ``N - calib_batches * batch_size``
  evaluation examples. Each calibration batch is normalised with its own
  batch statistics (as a training-mode pass does); the evaluation examples
  are normalised with the *recalibrated* statistics, the mean over the
  calibration batches of their batch mean and unbiased batch variance, which
  is what running separate calibration passes from zeroed statistics and
  then an inference pass computes. Because every layer's calibration
  statistics depend only on the calibration examples below it, one forward
  pass of ``[calibration; evaluation]`` gives the recalibrated network's
  outputs for the evaluation examples, without the statistics ever leaving
  the network. The returned "new statistics" are the recalibrated ones; the
  running statistics passed in are not read. It is a trace-time setting:
  what it changes is compiled into the functions traced inside it (a
  function already jitted and traced elsewhere replays its old trace). The
  context yields the active setting, whose ``traced`` counts the batch norms
  traced inside it.

  Example:
    >>> x = jnp.arange(24.0).reshape(1, 6, 2, 2)
    >>> with recalibrating_batch_norm(2, 2):
    ...   y, (m, v) = batch_norm(x, jnp.zeros((1, 2)), jnp.ones((1, 2)), train=True)
    >>> y.shape, m.shape
    ((1, 6, 2, 2), (1, 2))
  """
  if calib_batches < 1 or batch_size < 1:
    raise ValueError(f"need at least one calibration batch of at least one example, got "
                     f"{calib_batches} batches of {batch_size}")
  previous = _RECALIBRATION[0]
  _RECALIBRATION[0] = recal = _Recalibration(int(calib_batches), int(batch_size))
  try:
    yield recal
  finally:
    _RECALIBRATION[0] = previous


def recalibration_serial() -> int | None:
  """The active :func:`recalibrating_batch_norm` context's serial number (None outside one)."""
  recal = _RECALIBRATION[0]
  return None if recal is None else recal.serial


def _bn_recalibrating(x, k, b, *, eps, scale, bias):
  e, c = x.shape[0], x.shape[-1]
  if x.shape[1] < k * b:
    raise ValueError(f"recalibrating batch norm: {x.shape[1]} examples, fewer than the "
                     f"{k} x {b} calibration examples")
  spatial = x.shape[2:-1]
  sd = _stat_dtype(x)
  xf = x.astype(sd)
  xc = xf[:, :k * b].reshape((e, k, b) + spatial + (c,))
  n = b * math.prod(spatial)
  bmean, bvar = _one_pass_moments(xc, tuple(range(2, xc.ndim - 1)))  # [E, K, C]
  mean = jnp.mean(bmean, axis=1)
  var = jnp.mean(bvar, axis=1) * (n / max(n - 1, 1))
  s = jnp.ones((e, c), sd) if scale is None else scale.astype(sd)
  inv_c = lax.rsqrt(bvar + eps) * s[:, None]
  inv_v = lax.rsqrt(var + eps) * s
  vshape = (e, 1) + (1,) * len(spatial) + (c,)
  if x.shape[1] % b == 0:
    # Whole batches throughout: one elementwise pass over x with per-batch
    # shift and scale (small [E, N / B, C] tables) instead of normalising the
    # two parts separately and concatenating them, a full extra copy.
    m = x.shape[1] // b - k
    shift = jnp.concatenate([bmean, jnp.broadcast_to(mean[:, None], (e, m, c))], axis=1)
    inv = jnp.concatenate([inv_c, jnp.broadcast_to(inv_v[:, None], (e, m, c))], axis=1)
    tshape = (e, k + m, 1) + (1,) * len(spatial) + (c,)
    y = ((xf.reshape((e, k + m, b) + spatial + (c,)) - shift.reshape(tshape))
         * inv.reshape(tshape)).reshape(x.shape)
  else:
    cshape = (e, k, 1) + (1,) * len(spatial) + (c,)
    yc = (xc - bmean.reshape(cshape)) * inv_c.reshape(cshape)
    yv = (xf[:, k * b:] - mean.reshape(vshape)) * inv_v.reshape(vshape)
    y = jnp.concatenate([yc.reshape((e, k * b) + spatial + (c,)), yv], axis=1)
  if bias is not None:
    y = y + bias.astype(sd).reshape(vshape)
  return y.astype(x.dtype), (mean, var)


def _stat_dtype(x: jax.Array) -> jnp.dtype:
  return jnp.promote_types(x.dtype, jnp.float32)


def _one_pass_moments(xf: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance over ``axes`` in one pass (E[x^2] - E[x]^2, as flax's fast variance)."""
  n = math.prod(xf.shape[a] for a in axes)
  s1, s2 = sum_many([xf, jnp.square(xf)], axes)
  mean = s1 / n
  return mean, jnp.maximum(s2 / n - jnp.square(mean), 0.0)


@jax.named_scope("batch_norm")
def _bn_train_fwd_only(x, scale, bias, eps):
  axes = tuple(range(1, x.ndim - 1))
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  # Statistics in float32 even for low-precision activations (float64 stays float64).
  xf = x.astype(_stat_dtype(x))
  if _CUSTOM_VJPS[0]:
    bmean, bvar = _one_pass_moments(xf, axes)
  else:
    bmean = jnp.mean(xf, axis=axes)
    bvar = jnp.mean(jnp.square(xf - bmean.reshape(bshape)), axis=axes)
  inv = lax.rsqrt(bvar + eps) * scale
  y = (xf - bmean.reshape(bshape)) * inv.reshape(bshape) + bias.reshape(bshape)
  return y.astype(x.dtype), bmean, bvar


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train(x, scale, bias, eps):
  return _bn_train_fwd_only(x, scale, bias, eps)


def _bn_train_vjp_fwd(x, scale, bias, eps):
  y, bmean, bvar = _bn_train_fwd_only(x, scale, bias, eps)
  return (y, bmean, bvar), (x, scale, bmean, bvar)


@jax.named_scope("batch_norm_dx")
def _normalized(x, bmean, bvar, eps):
  """What the backward passes share: reduced axes, statistics' broadcast shape, rows per
  channel, ``rsqrt(var + eps)`` and the normalised input ``xhat``."""
  axes = tuple(range(1, x.ndim - 1))
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  inv = lax.rsqrt(bvar + eps)
  xhat = (x.astype(_stat_dtype(x)) - bmean.reshape(bshape)) * inv.reshape(bshape)
  return axes, bshape, x.size // (x.shape[0] * x.shape[-1]), inv, xhat


def _bn_train_vjp_bwd(eps, res, cts):
  # The closed form needs two reductions; autodiff of the forward pass makes
  # XLA:CPU do several more full passes. Cotangents of the batch statistics
  # are ignored: callers only use them under stop_gradient.
  x, scale, bmean, bvar = res
  g = cts[0].astype(_stat_dtype(x))
  axes, bshape, n, inv, xhat = _normalized(x, bmean, bvar, eps)
  dbias, dscale = sum_many([g, g * xhat], axes)
  k = (scale * inv).reshape(bshape)
  dx = k * (g - (dbias / n).reshape(bshape) - xhat * (dscale / n).reshape(bshape))
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_bn_train.defvjp(_bn_train_vjp_fwd, _bn_train_vjp_bwd)


# The native kernels (jnas.ops.native) compute the same training-mode batch norm in two streaming
# passes each way; XLA:CPU's kept-channel reductions (the statistics and the backward sums) run at
# 1-3 GB/s, and in the 2-cell DARTS step they took a third of the kernel time.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train_native(x, scale, bias, eps):
  stats = jax.ShapeDtypeStruct(scale.shape, x.dtype)
  with jax.named_scope("batch_norm"):
    return native.call("jnas_batch_norm_fwd", (jax.ShapeDtypeStruct(x.shape, x.dtype), stats,
                                               stats), x, scale, bias, nd=spatial_ndim(x),
                       eps=float(eps))


def _bn_train_native_fwd(x, scale, bias, eps):
  y, bmean, bvar = _bn_train_native(x, scale, bias, eps)
  return (y, bmean, bvar), (x, scale, bmean, bvar)


def _bn_train_native_bwd(eps, res, cts):
  # As _bn_train_vjp_bwd: the statistics' cotangents are ignored (they are used under
  # stop_gradient only).
  x, scale, bmean, bvar = res
  return _bn_dx_native(cts[0], x, scale, bmean, bvar, eps)


_bn_train_native.defvjp(_bn_train_native_fwd, _bn_train_native_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _bn_dx_native(g, x, scale, bmean, bvar, eps):
  with jax.named_scope("batch_norm_dx"):
    return native.call("jnas_batch_norm_dx", (jax.ShapeDtypeStruct(x.shape, x.dtype),
                                              jax.ShapeDtypeStruct(scale.shape, scale.dtype),
                                              jax.ShapeDtypeStruct(scale.shape, scale.dtype)),
                       g, x, scale, bmean, bvar, nd=spatial_ndim(x), eps=float(eps))


def _bn_dx_native_fwd(g, x, scale, bmean, bvar, eps):
  dx, dscale, dbias = _bn_dx_native(g, x, scale, bmean, bvar, eps)
  return (dx, dscale, dbias), (g, x, scale, bmean, bvar, dscale, dbias)


def _bn_dx_native_bwd(eps, res, cts):
  """The backward pass's own VJP, so that a gradient of a gradient keeps batch norm native.

  With r = g - mean(g) - xhat * mean(g * xhat) (per channel), inv = rsqrt(var + eps) and
  s = scale, the backward pass gives dx = s * inv * r, dscale = sum(g * xhat), dbias = sum(g).
  r = P(g) for P the projection that removes each channel's span of (1, xhat), self-adjoint.
  For cotangents (a, p, q) of (dx, dscale, dbias):
    d/dg = s * inv * P(a) + p * xhat + q                      (the backward pass of a, natively)
    d/ds = inv * sum(a * r)
    d/dx = -s * inv^2 * (sum(a * r) / n * xhat + sum(a * xhat) / n * r) - inv * m * s * inv * P(a)
           + p * inv * r,   m = mean(g * xhat),
  where the x terms include x's batch statistics (mean and var move with x), so the statistics'
  own cotangents are zero: they are x's statistics, as the forward pass made them.
  """
  g, x, scale, bmean, bvar, dscale, dbias = res
  a, p, q = (c.astype(jnp.float32) for c in cts)
  axes, bshape, n, inv, xhat = _normalized(x, bmean, bvar, eps)
  m = dscale / n
  r = g.astype(jnp.float32) - (dbias / n).reshape(bshape) - xhat * m.reshape(bshape)
  s_pa, a_xhat, _ = _bn_dx_native(a, x, scale, bmean, bvar, eps)
  a_r, = sum_many([a * r], axes)
  sinv2 = scale * jnp.square(inv)
  d_g = s_pa + (p.reshape(bshape) * xhat + q.reshape(bshape))
  d_scale = inv * a_r
  d_x = (-(sinv2 * a_r / n).reshape(bshape) * xhat - (sinv2 * a_xhat / n).reshape(bshape) * r
         - (inv * m).reshape(bshape) * s_pa + (p * inv).reshape(bshape) * r)
  return (d_g.astype(g.dtype), d_x.astype(x.dtype), d_scale.astype(scale.dtype),
          jnp.zeros_like(bmean), jnp.zeros_like(bvar))


_bn_dx_native.defvjp(_bn_dx_native_fwd, _bn_dx_native_bwd)
