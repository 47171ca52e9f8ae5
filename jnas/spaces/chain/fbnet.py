"""FBNet's layer-wise space and MobileNetV2: macro-architectures, named genotypes, the space.

Block candidates and the skip rule are described in :mod:`jnas.spaces.chain`.
"""

from __future__ import annotations

from typing import Any, Sequence

from jnas.spaces.chain.common import (ChainGenotype, ChainSpace, Position, conv_out,
                                      parse_candidate)

FBNET_CANDIDATES: tuple[str, ...] = (
    "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


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
