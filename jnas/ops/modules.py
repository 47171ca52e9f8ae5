"""Candidate operations as Flax NNX modules over edge-batched activations.

Each module holds the weights of ``num_edges`` independent copies of one
operation (leading axis ``E``) and maps ``[E, B, *S, C_in]`` to
``[E, B, *S_out, C_out]``. A supernet groups the edges of a cell that share an
input shape and stride; a discrete network uses ``num_edges=1``.

Operations are looked up by name in :data:`OPS` (see :func:`make_op`).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.ops import primitives as P


def _uniform(key, shape, fan_in, dtype=jnp.float32):
  # PyTorch's default conv/linear init (kaiming-uniform with a=sqrt(5)).
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class EdgeBatchNorm(nnx.Module):
  """Batch norm with separate statistics (and optional affine) per edge.

  Example:
    >>> bn = EdgeBatchNorm(2, 8, affine=False)
    >>> bn(jnp.ones((2, 4, 5, 8)), train=True).shape
    (2, 4, 5, 8)
  """

  def __init__(self, num_edges: int, channels: int, *, affine: bool, momentum: float = 0.9,
               eps: float = 1e-5):
    self.mean = nnx.BatchStat(jnp.zeros((num_edges, channels)))
    self.var = nnx.BatchStat(jnp.ones((num_edges, channels)))
    if affine:
      self.scale = nnx.Param(jnp.ones((num_edges, channels)))
      self.bias = nnx.Param(jnp.zeros((num_edges, channels)))
    else:
      self.scale = None
      self.bias = None
    self.momentum = momentum
    self.eps = eps

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y, (m, v) = P.batch_norm(
        x, self.mean.get_value(), self.var.get_value(), train=train, momentum=self.momentum, eps=self.eps,
        scale=None if self.scale is None else self.scale.get_value(),
        bias=None if self.bias is None else self.bias.get_value())
    if train:
      self.mean.set_value(m)
      self.var.set_value(v)
    return y


class DepthwiseConv(nnx.Module):
  """Per-edge depthwise convolution (see :func:`jnas.ops.primitives.depthwise_conv`)."""

  def __init__(self, num_edges: int, channels: int, kernel: int, *, ndim: int, stride: int = 1,
               dilation: int = 1, impl: P.DepthwiseImpl | None = None, rngs: nnx.Rngs):
    taps = kernel**ndim
    self.w = nnx.Param(_uniform(rngs.params(), (num_edges, taps, channels), taps))
    self.kernel, self.stride, self.dilation, self.impl = kernel, stride, dilation, impl

  def __call__(self, x: jax.Array) -> jax.Array:
    return P.depthwise_conv(x, self.w.get_value().astype(x.dtype), kernel=self.kernel,
                            dilation=self.dilation, stride=self.stride, impl=self.impl)


class PointwiseConv(nnx.Module):
  """Per-edge 1x1 convolution ``C_in -> C_out`` (no bias, as in DARTS)."""

  def __init__(self, num_edges: int, c_in: int, c_out: int, *, rngs: nnx.Rngs):
    self.w = nnx.Param(_uniform(rngs.params(), (num_edges, c_in, c_out), c_in))

  def __call__(self, x: jax.Array) -> jax.Array:
    return P.pointwise_conv(x, self.w.get_value().astype(x.dtype))


class ReLUConvBN(nnx.Module):
  """ReLU, 1x1 convolution, batch norm: DARTS's cell-input preprocessing."""

  def __init__(self, num_edges: int, c_in: int, c_out: int, *, affine: bool, rngs: nnx.Rngs):
    self.conv = PointwiseConv(num_edges, c_in, c_out, rngs=rngs)
    self.bn = EdgeBatchNorm(num_edges, c_out, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.conv(jax.nn.relu(x)), train=train)


