"""The search-space interface: choice points, encodings and genotypes.

A search space states its choice points declaratively (:class:`Choice`: a name
and its candidates). From that it derives:

* the **encoding**: a pytree of fixed-shape float arrays, one ``[num_choices,
  num_candidates]`` matrix per group of choices. Continuous strategies pass a
  relaxation (``softmax(alpha)``, Gumbel samples); discrete ones pass one-hot
  rows. Because it is data, one compiled function serves every architecture.
* the **genotype**: the readable, JSON-serialisable form of a discrete
  architecture, which round-trips to its encoding.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Encoding = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Choice:
  """One choice point: a name and the names of its candidates.

  Example:
    >>> Choice("normal/edge_0", ("skip_connect", "sep_conv_3x3")).num_candidates
    2
  """

  name: str
  candidates: tuple[str, ...]

  @property
  def num_candidates(self) -> int:
    return len(self.candidates)


class SearchSpace(abc.ABC):
  """Base class of search spaces.

  Subclasses define :meth:`choices` (grouped by encoding key) and the mapping
  between genotypes and encodings; sampling, shapes and JSON come from here.

  Discrete search strategies (random, evolution, RL, progressive) work on an
  **integer form** of a genotype: one index per decision, with
  :meth:`index_sizes` giving how many values each decision has. The contract:

  * ``decode_indices(encode_indices(g)) == g`` for every genotype ``g`` of the
    space (for DARTS, up to the order of a node's two edges), and
    ``encode_indices(g)[i] < index_sizes()[i]``.
  * ``mutate(g, rng)`` returns a valid genotype whose integer form differs from
    ``g``'s in exactly one position (one decision changed to another valid
    value). It never returns ``g`` itself.
  * ``crossover(a, b, rng)`` returns a valid genotype whose every decision
    (or, where decisions depend on each other, every group of decisions, such
    as a DARTS node) comes from ``a`` or from ``b``.

  The defaults below assume every choice point of :meth:`choices` is one
  decision whose encoding row is one-hot (the NAS-Bench-201 cell, the chain
  spaces), so they go through the encoding: decision ``i`` is the arg-max of
  the ``i``-th row, in :meth:`choices` order. A space whose decisions do not
  map to one-hot rows (DARTS: a node picks two inputs out of many edges)
  overrides the five methods.
  """

  name: str = "space"
  #: Architectures known by name (``jnas train --genotype NAME``), name -> genotype or its spec.
  named_genotypes: Mapping[str, Any] = {}

  @abc.abstractmethod
  def choices(self) -> dict[str, list[Choice]]:
    """Choice points grouped by encoding key (each group shares one candidate list)."""

  @abc.abstractmethod
  def genotype_to_encoding(self, genotype: Any) -> dict[str, np.ndarray]:
    """One-hot (or multi-hot) encoding of a discrete architecture."""

  @abc.abstractmethod
  def encoding_to_genotype(self, encoding: Encoding) -> Any:
    """Discrete architecture derived from a (possibly continuous) encoding."""

  @abc.abstractmethod
  def random_genotype(self, rng: np.random.Generator) -> Any:
    """A uniformly sampled discrete architecture."""

  @abc.abstractmethod
  def genotype_to_json(self, genotype: Any) -> dict:
    """JSON-serialisable form of a genotype."""

  @abc.abstractmethod
  def genotype_from_json(self, data: Mapping) -> Any:
    """Inverse of :meth:`genotype_to_json`; validates against the space."""

  # Derived API -----------------------------------------------------------

  def encoding_shape(self) -> dict[str, tuple[int, int]]:
    """Shape of each encoding array.

    Example:
      >>> DartsSpace().encoding_shape()  # doctest: +SKIP
      {'normal': (14, 8), 'reduce': (14, 8)}
    """
    out = {}
    for key, group in self.choices().items():
      out[key] = (len(group), group[0].num_candidates)
    return out

  def init_alpha(self, key: jax.Array, scale: float = 1e-3) -> dict[str, jax.Array]:
    """Architecture parameters: small random logits of the encoding's shape (DARTS init)."""
    shapes = self.encoding_shape()
    keys = jax.random.split(key, len(shapes))
    return {k: scale * jax.random.normal(kk, s) for kk, (k, s) in zip(keys, sorted(shapes.items()))}

  def sample_encoding(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Encoding of a uniformly sampled discrete architecture."""
    return self.genotype_to_encoding(self.random_genotype(rng))

  def sample_encodings(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` random encodings stacked along a new leading axis (for ``vmap``)."""
    encs = [self.sample_encoding(rng) for _ in range(n)]
    return {k: np.stack([e[k] for e in encs]) for k in encs[0]}

  def index_fill(self) -> np.ndarray:
    """The integer form's value for a decision not yet made (progressive search's fill).

    The default, for one decision per choice point: ``skip_connect`` where a
    choice has it, else its first candidate.

    Example:
      >>> get_space("nb201").index_fill().tolist()  # doctest: +SKIP
      [1, 1, 1, 1, 1, 1]
    """
    choices = [c for group in self.choices().values() for c in group]
    if len(choices) != len(self.index_sizes()):
      return np.zeros(len(self.index_sizes()), np.int32)
    return np.asarray([c.candidates.index("skip_connect") if "skip_connect" in c.candidates
                       else 0 for c in choices], np.int32)

  def index_groups(self) -> list[int]:
    """How many integer-form entries progressive search decides at once (one per step here)."""
    return [1] * len(self.index_sizes())

  def valid_indices(self, x: np.ndarray) -> np.ndarray:
    """Which rows of ``x`` (``[n, len(index_sizes())]``) are valid architectures (all, here)."""
    return np.ones(len(x), bool)

  def distinct_index_pairs(self) -> tuple[tuple[int, int], ...]:
    """``(i, j)`` pairs of integer-form entries that must differ (none here; DARTS's inputs)."""
    return ()

  def alpha_labels(self) -> dict[str, np.ndarray]:
    """What ``alpha_history.npz`` stores beside alpha for its plots (``jnas plot``).

    ``primitives``: the candidate names of an encoding row; spaces with a cell
    graph add ``edges`` (``(node, input)`` per row) and may add ``edge_labels``
    (panel titles). The default names the first choice point's candidates.

    Example:
      >>> list(get_space("nb201").alpha_labels())  # doctest: +SKIP
      ['primitives', 'edges', 'edge_labels']
    """
    first = next(iter(self.choices().values()))[0]
    return {"primitives": np.asarray(first.candidates)}

  def genotype_dumps(self, genotype: Any) -> str:
    """JSON text of a genotype."""
    return json.dumps(self.genotype_to_json(genotype), indent=2)

  def genotype_loads(self, text: str) -> Any:
    """Genotype from JSON text, validated against the space; ``ValueError`` (one line) if not.

    Example:
      >>> space = NB201Space()  # doctest: +SKIP
      >>> space.genotype_loads('{"arch": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"}')  # doctest: +SKIP
    """
    if isinstance(text, (bytes, bytearray)):
      try:
        text = text.decode("utf-8")
      except UnicodeDecodeError:
        raise ValueError("genotype is not UTF-8 text") from None
    if not isinstance(text, str):
      raise ValueError(f"genotype JSON must be text, got {type(text).__name__}")
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"genotype is not valid JSON: {e}") from None
    except RecursionError:
      # json's C parser recurses once per nesting level; thousands of '[' exhaust the stack.
      raise ValueError("genotype JSON is nested too deeply") from None
    return self.genotype_from_json(data)

  # Integer form, mutation and crossover (see the class docstring) ----------

  def index_sizes(self) -> tuple[int, ...]:
    """Number of values of each decision of the integer form.

    Example:
      >>> NB201Space().index_sizes()  # doctest: +SKIP
      (5, 5, 5, 5, 5, 5)
    """
    return tuple(c.num_candidates for group in self.choices().values() for c in group)

  def encode_indices(self, genotype: Any) -> np.ndarray:
    """The integer form of a genotype: one ``int32`` index per decision.

    Example:
      >>> space = NB201Space()  # doctest: +SKIP
      >>> space.encode_indices(space.decode_indices([0] * 6))  # doctest: +SKIP
      array([0, 0, 0, 0, 0, 0], dtype=int32)
    """
    enc = self.genotype_to_encoding(genotype)
    rows = [np.asarray(enc[k]) for k in self.choices()]
    return np.concatenate([np.argmax(r, axis=-1) for r in rows]).astype(np.int32)

  def decode_indices(self, indices: Any) -> Any:
    """The genotype of an integer form; ``ValueError`` if an index is out of range.

    Example:
      >>> space.decode_indices([3, 3, 3, 3, 3, 3])  # doctest: +SKIP
    """
    idx = self._check_indices(indices)
    enc, start = {}, 0
    for key, group in self.choices().items():
      n, m = len(group), group[0].num_candidates
      enc[key] = np.eye(m, dtype=np.float32)[idx[start:start + n]]
      start += n
    return self.encoding_to_genotype(enc)

  def _check_indices(self, indices: Any) -> np.ndarray:
    sizes = self.index_sizes()
    idx = np.asarray(indices)
    if idx.shape != (len(sizes),) or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"integer form must be {len(sizes)} integers, got shape {idx.shape} "
                       f"of {idx.dtype}")
    bad = np.flatnonzero((idx < 0) | (idx >= np.asarray(sizes)))
    if bad.size:
      i = int(bad[0])
      raise ValueError(f"decision {i} has index {int(idx[i])}, must be in [0, {sizes[i] - 1}]")
    return idx.astype(np.int32)

  def mutate(self, genotype: Any, rng: np.random.Generator) -> Any:
    """A copy of ``genotype`` with exactly one decision changed to another valid value.

    Example:
      >>> child = space.mutate(parent, np.random.default_rng(0))  # doctest: +SKIP
    """
    idx = self.encode_indices(genotype).copy()
    sizes = np.asarray(self.index_sizes())
    free = np.flatnonzero(sizes > 1)
    if free.size == 0:
      raise ValueError(f"space {self.name!r} has a single architecture; nothing to mutate")
    i = int(free[rng.integers(free.size)])
    # Draw from the other sizes[i] - 1 values so the child always differs.
    new = int(rng.integers(sizes[i] - 1))
    idx[i] = new + (new >= idx[i])
    return self.decode_indices(idx)

  def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Any:
    """Uniform crossover: each decision taken from ``a`` or ``b`` with equal chance.

    Example:
      >>> child = space.crossover(mum, dad, np.random.default_rng(0))  # doctest: +SKIP
    """
    ia, ib = self.encode_indices(a), self.encode_indices(b)
    take_b = rng.random(ia.shape) < 0.5
    return self.decode_indices(np.where(take_b, ib, ia))

  def check_encoding(self, encoding: Encoding) -> None:
    """Raises ``ValueError`` naming the key whose shape does not fit the space."""
    shapes = self.encoding_shape()
    if set(encoding) != set(shapes):
      raise ValueError(
          f"encoding keys {sorted(encoding)} do not match the space's {sorted(shapes)}")
    for k, s in shapes.items():
      if tuple(jnp.shape(encoding[k])[-2:]) != s:
        raise ValueError(
            f"encoding[{k!r}] has shape {tuple(jnp.shape(encoding[k]))}, space expects {s}")
