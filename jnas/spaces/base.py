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
  """

  name: str = "space"

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

  def genotype_dumps(self, genotype: Any) -> str:
    """JSON text of a genotype."""
    return json.dumps(self.genotype_to_json(genotype), indent=2)

  def genotype_loads(self, text: str) -> Any:
    """Genotype from JSON text, validated against the space."""
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"genotype is not valid JSON: {e}") from None
    return self.genotype_from_json(data)

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
