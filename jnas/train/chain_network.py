"""Discrete networks for chain genotypes (FBNet / MobileNetV2 blocks, kernel-size chains).

Only the chosen op of each block is built. The builders :func:`build_stem`,
:func:`build_block` and :func:`build_head` are also what the latency table
times, so a table entry measures exactly the code the network runs.

Layout is channels-last, ``[B, *spatial, C]``; batch norm follows every
convolution (PyTorch's convention: momentum 0.1, eps 1e-5), activations are
ReLU (FBNet) or ReLU6 (MobileNetV2), and the projection of an inverted-residual
block is linear.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jnas.ops import primitives as P
from jnas.ops.modules import EdgeBatchNorm
from jnas.spaces.chain import ChainGenotype, ChainSpace, FBNetSpace, Position, parse_candidate
from jnas.spaces.registry import space_kit


def _he_normal(key: jax.Array, shape: tuple[int, ...], fan_out: int) -> jax.Array:
  # Kaiming normal over fan-out, MobileNetV2's (torchvision) conv initialisation.
  return jax.random.normal(key, shape) * math.sqrt(2.0 / fan_out)


def _activation(name: str):
  return jax.nn.relu6 if name == "relu6" else jax.nn.relu


class Conv(nnx.Module):
  """Convolution without bias, 'same'-style padding ``(k - 1) // 2``, optional groups.

  The weight is ``[*kernel, C_in // groups, C_out]`` (output channels grouped
  contiguously, as in XLA and PyTorch). 1x1 convolutions are matrix products.

  Example:
    >>> conv = Conv(8, 16, 1, ndim=2, groups=2, rngs=nnx.Rngs(0))
    >>> conv(jnp.ones((2, 5, 5, 8))).shape
    (2, 5, 5, 16)
  """

  def __init__(self, c_in: int, c_out: int, kernel: int, *, ndim: int, stride: int = 1,
               groups: int = 1, rngs: nnx.Rngs):
    if c_in % groups or c_out % groups:
      raise ValueError(f"{groups} groups do not divide {c_in} -> {c_out} channels")
    shape = (kernel,) * ndim + (c_in // groups, c_out)
    self.w = nnx.Param(_he_normal(rngs.params(), shape, kernel**ndim * c_out // groups))
    self.kernel, self.stride, self.groups, self.ndim = kernel, stride, groups, ndim
    self.c_in, self.c_out = c_in, c_out

  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.w.get_value().astype(x.dtype)
    nd, g = self.ndim, self.groups
    if self.kernel == 1:
      if self.stride > 1:
        x = x[(slice(None),) + (slice(None, None, self.stride),) * nd]
      w = w.reshape(self.c_in // g, self.c_out)
      if g == 1:
        return jnp.einsum("...i,io->...o", x, w)
      xg = x.reshape(x.shape[:-1] + (g, self.c_in // g))
      y = jnp.einsum("...gi,igo->...go", xg, w.reshape(self.c_in // g, g, self.c_out // g))
      return y.reshape(x.shape[:-1] + (self.c_out,))
    pad = (self.kernel - 1) // 2
    if nd == 1 and g == 1:
      # im2col: the k shifted copies side by side, then one matrix product. The same sum as
      # lax.conv (to float rounding), but XLA:CPU differentiates it far faster: fwd+bwd on a
      # 2-core CPU, one thread, batch 128, length 40: C=8 k=3 0.39 ms instead of 1.77 ms;
      # C=32 k=5 4.5 ms instead of 88 ms; C=64 k=3 9.0 ms instead of 227 ms.
      xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
      n = x.shape[1] + 2 * pad - self.kernel + 1
      cols = jnp.concatenate([xp[:, j:j + n] for j in range(self.kernel)], axis=-1)
      if self.stride > 1:
        cols = cols[:, ::self.stride]
      return cols @ w.reshape(self.kernel * self.c_in, self.c_out)
    dims = "NWC" if nd == 1 else "NHWC"
    kdims = "WIO" if nd == 1 else "HWIO"
    return lax.conv_general_dilated(x, w, (self.stride,) * nd, [(pad, pad)] * nd,
                                    dimension_numbers=(dims, kdims, dims),
                                    feature_group_count=g)


class DepthwiseConv(nnx.Module):
  """Depthwise convolution (per-channel ``k``-wide filters), via :mod:`jnas.ops.primitives`.

  Uses the backend's fast implementation (shifted multiply-adds on CPU,
  grouped convolution on GPU/TPU).
  """

  def __init__(self, channels: int, kernel: int, *, ndim: int, stride: int = 1,
               rngs: nnx.Rngs):
    self.w = nnx.Param(_he_normal(rngs.params(), (kernel**ndim, channels), kernel**ndim))
    self.kernel, self.stride = kernel, stride

  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.w.get_value().astype(x.dtype)[None]
    return P.depthwise_conv(x[None], w, kernel=self.kernel, stride=self.stride)[0]


class BatchNorm(nnx.Module):
  """Affine batch norm over ``[B, *spatial, C]``."""

  def __init__(self, channels: int):
    self.bn = EdgeBatchNorm(1, channels, affine=True)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(x[None], train=train)[0]


class ConvBN(nnx.Module):
  """Convolution, batch norm and (optionally) an activation."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, ndim: int, stride: int = 1,
               groups: int = 1, activation: str | None = "relu", rngs: nnx.Rngs):
    self.conv = Conv(c_in, c_out, kernel, ndim=ndim, stride=stride, groups=groups, rngs=rngs)
    self.bn = BatchNorm(c_out)
    self.activation = activation

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.bn(self.conv(x), train=train)
    return _activation(self.activation)(y) if self.activation else y


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet's channel shuffle: interleave the channels of ``groups`` groups.

  Example:
    >>> channel_shuffle(jnp.arange(4.0)[None], 2)
    Array([[0., 2., 1., 3.]], dtype=float32)
  """
  c = x.shape[-1]
  y = x.reshape(x.shape[:-1] + (groups, c // groups))
  return jnp.swapaxes(y, -1, -2).reshape(x.shape)


class InvertedResidual(nnx.Module):
  """MobileNetV2's inverted residual block as FBNet parameterises it (``kK_eE[_gG]``).

  1x1 expansion (absent when ``expansion == 1``), BN, activation, channel
  shuffle if grouped, ``KxK`` depthwise (carries the stride), BN, activation,
  linear 1x1 projection, BN; plus the input when shapes match.

  Example:
    >>> blk = InvertedResidual(8, 8, kernel=3, expansion=6, ndim=1, rngs=nnx.Rngs(0))
    >>> blk(jnp.ones((2, 10, 8)), train=False).shape
    (2, 10, 8)
  """

  def __init__(self, c_in: int, c_out: int, *, kernel: int, expansion: int, groups: int = 1,
               stride: int = 1, ndim: int, activation: str = "relu6", rngs: nnx.Rngs):
    mid = c_in * expansion
    self.expand = (ConvBN(c_in, mid, 1, ndim=ndim, groups=groups, activation=activation,
                          rngs=rngs) if expansion != 1 else None)
    self.dw = DepthwiseConv(mid, kernel, ndim=ndim, stride=stride, rngs=rngs)
    self.dw_bn = BatchNorm(mid)
    self.project = ConvBN(mid, c_out, 1, ndim=ndim, groups=groups, activation=None, rngs=rngs)
    self.groups, self.activation = groups, activation
    self.residual = stride == 1 and c_in == c_out

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    act = _activation(self.activation)
    h = x
    if self.expand is not None:
      h = self.expand(h, train=train)
      if self.groups > 1:
        h = channel_shuffle(h, self.groups)
    h = act(self.dw_bn(self.dw(h), train=train))
    h = self.project(h, train=train)
    return x + h if self.residual else h


class Skip(nnx.Module):
  """The ``skip`` candidate: the identity, or FBNet's projection shortcut when shapes differ."""

  def __init__(self, c_in: int, c_out: int, *, stride: int, ndim: int, activation: str,
               rngs: nnx.Rngs):
    self.proj = (None if stride == 1 and c_in == c_out else
                 ConvBN(c_in, c_out, 1, ndim=ndim, stride=stride, activation=activation,
                        rngs=rngs))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return x if self.proj is None else self.proj(x, train=train)


