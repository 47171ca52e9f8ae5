"""Jitted steps whose traced program is kept on disk, so a resumed search neither traces nor compiles.

JAX's persistent compilation cache (:func:`jnas.search.common.enable_compilation_cache`)
skips XLA's compilation on a rerun, but not the Python trace that comes before it,
and for the paper-size search networks the trace is the larger part of what a
resumed search waits for (about 13-20 s of SPOS's step on one core, measured
with ``benchmarks/search_step.py``'s ``trace_s``). :func:`cached_jit` traces a
step once, saves the traced program with :mod:`jax.export` beside the search's
checkpoints, and from then on, in this process and in any resumed one, runs the
saved program. Both runs compile the same module, so the resumed run's
compilation is a persistent-cache hit.

A saved program is used only when its fingerprint matches: the caller's
``tag`` (e.g. a hash of the search's config), the argument shapes, dtypes and
tree structure, the compiler options and donation, the device, the jax and
jaxlib versions and a hash of jnas's own source files. Anything else (an
edited jnas, an upgraded jax, another batch size) traces afresh and replaces
the file. A file that cannot be read is treated the same way, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp  # noqa: F401 (the doctest's namespace)
from jax import export

_FORMAT = 1
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
  """A hash of every ``.py`` file of the jnas package (a saved program is only as new as the code).

  Example:
    >>> len(source_hash())
    16
  """
  root = Path(__file__).resolve().parents[1]
  h = hashlib.sha256()
  for path in sorted(root.rglob("*.py")):
    h.update(str(path.relative_to(root)).encode())
    h.update(path.read_bytes())
  return h.hexdigest()[:16]


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impl(x: Any) -> str | None:
  # Typed PRNG keys cannot cross an export boundary: they travel as their raw data.
  return str(jax.random.key_impl(x)) if _is_key(x) else None


def _to_raw(leaves: Sequence[Any]) -> list[Any]:
  return [jax.random.key_data(x) if _is_key(x) else x for x in leaves]


def _from_raw(leaves: Sequence[Any], impls: Sequence[str | None]) -> list[Any]:
  return [x if impl is None else jax.random.wrap_key_data(x, impl=impl)
          for x, impl in zip(leaves, impls)]


def _avals(leaves: Sequence[Any]) -> list[tuple[tuple[int, ...], str]]:
  return [(tuple(x.shape), str(x.dtype)) for x in leaves]


def _fingerprint(tag: str, leaves: Sequence[Any], in_tree: Any, donate: Sequence[int],
                 options: dict[str, Any] | None) -> str:
  import jaxlib  # noqa: PLC0415

  h = hashlib.sha256()
  avals = _avals(leaves)
  dev = jax.devices()[0]
  for part in (_FORMAT, tag, avals, str(in_tree), tuple(donate), sorted((options or {}).items()),
               dev.platform, dev.device_kind, jax.__version__, jaxlib.__version__, source_hash()):
    h.update(repr(part).encode())
  return h.hexdigest()


def _native_targets() -> list[str]:
  from jnas.ops.native import TARGETS  # noqa: PLC0415

  return list(TARGETS)


def cached_jit(fn: Callable[..., Any], path: str | os.PathLike | None, *, tag: str = "",
               donate_argnums: Sequence[int] = (),
               compiler_options: dict[str, Any] | None = None) -> Callable[..., Any]:
  """``jax.jit(fn, donate_argnums=..., compiler_options=...)``, its traced program kept at ``path``.

  The first call traces ``fn`` for its arguments' shapes, saves the program
  (:mod:`jax.export`) to ``path`` and runs it; later calls, and the first call
  of a process that finds a matching file at ``path``, run the saved program
  without tracing. Calls with other shapes or tree structures fall back to a
  plain ``jax.jit``. ``path=None`` is a plain ``jax.jit``. ``tag`` should
  name everything ``fn`` closes over that its arguments do not show (a hash
  of the config): a file whose tag differs is traced again and replaced.

  Example:
    >>> step = cached_jit(lambda c, x: (c + x, {"loss": x.sum()}), None)
    >>> step(jnp.zeros(2), jnp.ones(2))[1]["loss"]
    Array(2., dtype=float32)
  """
  donate = tuple(donate_argnums)
  plain = jax.jit(fn, donate_argnums=donate, compiler_options=compiler_options)
  if path is None:
    return plain
  path = Path(path)
  runner: dict[str, Any] = {}

  def load_or_export(args: tuple[Any, ...]) -> dict[str, Any]:
    leaves, in_tree = jax.tree.flatten(args)
    # Donation is per argument of ``fn``; the saved program takes flat leaves.
    counts = [len(jax.tree.leaves(a)) for a in args]
    starts = [sum(counts[:i]) for i in range(len(args))]
    flat_donate = tuple(j for i in donate for j in range(starts[i], starts[i] + counts[i]))
    fp = _fingerprint(tag, leaves, in_tree, flat_donate, compiler_options)
    saved = _load(path, fp)
    if saved is not None:
      log.info("running the saved step %s (not traced again)", path)
    else:
      try:
        saved = _export(fn, leaves, in_tree, fp)
      except Exception as e:  # a primitive jax.export cannot save (e.g. a host callback)
        warnings.warn(f"{path.name}: the step cannot be saved ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200]}); it is traced on every run",
                      RuntimeWarning, stacklevel=3)
        return {"in_tree": None}
      try:
        _save(path, saved)
        log.info("traced the step and saved it to %s", path)
      except OSError as e:  # a read-only or full disk costs the next run its trace, nothing else
        warnings.warn(f"{path}: the traced step could not be saved ({e}); a resumed run "
                      f"traces it again", RuntimeWarning, stacklevel=3)
    exported = export.deserialize(saved["exported"])
    return {"in_tree": in_tree, "out_tree": saved["out_tree"],
            "in_keys": [i for i, x in enumerate(leaves) if _is_key(x)],
            "out_keys": [(i, impl) for i, impl in enumerate(saved["out_keys"]) if impl],
            # One device, named: arguments fresh from an initialiser are uncommitted, a step's
            # outputs are committed, and the saved program would compile once for each.
            "call": jax.jit(exported.call, donate_argnums=flat_donate,
                            in_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                            compiler_options=compiler_options)}

  def step(*args: Any) -> Any:
    # Per call only what jax.jit itself would do (flatten, unflatten) plus the typed keys'
    # conversion: the step is called thousands of times.
    leaves, in_tree = jax.tree.flatten(args)
    if not runner:
      runner.update(load_or_export(args))
    if runner["in_tree"] is None or in_tree != runner["in_tree"]:
      return plain(*args)  # the step could not be saved, or another structure: trace it
    for i in runner["in_keys"]:
      leaves[i] = jax.random.key_data(leaves[i])
    try:
      out = runner["call"](*leaves)
    except ValueError as e:  # the saved program checks shapes when its wrapper is traced
      if "shape" not in str(e) and "dtype" not in str(e):
        raise
      return plain(*args)
    for i, impl in runner["out_keys"]:
      out[i] = jax.random.wrap_key_data(out[i], impl=impl)
    return jax.tree.unflatten(runner["out_tree"], out)

  return step


def _export(fn: Callable[..., Any], leaves: list[Any], in_tree: Any, fp: str) -> dict[str, Any]:
  in_keys = [_key_impl(x) for x in leaves]
  box: dict[str, Any] = {}

  def flat(*raw):
    out = fn(*jax.tree.unflatten(in_tree, _from_raw(raw, in_keys)))
    out_leaves, box["out_tree"] = jax.tree.flatten(out)
    box["out_keys"] = [_key_impl(x) for x in out_leaves]
    return _to_raw(out_leaves)

  raw_avals = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _to_raw(leaves)]
  checks = [export.DisabledSafetyCheck.custom_call(t) for t in _native_targets()]
  exported = export.export(jax.jit(flat), disabled_checks=checks)(*raw_avals)
  return {"format": _FORMAT, "fingerprint": fp, "exported": exported.serialize(),
          "out_tree": box["out_tree"], "out_keys": box["out_keys"]}


def _load(path: Path, fp: str) -> dict[str, Any] | None:
  if not path.exists():
    return None
  try:
    saved = pickle.loads(path.read_bytes())
  except Exception as e:  # a torn or foreign file: trace again, replacing it
    warnings.warn(f"{path}: unreadable saved step ({type(e).__name__}), tracing again",
                  RuntimeWarning, stacklevel=3)
    return None
  if not isinstance(saved, dict) or saved.get("fingerprint") != fp:
    return None
  return saved


def _save(path: Path, saved: dict[str, Any]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + f".tmp{os.getpid()}")
  tmp.write_bytes(pickle.dumps(saved))
  os.replace(tmp, path)


__all__ = ["cached_jit", "source_hash"]
