"""Work directories, checkpoint metadata and stopping on a signal: the plumbing of every run.

A work directory holds one config's run (:func:`claim_workdir`), used by one
process at a time (:func:`lock_workdir`); the one loop (:mod:`jnas.search.loop`)
stops at the next step boundary after SIGINT/SIGTERM (:class:`StopOnSignal`) and
saves when :class:`CheckpointClock` says so.

Example:
  >>> from jnas.search.workdir import lock_workdir
  >>> with lock_workdir("runs/x"):  # doctest: +SKIP
  ...   pass
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jnas.spaces.base import SearchSpace

log = logging.getLogger(__name__)

SEARCH_CKPT_DIR = "checkpoints/search"
RETRAIN_CKPT_DIR = "checkpoints/retrain"
SUMMARY_FILE = "summary.json"
ALPHA_HISTORY_FILE = "alpha_history.npz"
SUPERNET_FILE = "supernet.npz"
LOCK_FILE = "jnas.lock"


def dict_hash(d: dict) -> str:
  """The 12-digit hex hash of a plain dict: the formula of :func:`jnas.config.config_hash`.

  Example:
    >>> dict_hash({"seed": 0})
    'bd0488843468'
  """
  text = json.dumps(d, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def claim_workdir(wd: Path, config_dict: dict) -> str:
  """Refuses a work directory that holds another config's run; returns the config hash."""
  new_hash = dict_hash(config_dict)
  path = wd / "config.json"
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except json.JSONDecodeError:
      old = None
    if old is not None and dict_hash(old) != new_hash:
      raise ValueError(
          f"work directory {wd} holds a run of another config (hash {dict_hash(old)}, "
          f"this config {new_hash}); use a new --workdir or the config of that run")
  return new_hash


# ---------------------------------------------------------------------------
# One process per work directory
# ---------------------------------------------------------------------------