class ConvLayer(nnx.Module):
  """A kernel-chain layer: convolution, BN, ReLU and optional 2x max pooling."""

  def __init__(self, c_in: int, c_out: int, *, kernel: int, pool: int, ndim: int,
               rngs: nnx.Rngs):
    self.conv = ConvBN(c_in, c_out, kernel, ndim=ndim, activation="relu", rngs=rngs)
    self.pool, self.ndim = pool, ndim

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.conv(x, train=train)
    if self.pool > 1:
      win = (1,) + (self.pool,) * self.ndim + (1,)
      y = lax.reduce_window(y, -jnp.inf, lax.max, win, win, "VALID")
    return y


class Head(nnx.Module):
  """Optional 1x1 convolution (BN, activation), global average pooling, linear classifier."""

  def __init__(self, c_in: int, head_channels: int, num_classes: int, *, ndim: int,
               activation: str, rngs: nnx.Rngs):
    self.conv = (ConvBN(c_in, head_channels, 1, ndim=ndim, activation=activation, rngs=rngs)
                 if head_channels > 0 else None)
    c = head_channels if head_channels > 0 else c_in
    bound = 1.0 / math.sqrt(c)
    self.w = nnx.Param(jax.random.uniform(rngs.params(), (c, num_classes), minval=-bound,
                                          maxval=bound))
    self.b = nnx.Param(jnp.zeros((num_classes,)))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.conv is not None:
      x = self.conv(x, train=train)
    pooled = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1))).astype(x.dtype)
    return pooled @ self.w.get_value().astype(x.dtype) + self.b.get_value().astype(x.dtype)


