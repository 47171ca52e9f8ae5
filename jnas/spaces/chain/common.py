"""What every chain space shares: candidate names, block positions, the genotype, the base class.

The spaces themselves are :mod:`jnas.spaces.chain.fbnet` and
:mod:`jnas.spaces.chain.kernel_chain`; see :mod:`jnas.spaces.chain` for both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Mapping, Sequence

import numpy as np

from jnas.spaces.base import Choice, Encoding, SearchSpace

_IR_NAME = re.compile(r"^k(\d+)_e(\d+)(?:_g(\d+))?$")
_CONV_NAME = re.compile(r"^k(\d+)$")


@dataclasses.dataclass(frozen=True)
class BlockOp:
  """A candidate parsed from its name.

  ``kind`` is ``"ir"`` (inverted residual), ``"skip"`` or ``"conv"`` (plain
  convolution, batch norm, activation).

  Example:
    >>> parse_candidate("k5_e1_g2")
    BlockOp(kind='ir', kernel=5, expansion=1, groups=2)
  """

  kind: str
  kernel: int = 1
  expansion: int = 1
  groups: int = 1


def parse_candidate(name: str) -> BlockOp:
  """Parses ``kK_eE[_gG]``, ``kK`` or ``skip``; ``ValueError`` on anything else.

  Example:
    >>> parse_candidate("skip").kind, parse_candidate("k3").kind
    ('skip', 'conv')
  """
  if name == "skip":
    return BlockOp("skip")
  m = _IR_NAME.match(name)
  if m:
    k, e, g = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if k % 2 == 0 or e < 1 or g < 1:
      raise ValueError(f"bad candidate {name!r}: kernel must be odd, expansion and groups >= 1")
    return BlockOp("ir", k, e, g)
  m = _CONV_NAME.match(name)
  if m:
    k = int(m.group(1))
    if k % 2 == 0:
      raise ValueError(f"bad candidate {name!r}: kernel must be odd")
    return BlockOp("conv", k)
  raise ValueError(f"bad candidate name {name!r} (expected kK_eE, kK_eE_gG, kK or skip)")


def conv_out(size: int, kernel: int, stride: int) -> int:
  """Output length of a convolution padded by ``(kernel - 1) // 2`` on both sides.

  Example:
    >>> conv_out(224, 3, 2), conv_out(7, 5, 2)
    (112, 4)
  """
  pad = (kernel - 1) // 2
  return (size + 2 * pad - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class Position:
  """One block of a chain: where it sits and the shapes it maps between.

  Shapes are per example, channels last: ``(H, W, C)`` or ``(L, C)``.
  """

  index: int
  stage: int
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  stride: int
  pool: int = 1  # pooling window/stride after the op (KernelChainSpace)

  @property
  def in_channels(self) -> int:
    return self.in_shape[-1]

  @property
  def out_channels(self) -> int:
    return self.out_shape[-1]

  @property
  def same_shape(self) -> bool:
    """Whether the block's input and output shapes are equal (skip is an identity)."""
    return self.in_shape == self.out_shape


@dataclasses.dataclass(frozen=True)
class ChainGenotype:
  """A discrete chain architecture: one candidate name per block.

  Example:
    >>> g = ChainGenotype(("k3_e1", "skip"))
    >>> g.blocks[1], len(g)
    ('skip', 2)
  """

  blocks: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.blocks)


