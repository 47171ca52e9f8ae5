"""Discrete DARTS networks built from a genotype: only the chosen ops, no mixed ops.

This is the network that is retrained from scratch and exported. Each node
sums two chosen ops; batch norms are affine; pooling has no BN; during
training, drop-path zeroes whole op outputs per example (Zoph et al.).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.ops import primitives as P
from jnas.ops.modules import EdgeBatchNorm, FactorizedReduce, Identity, ReLUConvBN, make_op
from jnas.spaces.darts import Genotype


class Stem(nnx.Module):
  """3x3 (or length-3) convolution and batch norm."""

  def __init__(self, c_in: int, c_out: int, *, ndim: int, kernel: int = 3, rngs: nnx.Rngs):
    fan_in = c_in * kernel**ndim
    bound = 1.0 / fan_in**0.5
    self.w = nnx.Param(jax.random.uniform(rngs.params(), (kernel,) * ndim + (c_in, c_out),
                                          minval=-bound, maxval=bound))
    self.bn = EdgeBatchNorm(1, c_out, affine=True)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = P.dense_conv(x, self.w.get_value().astype(x.dtype))
    return self.bn(y[None], train=train)[0]


class Classifier(nnx.Module):
  """Global average pooling and a linear layer."""

  def __init__(self, c_in: int, num_classes: int, *, rngs: nnx.Rngs):
    self.fc = nnx.Linear(c_in, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    return self.fc(pooled.astype(jnp.float32))


def reduction_layers(layers: int) -> tuple[int, ...]:
  """Cells that halve the resolution: at 1/3 and 2/3 of the depth, as in DARTS."""
  return tuple(sorted({layers // 3, 2 * layers // 3}))


def cell_plan(layers: int, channels: int, stem_multiplier: int,
              outputs_per_cell: Callable[[bool], int]) -> list[tuple[int, int, int, bool, bool]]:
  """Channel bookkeeping of a DARTS network, shared by supernets and derived networks.

  Returns ``(c_prev_prev, c_prev, c_cell, reduction, reduction_prev)`` per
  cell; widths double at each reduction cell, and a cell outputs
  ``outputs_per_cell(reduction) * c_cell`` channels.

  Example:
    >>> cell_plan(3, 4, 3, lambda r: 4)[1]
    (12, 16, 8, True, False)
  """
  c_pp, c_p, c_curr = stem_multiplier * channels, stem_multiplier * channels, channels
  reductions = reduction_layers(layers)
  plan, reduction_prev = [], False
  for i in range(layers):
    reduction = i in reductions
    if reduction:
      c_curr *= 2
    plan.append((c_pp, c_p, c_curr, reduction, reduction_prev))
    reduction_prev = reduction
    c_pp, c_p = c_p, outputs_per_cell(reduction) * c_curr
  return plan


def drop_path(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """Zeroes each example of ``x`` with probability ``rate``, rescaling the rest."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class DiscreteCell(nnx.Module):
  """A derived DARTS cell."""

  def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, *,
               reduction: bool, reduction_prev: bool, ndim: int,
               impl: P.DepthwiseImpl | None = None, rngs: nnx.Rngs):
    self.reduction = reduction
    cell_type = "reduce" if reduction else "normal"
    pairs = genotype.cell(cell_type)
    self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
    if reduction_prev:
      self.pre0 = FactorizedReduce(1, c_prev_prev, channels, affine=True, rngs=rngs)
    else:
      self.pre0 = ReLUConvBN(1, c_prev_prev, channels, affine=True, rngs=rngs)
    self.pre1 = ReLUConvBN(1, c_prev, channels, affine=True, rngs=rngs)
    self.inputs = tuple(int(i) for _, i in pairs)
    self.op_names = tuple(op for op, _ in pairs)
    self.ops = nnx.List([
        make_op(op, 1, channels, stride=2 if reduction and i < 2 else 1, ndim=ndim,
                affine=True, impl=impl, rngs=rngs, pool_bn=False)
        for op, i in pairs
    ])

  def __call__(self, s0: jax.Array, s1: jax.Array, *, train: bool, key: jax.Array | None = None,
               drop_rate: float = 0.0) -> jax.Array:
    states = [self.pre0(s0[None], train=train)[0], self.pre1(s1[None], train=train)[0]]
    for node in range(len(self.ops) // 2):
      total = None
      for k in (2 * node, 2 * node + 1):
        op = self.ops[k]
        h = op(states[self.inputs[k]][None], train=train)[0]
        if train and drop_rate > 0 and key is not None and not isinstance(op, Identity):
          h = drop_path(jax.random.fold_in(key, k), h, drop_rate)
        total = h if total is None else total + h
      states.append(total)
    return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class DiscreteNetwork(nnx.Module):
  """A network of derived cells (DARTS's ``NetworkCIFAR`` without the auxiliary head).

  Args:
    genotype: the architecture.
    in_channels, num_classes, ndim: data description.
    channels: initial cell width ``C`` (36 for DARTS CIFAR-10).
    layers: number of cells (20 for DARTS CIFAR-10).
    stem_multiplier: stem width is ``stem_multiplier * C``.
    drop_path_rate: probability of dropping an op's output while training.

  Example:
    >>> from jnas.spaces.darts import GENOTYPES
    >>> net = DiscreteNetwork(GENOTYPES["DARTS_V2"], 1, 10, ndim=1, channels=4, layers=3,
    ...                       rngs=nnx.Rngs(0))
    >>> net(jnp.ones((2, 40, 1)), train=False).shape
    (2, 10)
  """

  def __init__(self, genotype: Genotype, in_channels: int, num_classes: int, *, ndim: int,
               channels: int = 36, layers: int = 20, stem_multiplier: int = 3,
               drop_path_rate: float = 0.0, impl: P.DepthwiseImpl | None = None,
               rngs: nnx.Rngs):
    self.stem = Stem(in_channels, stem_multiplier * channels, ndim=ndim, rngs=rngs)
    self.drop_path_rate = drop_path_rate
    outputs = lambda red: len(genotype.reduce_concat if red else genotype.normal_concat)
    plan = cell_plan(layers, channels, stem_multiplier, outputs)
    self.cells = nnx.List([
        DiscreteCell(genotype, c_pp, c_p, c, reduction=red, reduction_prev=red_prev, ndim=ndim,
                     impl=impl, rngs=rngs)
        for c_pp, c_p, c, red, red_prev in plan])
    last_c, last_red = plan[-1][2], plan[-1][3]
    self.classifier = Classifier(outputs(last_red) * last_c, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool, key: jax.Array | None = None) -> jax.Array:
    s0 = s1 = self.stem(x, train=train)
    for i, cell in enumerate(self.cells):
      ckey = None if key is None else jax.random.fold_in(key, i)
      s0, s1 = s1, cell(s0, s1, train=train, key=ckey, drop_rate=self.drop_path_rate)
    return self.classifier(s1)


def network_from_config(config, space, genotype: Genotype, input_shape, num_classes: int,
                        rngs: nnx.Rngs) -> DiscreteNetwork:
  """The retraining network of a DARTS genotype, sized by ``config.retrain``
  (``channels``, ``layers``, ``drop_path``).

  Example:
    >>> net = network_from_config(cfg, space, genotype, (40, 1), 10, nnx.Rngs(0))  # doctest: +SKIP
  """
  rc = config.retrain
  return DiscreteNetwork(genotype, input_shape[-1], num_classes, ndim=len(input_shape) - 1,
                         channels=rc.channels, layers=rc.layers, drop_path_rate=rc.drop_path,
                         rngs=rngs)