class SepConv(nnx.Module):
  """DARTS separable convolution: (ReLU, depthwise, 1x1, BN) twice; stride on the first."""

  def __init__(self, num_edges: int, c_in: int, c_out: int, kernel: int, *, stride: int,
               ndim: int, affine: bool, impl: P.DepthwiseImpl | None = None, rngs: nnx.Rngs):
    self.dw1 = DepthwiseConv(num_edges, c_in, kernel, ndim=ndim, stride=stride, impl=impl,
                             rngs=rngs)
    self.pw1 = PointwiseConv(num_edges, c_in, c_in, rngs=rngs)
    self.bn1 = EdgeBatchNorm(num_edges, c_in, affine=affine)
    self.dw2 = DepthwiseConv(num_edges, c_in, kernel, ndim=ndim, impl=impl, rngs=rngs)
    self.pw2 = PointwiseConv(num_edges, c_in, c_out, rngs=rngs)
    self.bn2 = EdgeBatchNorm(num_edges, c_out, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = self.bn1(self.pw1(self.dw1(jax.nn.relu(x))), train=train)
    return self.bn2(self.pw2(self.dw2(jax.nn.relu(x))), train=train)


class DilConv(nnx.Module):
  """DARTS dilated convolution: ReLU, dilated depthwise, 1x1, BN."""

  def __init__(self, num_edges: int, c_in: int, c_out: int, kernel: int, *, stride: int,
               ndim: int, affine: bool, dilation: int = 2, impl: P.DepthwiseImpl | None = None,
               rngs: nnx.Rngs):
    self.dw = DepthwiseConv(num_edges, c_in, kernel, ndim=ndim, stride=stride,
                            dilation=dilation, impl=impl, rngs=rngs)
    self.pw = PointwiseConv(num_edges, c_in, c_out, rngs=rngs)
    self.bn = EdgeBatchNorm(num_edges, c_out, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.pw(self.dw(jax.nn.relu(x))), train=train)


class Pool(nnx.Module):
  """3x3 max or average pooling, optionally followed by a (non-affine) BN.

  DARTS's search supernet puts a BN after pooling so that pooled and
  convolved outputs have comparable scales; its final networks do not.
  """

  def __init__(self, num_edges: int, channels: int, kind: str, *, stride: int, bn: bool):
    self.kind, self.stride = kind, stride
    self.bn = EdgeBatchNorm(num_edges, channels, affine=False) if bn else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = P.pool(x, self.kind, stride=self.stride)
    return self.bn(y, train=train) if self.bn is not None else y


class FactorizedReduce(nnx.Module):
  """Halves the resolution with two offset strided 1x1 convolutions, concatenated."""

  def __init__(self, num_edges: int, c_in: int, c_out: int, *, affine: bool, rngs: nnx.Rngs):
    if c_out % 2:
      raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
    self.conv1 = PointwiseConv(num_edges, c_in, c_out // 2, rngs=rngs)
    self.conv2 = PointwiseConv(num_edges, c_in, c_out // 2, rngs=rngs)
    self.bn = EdgeBatchNorm(num_edges, c_out, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = factorized_reduce(x, self.conv1.w.get_value(), self.conv2.w.get_value())
    return self.bn(y, train=train)


def factorized_reduce(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
  """ReLU, then two offset stride-2 1x1 convolutions concatenated (before BN).

  Args:
    x: ``[E, B, *S, C_in]``.
    w1, w2: ``[E, C_in, C_out // 2]`` weights of the even and odd branches.

  Example:
    >>> w = jnp.ones((1, 4, 2))
    >>> factorized_reduce(jnp.ones((1, 2, 8, 4)), w, w).shape
    (1, 2, 4, 4)
  """
  x = jax.nn.relu(x)
  nd = P.spatial_ndim(x)
  even = x[(slice(None), slice(None)) + (slice(None, None, 2),) * nd]
  # The odd branch starts one step later; pad at the end so odd lengths keep
  # the same output size as the even branch.
  shifted = x[(slice(None), slice(None)) + (slice(1, None),) * nd]
  shifted = jnp.pad(shifted, [(0, 0), (0, 0)] + [(0, 1)] * nd + [(0, 0)])
  odd = shifted[(slice(None), slice(None)) + (slice(None, None, 2),) * nd]
  odd = odd[(slice(None), slice(None)) + tuple(slice(0, s) for s in even.shape[2:-1])]
  return jnp.concatenate([P.pointwise_conv(even, w1.astype(x.dtype)),
                          P.pointwise_conv(odd, w2.astype(x.dtype))], axis=-1)


class Identity(nnx.Module):
  """The skip connection at stride 1."""

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return x


class Zero(nnx.Module):
  """The ``none`` operation: zeros at the output resolution."""

  def __init__(self, stride: int):
    self.stride = stride

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    nd = P.spatial_ndim(x)
    return jnp.zeros_like(x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * nd])


# A factory builds ``num_edges`` copies of an op mapping C channels to C channels.
OpFactory = Callable[..., nnx.Module]


def _skip(num_edges, channels, *, stride, ndim, affine, impl, rngs):
  del ndim, impl
  if stride == 1:
    return Identity()
  return FactorizedReduce(num_edges, channels, channels, affine=affine, rngs=rngs)


def _pool(kind):
  def make(num_edges, channels, *, stride, ndim, affine, impl, rngs, pool_bn=True):
    del ndim, impl, rngs, affine
    return Pool(num_edges, channels, kind, stride=stride, bn=pool_bn)
  return make


def _sep(kernel):
  def make(num_edges, channels, *, stride, ndim, affine, impl, rngs):
    return SepConv(num_edges, channels, channels, kernel, stride=stride, ndim=ndim,
                   affine=affine, impl=impl, rngs=rngs)
  return make


def _dil(kernel):
  def make(num_edges, channels, *, stride, ndim, affine, impl, rngs):
    return DilConv(num_edges, channels, channels, kernel, stride=stride, ndim=ndim,
                   affine=affine, impl=impl, rngs=rngs)
  return make


def _none(num_edges, channels, *, stride, ndim, affine, impl, rngs):
  del num_edges, channels, ndim, affine, impl, rngs
  return Zero(stride)


OPS: dict[str, OpFactory] = {
    "none": _none,
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
}


def make_op(name: str, num_edges: int, channels: int, *, stride: int, ndim: int, affine: bool,
            rngs: nnx.Rngs, impl: P.DepthwiseImpl | None = None, pool_bn: bool = True
            ) -> nnx.Module:
  """Builds ``num_edges`` independent copies of the candidate op ``name``.

  Args:
    name: a key of :data:`OPS`.
    num_edges: size of the leading edge axis.
    channels: input and output channels.
    stride: 1, or 2 for the input edges of a reduction cell.
    ndim: spatial dimensions (1 for sequences, 2 for images).
    affine: whether batch norms learn scale and bias (False while searching).
    rngs: NNX random streams.
    impl: depthwise-convolution implementation (``None``: process default).
    pool_bn: whether pooling ops end with a non-affine BN (True in the DARTS
      supernet, False in derived networks).

  Example:
    >>> op = make_op("sep_conv_3x3", 1, 8, stride=1, ndim=1, affine=True, rngs=nnx.Rngs(0))
    >>> op(jnp.ones((1, 2, 10, 8)), train=True).shape
    (1, 2, 10, 8)
  """
  if name not in OPS:
    raise ValueError(f"unknown op {name!r} (known: {', '.join(OPS)})")
  kwargs = dict(stride=stride, ndim=ndim, affine=affine, impl=impl, rngs=rngs)
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    kwargs["pool_bn"] = pool_bn
  return OPS[name](num_edges, channels, **kwargs)
