"""Library entry points behind the CLI: ``search``, ``train`` and ``info``.

Each takes a config (see ``experiments/``) and returns a small summary dict,
so that a notebook can call them as well as ``jnas`` on the command line.

Example:
  >>> from jnas.config import load_config
  >>> from jnas import run
  >>> cfg = load_config("experiments/darts_mnist1d.py")  # doctest: +SKIP
  >>> run.search(cfg, "/tmp/jnas-run")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.checkpoint import Checkpoints
from jnas.config import config_to_dict
from jnas.data import epoch_batches, eval_batches, load_dataset, split_train_val
from jnas.data.augment import cutout, random_crop_2d, random_flip_2d, random_shift_1d
from jnas.ops.primitives import set_depthwise_impl
from jnas.spaces.base import SearchSpace
from jnas.spaces.darts import GENOTYPES, DartsSpace, Genotype
from jnas.spaces.nb201 import NB201_OPS, NB201Genotype, NB201Space
from jnas.strategies.registry import GRADIENT_STRATEGIES, build_gradient_strategy
from jnas.supernet.darts import DartsSupernet
from jnas.supernet.functional import count_params, make_apply, split_model
from jnas.supernet.nb201 import NB201Supernet
from jnas.train.nb201_network import NB201Network
from jnas.train.network import DiscreteNetwork
from jnas.utils.metrics import MetricWriter, replace_phase, write_json_atomic
from jnas.utils.progress import progress
from jnas.utils.xla import config_compiler_options

log = logging.getLogger(__name__)


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


def _check_chain_data(config, space, ds) -> None:
  """A chain space states its input shape and classes; refuses a dataset that differs."""
  if tuple(ds.input_shape) != tuple(space.input_shape) or ds.num_classes != space.num_classes:
    raise ValueError(f"data.input_shape/num_classes {tuple(space.input_shape)}/"
                     f"{space.num_classes} do not match the dataset {config.data.name!r} "
                     f"({tuple(ds.input_shape)}/{ds.num_classes})")


def build_supernet(config, space: SearchSpace, ds) -> nnx.Module:
  """The supernet of ``space`` sized by ``config.search`` for dataset ``ds``.

  DARTS cells: ``search.channels``/``search.layers``; NAS-Bench-201:
  ``search.channels``/``search.cells_per_stage``; chain spaces: the space's
  own stages.

  Example:
    >>> net = build_supernet(cfg, build_space(cfg), load_dataset("mnist1d"))  # doctest: +SKIP
  """
  sc = config.search
  if isinstance(space, NB201Space):
    return NB201Supernet(space, ds.input_shape[-1], ds.num_classes, ndim=_ndim(ds),
                         channels=sc.channels, cells_per_stage=sc.cells_per_stage,
                         rngs=nnx.Rngs(config.seed))
  if isinstance(space, DartsSpace):
    return DartsSupernet(space, ds.input_shape[-1], ds.num_classes, ndim=_ndim(ds),
                         channels=sc.channels, layers=sc.layers, rngs=nnx.Rngs(config.seed))
  from jnas.supernet.chain import ChainSupernet
  _check_chain_data(config, space, ds)
  return ChainSupernet(space, rngs=nnx.Rngs(config.seed))


def _genotype_path(genotype: str | None, workdir: str | None) -> str:
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
  genotype = _genotype_path(genotype, workdir)
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


def _ndim(ds) -> int:
  return len(ds.input_shape) - 1


def _augment_fn(config, ndim: int):
  """The retraining augmentation a config asks for, as ``fn(key, x) -> x``."""
  a = config.retrain.augment

  def fn(key, x):
    k1, k2, k3 = jax.random.split(key, 3)
    if ndim == 1 and a.shift > 0:
      x = random_shift_1d(k1, x, a.shift)
    if ndim == 2:
      if a.crop_padding > 0:
        x = random_crop_2d(k1, x, a.crop_padding)
      if a.flip:
        x = random_flip_2d(k2, x)
      if a.cutout > 0:
        x = cutout(k3, x, a.cutout)
    return x

  return fn


def _evaluate(apply_fn, params, state, encoding, x, y, batch_size: int) -> float:
  """Accuracy over every example (padded last batch masked out)."""
  xb, yb, mask = eval_batches(x, y, batch_size)

  @jax.jit
  def correct(p, s, enc, xs, ys, ms):
    logits, _ = apply_fn(p, s, enc, xs, False)
    return jnp.sum((jnp.argmax(logits, -1) == ys) * ms)

  total = sum(float(correct(params, state, encoding, xb[i], yb[i], mask[i]))
              for i in range(len(xb)))
  return total / float(mask.sum())


# ---------------------------------------------------------------------------
# Work directories, checkpoints and stopping on a signal
# ---------------------------------------------------------------------------

SEARCH_CKPT_DIR = "checkpoints/search"
RETRAIN_CKPT_DIR = "checkpoints/retrain"
SUMMARY_FILE = "summary.json"
CHAIN_SPACE_NAMES = ("fbnet", "kernel_chain")
ALPHA_HISTORY_FILE = "alpha_history.npz"


def _dict_hash(d: dict) -> str:
  # The formula of jnas.config.config_hash, applied to an already-plain dict.
  text = json.dumps(d, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _claim_workdir(wd: Path, config_dict: dict) -> str:
  """Refuses a work directory that holds another config's run; returns the config hash."""
  new_hash = _dict_hash(config_dict)
  path = wd / "config.json"
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except json.JSONDecodeError:
      old = None
    if old is not None and _dict_hash(old) != new_hash:
      raise ValueError(
          f"work directory {wd} holds a run of another config (hash {_dict_hash(old)}, "
          f"this config {new_hash}); use a new --workdir or the config of that run")
  return new_hash


