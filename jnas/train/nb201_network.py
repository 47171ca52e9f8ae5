"""NAS-Bench-201 networks (Dong & Yang, ICLR 2020): the cell's ops, the skeleton, the discrete net.

The benchmark's skeleton: a 3x3 convolution stem (``C`` channels) and batch
norm, three stages of ``N`` cells each (widths ``C``, ``2C``, ``4C``; ``N = 5``
and ``C = 16`` in the benchmark), a residual reduction block between stages
(ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a 2x2 average pool and a 1x1
convolution on the shortcut), then batch norm, ReLU, global average pooling
and a linear classifier. A cell has 4 nodes; node ``j`` sums one op on each
earlier node, and node 3 is the cell's output. The ops:

* ``nor_conv_1x1``, ``nor_conv_3x3``: ReLU, dense convolution, batch norm;
* ``avg_pool_3x3``: stride-1 average pooling (padding not counted);
* ``skip_connect``: the identity; ``none``: zero.

Everything is channels-last, ``[B, *spatial, C]``, in 1-D (MNIST-1D) or 2-D.
The same builders make the supernet's candidates
(:class:`jnas.supernet.nb201.NB201Supernet`), so the discrete network runs
exactly the ops that were searched.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from jnas.ops import primitives as P
from jnas.ops.modules import EdgeBatchNorm
from jnas.spaces.nb201 import NB201Genotype, NB201Space
from jnas.train.chain_network import Conv

NB201_KERNELS: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


class _BN(nnx.Module):
  """Batch norm over ``[B, *S, C]`` (one edge of :class:`EdgeBatchNorm`)."""

  def __init__(self, channels: int, *, affine: bool):
    self.bn = EdgeBatchNorm(1, channels, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(x[None], train=train)[0]


class ReLUConvBN(nnx.Module):
  """ReLU, dense ``k``-wide convolution (optionally strided), batch norm."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, ndim: int, stride: int = 1,
               affine: bool, rngs: nnx.Rngs):
    self.conv = Conv(c_in, c_out, kernel, ndim=ndim, stride=stride, rngs=rngs)
    self.bn = _BN(c_out, affine=affine)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.conv(jax.nn.relu(x)), train=train)


class AvgPool3(nnx.Module):
  """3-wide, stride-1 average pooling, padding not counted (``count_include_pad=False``)."""

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return P.pool(x[None], "avg")[0]


class Identity(nnx.Module):
  """``skip_connect``."""

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return x


class Zero(nnx.Module):
  """``none``: an all-zero output of the input's shape."""

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return jnp.zeros_like(x)


def build_nb201_op(name: str, channels: int, *, ndim: int, affine: bool, rngs: nnx.Rngs
                   ) -> nnx.Module:
  """The module of NAS-Bench-201 op ``name`` on ``channels`` channels (shape-preserving).

  Example:
    >>> op = build_nb201_op("nor_conv_3x3", 8, ndim=1, affine=True, rngs=nnx.Rngs(0))
    >>> op(jnp.ones((2, 10, 8)), train=False).shape
    (2, 10, 8)
  """
  if name in NB201_KERNELS:
    return ReLUConvBN(channels, channels, NB201_KERNELS[name], ndim=ndim, affine=affine,
                      rngs=rngs)
  if name == "avg_pool_3x3":
    return AvgPool3()
  if name == "skip_connect":
    return Identity()
  if name == "none":
    return Zero()
  raise ValueError(f"unknown NAS-Bench-201 op {name!r} "
                   f"(known: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3)")


class ResidualReduction(nnx.Module):
  """The benchmark's reduction block: a stride-2 basic residual block ``c_in -> c_out``."""

  def __init__(self, c_in: int, c_out: int, *, ndim: int, rngs: nnx.Rngs):
    self.conv_a = ReLUConvBN(c_in, c_out, 3, ndim=ndim, stride=2, affine=True, rngs=rngs)
    self.conv_b = ReLUConvBN(c_out, c_out, 3, ndim=ndim, affine=True, rngs=rngs)
    self.shortcut = Conv(c_in, c_out, 1, ndim=ndim, rngs=rngs)
    self.ndim = ndim

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    win = (1,) + (2,) * self.ndim + (1,)
    pooled = lax.reduce_window(x, 0.0, lax.add, win, win, "VALID") / 2**self.ndim
    return self.shortcut(pooled) + self.conv_b(self.conv_a(x, train=train), train=train)


class Stem(nnx.Module):
  """3x3 (or length-3) convolution and affine batch norm."""

  def __init__(self, c_in: int, c_out: int, *, ndim: int, rngs: nnx.Rngs):
    self.conv = Conv(c_in, c_out, 3, ndim=ndim, rngs=rngs)
    self.bn = _BN(c_out, affine=True)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.conv(x), train=train)


