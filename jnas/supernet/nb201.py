"""The NAS-Bench-201 supernet: the benchmark's skeleton with a mixed op on every cell edge.

Every cell shares one architecture (the benchmark's cells are all alike), so
the encoding is ``{"cell": [6, 5]}``: ``softmax(alpha)`` for DARTS, Gumbel
samples for GDAS/SNAS, one-hot rows for SPOS, random search and evolution. The
candidates are built by :func:`jnas.train.nb201_network.build_nb201_op`, the
same builder as the discrete network's, with non-affine batch norms as in the
benchmark's search models.

Example:
  >>> from jnas.spaces.nb201 import NB201Space
  >>> space = NB201Space()
  >>> net = NB201Supernet(space, 1, 10, ndim=1, channels=4, cells_per_stage=1,
  ...                     rngs=nnx.Rngs(0))
  >>> net(jnp.ones((2, 40, 1)), {"cell": jnp.ones((6, 5)) / 5}, train=True).shape
  (2, 10)
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.spaces.nb201 import NB201Space
from jnas.supernet.mixed import MixedCandidates
from jnas.train.chain_network import channel_shuffle
from jnas.train.nb201_network import Head, ResidualReduction, Stem, build_nb201_op, nb201_plan


class NB201SearchCell(nnx.Module):
  """A cell whose every edge is a mixed op over the space's candidates.

  ``partial_channels = K > 1`` is PC-DARTS's partial channel connection (Xu
  et al., ICLR 2020): each edge's mixed op sees only the first ``C / K``
  channels, the others bypass it unchanged, and a channel shuffle mixes the
  two parts so that the next edge samples other channels. The op is ``K``
  times cheaper and the supernet is less able to lean on parameter-free ops.
  """

  def __init__(self, space: NB201Space, channels: int, *, ndim: int, affine: bool = False,
               partial_channels: int = 1, rngs: nnx.Rngs):
    if partial_channels < 1 or channels % partial_channels:
      raise ValueError(f"search.partial_channels={partial_channels} must be >= 1 and divide "
                       f"the cell's {channels} channels")
    self.edge_list = tuple(space.edge_list)
    self.num_nodes = space.num_nodes
    self.partial = partial_channels
    width = channels // partial_channels
    self.edges = nnx.List([
        MixedCandidates([build_nb201_op(op, width, ndim=ndim, affine=affine, rngs=rngs)
                         for op in space.ops], zero=[op == "none" for op in space.ops])
        for _ in self.edge_list])

  def _edge(self, e: int, x: jax.Array, w: jax.Array, train: bool, single_path: bool
            ) -> jax.Array:
    if self.partial == 1:
      return self.edges[e](x, w, train=train, single_path=single_path)
    c = x.shape[-1] // self.partial
    h = self.edges[e](x[..., :c], w, train=train, single_path=single_path)
    return channel_shuffle(jnp.concatenate([h, x[..., c:]], axis=-1), self.partial)

  def __call__(self, x: jax.Array, weights: jax.Array, *, train: bool,
               single_path: bool = False) -> jax.Array:
    nodes = [x]
    for j in range(1, self.num_nodes):
      total = None
      for e, (dst, src) in enumerate(self.edge_list):
        if dst == j:
          h = self._edge(e, nodes[src], weights[e], train, single_path)
          total = h if total is None else total + h
      nodes.append(total)
    return nodes[-1]


class NB201Supernet(nnx.Module):
  """The NAS-Bench-201 search network.

  Args:
    space: the cell space (:class:`~jnas.spaces.nb201.NB201Space`).
    in_channels, num_classes, ndim: data description (1-D or 2-D inputs).
    channels: ``C`` (16 in the benchmark).
    cells_per_stage: ``N`` (5 in the benchmark).
    affine: learnable scale and shift in the candidates' batch norms. Off in
      search (the benchmark's search models); on when a single path is trained
      as a stand-alone network, as the discrete network's ops have them
      (:mod:`jnas.nb201_table`).
    partial_channels: PC-DARTS's ``K`` (1: every channel goes through every
      edge's mixed op); see :class:`NB201SearchCell`.
    rngs: NNX random streams.
  """

  def __init__(self, space: NB201Space, in_channels: int, num_classes: int, *, ndim: int,
               channels: int = 16, cells_per_stage: int = 5, affine: bool = False,
               partial_channels: int = 1, rngs: nnx.Rngs):
    self.space = space
    self.stem = Stem(in_channels, channels, ndim=ndim, rngs=rngs)
    self.layers = nnx.List([
        NB201SearchCell(space, c_in, ndim=ndim, affine=affine, partial_channels=partial_channels,
                        rngs=rngs) if kind == "cell"
        else ResidualReduction(c_in, c_out, ndim=ndim, rngs=rngs)
        for kind, c_in, c_out in nb201_plan(channels, cells_per_stage)])
    self.head = Head(4 * channels, num_classes, rngs=rngs)
    self.encoding_rows = (space.num_edges, len(space.ops))

  def __call__(self, x: jax.Array, encoding: Mapping[str, jax.Array], *, train: bool,
               single_path: bool = False) -> jax.Array:
    """Logits for ``x`` under ``encoding``; ``single_path`` runs only each edge's arg-max op."""
    w = encoding["cell"]
    if tuple(w.shape) != self.encoding_rows:
      raise ValueError(f"encoding['cell'] has shape {tuple(w.shape)}, the supernet needs "
                       f"{self.encoding_rows}")
    h = self.stem(x, train=train)
    for layer in self.layers:
      if isinstance(layer, NB201SearchCell):
        h = layer(h, w, train=train, single_path=single_path)
      else:
        h = layer(h, train=train)
    return self.head(h, train=train)


def supernet_from_config(config, space: NB201Space, ds) -> NB201Supernet:
  """The NAS-Bench-201 supernet sized by ``config.search`` (``channels``, ``cells_per_stage``,
  ``partial_channels``: PC-DARTS's K) for dataset ``ds``.

  Example:
    >>> net = supernet_from_config(cfg, space, load_dataset("mnist1d"))  # doctest: +SKIP
  """
  sc = config.search
  return NB201Supernet(space, ds.input_shape[-1], ds.num_classes, ndim=len(ds.input_shape) - 1,
                       channels=sc.channels, cells_per_stage=sc.cells_per_stage,
                       partial_channels=int(sc.get("partial_channels", 1)),
                       rngs=nnx.Rngs(config.seed))