class _StopOnSignal:
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

  def __enter__(self) -> _StopOnSignal:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)


def _sums_to_json(sums: dict | None) -> dict | None:
  if sums is None:
    return None
  return {k: [float(v), str(np.asarray(v).dtype)] for k, v in jax.device_get(sums).items()}


def _sums_from_json(d: dict | None) -> dict | None:
  if d is None:
    return None
  return {k: jnp.asarray(np.asarray(v, dtype=dt)) for k, (v, dt) in d.items()}


def _edge_labels(space: SearchSpace) -> list[str] | None:
  """Panel titles for the alpha plots where the DARTS naming (``c_{k-2}``, ...) does not apply."""
  if isinstance(space, NB201Space):
    return [f"node {j} <- node {i}" for j, i in space.edge_list]
  return None


def _write_alpha_history(wd: Path, history: dict[str, list], space: SearchSpace) -> None:
  """Writes ``alpha_history.npz``: the raw alpha of every finished epoch, stacked."""
  if not history.get("epoch"):
    (wd / ALPHA_HISTORY_FILE).unlink(missing_ok=True)
    return
  arrays = {"epoch": np.asarray(history["epoch"], np.int32),
            "primitives": np.asarray(space.primitives),
            "edges": np.asarray(space.edges(), np.int32)}
  labels = _edge_labels(space)
  if labels is not None:
    arrays["edge_labels"] = np.asarray(labels)
  for k, v in history.items():
    if k != "epoch":
      arrays[f"alpha_{k}"] = np.asarray(v, np.float32)
  tmp = wd / f".{ALPHA_HISTORY_FILE}.tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, wd / ALPHA_HISTORY_FILE)


def _finished(wd: Path, what: str) -> dict | None:
  path = wd / what
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError:
    return None