class ChainParts(NamedTuple):
  """A chain space's modules, registered with it (``SpaceKit.parts``).

  ``stem(space, rngs)`` (``None``: the chain starts at the input),
  ``block(space, position, op, rngs)`` for a parsed candidate and
  ``head(space, rngs)``.
  """

  stem: Callable[[Any, nnx.Rngs], nnx.Module | None]
  block: Callable[[Any, Position, Any, nnx.Rngs], nnx.Module]
  head: Callable[[Any, nnx.Rngs], Head]


def _fbnet_stem(space: FBNetSpace, rngs: nnx.Rngs) -> nnx.Module:
  return ConvBN(space.input_shape[-1], space.stem_channels, space.stem_kernel, ndim=space.ndim,
                stride=space.stem_stride, activation=space.activation, rngs=rngs)


def _fbnet_block(space: FBNetSpace, p: Position, op: Any, rngs: nnx.Rngs) -> nnx.Module:
  if op.kind == "skip":
    return Skip(p.in_channels, p.out_channels, stride=p.stride, ndim=space.ndim,
                activation=space.activation, rngs=rngs)
  return InvertedResidual(p.in_channels, p.out_channels, kernel=op.kernel,
                          expansion=op.expansion, groups=op.groups, stride=p.stride,
                          ndim=space.ndim, activation=space.activation, rngs=rngs)


def _fbnet_head(space: FBNetSpace, rngs: nnx.Rngs) -> Head:
  return Head(space.positions()[-1].out_channels, space.head_channels, space.num_classes,
              ndim=space.ndim, activation=space.activation, rngs=rngs)