# Locks this process holds: resolved lock path -> [fd, depth, pid]. `jnas search`
# calls train() after its search phase, so the same process takes the lock again.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def _read_holder(fd: int) -> dict:
  """The JSON a lock file holds (``{}`` when it is empty or torn)."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    data = json.loads(os.read(fd, 65536).decode() or "{}")
  except (OSError, ValueError):
    return {}
  return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"started {holder.get('started', '?')}")


def _try_flock(fd: int) -> bool:
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as err:
    if err.errno in (errno.EAGAIN, errno.EACCES):
      return False
    raise
  return True


def _new_lock_file(path: Path) -> tuple[int, Path]:
  """A private file next to ``path``, already flocked and holding this process's JSON.

  It is linked into place whole, so a lock file is never seen without its
  content or without its flock: a free flock then means the holder is gone.
  """
  tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
  fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)
  except BaseException:
    os.close(fd)
    tmp.unlink(missing_ok=True)
    raise
  return fd, tmp


def _acquire(path: Path) -> int:
  fd, tmp = _new_lock_file(path)
  try:
    while True:
      try:
        os.link(tmp, path)  # fails if the file exists: the O_EXCL of a whole file
        return fd
      except FileExistsError:
        pass
      try:
        old = os.open(path, os.O_RDWR)
      except FileNotFoundError:
        continue  # released meanwhile: try again
      try:
        holder = _read_holder(old)
        if not _try_flock(old):
          raise ValueError(f"work directory {path.parent} is in use by another jnas run "
                           f"({_describe(holder)}); wait for it to finish or use another "
                           f"--workdir")
        try:
          same = os.path.samestat(os.fstat(old), os.stat(path))
        except FileNotFoundError:
          same = False
        if not same:
          continue  # released and replaced while we looked: look again
        holder = _read_holder(old)
        if holder.get("host") not in (None, socket.gethostname()):
          # flock is not shared between machines on every network file system.
          raise ValueError(f"work directory {path.parent} is locked by a jnas run on another "
                           f"machine ({_describe(holder)}); if that run is over, delete "
                           f"{path} and run again")
        log.warning("taking over the lock %s of a run that is gone (%s)", path,
                    _describe(holder))
        # Replaced while we hold the stale file's flock: a third process that
        # opened it too sees another inode at `path` once it gets the flock.
        os.replace(tmp, path)
        return fd
      finally:
        os.close(old)
  except BaseException:
    os.close(fd)
    raise
  finally:
    tmp.unlink(missing_ok=True)


def _release(path: Path, fd: int) -> None:
  try:
    if os.path.samestat(os.fstat(fd), os.stat(path)):
      path.unlink()  # before the close: whoever waits on the flock then sees a new inode
  except FileNotFoundError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def lock_workdir(wd: str | os.PathLike) -> Iterator[Path]:
  """Holds ``WD/jnas.lock`` for the ``with`` block: one jnas process per work directory.

  The lock file holds ``{"pid", "host", "started"}`` and carries an
  ``fcntl.flock`` for as long as the run lives, so the kernel frees it when
  the process dies, however it dies. A second process is refused with a
  one-line ``ValueError`` naming the holder; a lock whose flock is free (its
  process was killed) is taken over with a warning. The same process may
  take it again (``jnas search`` retrains inside its own lock). Released on
  leaving the block, also on an exception or ``KeyboardInterrupt``.

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with lock_workdir(d) as path:
    ...   with lock_workdir(d):  # re-entrant in one process
    ...     path.exists()
    True
    >>> path.exists()
    False
  """
  wd = Path(wd)
  wd.mkdir(parents=True, exist_ok=True)
  path = (wd / LOCK_FILE).resolve()
  name = str(path)
  with _HELD_GUARD:
    held = _HELD.get(name)
    if held is not None and held[2] == os.getpid():
      held[1] += 1
    else:
      # A forked child inherits the parent's entry but is another run.
      _HELD[name] = [_acquire(path), 1, os.getpid()]
  try:
    yield path
  finally:
    with _HELD_GUARD:
      held = _HELD[name]
      held[1] -= 1
      if held[1] == 0:
        del _HELD[name]
        _release(path, held[0])


class StopOnSignal:
  """Turns the first SIGINT/SIGTERM into a request to stop at the next safe point.

  A step's input buffers are donated, so interrupting Python in the middle of
  a step would leave no valid state to save. The loop polls ``requested``
  between steps, saves a checkpoint and stops; a second signal interrupts at
  once (the last checkpoint stays).
  """

  def __init__(self) -> None:
    self.requested: str | None = None
    self._old: dict[int, Any] = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.requested is not None:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name
    log.warning("%s received: stopping after this step and saving a checkpoint "
                "(send it again to stop at once)", self.requested)

  def __enter__(self) -> StopOnSignal:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def checkpoint_every_s(search_config) -> float:
  """``search.checkpoint_every_s`` of a config (its default where the config lacks the key).

  Example:
    >>> import ml_collections
    >>> checkpoint_every_s(ml_collections.ConfigDict({"checkpoint_every_s": 0.0}))
    0.0
  """
  from jnas.config import SEARCH_OPTIONAL_DEFAULTS

  value = search_config.get("checkpoint_every_s")
  value = float(SEARCH_OPTIONAL_DEFAULTS["checkpoint_every_s"] if value is None else value)
  if not value >= 0:
    raise ValueError(f"search.checkpoint_every_s={value} must be >= 0 (0: after every epoch)")
  return value


def steps_per_call(search_config, group: str = "search") -> int:
  """``search.steps_per_call`` of a config (1 where the config lacks the key).

  ``group`` names the config group in the error (``retrain.steps_per_call``
  works the same way for the retraining).

  More than 1 runs that many training steps in one compiled ``lax.scan``, and
  0 a whole epoch: less time per step outside the step itself (dispatch,
  metric sums; SPOS on the NB201 MNIST-1D task ran its epochs 1.8-2.8x faster),
  with the same results up to float rounding (XLA compiles the scan's body on
  its own), but a stop request then takes effect only after the call in
  flight. A resumed run is bit-identical to an uninterrupted one with the same
  setting (calls are aligned to the epoch's start). So the MNIST-1D configs
  use 0 and the paper-size ones, whose epochs take minutes, keep 1.

  Example:
    >>> import ml_collections
    >>> steps_per_call(ml_collections.ConfigDict({"steps_per_call": 8}))
    8
  """
  value = search_config.get("steps_per_call")
  if value is None:
    return 1
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{group}.steps_per_call={value!r} must be an integer >= 0 "
                     f"(0: a whole epoch per call)")
  return int(value)


class CheckpointClock:
  """Decides at each epoch end whether a search loop saves its checkpoint.

  A save costs about as much as an epoch of a small search, so after an
  epoch the loop saves only when ``every_s`` seconds of wall time passed since
  this process's last save, or ``force`` says so (the last epoch, a stop
  request, an early stop). The first epoch a process runs is always saved: it
  carries the compilation, the costliest thing to lose. ``every_s = 0`` saves
  after every epoch. Resuming stays exact whatever is skipped: a checkpoint
  carries the metric lines up to it, and the rerun rewrites the files from them.

  Example:
    >>> clock = CheckpointClock(60.0)
    >>> clock.due(), clock.saved(), clock.due(), clock.due(force=True)
    (True, None, False, True)
  """

  def __init__(self, every_s: float) -> None:
    self.every_s = float(every_s)
    self._last: float | None = None

  def due(self, *, force: bool = False) -> bool:
    if force or self.every_s <= 0 or self._last is None:
      return True
    return time.monotonic() - self._last >= self.every_s

  def saved(self) -> None:
    self._last = time.monotonic()


def sums_to_json(sums: dict | None) -> dict | None:
  """A partial epoch's metric sums as JSON checkpoint metadata: ``{name: [value, dtype]}``."""
  if sums is None:
    return None
  return {k: [float(v), str(np.asarray(v).dtype)] for k, v in jax.device_get(sums).items()}