class ChainSpace(SearchSpace):
  """Base class of chain spaces: a stem, ``num_blocks`` searchable blocks, a head.

  Subclasses set ``candidates`` and implement :meth:`positions`,
  :meth:`config` and :meth:`stem_out_shape`. Everything else (encodings,
  genotypes, JSON, the fingerprint) is shared. Each block is one decision with
  a one-hot row, so :class:`SearchSpace`'s ``mutate`` (one block's choice
  changed to a different candidate) and ``crossover`` (each block's choice
  from either parent) apply as they are.
  """

  name = "chain"
  candidates: tuple[str, ...] = ()
  input_shape: tuple[int, ...] = ()
  num_classes: int = 0
  named_genotypes: Mapping[str, tuple[str, tuple[str, ...]]] = {}

  # To implement ------------------------------------------------------------

  def positions(self) -> list[Position]:
    """The blocks in order, with their input and output shapes."""
    raise NotImplementedError

  def config(self) -> dict:
    """The JSON-serialisable constructor arguments (what the fingerprint hashes)."""
    raise NotImplementedError

  # Shared ------------------------------------------------------------------

  @property
  def ndim(self) -> int:
    """Number of spatial axes (1 for sequences, 2 for images)."""
    return len(self.input_shape) - 1

  @property
  def num_blocks(self) -> int:
    return len(self.positions())

  def fingerprint(self) -> str:
    """12 hex digits identifying the space's configuration (name, shapes, widths, ...).

    Example:
      >>> FBNetSpace().fingerprint() == FBNetSpace().fingerprint()
      True
    """
    text = json.dumps({"space": self.name, **self.config()}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]

  def choices(self) -> dict[str, list[Choice]]:
    return {"blocks": [Choice(f"block{p.index}", self.candidates) for p in self.positions()]}

  def _index(self, name: str, block: int) -> int:
    if name not in self.candidates:
      raise ValueError(f"unknown candidate {name!r} at block {block} (this space's candidates: "
                       f"{', '.join(self.candidates)})")
    return self.candidates.index(name)

  def validate(self, genotype: ChainGenotype) -> None:
    """Raises ``ValueError`` with one line naming what does not fit the space."""
    if not isinstance(genotype, ChainGenotype):
      raise ValueError(f"expected a ChainGenotype, got {type(genotype).__name__}")
    n = self.num_blocks
    if len(genotype.blocks) != n:
      raise ValueError(f"genotype has {len(genotype.blocks)} blocks, this {self.name} space "
                       f"has {n}")
    for i, name in enumerate(genotype.blocks):
      self._index(name, i)

  def genotype_to_encoding(self, genotype: ChainGenotype) -> dict[str, np.ndarray]:
    self.validate(genotype)
    m = np.zeros((self.num_blocks, len(self.candidates)), np.float32)
    for i, name in enumerate(genotype.blocks):
      m[i, self._index(name, i)] = 1.0
    return {"blocks": m}

  def encoding_to_genotype(self, encoding: Encoding) -> ChainGenotype:
    """The strongest candidate of each block (logits or probabilities alike)."""
    self.check_encoding(encoding)
    w = np.asarray(encoding["blocks"])
    if w.ndim != 2:
      raise ValueError(f"encoding['blocks'] must be 2-D, got shape {w.shape}")
    return ChainGenotype(tuple(self.candidates[int(k)] for k in np.argmax(w, axis=-1)))

  def random_genotype(self, rng: np.random.Generator) -> ChainGenotype:
    k = len(self.candidates)
    return ChainGenotype(tuple(self.candidates[int(rng.integers(k))]
                               for _ in range(self.num_blocks)))

  # JSON --------------------------------------------------------------------

  def genotype_to_json(self, genotype: ChainGenotype) -> dict:
    return {"space": self.name, "blocks": list(genotype.blocks)}

  def genotype_from_json(self, data: Mapping) -> ChainGenotype:
    if not isinstance(data, Mapping) or "blocks" not in data:
      raise ValueError(f"a {self.name} genotype must be a JSON object with a 'blocks' list")
    if data.get("space", self.name) != self.name:
      raise ValueError(f"genotype is for space {data['space']!r}, not {self.name!r}")
    blocks = data["blocks"]
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not all(
        isinstance(b, str) for b in blocks):
      raise ValueError("genotype JSON is malformed: 'blocks' must be a list of candidate names")
    g = ChainGenotype(tuple(blocks))
    self.validate(g)
    return g

  def genotype_by_name(self, name: str) -> ChainGenotype:
    """A named architecture, if this space's macro-architecture can express it."""
    if name not in self.named_genotypes:
      known = ", ".join(self.named_genotypes) or "none"
      raise ValueError(f"unknown genotype {name!r} for the {self.name} space (known: {known})")
    g = ChainGenotype(self.named_genotypes[name][1])
    self.validate(g)
    return g
