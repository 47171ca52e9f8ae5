"""A chain space from a config, and a genotype from a name or a JSON file."""

from __future__ import annotations

from jnas.spaces.chain.common import ChainGenotype, ChainSpace
from jnas.spaces.chain.fbnet import MACROS, FBNetSpace
from jnas.spaces.chain.kernel_chain import KernelChainSpace

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


def resolve_named(space: ChainSpace, text: str) -> tuple[ChainSpace, ChainGenotype] | None:
  """``(space, genotype)`` for a named architecture, else ``None`` (see :func:`resolve_chain_genotype`).

  Example:
    >>> resolve_named(FBNetSpace(), "fbnet_a")[1] is not None
    True
  """
  return resolve_chain_genotype(space, text) if text in space.named_genotypes else None