class Head(nnx.Module):
  """Batch norm, ReLU, global average pooling, linear classifier."""

  def __init__(self, c_in: int, num_classes: int, *, rngs: nnx.Rngs):
    self.bn = _BN(c_in, affine=True)
    bound = 1.0 / math.sqrt(c_in)
    self.w = nnx.Param(jax.random.uniform(rngs.params(), (c_in, num_classes), minval=-bound,
                                          maxval=bound))
    self.b = nnx.Param(jnp.zeros((num_classes,)))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    h = jax.nn.relu(self.bn(x, train=train))
    pooled = jnp.mean(h.astype(jnp.float32), axis=tuple(range(1, h.ndim - 1)))
    return pooled @ self.w.get_value() + self.b.get_value()


def nb201_plan(channels: int, cells_per_stage: int) -> list[tuple[str, int, int]]:
  """The skeleton's layers: ``("cell", c, c)`` or ``("reduce", c_in, c_out)``, in order.

  Example:
    >>> [k for k, _, _ in nb201_plan(16, 1)]
    ['cell', 'reduce', 'cell', 'reduce', 'cell']
  """
  if channels < 1 or cells_per_stage < 0:
    raise ValueError(f"channels must be >= 1 and cells_per_stage >= 0, got {channels}, "
                     f"{cells_per_stage}")
  plan: list[tuple[str, int, int]] = []
  c = channels
  for stage in range(3):
    if stage:
      plan.append(("reduce", c, 2 * c))
      c *= 2
    plan += [("cell", c, c)] * cells_per_stage
  return plan


class NB201Cell(nnx.Module):
  """A discrete NAS-Bench-201 cell: only the chosen ops; ``none`` edges are not built."""

  def __init__(self, space: NB201Space, genotype: NB201Genotype, channels: int, *, ndim: int,
               rngs: nnx.Rngs):
    space.validate(genotype)
    self.num_nodes = space.num_nodes
    live = [(j, i, op) for (j, i), op in zip(space.edge_list, genotype.ops) if op != "none"]
    self.edges = tuple((j, i) for j, i, _ in live)
    self.ops = nnx.List([build_nb201_op(op, channels, ndim=ndim, affine=True, rngs=rngs)
                         for _, _, op in live])

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    nodes = [x]
    for j in range(1, self.num_nodes):
      total = None
      for (dst, src), op in zip(self.edges, self.ops):
        if dst == j:
          h = op(nodes[src], train=train)
          total = h if total is None else total + h
      nodes.append(jnp.zeros_like(x) if total is None else total)
    return nodes[-1]


class NB201Network(nnx.Module):
  """The discrete network of a NAS-Bench-201 cell (the benchmark's skeleton).

  Args:
    genotype: the cell (one op per edge).
    in_channels, num_classes, ndim: data description.
    channels: ``C``, the first stage's width (16 in the benchmark).
    cells_per_stage: ``N`` (5 in the benchmark).
    space: the cell space (the benchmark's by default).

  Example:
    >>> space = NB201Space()
    >>> g = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    ...                 "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    >>> net = nnx.eval_shape(lambda: NB201Network(g, 3, 10, ndim=2, rngs=nnx.Rngs(0)))
    >>> sum(v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))  # the benchmark's 1.53M
    1531546
  """

  def __init__(self, genotype: NB201Genotype, in_channels: int, num_classes: int, *,
               ndim: int, channels: int = 16, cells_per_stage: int = 5,
               space: NB201Space | None = None, rngs: nnx.Rngs):
    space = space or NB201Space()
    self.stem = Stem(in_channels, channels, ndim=ndim, rngs=rngs)
    layers = []
    for kind, c_in, c_out in nb201_plan(channels, cells_per_stage):
      layers.append(NB201Cell(space, genotype, c_in, ndim=ndim, rngs=rngs) if kind == "cell"
                    else ResidualReduction(c_in, c_out, ndim=ndim, rngs=rngs))
    self.layers = nnx.List(layers)
    self.head = Head(4 * channels, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None = None) -> jax.Array:
    del key  # no drop-path in the benchmark's training
    h = self.stem(x, train=train)
    for layer in self.layers:
      h = layer(h, train=train)
    return self.head(h, train=train)


def network_from_config(config, space: NB201Space, genotype: NB201Genotype, input_shape,
                        num_classes: int, rngs: nnx.Rngs) -> NB201Network:
  """The retraining network of a NAS-Bench-201 cell, sized by ``config.retrain``
  (``channels``, ``cells_per_stage``).

  Example:
    >>> net = network_from_config(cfg, space, genotype, (40, 1), 10, nnx.Rngs(0))  # doctest: +SKIP
  """
  rc = config.retrain
  return NB201Network(genotype, input_shape[-1], num_classes, ndim=len(input_shape) - 1,
                      channels=rc.channels, cells_per_stage=rc.cells_per_stage, space=space,
                      rngs=rngs)