def run_epoch(step, state, batch_at, steps: int, *, first: int, sums: dict | None, desc: str,
              stop: _StopOnSignal, save_partial, what: str = "search",
              keys: tuple[str, ...] | None = None) -> tuple[Any, dict[str, float]]:
  """Runs steps ``first .. steps - 1`` of one search epoch; returns the state and the epoch means.

  ``step(state, *batch_at(i)) -> (state, metrics)`` is the jitted step;
  ``sums`` are the metric sums of the steps before ``first`` (a resumed
  epoch). Metrics (only ``keys``, if given) are summed on the device and
  fetched once, at the end. When ``stop`` has a request before the last step,
  ``save_partial(state, next_batch, sums)`` checkpoints the epoch's position
  and ``KeyboardInterrupt`` is raised. A NaN/inf ``train_loss`` raises
  ``FloatingPointError``.
  """
  with progress(total=steps, desc=desc, unit="step") as bar:
    bar.update(first)
    for i in range(first, steps):
      state, metrics = step(state, *batch_at(i))
      if keys is not None:
        metrics = {k: metrics[k] for k in keys}
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
      bar.update(1)
      if stop.requested and i + 1 < steps:
        save_partial(state, i + 1, sums)
        log.warning("%s stopped by %s at %s, batch %d; rerun the same command to resume",
                    what, stop.requested, desc, i + 1)
        raise KeyboardInterrupt
    # One host transfer per epoch, not per step.
    means = {k: float(v) / steps for k, v in jax.device_get(sums).items()}
    if not np.isfinite(means["train_loss"]):
      raise FloatingPointError(f"{what} diverged in {desc}: train loss is NaN/inf")
    bar.set_postfix(loss=means["train_loss"], acc=means["train_acc"])
  return state, means


# ---------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------


