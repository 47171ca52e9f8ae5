"""Numbered checkpoints of any pytree plus JSON metadata, on top of orbax.

Every strategy state in jnas is a pytree, so one small layer serves all of
them: ``save(dir, step, pytree, metadata)`` writes step ``step``;
``latest_good(dir, target)`` returns the newest checkpoint that restores
cleanly. Orbax writes each step into a temporary directory and renames it when
complete (atomic on POSIX), so a process killed during a save leaves only a
``*.orbax-checkpoint-tmp*`` directory, never a half-written step. A step that
exists but cannot be read (a file truncated or deleted afterwards, a disk
error) is moved aside to ``DIR-corrupt/`` with a warning naming it, and the
previous good step is used: nothing is deleted silently. A step that reads
but holds other bytes than were saved (bits flipped on disk, a file
overwritten) is caught by a SHA-256 of every array, taken at save time and
stored in the same atomic save, and is moved aside the same way.

Typed PRNG keys (``jax.random.key``) are stored as their raw key data and
wrapped again on restore, using the key type found in ``target``.

Example:
  >>> import jax.numpy as jnp, tempfile
  >>> d = tempfile.mkdtemp() + "/ckpt"
  >>> save(d, 1, {"w": jnp.ones(3)}, {"epoch": 1})
  >>> step, tree, meta = latest_good(d, {"w": jnp.zeros(3)})
  >>> step, meta["epoch"], float(tree["w"].sum())
  (1, 1, 3.0)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpoints", "ChecksumError", "save", "restore", "latest_good", "all_steps"]

log = logging.getLogger(__name__)

_ITEMS = ("state", "meta")
_TMP_MARK = ".orbax-checkpoint-tmp"
# Reserved metadata key: the arrays' checksum travels in the step's own JSON, so
# it is committed by the same rename as the arrays it describes.
_CHECKSUM_KEY = "_jnas_checksum"


class ChecksumError(ValueError):
  """A checkpoint's arrays differ from the bytes that were saved."""


def _leaf_digests(tree: Any) -> list[bytes] | None:
  """SHA-256 of each leaf's bytes, in tree order; ``None`` when a leaf is not all on this host."""
  out = []
  for x in jax.tree.leaves(tree):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return None  # another host holds part of it: that host's bytes are not ours to hash
    a = np.ascontiguousarray(jax.device_get(x))
    out.append(hashlib.sha256(a.view(np.uint8)).digest())
  return out


def _checksum(digests: list[bytes]) -> dict:
  """``sha256`` over the leaves in tree order; ``sha256_sorted`` for a restore without a
  target, where orbax returns plain dicts whose leaf order may differ."""
  return {"sha256": hashlib.sha256(b"".join(digests)).hexdigest(),
          "sha256_sorted": hashlib.sha256(b"".join(sorted(digests))).hexdigest(),
          "leaves": len(digests)}


def _verify(tree: Any, stored: dict, in_order: bool, where: Path) -> None:
  digests = _leaf_digests(tree)
  if digests is None:
    return
  got = _checksum(digests)
  field = "sha256" if in_order else "sha256_sorted"
  if got["leaves"] != stored.get("leaves") or got[field] != stored.get(field):
    raise ChecksumError(f"checkpoint {where} fails its checksum: its arrays differ from the "
                        f"bytes that were saved")


def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _uncommitted(x: Any) -> bool:
  return isinstance(x, jax.Array) and not getattr(x, "committed", True)


def _data_target(target: Any) -> Any:
  """``target`` with typed keys replaced by their raw data, and where to restore each leaf.

  A jax array that was not placed explicitly (uncommitted, the usual case on
  one device) is restored through host memory and placed like a fresh array
  again: restored committed arrays would lower the jitted step differently
  and cost a second compilation. Committed (e.g. sharded) targets restore
  straight into their sharding.
  """
  def conv(x):
    if _is_key(x):
      x = jax.eval_shape(jax.random.key_data, x)
      return np.empty(x.shape, x.dtype)
    if isinstance(x, jax.ShapeDtypeStruct) or (isinstance(x, jax.Array) and x.committed):
      return x
    return np.empty(np.shape(x), np.asarray(x).dtype if not isinstance(x, jax.Array)
                    else x.dtype)
  return jax.tree.map(conv, target)


def _from_host(tree: Any, target: Any) -> Any:
  """Typed keys wrapped again; leaves restored to host memory put back where ``target``'s were."""
  def conv(x, t):
    if _is_key(t):
      return jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(t))
    if _uncommitted(t):
      return jnp.asarray(x)
    return x
  return jax.tree.map(conv, tree, target)


