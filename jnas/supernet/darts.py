"""The DARTS supernet as Flax NNX modules: mixed ops, cells and the network.

The forward pass takes the architecture encoding as an argument
(``{"normal": [14, num_ops], "reduce": [14, num_ops]}``): ``softmax(alpha)``
for DARTS, Gumbel samples for GDAS/SNAS, one-hot rows for discrete
architectures. The module owns only weights and batch statistics; the
architecture parameters live outside it.

Edges are computed in groups that share an input: the edges leaving the two
cell inputs (``2 * num_nodes`` of them) run as one batched computation, then
the edges leaving node 0, node 1, and so on. This gives XLA ``num_nodes``
computations per cell instead of one per edge, which keeps compilation short
and the work per kernel large.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.ops import primitives as P
from jnas.ops.modules import FactorizedReduce, ReLUConvBN
from jnas.spaces.darts import DartsSpace, edge_index
from jnas.supernet.darts_edges import CONV_SPECS, POOL_KINDS, MixedEdges, _unstack
from jnas.supernet.recompute import recompute_twice
from jnas.train.network import Classifier, Stem, cell_plan

__all__ = ["CONV_SPECS", "POOL_KINDS", "DartsSupernet", "MixedEdges", "SearchCell",
           "supernet_from_config"]


class SearchCell(nnx.Module):
  """A DARTS cell whose every edge is a mixed op."""

  def __init__(self, space: DartsSpace, c_prev_prev: int, c_prev: int, channels: int, *,
               reduction: bool, reduction_prev: bool, ndim: int,
               impl: P.DepthwiseImpl | None = None, rngs: nnx.Rngs):
    self.reduction = reduction
    self.num_nodes = space.num_nodes
    if reduction_prev:
      self.pre0 = FactorizedReduce(1, c_prev_prev, channels, affine=False, rngs=rngs)
    else:
      self.pre0 = ReLUConvBN(1, c_prev_prev, channels, affine=False, rngs=rngs)
    self.pre1 = ReLUConvBN(1, c_prev, channels, affine=False, rngs=rngs)
    n = space.num_nodes
    # Group 0: edges from the two cell inputs, ordered (input 0 -> nodes 0..n-1,
    # input 1 -> nodes 0..n-1). Group g >= 1: edges from node g-1 to nodes g..n-1.
    groups = [[edge_index(j, i) for i in (0, 1) for j in range(n)]]
    groups += [[edge_index(j, g + 1) for j in range(g, n)] for g in range(1, n)]
    self.groups = tuple(tuple(g) for g in groups)
    self.edges = nnx.List([
        MixedEdges(space.primitives, len(g), channels, stride=2 if (reduction and k == 0) else 1,
                   ndim=ndim, impl=impl, rngs=rngs)
        for k, g in enumerate(self.groups)
    ])

  def shared_prefix(self, s0: jax.Array | None, s1: jax.Array | None, *, train: bool) -> dict:
    """The part of this cell that no architecture changes, for the inputs that none changes.

    ``s0``/``s1`` are the cell's inputs that are the same for every
    architecture (``None`` for one that is not): their preprocessed forms and
    every candidate's output on the edges leaving them
    (:meth:`MixedEdges.shared_candidates`). Pass the result as ``shared`` to
    the single-path, unrolled :meth:`__call__`.
    """
    n, out, edges = self.num_nodes, {}, {}
    for name, x, pre, rows in (("s0", s0, self.pre0, range(n)),
                               ("s1", s1, self.pre1, range(n, 2 * n))):
      if x is not None:
        out[name] = pre(x[None], train=train)[0]
        edges.update(self.edges[0].shared_candidates(out[name], tuple(rows), train=train))
    out["edges"] = edges
    return out

  def __call__(self, s0: jax.Array, s1: jax.Array, weights: jax.Array, *, train: bool,
               single_path: bool = False, unroll: bool = False,
               shared: dict | None = None) -> jax.Array:
    """Maps cell inputs ``[B, *S, C]`` to ``[B, *S', num_nodes * channels]``.

    ``shared``: :meth:`shared_prefix` of this cell's architecture-independent
    inputs (single path, unrolled only); the inputs it covers are not read.
    """
    n = self.num_nodes
    if shared is not None and not (single_path and unroll):
      raise ValueError("SearchCell: shared= needs single_path=True and unroll=True")
    shared = shared or {}
    s0 = shared["s0"] if "s0" in shared else self.pre0(s0[None], train=train)[0]
    s1 = shared["s1"] if "s1" in shared else self.pre1(s1[None], train=train)[0]
    if single_path and unroll:
      return self._unrolled(s0, s1, weights, train=train, shared=shared.get("edges"))
    # Group 0 holds input 0 -> nodes 0..n-1, then input 1 -> nodes 0..n-1.
    y = self.edges[0](jnp.stack([s0, s1]), weights[jnp.array(self.groups[0])], train=train,
                      single_path=single_path, unroll=unroll, repeat=n)
    # pending[j]: running sum of the edges already computed into node j.
    pending = _unstack(jnp.sum(y.reshape((2, n) + y.shape[1:]), axis=0), n, squeeze=True)
    nodes = []
    for g in range(1, n + 1):
      node = pending[g - 1]
      nodes.append(node)
      if g == n:
        break
      idx = jnp.array(self.groups[g])
      y = self.edges[g](node[None], weights[idx], train=train, single_path=single_path,
                        unroll=unroll, repeat=n - g)
      for j, contribution in zip(range(g, n), _unstack(y, n - g, squeeze=True)):
        pending[j] = pending[j] + contribution
    return jnp.concatenate(nodes, axis=-1)

  def _unrolled(self, s0: jax.Array, s1: jax.Array, weights: jax.Array, *, train: bool,
                shared: dict | None = None) -> jax.Array:
    """The single-path cell with every edge separate: no stacked inputs or outputs."""
    n = self.num_nodes
    ys = self.edges[0]([s0] * n + [s1] * n, weights[jnp.array(self.groups[0])], train=train,
                       single_path=True, unroll=True, shared=shared)
    pending = [ys[j] + ys[n + j] for j in range(n)]
    for g in range(1, n):
      ys = self.edges[g]([pending[g - 1]] * (n - g), weights[jnp.array(self.groups[g])],
                         train=train, single_path=True, unroll=True)
      for j, contribution in zip(range(g, n), ys):
        pending[j] = pending[j] + contribution
    return jnp.concatenate(pending, axis=-1)


class DartsSupernet(nnx.Module):
  """The DARTS search network: stem, ``layers`` mixed cells, classifier.

  Args:
    space: the cell search space.
    in_channels: input channels (1 for MNIST-1D, 3 for CIFAR).
    num_classes: classifier outputs.
    ndim: spatial dimensions of the input (1 or 2).
    channels: ``C``, initial cell width (16 in DARTS search).
    layers: number of cells (8 in DARTS search).
    stem_multiplier: stem width is ``stem_multiplier * C``.
    impl: depthwise-convolution implementation.
    recompute: rebuild each cell's internals in the backward passes instead of
      storing them (:func:`~jnas.supernet.recompute.recompute_twice`), for the
      all-candidates pass: the memory of DARTS's second-order step, at the
      cost of recomputation.
    rngs: NNX random streams.

  Example:
    >>> space = DartsSpace()
    >>> net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=3, rngs=nnx.Rngs(0))
    >>> enc = {k: jnp.ones(s) / s[1] for k, s in space.encoding_shape().items()}
    >>> net(jnp.ones((2, 40, 1)), enc, train=True).shape
    (2, 10)
  """

  # Forward-only passes (scoring a population) run faster with the edge loop unrolled
  # (``unroll=True``); a caller that sees this flag may pass it.
  accepts_unroll = True

  def __init__(self, space: DartsSpace, in_channels: int, num_classes: int, *, ndim: int,
               channels: int = 16, layers: int = 8, stem_multiplier: int = 3,
               impl: P.DepthwiseImpl | None = None, recompute: bool = False, rngs: nnx.Rngs):
    self.space = space
    self.recompute = recompute
    self.stem = Stem(in_channels, stem_multiplier * channels, ndim=ndim, rngs=rngs)
    plan = cell_plan(layers, channels, stem_multiplier, lambda _: space.num_nodes)
    self.cells = nnx.List([
        SearchCell(space, c_pp, c_p, c, reduction=red, reduction_prev=red_prev, ndim=ndim,
                   impl=impl, rngs=rngs)
        for c_pp, c_p, c, red, red_prev in plan])
    self.classifier = Classifier(space.num_nodes * plan[-1][2], num_classes, rngs=rngs)

  def shared_prefix(self, x: jax.Array, *, train: bool) -> dict:
    """The part of a single-path pass on ``x`` that no architecture changes, computed once.

    The stem's output feeds both inputs of the first cell and the first input
    of the second, so those cells' preprocessing and every candidate on the
    edges leaving those inputs are the same for every architecture: 12 of the
    42 edges of a 3-cell network. Scoring a population, compute this once and
    pass it as ``shared`` to each architecture's pass
    (``make_population_evaluator(..., prefix_fn=make_prefix(graphdef))``):
    the same numbers, with those edges' work done once instead of once per
    architecture. It holds ``num_ops`` outputs per shared edge.

    Example:
      >>> space = DartsSpace(num_nodes=2, primitives=("none", "skip_connect", "avg_pool_3x3"))
      >>> net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=2, rngs=nnx.Rngs(0))
      >>> enc = {k: jax.nn.one_hot(jnp.arange(s[0]) % s[1], s[1])
      ...        for k, s in net.space.encoding_shape().items()}
      >>> x = jnp.ones((2, 40, 1))
      >>> shared = net.shared_prefix(x, train=False)
      >>> y = net(x, enc, train=False, single_path=True, unroll=True, shared=shared)
      >>> bool(jnp.allclose(y, net(x, enc, train=False, single_path=True, unroll=True),
      ...                   atol=1e-5))
      True
    """
    s = self.stem(x, train=train)
    inputs = [(s, s), (s, None)]  # the architecture-independent inputs of cells 0 and 1
    return {"stem": s, "cells": [cell.shared_prefix(a, b, train=train)
                                 for cell, (a, b) in zip(self.cells, inputs)]}

  def __call__(self, x: jax.Array, encoding, *, train: bool, single_path: bool = False,
               unroll: bool = False, shared: dict | None = None) -> jax.Array:
    """Logits for ``x`` under ``encoding``.

    ``single_path=True`` runs only the op with the largest weight on each edge
    (for one-hot encodings and hard Gumbel samples: GDAS, SPOS, evaluating
    discrete architectures); otherwise every candidate runs (DARTS, SNAS).
    ``unroll=True`` (single path only) unrolls the loops over each group's
    edges: the same numbers, faster to run forward, slower to compile; SPOS
    scoring uses it (``make_apply(graphdef, single_path=True, unroll=True)``).
    ``shared``: :meth:`shared_prefix` of the same ``x`` (single path,
    unrolled); the stem and the shared edges are then not run. The batch
    statistics of the parts it covers are those of the prefix's pass, not
    updated by this call.
    """
    if shared is None:
      s0 = s1 = self.stem(x, train=train)
      cell_shared = []
    else:
      s0 = s1 = shared["stem"]
      cell_shared = shared["cells"]
    for k, cell in enumerate(self.cells):
      w = encoding["reduce"] if cell.reduction else encoding["normal"]
      if self.recompute and not single_path and k >= len(cell_shared):
        s0, s1 = s1, _recomputed_call(cell, s0, s1, w, train=train)
        continue
      s0, s1 = s1, cell(s0, s1, w, train=train, single_path=single_path, unroll=unroll,
                        shared=cell_shared[k] if k < len(cell_shared) else None)
    return self.classifier(s1)


def _recomputed_call(cell: SearchCell, s0: jax.Array, s1: jax.Array, w: jax.Array, *,
                     train: bool) -> jax.Array:
  """``cell(s0, s1, w)`` as a pure function under :func:`recompute_twice`; the cell's new
  batch statistics are written back."""
  graphdef, params, rest = nnx.split(cell, nnx.Param, ...)

  def pure(params, rest, s0, s1, w):
    c = nnx.merge(graphdef, params, rest)
    out = c(s0, s1, w, train=train)
    return out, nnx.split(c, nnx.Param, ...)[2]

  out, new_rest = recompute_twice(pure)(params, rest, s0, s1, w)
  nnx.update(cell, new_rest)
  return out


def _no_partial_channels(config) -> None:
  partial = int(config.search.get("partial_channels", 1))
  if partial != 1:
    raise ValueError(f"search.partial_channels={partial} (PC-DARTS) is implemented for the "
                     f"nb201 space only; the {config.space.name} supernet needs 1")


def supernet_from_config(config, space: DartsSpace, ds) -> DartsSupernet:
  """The DARTS supernet sized by ``config.search`` (``channels``, ``layers``) for dataset ``ds``.

  Example:
    >>> net = supernet_from_config(cfg, space, load_dataset("mnist1d"))  # doctest: +SKIP
  """
  _no_partial_channels(config)
  return DartsSupernet(space, ds.input_shape[-1], ds.num_classes, ndim=len(ds.input_shape) - 1,
                       channels=config.search.channels, layers=config.search.layers,
                       rngs=nnx.Rngs(config.seed))
