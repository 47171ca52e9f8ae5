"""The DARTS cell search space (Liu, Simonyan & Yang, ICLR 2019).

A cell has two inputs (the outputs of the two previous cells) and
``num_nodes`` intermediate nodes; node ``j`` may read from every earlier state
(``j + 2`` candidates), so a cell has ``sum(j + 2)`` edges (14 for 4 nodes),
ordered node by node and, within a node, by input index. Each edge picks one of
the eight DARTS operations. The network has two cell types, ``normal`` and
``reduce``, so the encoding is ``{"normal": [14, 8], "reduce": [14, 8]}``.

A derived (discrete) cell keeps two inputs per node. Its encoding has a one-hot
row for each kept edge and a zero row for every dropped edge, so passing it
through the supernet computes exactly the derived cell.
"""

from __future__ import annotations

import numbers
from typing import Mapping, Sequence

import numpy as np

from jnas.spaces.base import Choice, Encoding, SearchSpace
from jnas.spaces.darts_genotypes import GENOTYPES, Genotype

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

CELL_TYPES = ("normal", "reduce")


def _is_index(x: object) -> bool:
  """An integer (Python or numpy), not a bool, a float or a string of digits."""
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _short(x: object) -> str:
  text = repr(x)
  return text if len(text) <= 40 else text[:37] + "..."


def edge_index(node: int, inp: int) -> int:
  """Position of the edge ``inp -> node`` in the encoding's rows.

  Example:
    >>> edge_index(1, 0), edge_index(3, 4)
    (2, 13)
  """
  return node * (node + 3) // 2 + inp


