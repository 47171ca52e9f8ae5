"""What every run builds from a config: its space, supernet and genotype.

Shared by every search family and by retraining (:mod:`jnas.search`), and
re-exported by :mod:`jnas.run`.

Example:
  >>> from jnas.search.common import build_space
  >>> build_space(load_config("experiments/darts_mnist1d.py")).num_nodes  # doctest: +SKIP
  4
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from flax import nnx

from jnas.spaces.base import SearchSpace
from jnas.spaces.darts import GENOTYPES, DartsSpace
from jnas.spaces.nb201 import NB201_OPS, NB201Space
from jnas.supernet.darts import DartsSupernet
from jnas.supernet.nb201 import NB201Supernet

CHAIN_SPACE_NAMES = ("fbnet", "kernel_chain")


def enable_compilation_cache(path: str | None = None) -> None:
  """Turns on JAX's persistent compilation cache so reruns skip compilation."""
  path = path or os.environ.get("JNAS_XLA_CACHE") or str(
      Path(os.environ.get("JNAS_CACHE_DIR", Path.home() / ".cache" / "jnas")) / "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def build_space(config) -> SearchSpace:
  """The search space a config names (``space.primitives``, if set, picks the candidate ops).

  ``space.name``: ``darts`` (the DARTS cell), ``nb201`` (the NAS-Bench-201 cell)
  or a chain space (``fbnet``, ``kernel_chain``).
  """
  if config.space.name in CHAIN_SPACE_NAMES:
    from jnas.spaces.chain import space_from_config
    return space_from_config(config)
  prims = config.space.get("primitives")
  if config.space.name == "nb201":
    return NB201Space(num_nodes=config.space.get("num_nodes", 4),
                      ops=tuple(prims) if prims else NB201_OPS)
  if config.space.name != "darts":
    raise ValueError(f"unknown search space {config.space.name!r} "
                     f"(known: darts, nb201, {', '.join(CHAIN_SPACE_NAMES)})")
  if prims:  # a custom candidate set (``none`` first, as in DARTS)
    return DartsSpace(num_nodes=config.space.num_nodes, primitives=tuple(prims))
  return DartsSpace(num_nodes=config.space.num_nodes)



def check_chain_data(config, space, ds) -> None:
  """A chain space states its input shape and classes; refuses a dataset that differs."""
  if tuple(ds.input_shape) != tuple(space.input_shape) or ds.num_classes != space.num_classes:
    raise ValueError(f"data.input_shape/num_classes {tuple(space.input_shape)}/"
                     f"{space.num_classes} do not match the dataset {config.data.name!r} "
                     f"({tuple(ds.input_shape)}/{ds.num_classes})")


def build_supernet(config, space: SearchSpace, ds) -> nnx.Module:
  """The supernet of ``space`` sized by ``config.search`` for dataset ``ds``.

  DARTS cells: ``search.channels``/``search.layers``; NAS-Bench-201:
  ``search.channels``/``search.cells_per_stage`` and ``search.partial_channels``
  (PC-DARTS's K, NAS-Bench-201 only); chain spaces: the space's own stages.

  Example:
    >>> net = build_supernet(cfg, build_space(cfg), load_dataset("mnist1d"))  # doctest: +SKIP
  """
  sc = config.search
  partial = int(sc.get("partial_channels", 1))
  if isinstance(space, NB201Space):
    return NB201Supernet(space, ds.input_shape[-1], ds.num_classes, ndim=data_ndim(ds),
                         channels=sc.channels, cells_per_stage=sc.cells_per_stage,
                         partial_channels=partial, rngs=nnx.Rngs(config.seed))
  if partial != 1:
    raise ValueError(f"search.partial_channels={partial} (PC-DARTS) is implemented for the "
                     f"nb201 space only; the {config.space.name} supernet needs 1")
  if isinstance(space, DartsSpace):
    return DartsSupernet(space, ds.input_shape[-1], ds.num_classes, ndim=data_ndim(ds),
                         channels=sc.channels, layers=sc.layers, rngs=nnx.Rngs(config.seed))
  from jnas.supernet.chain import ChainSupernet
  check_chain_data(config, space, ds)
  return ChainSupernet(space, rngs=nnx.Rngs(config.seed))


def genotype_path(genotype: str | None, workdir: str | None) -> str:
  """``genotype`` itself, or ``WORKDIR/genotype.json`` when it is ``None``."""
  if genotype is not None:
    return genotype
  if workdir is None:
    raise ValueError("no genotype given and no work directory to read genotype.json from")
  genotype = str(Path(workdir) / "genotype.json")
  if not Path(genotype).exists():
    raise FileNotFoundError(f"{genotype} does not exist: run `jnas search` first or pass "
                            f"--genotype NAME_OR_FILE")
  return genotype


def resolve_genotype(space: SearchSpace, genotype: str | None, workdir: str | None = None):
  """A genotype from a published name, a JSON file, ``WORKDIR/genotype.json``, or (NAS-Bench-201)
  the benchmark's architecture string."""
  genotype = genotype_path(genotype, workdir)
  if isinstance(space, NB201Space) and genotype.lstrip().startswith("|"):
    return space.parse(genotype)
  if genotype in GENOTYPES and isinstance(space, DartsSpace):
    return space.genotype_by_name(genotype)
  path = Path(genotype)
  if path.suffix == ".json" or path.exists():
    if not path.exists():
      raise FileNotFoundError(f"genotype file {genotype} does not exist")
    return space.genotype_loads(path.read_text())
  if isinstance(space, NB201Space):
    raise ValueError(f"unknown genotype {genotype!r} (give a NAS-Bench-201 string "
                     f"'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' or a genotype .json file)")
  raise ValueError(f"unknown genotype {genotype!r} (known names: {', '.join(GENOTYPES)}; "
                   f"or a path to a genotype .json file)")


def data_ndim(ds) -> int:
  """The spatial axes of the dataset's examples: 1 for sequences (MNIST-1D), 2 for images."""
  return len(ds.input_shape) - 1