def sums_from_json(d: dict | None) -> dict | None:
  """The inverse of :func:`sums_to_json`: device arrays of the stored dtype, so a resumed
  epoch sums exactly as an uninterrupted one."""
  if d is None:
    return None
  return {k: jnp.asarray(np.asarray(v, dtype=dt)) for k, (v, dt) in d.items()}


def write_alpha_history(wd: Path, history: dict[str, list], space: SearchSpace) -> None:
  """Writes ``alpha_history.npz``: the raw alpha of every finished epoch, stacked."""
  if not history.get("epoch"):
    (wd / ALPHA_HISTORY_FILE).unlink(missing_ok=True)
    return
  arrays = {"epoch": np.asarray(history["epoch"], np.int32), **space.alpha_labels()}
  for k, v in history.items():
    if k != "epoch":
      arrays[f"alpha_{k}"] = np.asarray(v, np.float32)
  tmp = wd / f".{ALPHA_HISTORY_FILE}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, wd / ALPHA_HISTORY_FILE)


def _leaf_names(tree: Any) -> list[tuple[str, Any]]:
  """``(path, leaf)`` in the tree's own flattening order, so unflattening pairs them back."""
  return [(jax.tree_util.keystr(path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save_supernet(wd: Path, params: Any, batch_stats: Any) -> Path:
  """Writes the trained supernet's weights and BN statistics to ``supernet.npz``, atomically.

  One array per leaf, named by its tree path, so :func:`load_supernet` can
  refill a freshly built supernet of the same config (``jnas bench`` scores
  cells with the shared weights from it).

  Example:
    >>> save_supernet(Path("runs/x"), state.params, state.batch_stats)  # doctest: +SKIP
  """
  leaves = _leaf_names({"params": params, "batch_stats": batch_stats})
  tmp = wd / f".{SUPERNET_FILE}.tmp.npz"
  np.savez(tmp, **{name: np.asarray(jax.device_get(leaf)) for name, leaf in leaves})
  os.replace(tmp, wd / SUPERNET_FILE)
  return wd / SUPERNET_FILE


def load_supernet(wd: Path, params: Any, batch_stats: Any) -> tuple[Any, Any]:
  """Refills templates ``params``/``batch_stats`` (a fresh supernet's) from ``supernet.npz``.

  Raises ``FileNotFoundError`` when the search wrote no weights and
  ``ValueError`` (one line) when the file's arrays do not fit the templates
  (another supernet size or space).

  Example:
    >>> params, stats = load_supernet(Path("runs/x"), split.params, split.state)  # doctest: +SKIP
  """
  path = wd / SUPERNET_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: the search wrote no supernet weights")
  tree = {"params": params, "batch_stats": batch_stats}
  with np.load(path) as f:
    stored = {k: f[k] for k in f.files}
  names = _leaf_names(tree)
  if sorted(stored) != sorted(n for n, _ in names):
    raise ValueError(f"{path} holds the weights of another supernet ({len(stored)} arrays, "
                     f"this config's supernet has {len(names)})")
  new = []
  for name, leaf in names:
    if stored[name].shape != np.shape(leaf):
      raise ValueError(f"{path}: {name} has shape {stored[name].shape}, this config's supernet "
                       f"needs {np.shape(leaf)}")
    new.append(jnp.asarray(stored[name], dtype=np.asarray(leaf).dtype))
  out = jax.tree.unflatten(jax.tree.structure(tree), new)
  return out["params"], out["batch_stats"]


def finished(wd: Path, what: str) -> dict | None:
  """The JSON record ``wd / what`` of a finished phase; ``None`` when absent or unreadable."""
  path = wd / what
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    return None
