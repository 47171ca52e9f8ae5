"""Search spaces by name, each with what the search loops need of it.

A :class:`SpaceKit` registers a space under the name a config gives as
``space.name`` and carries everything a run builds from it: the space itself,
its supernet, the discrete network a genotype retrains as, how a genotype is
named on the command line, and which family of loops fits it. The loops in
:mod:`jnas.search` look a kit up by name and never switch on a space's type,
so a space defined outside jnas runs through ``jnas search`` once registered::

    register_space(SpaceKit("toy", space=ToySpace.from_config,
                            supernet=toy_supernet, network=toy_network))

A kit's builders may be given as ``"module:attr"`` strings, imported on first
use: naming a space then imports nothing heavy (``jnas --help`` and config
validation stay free of JAX), and the built-in kits below point up at their
supernet and network modules without this package importing them.

Example:
  >>> space_kit("nb201").family
  'cell'
  >>> get_space("darts", num_nodes=2).num_edges
  5
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from jnas.spaces.base import SearchSpace

Builder = Callable[..., Any] | str

__all__ = ["SpaceKit", "get_space", "register_space", "space_kit", "space_names"]


def _resolve(ref: Builder | None) -> Callable[..., Any] | None:
  if isinstance(ref, str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
  return ref


@dataclasses.dataclass(frozen=True)
class SpaceKit:
  """A search space's registration: the builders a run calls, by the name a config uses.

  Attributes:
    name: the ``space.name`` a config gives.
    space_class: ``get_space(name, **kwargs)`` builds ``space_class(**kwargs)``.
    space: ``space(config) -> SearchSpace``, the space a config describes
      (default: ``space_class`` with ``config.space``'s entries but ``name``).
    supernet: ``supernet(config, space, dataset) -> nnx.Module`` whose
      ``__call__(x, encoding, *, train, single_path=False)`` runs every
      candidate mixed by ``encoding`` (``single_path=True``: the argmax one).
      Sized by ``config.search``. ``None``: the space has no supernet.
    network: ``network(config, space, genotype, input_shape, num_classes, rngs)
      -> nnx.Module``, the discrete network ``jnas train`` retrains, called as
      ``net(x, train=..., key=...)``. Sized by ``config.retrain``.
    resolve: ``resolve(space, text) -> (space, genotype) | None``: a genotype
      named on the command line (a published name, a benchmark string), with
      the space it lives in (a named architecture may bring its own
      macro-architecture), or ``None`` when ``text`` names none. A JSON file is
      read by the loop for every space.
    genotype_hint: what ``text`` may be, for the error on an unknown genotype.
    family: ``"cell"``: the gradient strategies (DARTS, GDAS, SNAS) and SPOS
      search it; ``"chain"``: FBNet against a latency table, and SPOS.
    depth: the ``config.retrain`` entries that size the network, reported by
      ``jnas info``.
    info: optional ``info(config, genotype) -> dict`` replacing ``jnas info``'s
      parameter count (chain spaces report FLOPs and latency too).
    parts: a chain space's modules
      (:class:`jnas.train.chain_network.ChainParts`: stem, block, head), which
      its supernet, discrete network and latency table are built from.
    cost_model: a chain space's parameters and multiply-adds per module
      (:class:`jnas.estimation.flops.ChainCosts`).
    partial_channels: whether its supernet implements PC-DARTS's partial
      channels (``search.partial_channels``).
    fusions_slower: whether XLA:CPU's library fusions were measured to slow its
      networks (``model.cpu_library_fusions = "auto"`` then turns them off on
      1-D inputs and with the native kernels; :mod:`jnas.utils.xla`).

  Example:
    >>> kit = SpaceKit("mine", space_class="my_pkg:MySpace")  # doctest: +SKIP
    >>> register_space(kit)  # doctest: +SKIP
  """

  name: str
  space_class: Builder | None = None
  space: Builder | None = None
  supernet: Builder | None = None
  network: Builder | None = None
  resolve: Builder | None = None
  genotype_hint: str = "a path to a genotype .json file"
  family: str = "cell"
  depth: tuple[str, ...] = ("layers",)
  info: Builder | None = None
  parts: Builder | None = None
  cost_model: Builder | None = None
  partial_channels: bool = False
  fusions_slower: bool = False

  def __post_init__(self):
    if self.family not in ("cell", "chain"):
      raise ValueError(f"space {self.name!r}: family must be 'cell' or 'chain', "
                       f"got {self.family!r}")
    if self.space is None and self.space_class is None:
      raise ValueError(f"space {self.name!r} needs space_class or space")

  def build_space(self, config: Any) -> SearchSpace:
    """The space ``config`` describes (``config.space``; chain spaces also read ``config.data``)."""
    if self.space is not None:
      return _resolve(self.space)(config)
    kwargs = {k: v for k, v in dict(config.space).items() if k != "name" and v is not None}
    return _resolve(self.space_class)(**kwargs)

  def builder(self, field: str) -> Callable[..., Any]:
    """The builder ``field`` (``"supernet"``, ``"network"``, ...), imported if given as a string.

    Raises ValueError naming the space when the kit has none.
    """
    fn = _resolve(getattr(self, field))
    if fn is None:
      raise ValueError(f"the {self.name} space registers no {field}")
    return fn

  def resolve_text(self, space: SearchSpace, text: str) -> tuple[SearchSpace, Any] | None:
    """``(space, genotype)`` for a name or string this space knows; ``None`` otherwise."""
    fn = _resolve(self.resolve)
    return None if fn is None else fn(space, text)


_KITS: dict[str, SpaceKit] = {}


def register_space(kit: SpaceKit | str, factory: Builder | None = None) -> None:
  """Registers a space: a :class:`SpaceKit`, or (the short form) a name and its space class.

  Registering a name again replaces its kit. The short form gives a space that
  :func:`get_space` builds but that has no supernet or network.

  Example:
    >>> register_space("my_space", "my_pkg.spaces:MySpace")  # doctest: +SKIP
    >>> register_space(SpaceKit("toy", space_class=ToySpace, supernet=toy_supernet,
    ...                         network=toy_network))  # doctest: +SKIP
  """
  if isinstance(kit, str):
    if factory is None:
      raise ValueError(f"register_space({kit!r}) needs the space class or a SpaceKit")
    kit = SpaceKit(kit, space_class=factory)
  _KITS[kit.name] = kit


def space_names() -> list[str]:
  """Names of the registered spaces, sorted.

  Example:
    >>> "nb201" in space_names()
    True
  """
  return sorted(_KITS)


def space_kit(name: str) -> SpaceKit:
  """The kit registered under ``name``; ValueError listing the known names otherwise.

  Example:
    >>> space_kit("fbnet").family
    'chain'
  """
  if name not in _KITS:
    raise ValueError(f"unknown search space {name!r} (known: {', '.join(space_names())})")
  return _KITS[name]


def get_space(name: str, **kwargs: Any) -> SearchSpace:
  """Builds the search space registered under ``name`` with ``kwargs``.

  Example:
    >>> get_space("nb201").encoding_shape()
    {'cell': (6, 5)}
  """
  kit = space_kit(name)
  if kit.space_class is None:
    raise ValueError(f"the {name} space is built from a config only (jnas.search.common."
                     f"build_space)")
  return _resolve(kit.space_class)(**kwargs)


# The built-in spaces. Their builders live beside what they build.
register_space(SpaceKit(
    "darts", space_class="jnas.spaces.darts:DartsSpace",
    space="jnas.spaces.darts:space_from_config",
    supernet="jnas.supernet.darts:supernet_from_config",
    network="jnas.train.network:network_from_config",
    resolve="jnas.spaces.darts:resolve_named",
    genotype_hint="a published name ({names}) or a path to a genotype .json file",
    depth=("layers",), fusions_slower=True))
register_space(SpaceKit(
    "nb201", space_class="jnas.spaces.nb201:NB201Space",
    space="jnas.spaces.nb201:space_from_config",
    supernet="jnas.supernet.nb201:supernet_from_config",
    network="jnas.train.nb201_network:network_from_config",
    resolve="jnas.spaces.nb201:resolve_string",
    genotype_hint=("a NAS-Bench-201 string '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' or a "
                   "genotype .json file"),
    depth=("cells_per_stage",), partial_channels=True))
for _name, _cls, _parts in (("fbnet", "FBNetSpace", "FBNET"),
                            ("kernel_chain", "KernelChainSpace", "KERNEL_CHAIN")):
  register_space(SpaceKit(
      _name, space_class=f"jnas.spaces.chain:{_cls}",
      space="jnas.spaces.chain:space_from_config",
      supernet="jnas.supernet.chain:supernet_from_config",
      network="jnas.train.chain_network:network_from_config",
      resolve="jnas.spaces.chain:resolve_named",
      genotype_hint="a published name ({names}) or a path to a genotype .json file",
      family="chain", depth=(), info="jnas.estimation.flops:chain_info",
      parts=f"jnas.train.chain_network:{_parts}_PARTS",
      cost_model=f"jnas.estimation.flops:{_parts}_COSTS"))