#: FBNet's modules: a conv stem, inverted residual (or skip) blocks, a 1x1 conv head.
FBNET_PARTS = ChainParts(_fbnet_stem, _fbnet_block, _fbnet_head)
#: The kernel chain's: no stem, one conv layer per block, a linear head.
KERNEL_CHAIN_PARTS = ChainParts(
    lambda space, rngs: None,
    lambda space, p, op, rngs: ConvLayer(p.in_channels, p.out_channels, kernel=op.kernel,
                                         pool=p.pool, ndim=space.ndim, rngs=rngs),
    lambda space, rngs: Head(space.positions()[-1].out_channels, 0, space.num_classes,
                             ndim=space.ndim, activation="relu", rngs=rngs))


def chain_parts(space: ChainSpace) -> ChainParts:
  """The modules registered for ``space`` (its :class:`~jnas.spaces.registry.SpaceKit`'s ``parts``)."""
  return space_kit(space.name).builder("parts")


def build_stem(space: ChainSpace, rngs: nnx.Rngs) -> nnx.Module | None:
  """The fixed input layer of ``space`` (``None`` when the chain starts at the input).

  Example:
    >>> from jnas.spaces.chain import FBNetSpace
    >>> build_stem(FBNetSpace((40, 1), 10), nnx.Rngs(0)).conv.kernel
    3
  """
  return chain_parts(space).stem(space, rngs)


def build_block(space: ChainSpace, position: Position, candidate: str, rngs: nnx.Rngs
                ) -> nnx.Module:
  """The module of ``candidate`` at ``position`` of ``space``.

  Example:
    >>> from jnas.spaces.chain import FBNetSpace
    >>> s = FBNetSpace((40, 1), 10)
    >>> type(build_block(s, s.positions()[1], "skip", nnx.Rngs(0)).proj).__name__
    'ConvBN'
  """
  return chain_parts(space).block(space, position, parse_candidate(candidate), rngs)


def build_head(space: ChainSpace, rngs: nnx.Rngs) -> Head:
  """The fixed classifier head of ``space``."""
  return chain_parts(space).head(space, rngs)


class ChainNetwork(nnx.Module):
  """The discrete network of a chain genotype: stem, the chosen blocks, head.

  Args:
    space: a :class:`~jnas.spaces.chain.ChainSpace`.
    genotype: one candidate name per block (validated against ``space``).

  Example:
    >>> from jnas.spaces.chain import FBNetSpace
    >>> space = FBNetSpace((40, 1), 10, stem_stride=1, stages=((8, 1, 1), (16, 2, 2)),
    ...                    head_channels=32)
    >>> net = ChainNetwork(space, space.random_genotype(np.random.default_rng(0)),
    ...                    rngs=nnx.Rngs(0))  # doctest: +SKIP
    >>> net(jnp.ones((2, 40, 1)), train=False).shape  # doctest: +SKIP
    (2, 10)
  """

  def __init__(self, space: ChainSpace, genotype: ChainGenotype, *, rngs: nnx.Rngs):
    space.validate(genotype)
    self.stem = build_stem(space, rngs)
    self.blocks = nnx.List([build_block(space, p, name, rngs)
                            for p, name in zip(space.positions(), genotype.blocks)])
    self.head = build_head(space, rngs)

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None = None) -> jax.Array:
    # ``key`` (drop-path's, in the cell networks) is accepted so every retraining network is
    # called alike; a chain network has no drop-path.
    del key
    if self.stem is not None:
      x = self.stem(x, train=train)
    for blk in self.blocks:
      x = blk(x, train=train)
    return self.head(x, train=train)


def network_from_config(config, space: ChainSpace, genotype: ChainGenotype, input_shape,
                        num_classes: int, rngs: nnx.Rngs) -> ChainNetwork:
  """The chain network of ``genotype``: the space fixes its stages, so ``config`` sizes nothing.

  Example:
    >>> net = network_from_config(cfg, space, genotype, (40, 1), 10, nnx.Rngs(0))  # doctest: +SKIP
  """
  del config, input_shape, num_classes  # the space states its input shape and classes
  return ChainNetwork(space, genotype, rngs=rngs)