class DartsSpace(SearchSpace):
  """The DARTS cell space with ``num_nodes`` intermediate nodes.

  Args:
    num_nodes: intermediate nodes per cell (4 in DARTS).
    primitives: candidate op names; must include ``none`` first, as DARTS's
      derivation rule excludes it.
    inputs_per_node: edges kept per node in a derived cell (2 in DARTS).

  Example:
    >>> space = DartsSpace()
    >>> space.encoding_shape()
    {'normal': (14, 8), 'reduce': (14, 8)}
    >>> g = space.encoding_to_genotype(space.genotype_to_encoding(GENOTYPES["DARTS_V2"]))
    >>> g.canonical() == GENOTYPES["DARTS_V2"].canonical()
    True
  """

  name = "darts"
  named_genotypes = GENOTYPES

  def __init__(self, num_nodes: int = 4, primitives: Sequence[str] = PRIMITIVES,
               inputs_per_node: int = 2):
    if num_nodes < 1:
      raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    self.num_nodes = num_nodes
    self.primitives = tuple(primitives)
    if len(set(self.primitives)) != len(self.primitives):
      raise ValueError(f"duplicate op names in {self.primitives}")
    from jnas.ops.modules import OPS  # local: spaces stay importable without flax
    unknown = [p for p in self.primitives if p not in OPS]
    if unknown:
      raise ValueError(f"unknown op {unknown[0]!r} (known: {', '.join(OPS)})")
    self.inputs_per_node = inputs_per_node
    self.num_edges = sum(j + 2 for j in range(num_nodes))
    self.concat = tuple(range(2, num_nodes + 2))

  # Choice points ----------------------------------------------------------

  def edges(self) -> list[tuple[int, int]]:
    """``(node, input)`` for every edge, in encoding-row order."""
    return [(j, i) for j in range(self.num_nodes) for i in range(j + 2)]

  def index_fill(self) -> np.ndarray:
    # ``skip_connect`` on inputs 0, 1, ... of every node ([op, input] per kept edge).
    op = self.primitives.index("skip_connect") if "skip_connect" in self.primitives else 0
    per_node = []
    for k in range(self.inputs_per_node):
      per_node += [op, k]
    return np.asarray(per_node * (len(CELL_TYPES) * self.num_nodes), np.int32)

  def index_groups(self) -> list[int]:
    # A node's kept edges are decided together.
    return [2 * self.inputs_per_node] * (len(CELL_TYPES) * self.num_nodes)

  def valid_indices(self, x: np.ndarray) -> np.ndarray:
    # A node must read distinct inputs.
    k = self.inputs_per_node
    inputs = x.reshape(len(x), -1, k, 2)[..., 1]  # [n, cells * nodes, k]
    same = (inputs[..., :, None] == inputs[..., None, :]).sum((-1, -2)) > k
    return ~same.any(-1)

  def distinct_index_pairs(self) -> tuple[tuple[int, int], ...]:
    k, pairs = self.inputs_per_node, []
    for node in range(len(CELL_TYPES) * self.num_nodes):  # both cell types, node by node
      base = node * 2 * k
      inputs = [base + 2 * e + 1 for e in range(k)]
      pairs += [(t, u) for i, t in enumerate(inputs) for u in inputs[:i]]
    return tuple(pairs)

  def alpha_labels(self) -> dict[str, np.ndarray]:
    return {"primitives": np.asarray(self.primitives), "edges": np.asarray(self.edges(), np.int32)}

  def choices(self) -> dict[str, list[Choice]]:
    return {
        ct: [Choice(f"{ct}/node{j}<-{i}", self.primitives) for j, i in self.edges()]
        for ct in CELL_TYPES
    }

  def _op_index(self, name: str) -> int:
    if name not in self.primitives:
      raise ValueError(f"unknown op {name!r} in genotype (this space's ops: "
                       f"{', '.join(self.primitives)})")
    return self.primitives.index(name)

  # Genotype <-> encoding ----------------------------------------------------

  def validate(self, genotype: Genotype) -> None:
    """Raises ``ValueError`` with one line naming what does not fit the space.

    Checks each cell's pair count, op names, inputs (integers in range, and
    distinct within a node: a node reading one state twice is not a DARTS
    cell) and the concatenated states (a non-empty set in range).
    """
    if not isinstance(genotype, Genotype):
      raise ValueError(f"expected a DARTS Genotype, got {type(genotype).__name__}")
    for ct in CELL_TYPES:
      cell = genotype.cell(ct)
      want = self.num_nodes * self.inputs_per_node
      if len(cell) != want:
        raise ValueError(f"genotype's {ct} cell has {len(cell)} (op, input) pairs, this space "
                         f"needs {want} ({self.inputs_per_node} per node x {self.num_nodes} nodes)")
      for k, pair in enumerate(cell):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
          raise ValueError(f"genotype's {ct} cell entry {k} is {pair!r}, not an (op, input) pair")
        op, inp = pair
        if not isinstance(op, str):
          raise ValueError(f"genotype's {ct} cell entry {k}: op {op!r} must be a name")
        self._op_index(op)
        node = k // self.inputs_per_node
        if not _is_index(inp):
          raise ValueError(f"genotype's {ct} cell: node {node} reads input {inp!r}, which must "
                           f"be an integer in [0, {node + 1}]")
        if not 0 <= int(inp) < node + 2:
          raise ValueError(f"genotype's {ct} cell: node {node} reads input {inp}, "
                           f"which must be in [0, {node + 1}]")
      for node in range(self.num_nodes):
        inputs = [int(i) for _, i in cell[node * self.inputs_per_node:
                                          (node + 1) * self.inputs_per_node]]
        twice = next((i for i in inputs if inputs.count(i) > 1), None)
        if twice is not None:
          raise ValueError(f"genotype's {ct} cell: node {node} reads input {twice} twice; a "
                           f"node's inputs must be distinct")
      concat = genotype.normal_concat if ct == "normal" else genotype.reduce_concat
      if not isinstance(concat, (tuple, list)) or not concat:
        raise ValueError(f"genotype's {ct}_concat is empty: the cell output concatenates at "
                         f"least one state")
      if not all(_is_index(c) for c in concat):
        raise ValueError(f"genotype's {ct}_concat {tuple(concat)} must list state indices "
                         f"(integers)")
      if any(not 0 <= c < self.num_nodes + 2 for c in concat):
        raise ValueError(f"genotype's {ct}_concat {tuple(concat)} names states outside "
                         f"[0, {self.num_nodes + 1}]")
      if len(set(concat)) != len(concat):
        raise ValueError(f"genotype's {ct}_concat {tuple(concat)} names a state twice")

  def _check_not_empty(self, genotype: Genotype) -> None:
    """A cell whose every kept edge is ``none`` outputs zeros, whatever its input.

    The DARTS rule never derives one (it skips ``none``), so such a genotype
    is a mistake; it is refused where genotypes come from users (JSON, names)
    rather than in :meth:`validate`, which strategies sampling the integer
    form also call.
    """
    for ct in CELL_TYPES:
      if all(op == "none" for op, _ in genotype.cell(ct)):
        raise ValueError(f"genotype's {ct} cell has only 'none' ops: its output would not "
                         f"depend on its inputs")

  def genotype_to_encoding(self, genotype: Genotype) -> dict[str, np.ndarray]:
    self.validate(genotype)
    enc = {}
    for ct in CELL_TYPES:
      m = np.zeros((self.num_edges, len(self.primitives)), np.float32)
      for k, (op, inp) in enumerate(genotype.cell(ct)):
        node = k // self.inputs_per_node
        m[edge_index(node, int(inp)), self._op_index(op)] += 1.0
      enc[ct] = m
    return enc

  def encoding_to_genotype(self, encoding: Encoding) -> Genotype:
    """The DARTS derivation rule.

    Each edge's strength is its largest non-``none`` weight; each node keeps
    its ``inputs_per_node`` strongest incoming edges, each with its strongest
    non-``none`` op. ``encoding`` may hold logits or probabilities (the rule
    is invariant to softmax within rows).
    """
    self.check_encoding(encoding)
    allowed = [k for k, p in enumerate(self.primitives) if p != "none"]
    cells = {}
    for ct in CELL_TYPES:
      w = np.asarray(encoding[ct], np.float64)
      # Softmax per row so logits and probabilities derive the same cell.
      w = np.exp(w - w.max(axis=-1, keepdims=True))
      w = w / w.sum(axis=-1, keepdims=True)
      pairs = []
      for j in range(self.num_nodes):
        rows = [edge_index(j, i) for i in range(j + 2)]
        strength = [max(w[r, k] for k in allowed) for r in rows]
        # DARTS lists the kept edges strongest first; ties go to the lower input.
        best = sorted(range(j + 2), key=lambda i: -strength[i])[: self.inputs_per_node]
        for i in best:
          r = edge_index(j, i)
          k = max(allowed, key=lambda a: w[r, a])
          pairs.append((self.primitives[k], i))
      cells[ct] = tuple(pairs)
    return Genotype(cells["normal"], self.concat, cells["reduce"], self.concat)

  def random_genotype(self, rng: np.random.Generator) -> Genotype:
    ops = [p for p in self.primitives if p != "none"]
    cells = {}
    for ct in CELL_TYPES:
      pairs = []
      for j in range(self.num_nodes):
        inputs = sorted(rng.choice(j + 2, size=min(self.inputs_per_node, j + 2), replace=False))
        pairs += [(ops[rng.integers(len(ops))], int(i)) for i in inputs]
      cells[ct] = tuple(pairs)
    return Genotype(cells["normal"], self.concat, cells["reduce"], self.concat)

  # JSON ---------------------------------------------------------------------

  def genotype_to_json(self, genotype: Genotype) -> dict:
    return {
        "space": self.name,
        "normal": [[op, int(i)] for op, i in genotype.normal],
        "normal_concat": list(genotype.normal_concat),
        "reduce": [[op, int(i)] for op, i in genotype.reduce],
        "reduce_concat": list(genotype.reduce_concat),
    }

  def genotype_from_json(self, data: Mapping) -> Genotype:
    """Reads :meth:`genotype_to_json`'s form; ``ValueError`` (one line) for anything else.

    Strict about types, so nothing is silently rounded or split: an input of
    ``1.7`` or ``"1"`` and an entry that is not an ``[op, input]`` pair are
    refused, as are the genotypes :meth:`validate` refuses and an all-``none``
    cell.

    Example:
      >>> space = DartsSpace()
      >>> g = space.genotype_from_json(space.genotype_to_json(GENOTYPES["DARTS_V2"]))
      >>> g == GENOTYPES["DARTS_V2"]
      True
    """
    if not isinstance(data, Mapping):
      raise ValueError("a DARTS genotype must be a JSON object with 'normal' and 'reduce'")
    if data.get("space", self.name) != self.name:
      raise ValueError(f"genotype is for space {_short(data['space'])}, not {self.name!r}")
    missing = [k for k in CELL_TYPES if k not in data]
    if missing:
      raise ValueError(f"genotype JSON lacks {missing[0]!r} (needs 'normal' and 'reduce')")

    def cell(ct: str) -> tuple[tuple[str, int], ...]:
      entries = data[ct]
      if not isinstance(entries, (list, tuple)):
        raise ValueError(f"genotype JSON {ct!r} must be a list of [op, input] pairs, got "
                         f"{type(entries).__name__}")
      out = []
      for k, e in enumerate(entries):
        if not isinstance(e, (list, tuple)) or len(e) != 2:
          raise ValueError(f"genotype JSON {ct!r} entry {k} is {_short(e)}, not an "
                           f"[op, input] pair")
        op, inp = e
        if not isinstance(op, str):
          raise ValueError(f"genotype JSON {ct!r} entry {k}: op {_short(op)} must be a string")
        if not _is_index(inp):
          raise ValueError(f"genotype JSON {ct!r} entry {k}: input {_short(inp)} must be an "
                           f"integer")
        out.append((op, int(inp)))
      return tuple(out)

    def concat(ct: str) -> tuple[int, ...]:
      key = f"{ct}_concat"
      value = data.get(key, self.concat)
      if not isinstance(value, (list, tuple)) or not all(_is_index(c) for c in value):
        raise ValueError(f"genotype JSON {key!r} must be a list of state indices (integers), "
                         f"got {_short(value)}")
      return tuple(int(c) for c in value)

    g = Genotype(normal=cell("normal"), normal_concat=concat("normal"),
                 reduce=cell("reduce"), reduce_concat=concat("reduce"))
    self.validate(g)
    self._check_not_empty(g)
    return g

  def genotype_by_name(self, name: str) -> Genotype:
    """A published genotype by name (``DARTS_V1``, ``DARTS_V2``, ``DARTS``)."""
    if name not in GENOTYPES:
      raise ValueError(f"unknown genotype {name!r} (known: {', '.join(GENOTYPES)})")
    g = GENOTYPES[name]
    self.validate(g)
    return g

  # Integer form, mutation and crossover ---------------------------------------
  # A derived node keeps ``inputs_per_node`` distinct inputs, so decisions are
  # (op, input) per kept edge rather than one-hot rows of the encoding.

  def index_sizes(self) -> tuple[int, ...]:
    """``[op, input]`` per kept edge, cell type by cell type, node by node.

    Example:
      >>> DartsSpace(num_nodes=2).index_sizes()
      (8, 2, 8, 2, 8, 3, 8, 3, 8, 2, 8, 2, 8, 3, 8, 3)
    """
    sizes = []
    for _ in CELL_TYPES:
      for j in range(self.num_nodes):
        sizes += [len(self.primitives), j + 2] * self.inputs_per_node
    return tuple(sizes)

  def encode_indices(self, genotype: Genotype) -> np.ndarray:
    """``[op_index, input]`` of each kept edge, in the genotype's own order.

    Example:
      >>> DartsSpace().encode_indices(GENOTYPES["DARTS_V2"])[:4]
      array([4, 0, 4, 1], dtype=int32)
    """
    self.validate(genotype)
    out = []
    for ct in CELL_TYPES:
      for op, inp in genotype.cell(ct):
        out += [self.primitives.index(op), int(inp)]
    return np.asarray(out, np.int32)

  def decode_indices(self, indices) -> Genotype:
    """Inverse of :meth:`encode_indices`; a node's inputs must be distinct.

    Example:
      >>> space = DartsSpace()
      >>> g = GENOTYPES["DARTS_V2"]
      >>> space.decode_indices(space.encode_indices(g)) == g
      True
    """
    idx = self._check_indices(indices).reshape(len(CELL_TYPES), self.num_nodes,
                                               self.inputs_per_node, 2)
    cells = {}
    for c, ct in enumerate(CELL_TYPES):
      for j in range(self.num_nodes):
        inputs = idx[c, j, :, 1]
        if len(set(inputs.tolist())) != len(inputs):
          raise ValueError(f"{ct} node {j} reads input {int(inputs[0])} twice; a node's inputs "
                           f"must be distinct")
      cells[ct] = tuple((self.primitives[int(o)], int(i)) for o, i in idx[c].reshape(-1, 2))
    return Genotype(cells["normal"], self.concat, cells["reduce"], self.concat)

  def mutate(self, genotype: Genotype, rng: np.random.Generator) -> Genotype:
    """Changes one op (to another non-``none`` op) or one input of one node.

    The decision to change is drawn uniformly among those that can change, then
    its new value uniformly among the alternatives; inputs stay distinct
    within a node.

    Example:
      >>> child = DartsSpace().mutate(GENOTYPES["DARTS_V2"], np.random.default_rng(0))
      >>> child != GENOTYPES["DARTS_V2"]
      True
    """
    idx = self.encode_indices(genotype).reshape(len(CELL_TYPES), self.num_nodes,
                                                self.inputs_per_node, 2)
    ops = [k for k, p in enumerate(self.primitives) if p != "none"]
    moves = []  # (position, alternative values)
    for c in range(len(CELL_TYPES)):
      for j in range(self.num_nodes):
        used = set(idx[c, j, :, 1].tolist())
        for s in range(self.inputs_per_node):
          op = int(idx[c, j, s, 0])
          alt_ops = [o for o in ops if o != op]
          alt_inputs = [i for i in range(j + 2) if i not in used]
          if alt_ops:
            moves.append(((c, j, s, 0), alt_ops))
          if alt_inputs:
            moves.append(((c, j, s, 1), alt_inputs))
    if not moves:
      raise ValueError("this DARTS space has a single architecture; nothing to mutate")
    pos, alts = moves[rng.integers(len(moves))]
    idx[pos] = alts[rng.integers(len(alts))]
    return self.decode_indices(idx.reshape(-1))

  def crossover(self, a: Genotype, b: Genotype, rng: np.random.Generator) -> Genotype:
    """Node-wise crossover: each node's kept edges come whole from ``a`` or ``b``.

    Example:
      >>> space = DartsSpace()
      >>> a, b = GENOTYPES["DARTS_V1"], GENOTYPES["DARTS_V2"]
      >>> child = space.crossover(a, b, np.random.default_rng(0))
      >>> space.validate(child)
    """
    ia = self.encode_indices(a).reshape(len(CELL_TYPES), self.num_nodes, -1)
    ib = self.encode_indices(b).reshape(len(CELL_TYPES), self.num_nodes, -1)
    take_b = rng.random((len(CELL_TYPES), self.num_nodes, 1)) < 0.5
    return self.decode_indices(np.where(take_b, ib, ia).reshape(-1))


def space_from_config(config) -> DartsSpace:
  """The DARTS space of ``config.space`` (``num_nodes``; ``primitives``, if set, ``none`` first).

  Example:
    >>> space_from_config(load_config("experiments/darts_mnist1d.py")).num_nodes  # doctest: +SKIP
    4
  """
  prims = config.space.get("primitives")
  nodes = config.space.get("num_nodes", 4)
  if prims:
    return DartsSpace(num_nodes=nodes, primitives=tuple(prims))
  return DartsSpace(num_nodes=nodes)


def resolve_named(space: DartsSpace, text: str) -> tuple[DartsSpace, Genotype] | None:
  """``(space, genotype)`` for a published genotype name (``DARTS_V2``), else ``None``.

  Example:
    >>> resolve_named(DartsSpace(), "DARTS_V2")[1] == GENOTYPES["DARTS_V2"]
    True
  """
  return (space, space.genotype_by_name(text)) if text in GENOTYPES else None
