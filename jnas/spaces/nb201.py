"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes; node ``j`` sums one operation on each earlier node
``i < j``, so there are 6 edges, each picking one of 5 operations: 5^6 = 15,625
cells. The encoding is ``{"cell": [6, 5]}``, one one-hot row per edge in the
benchmark's edge order ``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)``.

Genotypes read and print in the benchmark's own string format, so a result can
be looked up in the published tables::

  |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Groups between ``+`` are nodes 1, 2, 3; ``op~i`` is the op on the edge from
node ``i``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from jnas.spaces.base import Choice, Encoding, SearchSpace

NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
  """A NAS-Bench-201 cell: one op name per edge, in the benchmark's edge order.

  ``str(g)`` is the benchmark's string; :meth:`NB201Space.parse` reads it back.

  Example:
    >>> g = NB201Genotype(("nor_conv_3x3",) * 6)
    >>> str(g)[:33]
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|'
  """

  ops: tuple[str, ...]

  def edges(self) -> list[tuple[int, int, str]]:
    """``(node, input, op)`` for every edge, in the benchmark's order.

    Example:
      >>> NB201Genotype(("none",) * 6).edges()[2]
      (2, 1, 'none')
    """
    pairs = _edge_list(_nodes_for(len(self.ops)))
    return [(j, i, op) for (j, i), op in zip(pairs, self.ops)]

  def to_str(self) -> str:
    """The benchmark's string format (same as ``str(g)``)."""
    groups, k = [], 0
    for j in range(1, _nodes_for(len(self.ops))):
      groups.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
      k += j
    return "+".join(groups)

  def __str__(self) -> str:
    return self.to_str()


def _edge_list(num_nodes: int) -> list[tuple[int, int]]:
  return [(j, i) for j in range(1, num_nodes) for i in range(j)]


def _nodes_for(num_edges: int) -> int:
  n = 1
  while n * (n - 1) // 2 < num_edges:
    n += 1
  return n