class Checkpoints:
  """A directory of numbered checkpoints (one pytree + JSON metadata each).

  Args:
    directory: where the step directories live (created on first save).
    max_to_keep: how many of the newest steps to keep; older ones are deleted
      after a successful save.

  Example:
    >>> import jax.numpy as jnp, tempfile
    >>> ck = Checkpoints(tempfile.mkdtemp() + "/c")
    >>> ck.save(5, {"a": jnp.arange(2)}, {"note": "x"})
    >>> ck.steps()
    [5]
    >>> ck.latest_good({"a": jnp.zeros(2, jnp.int32)})[2]
    {'note': 'x'}
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2) -> None:
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    self.directory = Path(directory).expanduser().resolve()
    self.max_to_keep = max_to_keep
    self._manager: ocp.CheckpointManager | None = None

  # -- orbax plumbing -------------------------------------------------------

  def _mgr(self) -> ocp.CheckpointManager:
    if self._manager is None:
      self._drop_partial_saves()
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self.max_to_keep, create=True,
          # Synchronous: a save has finished (and been renamed into place)
          # when save() returns, so the caller may exit or kill right after.
          enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
    return self._manager

  def _drop_partial_saves(self) -> None:
    """Removes temporary directories of saves that never finished."""
    if not self.directory.is_dir():
      return
    for path in sorted(self.directory.iterdir()):
      if _TMP_MARK in path.name:
        log.warning("removing partial checkpoint %s (its save did not finish)", path)
        shutil.rmtree(path, ignore_errors=True)

  def close(self) -> None:
    """Releases orbax's resources; the object can be used again afterwards."""
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  # -- public API -----------------------------------------------------------

  def steps(self) -> list[int]:
    """Finished steps on disk, oldest first."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir()
                  if p.is_dir() and p.name.isdigit())

  def save(self, step: int, pytree: Any, metadata: dict | None = None) -> None:
    """Writes ``pytree`` and ``metadata`` (JSON-serialisable) as step ``step``.

    A step that already exists (left by a run that was rolled back to an
    earlier checkpoint) is moved aside first, as it is no longer on the path
    this run takes.
    """
    step = int(step)
    existing = self.directory / str(step)
    if existing.exists():
      self._quarantine(step, "it is replaced by a new save of the same step")
    data = _keys_to_data(pytree)
    meta = dict(metadata or {})
    if _CHECKSUM_KEY in meta:
      raise ValueError(f"checkpoint metadata key {_CHECKSUM_KEY!r} is reserved")
    digests = _leaf_digests(data)
    if digests is not None:
      meta[_CHECKSUM_KEY] = _checksum(digests)
    mgr = self._mgr()
    mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(data), meta=ocp.args.JsonSave(meta)), force=True)
    mgr.wait_until_finished()

  def restore(self, step: int, target: Any | None = None) -> tuple[Any, dict]:
    """Reads step ``step``: ``(pytree, metadata)``.

    ``target`` (arrays or ``jax.ShapeDtypeStruct``s) gives the tree
    structure, shapes and dtypes; without it orbax returns nested dicts/lists.
    Raises whatever orbax raises when the files are unreadable, and
    :class:`ChecksumError` when the arrays read differ from those saved
    (steps saved before checksums existed are not checked).
    """
    state_args = (ocp.args.StandardRestore(_data_target(target)) if target is not None
                  else ocp.args.StandardRestore())
    out = self._mgr().restore(int(step), args=ocp.args.Composite(
        state=state_args, meta=ocp.args.JsonRestore()))
    tree, meta = out["state"], dict(out["meta"] or {})
    where = self.directory / str(step)
    if target is not None and jax.tree.structure(_data_target(target)) != jax.tree.structure(tree):
      raise ValueError(f"checkpoint {where} has another tree structure")
    stored = meta.pop(_CHECKSUM_KEY, None)
    if stored is not None:
      _verify(tree, stored, in_order=target is not None, where=where)
    if target is not None:
      tree = _from_host(tree, target)
    return tree, meta

  def latest_good(self, target: Any | None = None) -> tuple[int, Any, dict] | None:
    """The newest step that restores cleanly, as ``(step, pytree, metadata)``.

    Newer steps that fail to restore or to verify are moved to ``DIRECTORY-corrupt/`` with
    a warning; ``None`` when no step is readable.
    """
    for step in reversed(self.steps()):
      try:
        tree, meta = self.restore(step, target)
      except Exception as err:  # noqa: BLE001 - any failure means "not usable"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        self._quarantine(step, f"it cannot be restored ({reason})")
        continue
      return step, tree, meta
    return None

  def _quarantine(self, step: int, why: str) -> None:
    src = self.directory / str(step)
    dest_root = self.directory.parent / f"{self.directory.name}-corrupt"
    dest_root.mkdir(parents=True, exist_ok=True)
    dest = dest_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    log.warning("skipping checkpoint %s: %s; moved it to %s", src, why, dest)
    shutil.move(str(src), str(dest))
    if self._manager is not None:
      self._manager.reload()


def all_steps(directory: str | os.PathLike) -> list[int]:
  """Finished checkpoint steps in ``directory``, oldest first.

  Example:
    >>> all_steps("/nonexistent")
    []
  """
  return Checkpoints(directory).steps()


def save(directory: str | os.PathLike, step: int, pytree: Any, metadata: dict | None = None,
         *, max_to_keep: int = 2) -> None:
  """Writes one checkpoint (see :class:`Checkpoints`); keeps the newest ``max_to_keep``.

  Example:
    >>> import jax.numpy as jnp, tempfile
    >>> save(tempfile.mkdtemp() + "/c", 3, {"w": jnp.ones(2)}, {"epoch": 3})
  """
  with Checkpoints(directory, max_to_keep) as ck:
    ck.save(step, pytree, metadata)


def restore(directory: str | os.PathLike, step: int, target: Any | None = None
            ) -> tuple[Any, dict]:
  """Reads step ``step`` of ``directory`` as ``(pytree, metadata)``.

  Example:
    >>> import jax.numpy as jnp, tempfile
    >>> d = tempfile.mkdtemp() + "/c"
    >>> save(d, 1, {"w": jnp.ones(2)})
    >>> restore(d, 1, {"w": jnp.zeros(2)})[0]["w"].tolist()
    [1.0, 1.0]
  """
  with Checkpoints(directory) as ck:
    return ck.restore(step, target)


def latest_good(directory: str | os.PathLike, target: Any | None = None
                ) -> tuple[int, Any, dict] | None:
  """The newest readable checkpoint of ``directory`` as ``(step, pytree, metadata)``, or None.

  Unreadable newer steps are moved to ``DIRECTORY-corrupt/`` with a warning.

  Example:
    >>> latest_good("/nonexistent") is None
    True
  """
  with Checkpoints(directory) as ck:
    return ck.latest_good(target)
