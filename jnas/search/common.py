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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jnas.spaces.base import SearchSpace
from jnas.spaces.registry import SpaceKit, space_kit
from jnas.utils.xla import compiler_options


def enable_compilation_cache(path: str | None = None) -> None:
  """Turns on JAX's persistent compilation cache so reruns skip compilation.

  Every program is cached, however quick to compile: building a paper-size
  supernet runs about 150 small eager ops (parameter initialisers), each a
  compilation of 0.1-0.3 s on the development CPU, which together took longer
  than compiling the search step itself. The cache (``~/.cache/jnas/xla``,
  ``$JNAS_XLA_CACHE`` or ``$JNAS_CACHE_DIR/xla``) is not capped, as JAX's is
  not by default: jax's size cap rescans the whole directory on every write.
  Deleting it at any time is safe.
  """
  path = path or os.environ.get("JNAS_XLA_CACHE") or str(
      Path(os.environ.get("JNAS_CACHE_DIR", Path.home() / ".cache" / "jnas")) / "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def saved_step(fn: Callable[..., Any], config, wd: Path, name: str, *,
               compiler_options: dict[str, Any] | None) -> Callable[..., Any]:
  """``jax.jit(fn, donate_argnums=0)`` whose traced program is kept in ``wd/traced/NAME.jaxexport``.

  A resumed search (same config, same jnas and jax) runs the saved program
  instead of tracing ``fn`` again, and its compilation hits the persistent
  cache, so it starts in seconds (:func:`jnas.utils.step_cache.cached_jit`).
  """
  from jnas.config import config_hash  # noqa: PLC0415 (config imports spaces, which import this)
  from jnas.utils.step_cache import cached_jit  # noqa: PLC0415

  return cached_jit(fn, wd / TRACED_DIR / f"{name}.jaxexport", tag=config_hash(config),
                    donate_argnums=(0,), compiler_options=compiler_options)


def scanned_steps(fn: Callable[..., Any], *, compiler_options: dict[str, Any] | None,
                  config=None, wd: Path | None = None) -> Callable[..., Any]:
  """``(carry, *stacked_batches) -> (carry, summed metrics)``: ``fn`` over a batch axis, jitted.

  The steps run in one ``lax.scan`` over the leading axis of every batch
  argument; the step metrics come back summed over the steps, as the loop
  sums them (:func:`jnas.search.loop.run_unit`). Given the run's ``config``
  and work directory ``wd``, the traced program is kept there as
  :func:`saved_step` keeps a single step (``traced/search_scan.jaxexport``),
  so a resumed search does not trace it again.

  Example:
    >>> step = lambda c, b: (c + b.sum(), {"train_loss": b.mean()})
    >>> carry, sums = scanned_steps(step, compiler_options=None)(jnp.zeros(()), jnp.ones((3, 2)))
    >>> float(carry), float(sums["train_loss"])
    (6.0, 3.0)
  """
  def run(carry, *batches):
    carry, metrics = jax.lax.scan(lambda c, b: fn(c, *b), carry, batches)
    return carry, jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics)
  if wd is not None:
    return saved_step(run, config, wd, "search_scan", compiler_options=compiler_options)
  return jax.jit(run, donate_argnums=(0,), compiler_options=compiler_options)


#: Where :func:`saved_step` keeps a search's traced steps, inside its work directory.
TRACED_DIR = "traced"


def space_kit_of(config) -> SpaceKit:
  """The registration of the space ``config.space.name`` names (:mod:`jnas.spaces.registry`)."""
  return space_kit(config.space.name)


def is_chain(config) -> bool:
  """Whether the config's space is searched by FBNet against a latency table (a chain space)."""
  return space_kit_of(config).family == "chain"


def build_space(config) -> SearchSpace:
  """The search space a config names (``space.primitives``, if set, picks the candidate ops).

  ``space.name``: any registered space (:func:`jnas.spaces.space_names`): the
  built-in ``darts`` (the DARTS cell), ``nb201`` (the NAS-Bench-201 cell) and
  the chain spaces ``fbnet`` and ``kernel_chain``.
  """
  return space_kit_of(config).build_space(config)


def build_supernet(config, space: SearchSpace, ds) -> nnx.Module:
  """The supernet of ``space`` sized by ``config.search`` for dataset ``ds``.

  DARTS cells: ``search.channels``/``search.layers``; NAS-Bench-201:
  ``search.channels``/``search.cells_per_stage`` and ``search.partial_channels``
  (PC-DARTS's K, NAS-Bench-201 only); chain spaces: the space's own stages.

  Example:
    >>> net = build_supernet(cfg, build_space(cfg), load_dataset("mnist1d"))  # doctest: +SKIP
  """
  return space_kit_of(config).builder("supernet")(config, space, ds)


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


def resolve_architecture(config, genotype: str | None, workdir: str | None = None,
                         space: SearchSpace | None = None) -> tuple[SearchSpace, Any]:
  """``(space, genotype)``: a genotype by a name or string its space knows (``DARTS_V2``, a
  NAS-Bench-201 string, ``fbnet_a``), a JSON file, or ``WORKDIR/genotype.json``.

  ``space`` defaults to :func:`build_space`'s; a named chain architecture brings its
  own macro-architecture, so the space returned may differ from it.

  Example:
    >>> space, g = resolve_architecture(load_config("experiments/darts_mnist1d.py"),
    ...                                 "DARTS_V2")  # doctest: +SKIP
  """
  kit = space_kit_of(config)
  space = build_space(config) if space is None else space
  text = genotype_path(genotype, workdir)
  named = kit.resolve_text(space, text)
  if named is not None:
    return named
  path = Path(text)
  if path.suffix == ".json" or path.exists():
    if not path.exists():
      raise FileNotFoundError(f"genotype file {text} does not exist")
    return space, space.genotype_loads(path.read_text())
  hint = kit.genotype_hint.format(names=", ".join(space.named_genotypes) or "none")
  raise ValueError(f"unknown genotype {text!r} ({hint})")


def resolve_genotype(space: SearchSpace, genotype: str | None, workdir: str | None = None):
  """A genotype of ``space`` from a published name, a JSON file, ``WORKDIR/genotype.json``, or
  (NAS-Bench-201) the benchmark's architecture string.

  Example:
    >>> resolve_genotype(DartsSpace(), "DARTS_V2").normal[0]  # doctest: +SKIP
    ('sep_conv_3x3', 0)
  """
  config = ml_collections.ConfigDict({"space": {"name": space.name}})
  return resolve_architecture(config, genotype, workdir, space=space)[1]


def config_compiler_options(config, ndim: int) -> dict[str, str] | None:
  """:func:`jnas.utils.xla.compiler_options` for a config's ``model.cpu_library_fusions``
  (default ``auto``) and its space's registration."""
  return compiler_options(config.model.get("cpu_library_fusions", "auto"), ndim=ndim,
                          fusions_slower=space_kit_of(config).fusions_slower)


def data_ndim(ds) -> int:
  """The spatial axes of the dataset's examples: 1 for sequences (MNIST-1D), 2 for images."""
  return len(ds.input_shape) - 1
