"""Parameter counts and multiply-adds of chain architectures, computed from shapes.

Counting conventions (those of the MobileNetV2 and FBNet papers): a
convolution costs ``prod(output spatial) * k^n * C_in / groups * C_out``
multiply-adds and ``k^n * C_in / groups * C_out`` weights (no bias); batch norm
adds two parameters per channel (scale and bias) and no multiply-adds; the
classifier is a linear layer with bias; activations, pooling, residual
additions and channel shuffles are free.

A network's cost is the stem's, plus each chosen block's, plus the head's.
Because that is a sum over blocks, the expected cost under an encoding (a
relaxed architecture) is a dot product with a per-block cost table, which is
differentiable in the encoding (:func:`expected_cost`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jnas.spaces.chain import (ChainGenotype, ChainSpace, FBNetSpace, KernelChainSpace,  # noqa: F401
                               Position, conv_out, parse_candidate)
from jnas.spaces.registry import space_kit


@dataclasses.dataclass(frozen=True)
class Cost:
  """Parameters and multiply-adds of a network part (per example).

  Example:
    >>> Cost(10, 100) + Cost(1, 2)
    Cost(params=11, madds=102)
  """

  params: int = 0
  madds: int = 0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.params + other.params, self.madds + other.madds)


def conv_cost(c_in: int, c_out: int, kernel: int, out_spatial, *, ndim: int, groups: int = 1,
              bn: bool = True) -> Cost:
  """A convolution (plus batch norm when ``bn``).

  Example:
    >>> conv_cost(3, 32, 3, (112, 112), ndim=2)  # MobileNetV2's stem
    Cost(params=928, madds=10838016)
  """
  w = kernel**ndim * (c_in // groups) * c_out
  return Cost(w + (2 * c_out if bn else 0), w * math.prod(out_spatial))


def _depthwise(channels: int, kernel: int, out_spatial, ndim: int) -> Cost:
  w = kernel**ndim * channels
  return Cost(w + 2 * channels, w * math.prod(out_spatial))


def _fbnet_block(space: FBNetSpace, p: Position, op: Any) -> Cost:
  nd, s_in, s_out = space.ndim, p.in_shape[:-1], p.out_shape[:-1]
  if op.kind == "skip":
    if p.same_shape:
      return Cost()
    return conv_cost(p.in_channels, p.out_channels, 1, s_out, ndim=nd)
  mid = p.in_channels * op.expansion
  cost = Cost()
  if op.expansion != 1:
    cost += conv_cost(p.in_channels, mid, 1, s_in, ndim=nd, groups=op.groups)
  dw_spatial = [conv_out(s, op.kernel, p.stride) for s in s_in]
  cost += _depthwise(mid, op.kernel, dw_spatial, nd)
  return cost + conv_cost(mid, p.out_channels, 1, dw_spatial, ndim=nd, groups=op.groups)


def _fbnet_stem(space: FBNetSpace) -> Cost:
  out = space.stem_out_shape()
  return conv_cost(space.input_shape[-1], space.stem_channels, space.stem_kernel, out[:-1],
                   ndim=space.ndim)


def _classifier(space: ChainSpace, head_channels: int) -> Cost:
  """An optional 1x1 convolution to ``head_channels`` (0: none), then the linear classifier."""
  last = space.positions()[-1].out_shape
  c, cost = last[-1], Cost()
  if head_channels > 0:
    cost += conv_cost(c, head_channels, 1, last[:-1], ndim=space.ndim)
    c = head_channels
  return cost + Cost(c * space.num_classes + space.num_classes, c * space.num_classes)


@dataclasses.dataclass(frozen=True)
class ChainCosts:
  """A chain space's cost model, registered with it (``SpaceKit.cost_model``); mirrors
  :class:`jnas.train.chain_network.ChainParts`: ``stem(space)``, ``block(space, position,
  op)`` for a parsed candidate, ``head(space)``."""

  stem: Callable[[Any], Cost]
  block: Callable[[Any, Position, Any], Cost]
  head: Callable[[Any], Cost]


FBNET_COSTS = ChainCosts(_fbnet_stem, _fbnet_block,
                         lambda space: _classifier(space, space.head_channels))
KERNEL_CHAIN_COSTS = ChainCosts(
    lambda space: Cost(),
    lambda space, p, op: conv_cost(p.in_channels, p.out_channels, op.kernel, p.in_shape[:-1],
                                   ndim=space.ndim),
    lambda space: _classifier(space, 0))


def _costs(space: ChainSpace) -> ChainCosts:
  return space_kit(space.name).builder("cost_model")


def block_cost(space: ChainSpace, position: Position, candidate: str) -> Cost:
  """Cost of ``candidate`` at ``position`` (mirrors :func:`jnas.train.chain_network.build_block`).

  Example:
    >>> s = FBNetSpace()
    >>> block_cost(s, s.positions()[0], "skip")
    Cost(params=0, madds=0)
  """
  return _costs(space).block(space, position, parse_candidate(candidate))


def stem_cost(space: ChainSpace) -> Cost:
  """Cost of the fixed stem (zero when the chain starts at the input)."""
  return _costs(space).stem(space)


def head_cost(space: ChainSpace) -> Cost:
  """Cost of the fixed head: optional 1x1 convolution and the linear classifier."""
  return _costs(space).head(space)


def network_cost(space: ChainSpace, genotype: ChainGenotype) -> Cost:
  """Parameters and multiply-adds (per example) of a discrete chain architecture.

  Example:
    >>> space, g = FBNetSpace.for_genotype("mobilenet_v2")
    >>> network_cost(space, g).params
    3504872
  """
  space.validate(genotype)
  total = stem_cost(space) + head_cost(space)
  for p, name in zip(space.positions(), genotype.blocks):
    total += block_cost(space, p, name)
  return total


@dataclasses.dataclass(frozen=True)
class CostTable:
  """Per-block, per-candidate costs of a space: ``[num_blocks, num_candidates]`` arrays."""

  params: np.ndarray
  madds: np.ndarray
  fixed: Cost


def cost_table(space: ChainSpace) -> CostTable:
  """Every candidate's cost at every block, and the fixed stem + head cost.

  Example:
    >>> cost_table(FBNetSpace()).madds.shape
    (22, 9)
  """
  pos = space.positions()
  costs = [[block_cost(space, p, c) for c in space.candidates] for p in pos]
  return CostTable(np.array([[c.params for c in row] for row in costs], np.float64),
                   np.array([[c.madds for c in row] for row in costs], np.float64),
                   stem_cost(space) + head_cost(space))


def expected_cost(table: CostTable, encoding: Mapping[str, Any] | jax.Array
                  ) -> dict[str, jax.Array]:
  """Expected parameters and multiply-adds under an encoding (differentiable).

  ``encoding["blocks"]`` holds per-block weights over candidates (one-hot rows
  give the discrete cost; Gumbel-softmax samples give a relaxation); leading
  batch axes are kept.

  Example:
    >>> t = cost_table(KernelChainSpace(widths=(4,), pool_after=()))
    >>> float(expected_cost(t, jnp.ones((1, 3)) / 3)["params"]) > 0
    True
  """
  w = encoding["blocks"] if isinstance(encoding, Mapping) else encoding
  w = jnp.asarray(w)
  if w.shape[-2:] != table.params.shape:
    raise ValueError(f"encoding has shape {tuple(w.shape)}, the cost table "
                     f"{table.params.shape} (blocks, candidates)")
  out = {}
  for key, arr, fixed in (("params", table.params, table.fixed.params),
                          ("madds", table.madds, table.fixed.madds)):
    out[key] = jnp.sum(w * jnp.asarray(arr, w.dtype), axis=(-2, -1)) + fixed
  return out


def chain_info(config, genotype: str) -> dict[str, Any]:
  """``jnas info`` for chain spaces: size and multiply-adds of a genotype, no weights allocated.

  A named architecture (``mobilenet_v2``, ``fbnet_a``...) brings its own
  macro-architecture; the input shape and classes come from the config. The
  analytic count is cross-checked against the network's ``nnx.eval_shape``.

  Example:
    >>> from jnas.config import load_config
    >>> chain_info(load_config("experiments/fbnet_imagenet.py"), "mobilenet_v2")["num_params"]  # doctest: +SKIP
    3504872
  """
  from flax import nnx

  from jnas.spaces.chain import resolve_chain_genotype, space_from_config
  from jnas.train.chain_network import ChainNetwork

  space, geno = resolve_chain_genotype(space_from_config(config), genotype)
  cost = network_cost(space, geno)
  net = nnx.eval_shape(lambda: ChainNetwork(space, geno, rngs=nnx.Rngs(0)))
  counted = int(sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param))))
  if counted != cost.params:
    raise AssertionError(f"analytic parameter count {cost.params} differs from the network's "
                         f"{counted}")
  return {"genotype": genotype, "space": space.name, "blocks": list(geno.blocks),
          "num_params": cost.params, "madds": cost.madds,
          "input_shape": list(space.input_shape), "num_classes": space.num_classes,
          "space_config": space.config()}