class NB201Space(SearchSpace):
  """The NAS-Bench-201 cell space.

  Args:
    num_nodes: nodes per cell, input node included (4 in the benchmark).
    ops: candidate op names (the benchmark's five by default).

  Example:
    >>> space = NB201Space()
    >>> space.encoding_shape(), space.num_architectures
    ({'cell': (6, 5)}, 15625)
    >>> g = space.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+"
    ...                 "|avg_pool_3x3~0|nor_conv_1x1~1|none~2|")
    >>> space.format(space.encoding_to_genotype(space.genotype_to_encoding(g))) == str(g)
    True
  """

  name = "nb201"

  def __init__(self, num_nodes: int = 4, ops: Sequence[str] = NB201_OPS):
    if num_nodes < 2:
      raise ValueError(f"num_nodes must be >= 2, got {num_nodes}")
    self.num_nodes = num_nodes
    self.ops = tuple(ops)
    if not self.ops:
      raise ValueError("ops must not be empty")
    if len(set(self.ops)) != len(self.ops):
      raise ValueError(f"duplicate op names in {self.ops}")
    bad = [o for o in self.ops if not o or any(c in o for c in "|~+ ")]
    if bad:
      raise ValueError(f"op name {bad[0]!r} cannot appear in the string format "
                       f"(no '|', '~', '+' or spaces)")
    self.edge_list = _edge_list(num_nodes)
    self.num_edges = len(self.edge_list)

  @property
  def primitives(self) -> tuple[str, ...]:
    """The candidate op names (``ops``), under the name the DARTS space uses."""
    return self.ops

  def alpha_labels(self) -> dict[str, np.ndarray]:
    return {"primitives": np.asarray(self.primitives), "edges": np.asarray(self.edges(), np.int32),
            "edge_labels": np.asarray([f"node {j} <- node {i}" for j, i in self.edge_list])}

  def edges(self) -> list[tuple[int, int]]:
    """``(node, input_node)`` of every edge, in the benchmark's (and the encoding's) order.

    Example:
      >>> NB201Space().edges()[:3]
      [(1, 0), (2, 0), (2, 1)]
    """
    return list(self.edge_list)

  @property
  def num_architectures(self) -> int:
    """Number of distinct cells (``len(ops) ** num_edges``)."""
    return len(self.ops) ** self.num_edges

  # Choice points ----------------------------------------------------------

  def choices(self) -> dict[str, list[Choice]]:
    return {"cell": [Choice(f"cell/node{j}<-{i}", self.ops) for j, i in self.edge_list]}

  # String format --------------------------------------------------------------

  def parse(self, text: str) -> NB201Genotype:
    """Reads the benchmark's string; ``ValueError`` names what is wrong.

    Example:
      >>> NB201Space().parse("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|").ops[-1]
      'skip_connect'
    """
    if not isinstance(text, str):
      raise ValueError(f"an NB201 architecture string must be a str, got {type(text).__name__}")
    s = text.strip()
    groups = s.split("+")
    if len(groups) != self.num_nodes - 1:
      raise ValueError(f"{s!r} has {len(groups)} node groups separated by '+', this space needs "
                       f"{self.num_nodes - 1}")
    ops = []
    for j, group in enumerate(groups, start=1):
      if len(group) < 2 or group[0] != "|" or group[-1] != "|":
        raise ValueError(f"node {j} group {group!r} must start and end with '|'")
      items = group[1:-1].split("|")
      if len(items) != j:
        raise ValueError(f"node {j} group {group!r} has {len(items)} edges, node {j} needs {j}")
      for i, item in enumerate(items):
        op, sep, inp = item.partition("~")
        if not sep:
          raise ValueError(f"node {j} edge {item!r} must be 'op~input'")
        if op not in self.ops:
          raise ValueError(f"unknown op {op!r} on node {j} (ops: {', '.join(self.ops)})")
        if inp != str(i):
          raise ValueError(f"node {j} edge {i} reads input {inp!r}, expected {i} "
                           f"(edges of node {j} must read inputs 0..{j - 1} in order)")
        ops.append(op)
    return NB201Genotype(tuple(ops))

  def format(self, genotype: NB201Genotype) -> str:
    """The benchmark's string of a genotype (validated).

    Example:
      >>> space = NB201Space()
      >>> space.format(space.decode_indices([1, 0, 0, 0, 0, 0]))
      '|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|'
    """
    self.validate(genotype)
    return genotype.to_str()

  def validate(self, genotype: NB201Genotype) -> None:
    """Raises ``ValueError`` with one line naming what does not fit the space."""
    if not isinstance(genotype, NB201Genotype):
      raise ValueError(f"expected an NB201Genotype, got {type(genotype).__name__}")
    if len(genotype.ops) != self.num_edges:
      raise ValueError(f"genotype has {len(genotype.ops)} edges, this space has {self.num_edges}")
    for (j, i), op in zip(self.edge_list, genotype.ops):
      if op not in self.ops:
        raise ValueError(f"unknown op {op!r} on edge {j}<-{i} (ops: {', '.join(self.ops)})")

  # Genotype <-> encoding ----------------------------------------------------

  def genotype_to_encoding(self, genotype: NB201Genotype) -> dict[str, np.ndarray]:
    self.validate(genotype)
    idx = [self.ops.index(op) for op in genotype.ops]
    return {"cell": np.eye(len(self.ops), dtype=np.float32)[idx]}

  def encoding_to_genotype(self, encoding: Encoding) -> NB201Genotype:
    """The op with the largest weight on each edge (logits or probabilities)."""
    self.check_encoding(encoding)
    w = np.asarray(encoding["cell"])
    if w.ndim != 2:
      raise ValueError(f"encoding['cell'] must be one architecture [{self.num_edges}, "
                       f"{len(self.ops)}], got shape {w.shape}")
    return NB201Genotype(tuple(self.ops[k] for k in np.argmax(w, axis=-1)))

  def random_genotype(self, rng: np.random.Generator) -> NB201Genotype:
    return NB201Genotype(tuple(self.ops[k] for k in rng.integers(len(self.ops),
                                                                 size=self.num_edges)))

  # Integer form: faster than the default route through the encoding.
  def encode_indices(self, genotype: NB201Genotype) -> np.ndarray:
    self.validate(genotype)
    return np.asarray([self.ops.index(op) for op in genotype.ops], np.int32)

  def decode_indices(self, indices: Any) -> NB201Genotype:
    idx = self._check_indices(indices)
    return NB201Genotype(tuple(self.ops[k] for k in idx))

  def all_genotypes(self) -> Iterator[NB201Genotype]:
    """Every cell once, in a fixed order: the integer form counted in base ``len(ops)``.

    The first edge is the most significant digit, so cell ``n`` is
    ``decode_indices(digits of n)``; see :meth:`index_of`.

    Example:
      >>> space = NB201Space()
      >>> cells = list(space.all_genotypes())
      >>> len(cells), str(cells[1])
      (15625, '|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|')
    """
    for combo in itertools.product(self.ops, repeat=self.num_edges):
      yield NB201Genotype(combo)

  def index_of(self, genotype: NB201Genotype) -> int:
    """Position of ``genotype`` in :meth:`all_genotypes`.

    Example:
      >>> space = NB201Space()
      >>> space.index_of(space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"))
      1
    """
    n = 0
    for k in self.encode_indices(genotype):
      n = n * len(self.ops) + int(k)
    return n

  # JSON ---------------------------------------------------------------------

  def genotype_to_json(self, genotype: NB201Genotype) -> dict:
    return {"space": self.name, "arch": self.format(genotype)}

  def genotype_from_json(self, data: Mapping | str) -> NB201Genotype:
    """Accepts ``{"arch": "|...|"}`` (what :meth:`genotype_to_json` writes) or the bare string."""
    if isinstance(data, str):
      return self.parse(data)
    if not isinstance(data, Mapping) or "arch" not in data:
      raise ValueError("an NB201 genotype must be a JSON object with 'arch' (the benchmark "
                       "string) or the string itself")
    if data.get("space", self.name) != self.name:
      raise ValueError(f"genotype is for space {data['space']!r}, not {self.name!r}")
    return self.parse(data["arch"])


def space_from_config(config) -> NB201Space:
  """The NAS-Bench-201 space of ``config.space`` (``num_nodes``, and ``primitives`` as its ops).

  Example:
    >>> space_from_config(load_config("experiments/nb201_mnist1d.py")).num_edges  # doctest: +SKIP
    6
  """
  prims = config.space.get("primitives")
  return NB201Space(num_nodes=config.space.get("num_nodes", 4),
                    ops=tuple(prims) if prims else NB201_OPS)


def resolve_string(space: NB201Space, text: str) -> tuple[NB201Space, NB201Genotype] | None:
  """``(space, genotype)`` for a benchmark string (``|op~0|+|...|``), else ``None``.

  Example:
    >>> resolve_string(NB201Space(), "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")[1].ops[0]
    'none'
  """
  return (space, space.parse(text)) if text.lstrip().startswith("|") else None