def search(config, workdir: str) -> dict[str, Any]:
  """Runs an architecture search, writes its results to ``workdir``, optionally retrains.

  Writes ``config.json``, ``metrics.jsonl`` (one line per epoch) and TensorBoard
  events under ``tb/search``, ``alpha_history.npz`` (alpha after every epoch),
  checkpoints under ``checkpoints/search`` (after every epoch and when stopped
  by SIGINT/SIGTERM; the newest two are kept), and at the end
  ``genotype.json``, ``arch_params.npz``, ``summary.json`` and, when
  ``config.retrain.enabled``, ``report.json``.

  Calling it again on the same work directory with the same config resumes
  from the newest readable checkpoint and ends with the same result as an
  uninterrupted run; on a finished run it changes nothing and returns the
  stored summary with ``status: finished``. Another config in the same
  directory is refused (ValueError).

  Example:
    >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  if config.search.strategy == "spos":
    # A config written for another strategy gets SPOS's pool and evolution settings, before
    # the config is hashed and saved, so config.json says what ran.
    from jnas.spos_search import add_spos_defaults
    config = copy.deepcopy(config)
    add_spos_defaults(config)
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  config_dict = config_to_dict(config)
  chash = _claim_workdir(wd, config_dict)
  done = _finished(wd, SUMMARY_FILE)
  if done is not None:
    log.info("the run in %s is finished; nothing to do (use a new --workdir to search again)",
             wd)
    return {**done, "status": "finished"}
  write_json_atomic(str(wd / "config.json"), config_dict)
  sc = config.search
  if sc.strategy == "spos":
    from jnas.spos_search import search_spos
    return search_spos(config, wd, chash)
  if config.space.name in CHAIN_SPACE_NAMES:
    return _search_chain(config, wd)
  if sc.strategy not in GRADIENT_STRATEGIES:
    raise ValueError(f"unknown search strategy {sc.strategy!r} "
                     f"(known: {', '.join(GRADIENT_STRATEGIES + ('spos',))}; 'fbnet' on chain "
                     f"spaces)")

  # ---- Data: the training set split in halves (weights / alpha). ----
  ds = load_dataset(config.data.name, seed=config.data.seed)
  (xw, yw), (xa, ya) = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
  steps_per_epoch = min(len(xw), len(xa)) // sc.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"search.batch_size={sc.batch_size} is larger than half the training set "
                     f"({min(len(xw), len(xa))} examples)")
  total_steps = sc.epochs * steps_per_epoch

  # ---- Supernet, architecture parameters and the strategy. ----
  space = build_space(config)
  key = jax.random.key(config.seed)
  split = split_model(build_supernet(config, space, ds))
  alpha = space.init_alpha(jax.random.fold_in(key, 1))
  strategy = build_gradient_strategy(sc, split.graphdef, split.params, split.state, alpha,
                                     total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                     key=jax.random.fold_in(key, 2))
  state = strategy.init(key)
  # search.data_parallel: 0 = one device; n > 0 = split each batch over n devices; -1 = all.
  n_dev = int(sc.get("data_parallel", 0))
  n_dev = jax.device_count() if n_dev == -1 else n_dev
  if n_dev < 0 or n_dev > jax.device_count():
    raise ValueError(f"search.data_parallel={sc.get('data_parallel')} must be 0 (off), -1 (all) "
                     f"or 1..{jax.device_count()} (the devices JAX sees)")
  if n_dev and jax.process_count() > 1:
    raise ValueError("search.data_parallel in jnas search uses one host's devices; for several "
                     "processes use jnas.parallel from Python (see the README)")
  if n_dev and sc.batch_size % n_dev:
    raise ValueError(f"search.batch_size={sc.batch_size} must be a multiple of the {n_dev} "
                     f"devices of search.data_parallel")
  xla_options = config_compiler_options(config, _ndim(ds))
  if n_dev:
    from jnas import parallel

    mesh = parallel.make_mesh(n_dev)
    place = lambda st: parallel.replicate(st, mesh)
    dp_step = parallel.data_parallel_step(strategy.step, mesh, compiler_options=xla_options)
    step = lambda st, bt, bv: dp_step(st, parallel.shard_batch(bt, mesh),
                                      parallel.shard_batch(bv, mesh))
    state = place(state)
  else:
    place = lambda st: st
    step = jax.jit(strategy.step, donate_argnums=0, compiler_options=xla_options)
  log.info("search: %s order %d, %d supernet weights, %d steps (%d epochs)%s", sc.strategy,
           sc.order, count_params(split.params), total_steps, sc.epochs,
           f", batches split over {n_dev} devices" if n_dev else "")

  # ---- Resume: the newest readable checkpoint, if any. ----
  # Batches are a pure function of (seed, epoch), so (epoch, batch) is the
  # whole data position; metrics and alpha history travel in the metadata so
  # that the files rewritten from them hold no lines from after the checkpoint.
  ckpt = Checkpoints(wd / SEARCH_CKPT_DIR, max_to_keep=2)
  start_epoch, start_batch, sums, elapsed0 = 0, 0, None, 0.0
  records: list[dict] = []
  history: dict[str, list] = {"epoch": [], **{k: [] for k in alpha}}
  restored = ckpt.latest_good({"strategy": state, "key": key})
  if restored is not None:
    ck_step, tree, meta = restored
    if meta.get("config_hash") != chash:
      raise ValueError(f"checkpoint {ckpt.directory / str(ck_step)} belongs to another config "
                       f"(hash {meta.get('config_hash')}, this config {chash})")
    state, key = place(tree["strategy"]), tree["key"]
    start_epoch, start_batch = int(meta["epoch"]), int(meta["batch"])
    sums, elapsed0 = _sums_from_json(meta.get("partial_sums")), float(meta["elapsed_s"])
    records, history = list(meta["metrics"]), meta["alpha_history"]
    log.info("resuming the search from checkpoint step %d (epoch %d, batch %d of %d)",
             ck_step, start_epoch + 1, start_batch, steps_per_epoch)
  replace_phase(str(wd), "search", records)
  _write_alpha_history(wd, history, space)

  def save_checkpoint(state, epoch: int, batch: int, partial: dict | None) -> None:
    meta = {"phase": "search", "config_hash": chash, "epoch": epoch, "batch": batch,
            "partial_sums": _sums_to_json(partial), "elapsed_s": elapsed0 + time.time() - t0,
            "metrics": records, "alpha_history": history}
    ckpt.save(int(jax.device_get(state.step)), {"strategy": state, "key": key}, meta)

  # ---- Search loop. ----
  t0 = time.time()
  with ckpt, MetricWriter(str(wd), tensorboard="search") as writer, _StopOnSignal() as stop:
    for epoch in range(start_epoch, sc.epochs):
      xw_b, yw_b = epoch_batches(xw, yw, sc.batch_size, seed=config.seed, epoch=epoch)
      xa_b, ya_b = epoch_batches(xa, ya, sc.batch_size, seed=config.seed + 1, epoch=epoch)
      first = start_batch if epoch == start_epoch else 0
      state, means = run_epoch(
          step, state, lambda i: ((xw_b[i], yw_b[i]), (xa_b[i], ya_b[i])), steps_per_epoch,
          first=first, sums=sums if first else None, desc=f"search epoch {epoch + 1}/{sc.epochs}",
          stop=stop, save_partial=lambda st, b, partial: save_checkpoint(st, epoch, b, partial))
      alpha_now = jax.device_get(strategy.arch_params(state))
      genotype = space.encoding_to_genotype(alpha_now)
      records.append(writer.write(
          int(state.step), phase="search", epoch=epoch + 1, **means,
          genotype=space.genotype_dumps(genotype).replace("\n", "").replace(" ", ""),
          elapsed_s=elapsed0 + time.time() - t0))
      history["epoch"].append(epoch + 1)
      for k, v in alpha_now.items():
        history[k].append(np.asarray(v, np.float32).tolist())
      _write_alpha_history(wd, history, space)
      save_checkpoint(state, epoch + 1, 0, None)
      log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f", epoch + 1,
               means["train_loss"], means["train_acc"], means["val_loss"])
      if stop.requested:
        log.warning("search stopped by %s after epoch %d; rerun the same command to resume",
                    stop.requested, epoch + 1)
        raise KeyboardInterrupt

  # ---- Results. ----
  search_s = elapsed0 + time.time() - t0
  alpha = jax.device_get(strategy.arch_params(state))
  tmp = wd / ".arch_params.tmp.npz"
  np.savez(tmp, **{k: np.asarray(v) for k, v in alpha.items()})
  os.replace(tmp, wd / "arch_params.npz")
  genotype = space.encoding_to_genotype(alpha)
  write_json_atomic(str(wd / "genotype.json"), space.genotype_to_json(genotype))
  summary: dict[str, Any] = {"genotype": space.genotype_to_json(genotype),
                             "search_seconds": round(search_s, 1)}
  if config.retrain.enabled:
    summary.update(train(config, workdir, str(wd / "genotype.json")))
  summary["workdir"] = str(wd)
  write_json_atomic(str(wd / SUMMARY_FILE), summary)
  return summary


def _chain_latency_table(config, space, wd: Path):
  """The config's latency table, or one measured now (in a child process) and kept in ``wd``.

  A child process because XLA reads its thread settings (``latency.cpu_threads``)
  only when the backend starts, and this process's backend runs the search.
  """
  from jnas.estimation.latency import load_latency_table

  lc = config.latency
  if lc.get("table"):
    return load_latency_table(lc.table, space, int(lc.batch_size), str(lc.dtype)), lc.table
  path = wd / "latency_table.json"
  if not path.exists():
    log.info("measuring a latency table on this machine (batch %d, %s) -> %s",
             lc.batch_size, lc.dtype, path)
    cmd = [sys.executable, "-m", "jnas.estimation.latency", str(wd / "config.json"), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise RuntimeError(f"building the latency table failed: {tail}")
  return load_latency_table(path, space, int(lc.batch_size), str(lc.dtype)), str(path)


def _search_chain(config, wd: Path) -> dict[str, Any]:
  """``search`` for chain spaces (FBNet / kernel chain): FBNet against a measured latency table.

  Writes ``latency_table.json`` (unless ``latency.table`` names one),
  ``metrics.jsonl`` (one line per epoch), ``arch_params.npz``,
  ``genotype.json`` and ``summary.json``; retrains when
  ``config.retrain.enabled``. A killed run restarts its search from the
  beginning (the table is kept): FBNet searches on the CPU-sized configs take
  minutes, and mid-search checkpoints exist for the DARTS-space strategies only.
  """
  from jnas.spaces.chain import space_from_config
  from jnas.supernet.chain import search_fbnet

  sc = config.search
  if sc.strategy != "fbnet":
    raise ValueError(f"search.strategy={sc.strategy!r} does not apply to the "
                     f"{config.space.name} space; chain spaces are searched with 'fbnet'")
  space = space_from_config(config)
  ds = load_dataset(config.data.name, seed=config.data.seed)
  _check_chain_data(config, space, ds)
  table, table_path = _chain_latency_table(config, space, wd)
  data = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
  fc = config.fbnet
  target = float(fc.target_ms) if fc.get("target_ms") else None
  fastest = table.fixed_ms + float(table.ops_ms.min(axis=1).sum())
  if target is not None and target < fastest:
    raise ValueError(f"fbnet.target_ms={target} is below the fastest architecture of the "
                     f"latency table ({fastest:.4f} ms, {table_path}); no architecture can meet it")
  records: list[dict] = []
  replace_phase(str(wd), "search", records)
  with MetricWriter(str(wd), tensorboard="search") as writer:
    result = search_fbnet(
        space, table, data, epochs=int(sc.epochs), seed=int(config.seed),
        batch_size=int(sc.batch_size), warmup_epochs=int(sc.warmup_epochs), w_lr=float(sc.w_lr),
        momentum=float(sc.momentum), weight_decay=float(sc.weight_decay), a_lr=float(sc.a_lr),
        a=float(fc.alpha), b=float(fc.beta), tau0=float(fc.temperature),
        tau_decay=float(fc.temperature_decay), target_ms=target,
        enforce_target=target is not None, log=log.info)
    for m in result.history:
      scalars = {k: float(v) for k, v in m.items()
                 if k not in ("epoch", "genotype", "arch") and isinstance(v, (int, float))}
      records.append(writer.write(int(m["epoch"]) + 1, phase="search", **scalars))
  tmp = wd / ".arch_params.tmp.npz"
  np.savez(tmp, blocks=result.alpha)
  os.replace(tmp, wd / "arch_params.npz")
  geno_json = space.genotype_to_json(result.genotype)
  write_json_atomic(str(wd / "genotype.json"), geno_json)
  summary: dict[str, Any] = {
      "genotype": geno_json, "predicted_ms": result.predicted_ms,
      "target_ms": target, "target_repairs": result.repairs,
      "supernet_val_accuracy": result.val_acc, "latency_table": table_path,
      "search_seconds": round(result.seconds, 1)}
  if config.retrain.enabled:
    summary.update(train(config, str(wd), str(wd / "genotype.json")))
  summary["workdir"] = str(wd)
  write_json_atomic(str(wd / SUMMARY_FILE), summary)
  return summary


def build_discrete(config, genotype, input_shape, num_classes: int,
                   rngs: nnx.Rngs | None = None) -> nnx.Module:
  """The retraining network a config describes for ``genotype`` (a DARTS or NAS-Bench-201 cell)."""
  rc = config.retrain
  rngs = rngs or nnx.Rngs(config.seed)
  if isinstance(genotype, NB201Genotype):
    return NB201Network(genotype, input_shape[-1], num_classes, ndim=len(input_shape) - 1,
                        channels=rc.channels, cells_per_stage=rc.cells_per_stage,
                        space=build_space(config), rngs=rngs)
  return DiscreteNetwork(genotype, input_shape[-1], num_classes, ndim=len(input_shape) - 1,
                         channels=rc.channels, layers=rc.layers,
                         drop_path_rate=rc.drop_path, rngs=rngs)


def train(config, workdir: str, genotype: str | None = None) -> dict[str, Any]:
  """Trains the discrete network of ``genotype`` from scratch; reports test accuracy.

  The genotype is a published name (``DARTS_V2``), a JSON file, or, if
  ``None``, ``WORKDIR/genotype.json``. Writes ``WORKDIR/report.json``, metrics
  (``phase: retrain``, TensorBoard under ``tb/retrain``) and a checkpoint after
  every epoch under ``checkpoints/retrain``, so calling it again with the same
  config and genotype resumes; when ``report.json`` of that same retraining
  exists, nothing is done and the report is returned.

  Example:
    >>> train(load_config("experiments/darts_mnist1d.py"), "runs/x", "DARTS_V2")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  chain = config.space.name in CHAIN_SPACE_NAMES
  space = build_space(config)
  if chain:
    from jnas.spaces.chain import resolve_chain_genotype
    from jnas.train.chain_network import ChainNetwork

    space, geno = resolve_chain_genotype(space, _genotype_path(genotype, workdir))
  else:
    geno = resolve_genotype(space, genotype, workdir)
  geno_json = space.genotype_to_json(geno)
  retrain_id = _dict_hash({"config": config_to_dict(config), "genotype": geno_json})
  done = _finished(wd, "report.json")
  if done is not None and done.get("retrain_id") == retrain_id:
    log.info("the retraining in %s is finished; nothing to do", wd)
    return {"test_accuracy": done["test_accuracy"], "num_params": done["num_params"],
            "report": str(wd / "report.json")}
  rc = config.retrain
  ds = load_dataset(config.data.name, seed=config.data.seed)
  if chain:
    net = ChainNetwork(space, geno, rngs=nnx.Rngs(config.seed))
  else:
    net = build_discrete(config, geno, ds.input_shape, ds.num_classes)
  split = split_model(net)
  graphdef = split.graphdef
  num_params = count_params(split.params)
  steps_per_epoch = len(ds.x_train) // rc.batch_size
  total = rc.epochs * steps_per_epoch
  schedule = optax.cosine_decay_schedule(rc.lr, max(total, 1), alpha=rc.lr_min / rc.lr)
  tx = optax.chain(optax.clip_by_global_norm(rc.grad_clip),
                   optax.add_decayed_weights(rc.weight_decay),
                   optax.sgd(schedule, momentum=rc.momentum, nesterov=rc.nesterov))
  augment = _augment_fn(config, _ndim(ds))

  def apply_fn(params, state, encoding, x, train_mode, key=None):
    del encoding
    params, state = jax.tree.map(lambda a: a, (params, state))
    model = nnx.merge(graphdef, params, state)
    # Chain networks have no drop-path, so no key.
    logits = model(x, train=train_mode) if chain else model(x, train=train_mode, key=key)
    return logits, nnx.state(model, nnx.BatchStat)

  @functools.partial(jax.jit, compiler_options=config_compiler_options(config, _ndim(ds)))
  def train_step(params, state, opt_state, x, y, key):
    ka, kd = jax.random.split(key)
    x = augment(ka, x)

    def loss_fn(p):
      logits, new_state = apply_fn(p, state, None, x, True, kd)
      labels = optax.smooth_labels(jax.nn.one_hot(y, ds.num_classes), rc.label_smoothing)
      return jnp.mean(optax.softmax_cross_entropy(logits, labels)), (new_state, logits)

    (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, new_state, opt_state, loss, jnp.mean(jnp.argmax(logits, -1) == y)

  params, state, opt_state = split.params, split.state, tx.init(split.params)
  key = jax.random.key(config.seed + 1000)

  # ---- Resume from the newest readable retraining checkpoint. ----
  ckpt = Checkpoints(wd / RETRAIN_CKPT_DIR, max_to_keep=2)
  start_epoch, elapsed0, records = 0, 0.0, []
  restored = ckpt.latest_good({"params": params, "state": state, "opt_state": opt_state,
                               "key": key})
  if restored is not None:
    ck_step, tree, meta = restored
    if meta.get("retrain_id") != retrain_id:
      raise ValueError(f"{ckpt.directory} holds the retraining of another genotype or config; "
                       f"use a new --workdir")
    params, state, opt_state, key = tree["params"], tree["state"], tree["opt_state"], tree["key"]
    start_epoch, elapsed0, records = int(meta["epoch"]), float(meta["elapsed_s"]), meta["metrics"]
    log.info("resuming the retraining after epoch %d of %d", start_epoch, rc.epochs)
  replace_phase(str(wd), "retrain", records)

  log.info("retrain: %d parameters, %d epochs of %d steps", num_params, rc.epochs,
           steps_per_epoch)
  t0 = time.time()
  with ckpt, MetricWriter(str(wd), tensorboard="retrain") as writer, \
      progress(total=rc.epochs, desc="retrain", unit="epoch") as bar, _StopOnSignal() as stop:
    bar.update(start_epoch)
    for epoch in range(start_epoch, rc.epochs):
      xb, yb = epoch_batches(ds.x_train, ds.y_train, rc.batch_size, seed=config.seed,
                             epoch=10_000 + epoch)
      loss_sum = acc_sum = 0.0
      for i in range(steps_per_epoch):
        params, state, opt_state, loss, acc = train_step(
            params, state, opt_state, xb[i], yb[i], jax.random.fold_in(key, epoch * 100_003 + i))
        loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
      loss_m, acc_m = float(loss_sum) / steps_per_epoch, float(acc_sum) / steps_per_epoch
      if not np.isfinite(loss_m):
        raise FloatingPointError(f"retraining diverged at epoch {epoch}: loss is NaN/inf")
      records.append(writer.write(epoch + 1, phase="retrain", retrain_loss=loss_m,
                                  retrain_acc=acc_m))
      ckpt.save(epoch + 1, {"params": params, "state": state, "opt_state": opt_state,
                            "key": key},
                {"phase": "retrain", "retrain_id": retrain_id, "epoch": epoch + 1,
                 "elapsed_s": elapsed0 + time.time() - t0, "metrics": records})
      bar.set_postfix(loss=loss_m, acc=acc_m)
      bar.update(1)
      if stop.requested and epoch + 1 < rc.epochs:
        log.warning("retraining stopped by %s after epoch %d; rerun the same command to "
                    "resume", stop.requested, epoch + 1)
        raise KeyboardInterrupt
  train_s = elapsed0 + time.time() - t0
  test_acc = _evaluate(apply_fn, params, state, None, ds.x_test, ds.y_test, 256)
  report = {
      "genotype": geno_json,
      "dataset": ds.name,
      "test_accuracy": test_acc,
      "num_params": num_params,
      "retrain_epochs": rc.epochs,
      "retrain_seconds": round(train_s, 1),
      "retrain_id": retrain_id,
  }
  write_json_atomic(str(wd / "report.json"), report)
  log.info("retrain: test accuracy %.4f (%d test examples)", test_acc, len(ds.x_test))
  return {"test_accuracy": test_acc, "num_params": num_params,
          "report": str(wd / "report.json")}


def info(config, genotype: str) -> dict[str, Any]:
  """Parameter count of the retraining network for ``genotype``, without training.

  Shapes come from ``nnx.eval_shape``, so no weights are allocated.

  Example:
    >>> info(load_config("experiments/darts_cifar10.py"), "DARTS_V2")["num_params"]  # doctest: +SKIP
    3349342
  """
  if config.space.name in CHAIN_SPACE_NAMES:
    from jnas.estimation.flops import chain_info
    return chain_info(config, genotype)
  space = build_space(config)
  geno = resolve_genotype(space, genotype)
  shape = tuple(config.data.input_shape) if "input_shape" in config.data else None
  if shape is None:
    ds = load_dataset(config.data.name, seed=config.data.seed)
    shape, num_classes = ds.input_shape, ds.num_classes
  else:
    num_classes = config.data.num_classes
  net = nnx.eval_shape(lambda: build_discrete(config, geno, shape, num_classes))
  depth = ({"cells_per_stage": config.retrain.cells_per_stage} if isinstance(space, NB201Space)
           else {"layers": config.retrain.layers})
  return {"genotype": genotype, "num_params": count_params(nnx.state(net, nnx.Param)),
          "channels": config.retrain.channels, **depth,
          "input_shape": list(shape), "num_classes": num_classes}
