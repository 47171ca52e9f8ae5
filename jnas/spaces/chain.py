"""Chain search spaces: a fixed sequence of blocks, one choice per block.

Two spaces live here:

* :class:`FBNetSpace`: FBNet's layer-wise space (Wu et al., CVPR 2019): a
  stem convolution, stages of inverted-residual blocks, a 1x1 head convolution,
  global pooling and a classifier. Each searchable block picks one of the
  paper's nine candidates (its Table 2)::

      k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip

  ``kK_eE`` is an inverted-residual block (MobileNetV2): a 1x1 expansion to
  ``E`` times the input channels, a ``KxK`` depthwise convolution, a linear
  1x1 projection, each followed by batch norm (and the activation, except after
  the projection), with a residual connection when input and output shapes
  match. ``_g2`` makes the 1x1 convolutions group convolutions with two
  groups. With ``E = 1`` there is no expansion convolution (MobileNetV2 omits
  it, and so do FBNet's released model definitions, whose ``_g2`` blocks group
  only the projection); a channel shuffle follows a grouped expansion.
* :class:`KernelChainSpace`: the seed's VGG-style plain chain where each
  convolution layer picks its kernel size from {1, 3, 5}.

**Skip at blocks that change shape.** FBNet's first block of a stage changes
the width (and often the stride). There ``skip`` cannot be an identity; as in
FBNet's released builder, it becomes a projection shortcut (a strided 1x1
convolution, batch norm and the activation), so that every block keeps all
nine candidates (the paper's 9^22 count). Elsewhere ``skip`` is the identity.

Both spaces handle images (``input_shape = (H, W, C)``) and sequences
(``input_shape = (L, C)``). The encoding is ``{"blocks": [num_blocks,
num_candidates]}``; the genotype is a :class:`ChainGenotype`, a tuple of
candidate names, one per block.

Named architectures (:data:`NAMED_GENOTYPES`) carry the macro-architecture
they need (stem, stages, head): ``mobilenet_v2`` (Sandler et al., 2018) and
FBNet-A/B/C, whose block lists follow the FBNet model definitions released in
facebookresearch/mobile-vision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Mapping, Sequence

import numpy as np

from jnas.spaces.base import Choice, Encoding, SearchSpace

FBNET_CANDIDATES: tuple[str, ...] = (
    "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")

KERNEL_CANDIDATES: tuple[str, ...] = ("k1", "k3", "k5")

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


# ---------------------------------------------------------------------------
# FBNet / MobileNetV2
# ---------------------------------------------------------------------------

# (channels, depth, stride) per stage; FBNet's Table 1 (22 searchable blocks).
FBNET_STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))

# MobileNetV2's bottleneck table (Sandler et al., Table 2), as (c, n, s).
MOBILENET_V2_STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))

#: Macro-architectures by name: everything but the per-block choices.
MACROS: dict[str, dict[str, Any]] = {
    "fbnet": dict(stem_channels=16, stem_stride=2, stages=FBNET_STAGES, head_channels=1984,
                  activation="relu"),
    # FBNet-A was searched with a narrower head (Table 1: 1504 instead of 1984).
    "fbnet_a": dict(stem_channels=16, stem_stride=2, stages=FBNET_STAGES, head_channels=1504,
                    activation="relu"),
    "mobilenet_v2": dict(stem_channels=32, stem_stride=2, stages=MOBILENET_V2_STAGES,
                         head_channels=1280, activation="relu6"),
}


def _stages(*rows: Sequence[str]) -> tuple[str, ...]:
  return tuple(op for row in rows for op in row)


#: Named architectures: ``name -> (macro name, block choices)``.
FBNET_GENOTYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    # t=1 for the first bottleneck, t=6 elsewhere, 3x3 depthwise throughout.
    "mobilenet_v2": ("mobilenet_v2", ("k3_e1",) + ("k3_e6",) * 16),
    # FBNet-A/B/C: the block lists of the FBNet paper's Figure 5, as written
    # in the model definitions released with FBNet (mobile-vision).
    "fbnet_a": ("fbnet_a", _stages(
        ["skip"],
        ["k3_e3", "k3_e1", "skip", "skip"],
        ["k5_e6", "k3_e3", "k5_e1", "k3_e3"],
        ["k5_e6", "k5_e3", "k5_e1_g2", "k5_e6"],
        ["k3_e6", "k5_e1_g2", "k5_e3", "k3_e1_g2"],
        ["k5_e6", "k5_e6", "k5_e3", "k5_e6"],
        ["k5_e6"])),
    "fbnet_b": ("fbnet", _stages(
        ["k3_e1"],
        ["k3_e6", "k5_e1", "k3_e1", "k3_e1"],
        ["k5_e6", "k5_e3", "k3_e6", "k5_e6"],
        ["k5_e6", "k5_e6", "skip", "k5_e3"],
        ["k5_e6", "k3_e1", "k5_e1", "k5_e3"],
        ["k5_e6", "k5_e1", "k5_e6", "k5_e6"],
        ["k3_e6"])),
    "fbnet_c": ("fbnet", _stages(
        ["k3_e1"],
        ["k3_e6", "skip", "k3_e1", "k3_e1"],
        ["k5_e6", "k5_e3", "k5_e6", "k3_e6"],
        ["k5_e6", "k5_e3", "k5_e6", "k5_e6"],
        ["k5_e6", "k5_e6", "k5_e6", "k5_e3"],
        ["k5_e6", "k5_e6", "k5_e6", "k5_e6"],
        ["k3_e6"])),
}

ACTIVATIONS = ("relu", "relu6")


class FBNetSpace(ChainSpace):
  """FBNet's layer-wise space of inverted-residual blocks (see the module docstring).

  Args:
    input_shape: per-example input, ``(H, W, C)`` or ``(L, C)``.
    num_classes: classifier outputs.
    stem_channels, stem_kernel, stem_stride: the stem convolution.
    stages: ``(channels, depth, stride)`` per stage; the stride applies to the
      stage's first block.
    head_channels: width of the 1x1 convolution before pooling (0: none).
    candidates: candidate names (default: FBNet's nine).
    activation: ``relu`` (FBNet) or ``relu6`` (MobileNetV2).

  Example:
    >>> space = FBNetSpace()                  # FBNet's ImageNet space
    >>> space.encoding_shape()
    {'blocks': (22, 9)}
    >>> mbv2 = FBNetSpace.preset("mobilenet_v2")
    >>> mbv2.genotype_by_name("mobilenet_v2").blocks[:2]
    ('k3_e1', 'k3_e6')
  """

  name = "fbnet"
  named_genotypes = FBNET_GENOTYPES

  def __init__(self, input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000, *,
               stem_channels: int = 16, stem_kernel: int = 3, stem_stride: int = 2,
               stages: Sequence[Sequence[int]] = FBNET_STAGES, head_channels: int = 1984,
               candidates: Sequence[str] = FBNET_CANDIDATES, activation: str = "relu"):
    self.input_shape = tuple(int(s) for s in input_shape)
    if len(self.input_shape) not in (2, 3) or min(self.input_shape) < 1:
      raise ValueError(f"input_shape must be (L, C) or (H, W, C) with positive sizes, "
                       f"got {tuple(input_shape)}")
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    self.num_classes = int(num_classes)
    self.stem_channels, self.stem_kernel = int(stem_channels), int(stem_kernel)
    self.stem_stride = int(stem_stride)
    if self.stem_channels < 1 or self.stem_stride < 1 or self.stem_kernel % 2 == 0:
      raise ValueError("stem needs channels >= 1, stride >= 1 and an odd kernel, got "
                       f"{stem_channels}, {stem_stride}, {stem_kernel}")
    try:
      self.stages = tuple((int(c), int(n), int(s)) for c, n, s in stages)
    except (TypeError, ValueError):
      raise ValueError(f"stages must be (channels, depth, stride) triples, got {stages!r}"
                       ) from None
    if not self.stages:
      raise ValueError("stages is empty: a chain needs at least one block")
    for k, (c, n, s) in enumerate(self.stages):
      if c < 1 or n < 1 or s < 1:
        raise ValueError(f"stage {k} = {(c, n, s)}: channels, depth and stride must be >= 1")
    self.head_channels = int(head_channels)
    self.candidates = tuple(candidates)
    if len(set(self.candidates)) != len(self.candidates) or not self.candidates:
      raise ValueError(f"candidates must be distinct and non-empty, got {self.candidates}")
    for c in self.candidates:
      if parse_candidate(c).kind == "conv":
        raise ValueError(f"candidate {c!r} is a plain convolution; FBNet candidates are "
                         f"kK_eE[_gG] or skip")
    if activation not in ACTIVATIONS:
      raise ValueError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
    self.activation = activation
    self._positions = self._make_positions()
    for p in self._positions:
      for c in self.candidates:
        op = parse_candidate(c)
        if op.kind != "ir" or op.groups == 1:
          continue
        mid = p.in_channels * op.expansion
        if (op.expansion > 1 and mid % op.groups) or p.out_channels % op.groups or (
            op.expansion == 1 and p.in_channels % op.groups):
          raise ValueError(f"candidate {c!r} at block {p.index}: {op.groups} groups do not "
                           f"divide {p.in_channels} -> {mid} -> {p.out_channels} channels")

  @classmethod
  def preset(cls, macro: str, **overrides) -> "FBNetSpace":
    """A space with a named macro-architecture (``fbnet``, ``fbnet_a``, ``mobilenet_v2``).

    Example:
      >>> FBNetSpace.preset("mobilenet_v2").num_blocks
      17
    """
    if macro not in MACROS:
      raise ValueError(f"unknown macro-architecture {macro!r} (known: {', '.join(MACROS)})")
    return cls(**{**MACROS[macro], **overrides})

  @classmethod
  def for_genotype(cls, name: str, **overrides) -> tuple["FBNetSpace", ChainGenotype]:
    """The space a named architecture needs, and the architecture in it.

    ``overrides`` (e.g. ``input_shape``, ``num_classes``) replace the macro's
    defaults.

    Example:
      >>> space, g = FBNetSpace.for_genotype("fbnet_b")
      >>> space.head_channels, len(g)
      (1984, 22)
    """
    if name not in FBNET_GENOTYPES:
      raise ValueError(f"unknown genotype {name!r} (known: {', '.join(FBNET_GENOTYPES)})")
    space = cls.preset(FBNET_GENOTYPES[name][0], **overrides)
    return space, space.genotype_by_name(name)

  def _make_positions(self) -> list[Position]:
    spatial = [conv_out(s, self.stem_kernel, self.stem_stride) for s in self.input_shape[:-1]]
    if min(spatial) < 1:
      raise ValueError(f"input {self.input_shape} is too small for the stem")
    c_in = self.stem_channels
    out = []
    for k, (c, n, s) in enumerate(self.stages):
      for j in range(n):
        stride = s if j == 0 else 1
        new = [conv_out(x, 3, stride) for x in spatial]
        out.append(Position(len(out), k, tuple(spatial) + (c_in,), tuple(new) + (c,), stride))
        spatial, c_in = new, c
    return out

  def positions(self) -> list[Position]:
    return list(self._positions)

  def stem_out_shape(self) -> tuple[int, ...]:
    return self._positions[0].in_shape

  def config(self) -> dict:
    return {
        "input_shape": list(self.input_shape), "num_classes": self.num_classes,
        "stem_channels": self.stem_channels, "stem_kernel": self.stem_kernel,
        "stem_stride": self.stem_stride, "stages": [list(s) for s in self.stages],
        "head_channels": self.head_channels, "candidates": list(self.candidates),
        "activation": self.activation,
    }

  def genotype_by_name(self, name: str) -> ChainGenotype:
    """A named architecture; refuses one whose macro-architecture differs from this space's.

    Use :meth:`for_genotype` to get the space a named architecture needs.
    """
    if name not in FBNET_GENOTYPES:
      raise ValueError(f"unknown genotype {name!r} (known: {', '.join(FBNET_GENOTYPES)})")
    macro = FBNET_GENOTYPES[name][0]
    want = MACROS[macro]
    mine = {k: getattr(self, k) for k in ("stem_channels", "stem_stride", "stages",
                                          "head_channels")}
    for key, value in mine.items():
      if value != want[key]:
        raise ValueError(f"genotype {name!r} needs the {macro!r} macro-architecture "
                         f"({key}={want[key]}), this space has {key}={value}")
    return super().genotype_by_name(name)


# ---------------------------------------------------------------------------
# VGG-style kernel-size chain
# ---------------------------------------------------------------------------


class KernelChainSpace(ChainSpace):
  """A plain chain of convolutions, each choosing its kernel size (the seed's example).

  Layer ``i`` is a ``k``-wide convolution to ``widths[i]`` channels, batch
  norm and ReLU, followed by a stride-2 max pooling when ``i`` is in
  ``pool_after``. The head is global average pooling and a linear classifier.

  Args:
    input_shape: per-example input, ``(L, C)`` or ``(H, W, C)``.
    num_classes: classifier outputs.
    widths: output channels of each layer (its length is the depth).
    pool_after: indices of the layers followed by 2x max pooling.
    kernels: candidate kernel sizes (odd).

  Example:
    >>> space = KernelChainSpace((40, 1), 10, widths=(16, 16, 32), pool_after=(1,))
    >>> space.encoding_shape(), space.candidates
    ({'blocks': (3, 3)}, ('k1', 'k3', 'k5'))
  """

  name = "kernel_chain"

  def __init__(self, input_shape: Sequence[int] = (40, 1), num_classes: int = 10, *,
               widths: Sequence[int] = (16, 16, 32, 32, 64, 64),
               pool_after: Sequence[int] = (1, 3), kernels: Sequence[int] = (1, 3, 5)):
    self.input_shape = tuple(int(s) for s in input_shape)
    if len(self.input_shape) not in (2, 3) or min(self.input_shape) < 1:
      raise ValueError(f"input_shape must be (L, C) or (H, W, C) with positive sizes, "
                       f"got {tuple(input_shape)}")
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    self.num_classes = int(num_classes)
    self.widths = tuple(int(w) for w in widths)
    if not self.widths or min(self.widths) < 1:
      raise ValueError(f"widths must be a non-empty list of positive ints, got {tuple(widths)}")
    self.pool_after = tuple(sorted(int(i) for i in pool_after))
    bad = [i for i in self.pool_after if not 0 <= i < len(self.widths)]
    if bad:
      raise ValueError(f"pool_after names layer {bad[0]}, outside [0, {len(self.widths) - 1}]")
    self.kernels = tuple(int(k) for k in kernels)
    if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
      raise ValueError(f"kernels must be odd and positive, got {tuple(kernels)}")
    self.candidates = tuple(f"k{k}" for k in self.kernels)
    if len(set(self.candidates)) != len(self.candidates):
      raise ValueError(f"duplicate kernel sizes in {self.kernels}")
    self._positions = self._make_positions()

  def _make_positions(self) -> list[Position]:
    spatial = list(self.input_shape[:-1])
    c_in = self.input_shape[-1]
    out = []
    for i, w in enumerate(self.widths):
      pool = 2 if i in self.pool_after else 1
      new = [max(x // pool, 1) for x in spatial]
      out.append(Position(i, 0, tuple(spatial) + (c_in,), tuple(new) + (w,), 1, pool))
      spatial, c_in = new, w
    return out

  def positions(self) -> list[Position]:
    return list(self._positions)

  def stem_out_shape(self) -> tuple[int, ...]:
    return self.input_shape

  def config(self) -> dict:
    return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "widths": list(self.widths), "pool_after": list(self.pool_after),
            "kernels": list(self.kernels)}


# ---------------------------------------------------------------------------
# Configs and genotype resolution
# ---------------------------------------------------------------------------

CHAIN_SPACES = ("fbnet", "kernel_chain")


def space_from_config(config) -> ChainSpace:
  """The chain space a config describes (``config.space.name`` is ``fbnet`` or ``kernel_chain``).

  Input shape and classes come from ``config.data.input_shape`` and
  ``config.data.num_classes``; ``config.space.macro`` (FBNet) names a preset
  whose fields the other ``config.space`` entries override.

  Example:
    >>> from jnas.config import load_config
    >>> space_from_config(load_config("experiments/fbnet_mnist1d.py")).name  # doctest: +SKIP
    'fbnet'
  """
  sc = config.space
  shape = tuple(config.data.input_shape)
  classes = int(config.data.num_classes)
  if sc.name == "fbnet":
    kwargs = dict(MACROS[sc.macro]) if sc.get("macro") else {}
    if sc.get("macro") and sc.macro not in MACROS:
      raise ValueError(f"unknown macro-architecture {sc.macro!r} (known: {', '.join(MACROS)})")
    for key in ("stem_channels", "stem_kernel", "stem_stride", "stages", "head_channels",
                "candidates", "activation"):
      if key in sc and sc[key] is not None:
        kwargs[key] = sc[key]
    return FBNetSpace(shape, classes, **kwargs)
  if sc.name == "kernel_chain":
    kwargs = {k: sc[k] for k in ("widths", "pool_after", "kernels") if k in sc}
    return KernelChainSpace(shape, classes, **kwargs)
  raise ValueError(f"unknown chain space {sc.name!r} (known: {', '.join(CHAIN_SPACES)})")


def resolve_chain_genotype(space: ChainSpace, genotype: str) -> tuple[ChainSpace, ChainGenotype]:
  """A genotype from a name or a JSON file, and the space it lives in.

  A named FBNet architecture brings its own macro-architecture (MobileNetV2's
  widths differ from FBNet's); the input shape and classes stay the given
  space's. A JSON file must fit ``space`` itself.

  Example:
    >>> s, g = resolve_chain_genotype(FBNetSpace(), "mobilenet_v2")
    >>> s.stem_channels, len(g)
    (32, 17)
  """
  from pathlib import Path

  if genotype in space.named_genotypes:
    if isinstance(space, FBNetSpace):
      return FBNetSpace.for_genotype(genotype, input_shape=space.input_shape,
                                     num_classes=space.num_classes)
    return space, space.genotype_by_name(genotype)
  path = Path(genotype)
  if path.suffix == ".json" or path.exists():
    if not path.exists():
      raise FileNotFoundError(f"genotype file {genotype} does not exist")
    return space, space.genotype_loads(path.read_text())
  known = ", ".join(space.named_genotypes) or "none"
  raise ValueError(f"unknown genotype {genotype!r} (known names: {known}; or a path to a "
                   f"genotype .json file)")
