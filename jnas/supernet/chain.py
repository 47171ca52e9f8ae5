"""The supernet of a chain space.

:class:`ChainSupernet` holds, at every searchable block of a
:class:`~jnas.spaces.chain.ChainSpace`, every candidate, built by the same
builders as the discrete :class:`~jnas.train.chain_network.ChainNetwork`
(``build_block``), between the space's fixed stem and head. Its forward pass
takes the architecture encoding (``{"blocks": [num_blocks, num_candidates]}``)
as a traced argument::

    logits = model(x, encoding, train=True)                  # sum_k w[b, k] * cand_k(x)
    logits = model(x, encoding, train=True, single_path=True)  # argmax candidate only

so one compiled function serves every architecture (FBNet's soft Gumbel
samples, one-hot encodings of discrete architectures, a ``vmap`` over a
population). Because the candidate modules are the discrete network's own
modules, the weights of a discrete architecture can be taken out of the
supernet unchanged (:func:`extract_network`): its output equals the
supernet's under that architecture's one-hot encoding.

FBNet's search on it lives in :mod:`jnas.search.fbnet`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
from flax import nnx

from jnas.spaces.chain import ChainGenotype, ChainSpace, Position
from jnas.supernet.mixed import MixedCandidates
from jnas.train.chain_network import ChainNetwork, build_block, build_head, build_stem


def blocks_of(encoding: Mapping[str, jax.Array] | jax.Array) -> jax.Array:
  """The ``[num_blocks, num_candidates]`` weights of a chain encoding (a dict or the array itself).

  Example:
    >>> import jax.numpy as jnp
    >>> blocks_of({"blocks": jnp.ones((2, 3))}).shape
    (2, 3)
  """
  return encoding["blocks"] if isinstance(encoding, Mapping) else encoding


class MixedBlock(MixedCandidates):
  """Every candidate of one chain block; the output is ``sum_k w[k] * candidate_k(x)``.

  ``single_path=True`` runs only the arg-max candidate (see
  :class:`jnas.supernet.mixed.MixedCandidates`).

  Example:
    >>> from jnas.spaces.chain import KernelChainSpace
    >>> s = KernelChainSpace((16, 1), 4, widths=(4,), pool_after=())
    >>> blk = MixedBlock(s, s.positions()[0], rngs=nnx.Rngs(0))
    >>> blk(jnp.ones((2, 16, 1)), jnp.array([0.0, 1.0, 0.0]), train=False).shape
    (2, 16, 4)
  """

  def __init__(self, space: ChainSpace, position: Position, *, rngs: nnx.Rngs):
    super().__init__([build_block(space, position, name, rngs) for name in space.candidates])


class ChainSupernet(nnx.Module):
  """A chain space's supernet: stem, one :class:`MixedBlock` per searchable block, head.

  Args:
    space: a :class:`~jnas.spaces.chain.ChainSpace` (FBNet or kernel chain,
      1-D or 2-D).
    rngs: NNX random streams.

  Example:
    >>> from jnas.spaces.chain import FBNetSpace
    >>> space = FBNetSpace((16, 1), 4, stem_channels=4, stem_stride=1,
    ...                    stages=((4, 1, 1), (8, 1, 2)), head_channels=8)
    >>> net = ChainSupernet(space, rngs=nnx.Rngs(0))
    >>> enc = {"blocks": jnp.ones((2, 9)) / 9}
    >>> net(jnp.ones((2, 16, 1)), enc, train=True).shape
    (2, 4)
  """

  def __init__(self, space: ChainSpace, *, rngs: nnx.Rngs):
    self.stem = build_stem(space, rngs)
    self.blocks = nnx.List([MixedBlock(space, p, rngs=rngs) for p in space.positions()])
    self.head = build_head(space, rngs)
    self.num_candidates = len(space.candidates)

  def __call__(self, x: jax.Array, encoding: Mapping[str, jax.Array] | jax.Array, *,
               train: bool, single_path: bool = False) -> jax.Array:
    """Logits for ``x`` under ``encoding`` (``{"blocks": [num_blocks, num_candidates]}``).

    ``single_path=True`` runs only the candidate with the largest weight in
    each block (one-hot encodings, hard Gumbel samples); otherwise every
    candidate runs and the outputs are mixed (soft samples, FBNet).
    """
    w = blocks_of(encoding)
    if w.shape != (len(self.blocks), self.num_candidates):
      raise ValueError(f"encoding['blocks'] has shape {tuple(w.shape)}, the supernet needs "
                       f"{(len(self.blocks), self.num_candidates)}")
    if self.stem is not None:
      x = self.stem(x, train=train)
    for b, blk in enumerate(self.blocks):
      x = blk(x, w[b], train=train, single_path=single_path)
    return self.head(x, train=train)


def make_supernet_apply(graphdef: Any, *, single_path: bool = False) -> Callable:
  """``apply(params, state, encoding, x, train) -> (logits, new_state)`` of a split supernet.

  The same contract as :func:`jnas.supernet.functional.make_apply`, with the
  single-path option fixed.

  Example:
    >>> split = split_model(ChainSupernet(space, rngs=nnx.Rngs(0)))  # doctest: +SKIP
    >>> apply = make_supernet_apply(split.graphdef, single_path=True)  # doctest: +SKIP
  """

  def apply(params, state, encoding, x, train):
    params, state = jax.tree.map(lambda a: a, (params, state))
    model = nnx.merge(graphdef, params, state)
    logits = model(x, encoding, train=train, single_path=single_path)
    return logits, nnx.state(model, nnx.BatchStat)

  return apply


def extract_network(space: ChainSpace, supernet: ChainSupernet, genotype: ChainGenotype
                    ) -> ChainNetwork:
  """The discrete network of ``genotype`` carrying the supernet's shared weights and statistics.

  Example:
    >>> net = extract_network(space, supernet, genotype)  # doctest: +SKIP
    >>> net(x, train=False)  # == supernet(x, one_hot(genotype), train=False)  # doctest: +SKIP
  """
  space.validate(genotype)
  net = nnx.eval_shape(lambda: ChainNetwork(space, genotype, rngs=nnx.Rngs(0)))
  if supernet.stem is not None:
    nnx.update(net.stem, nnx.state(supernet.stem))
  for b, name in enumerate(genotype.blocks):
    k = space.candidates.index(name)
    nnx.update(net.blocks[b], nnx.state(supernet.blocks[b].candidates[k]))
  nnx.update(net.head, nnx.state(supernet.head))
  return net


def supernet_from_config(config, space: ChainSpace, ds) -> ChainSupernet:
  """The chain space's supernet (its own stages); refuses a dataset of another shape or classes.

  Example:
    >>> net = supernet_from_config(cfg, space, load_dataset("mnist1d"))  # doctest: +SKIP
  """
  from jnas.supernet.darts import _no_partial_channels  # noqa: PLC0415

  _no_partial_channels(config)
  check_chain_data(config, space, ds)
  return ChainSupernet(space, rngs=nnx.Rngs(config.seed))


def check_chain_data(config, space: ChainSpace, ds) -> None:
  """A chain space states its input shape and classes; refuses a dataset that differs.

  Example:
    >>> check_chain_data(cfg, space, load_dataset("mnist1d"))  # doctest: +SKIP
  """
  if tuple(ds.input_shape) != tuple(space.input_shape) or ds.num_classes != space.num_classes:
    raise ValueError(f"data.input_shape/num_classes {tuple(space.input_shape)}/"
                     f"{space.num_classes} do not match the dataset {config.data.name!r} "
                     f"({tuple(ds.input_shape)}/{ds.num_classes})")
