"""Which NAS-Bench-201 cells compute the same function: a canonical form.

A cell is read as an expression. Node 0 is the input ``x``; node ``j`` is the
sum of ``op(node_i)`` over its edges. Four identities make different strings
the same expression:

* ``none`` contributes nothing, and an op on a zero node is taken as zero, so
  that term is dropped too (exact for pooling; for a convolution see below);
* ``skip_connect`` is the identity: its input's terms join the parent's sum;
* ``avg_pool_3x3`` has no weights and is linear (its padding is not counted,
  which keeps it linear), so ``pool(a + b)`` is written ``pool(a) + pool(b)``;
* a sum does not depend on the order of its terms: terms are sorted.

Two simplifications follow NAS-Bench-201's own ``to_unique_str``: equal terms
are merged as if they shared weights (``conv(x) + conv(x)`` from two edges is
keyed like one convolution used twice), and a convolution on a zero node is
taken as zero although an affine batch norm turns it into a learned
per-channel constant. The table trains one member per form, the one with the
fewest live edges, which has no such dead convolution.

Counts over the 15,625 cells: NAS-Bench-201's ``to_unique_str(consider_zero=True)``
gives 6,466 forms; dropping its zero terms (it keeps ``#`` in sums) gives
5,390; sorting the terms of flattened skip sums 4,930; distributing the pooling
4,660, the count :func:`unique_cells` returns.

Example:
  >>> canonical_form("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|")
  'conv3(x)+pool(x)'
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jnas.spaces.nb201 import NB201_OPS, NB201Genotype, NB201Space

__all__ = ["canonical_form", "unique_cells", "genotype_at", "unique_cell_sampler", "ZERO"]

ZERO = "0"  # the form of a cell whose output is always zero
_NAMES = {"nor_conv_1x1": "conv1", "nor_conv_3x3": "conv3", "avg_pool_3x3": "pool"}


def _genotype(cell: NB201Genotype | str, space: NB201Space) -> NB201Genotype:
  g = space.parse(cell) if isinstance(cell, str) else cell
  space.validate(g)
  unknown = set(g.ops) - set(NB201_OPS)
  if unknown:
    raise ValueError(f"canonical_form knows the benchmark's five ops only, not "
                     f"{', '.join(sorted(unknown))}")
  return g


def canonical_form(cell: NB201Genotype | str, space: NB201Space | None = None) -> str:
  """A key shared by cells that compute the same function (up to weight values).

  Args:
    cell: a genotype or the benchmark's string.
    space: the cell space (the benchmark's 4-node, 5-op cell by default).

  Returns:
    The output node as a sorted ``+``-sum of terms, ``x`` for the input,
    ``conv1(...)``, ``conv3(...)``, ``pool(...)``; :data:`ZERO` for a cell
    whose output is zero.

  Example:
    >>> a = canonical_form("|nor_conv_1x1~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|skip_connect~2|")
    >>> b = canonical_form("|skip_connect~0|+|none~0|none~1|+|nor_conv_1x1~0|skip_connect~1|none~2|")
    >>> a == b, a
    (True, 'conv1(x)+x')
  """
  space = space or NB201Space()
  g = _genotype(cell, space)
  nodes: list[list[str]] = [["x"]]
  for j in range(1, space.num_nodes):
    terms: list[str] = []
    for (dst, src), op in zip(space.edge_list, g.ops):
      if dst != j or op == "none" or not nodes[src]:
        continue
      if op == "skip_connect":
        terms += nodes[src]
      elif op == "avg_pool_3x3":
        terms += [f"pool({t})" for t in nodes[src]]
      else:
        terms.append(f"{_NAMES[op]}({'+'.join(nodes[src])})")
    nodes.append(sorted(terms))
  return "+".join(nodes[-1]) or ZERO


def unique_cells(space: NB201Space | None = None) -> dict[str, list[int]]:
  """Every canonical form with the cells (positions in ``space.all_genotypes()``) that share it.

  Each list starts with the cell the table trains: the one with the fewest
  live (not ``none``) edges, then the lowest position. The forms come in
  order of their first cell.

  Example:
    >>> groups = unique_cells()
    >>> len(groups), sum(map(len, groups.values()))
    (4660, 15625)
    >>> genotype_at(groups["conv3(x)"][0]).ops
    ('none', 'none', 'none', 'nor_conv_3x3', 'none', 'none')
  """
  space = space or NB201Space()
  groups: dict[str, list[int]] = {}
  for n, g in enumerate(space.all_genotypes()):
    groups.setdefault(canonical_form(g, space), []).append(n)
  # Position n's genotype is known from n alone, so the live-edge count needs no second pass.
  none = space.ops.index("none")
  digits = _digits(space)
  for members in groups.values():
    members.sort(key=lambda n: (int(np.sum(digits[n] != none)), n))
  return groups


def genotype_at(n: int, space: NB201Space | None = None) -> NB201Genotype:
  """The cell at position ``n`` of ``space.all_genotypes()`` (first edge most significant).

  Example:
    >>> str(genotype_at(1))
    '|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|'
  """
  space = space or NB201Space()
  return space.decode_indices(np.asarray(np.unravel_index(n, (len(space.ops),) * space.num_edges)))


def _digits(space: NB201Space) -> np.ndarray:
  """``[num_architectures, num_edges]``: the integer form of every position."""
  n = np.arange(space.num_architectures)
  k = len(space.ops)
  return np.stack([(n // k**e) % k for e in range(space.num_edges - 1, -1, -1)], axis=1)


def unique_cell_sampler(space: Any) -> Callable[[np.random.Generator], NB201Genotype]:
  """``sampler(rng)``: a NAS-Bench-201 cell drawn *de-isomorphically*, for SPOS's path pool
  (:func:`jnas.strategies.spos.encoding_pool`; ``search.pool_sampling=unique``).

  Uniform sampling of encodings trains each function a cell can compute as
  often as it has encodings: of the 15,625 cells, 4,660 functions, and the
  simple ones (few live edges, or none reaching the output) have the most
  encodings. This sampler draws a function uniformly, then one of its cells
  uniformly (Ning et al., NeurIPS 2021, call this de-isomorphic sampling).
  ``ValueError`` for a space other than the benchmark's 5-op cell.

  Example:
    >>> sample = unique_cell_sampler(NB201Space())
    >>> str(sample(np.random.default_rng(0)))
    '|avg_pool_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_1x1~0|nor_conv_1x1~1|skip_connect~2|'
  """
  if not isinstance(space, NB201Space):
    raise ValueError(f"search.pool_sampling=unique needs the nb201 space, not "
                     f"{type(space).__name__}")
  groups = list(unique_cells(space).values())

  def sample(rng: np.random.Generator) -> NB201Genotype:
    members = groups[int(rng.integers(len(groups)))]
    return genotype_at(int(members[int(rng.integers(len(members)))]), space)

  return sample
