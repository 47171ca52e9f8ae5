"""``jnas search`` with a gradient strategy (DARTS, GDAS, SNAS, ...) on a cell space.

Alpha and supernet weights are trained on the two halves of the training set;
``search.data_parallel`` splits each batch over this host's devices. The
search is checkpointed after an epoch once ``search.checkpoint_every_s``
seconds passed since the last save (and after the first and the last epoch),
and at the step boundary after SIGINT/SIGTERM, so rerunning the command
resumes it bit-identically.

Example:
  >>> from jnas.search.gradient import search_gradient
  >>> search_gradient(cfg, Path("runs/x"), config_hash(cfg))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jnas.checkpoint import Checkpoints
from jnas.data import epoch_batches, load_dataset, split_train_val
from jnas.search.common import build_space, build_supernet, data_ndim
from jnas.search.retrain import train
from jnas.search.workdir import (SEARCH_CKPT_DIR, SUMMARY_FILE, CheckpointClock,
                                 StopOnSignal, checkpoint_every_s, run_epoch, save_supernet,
                                 sums_from_json, sums_to_json, write_alpha_history)
from jnas.strategies.registry import build_early_stop, build_gradient_strategy
from jnas.supernet.functional import count_params, split_model
from jnas.utils.metrics import MetricWriter, replace_phase, write_json_atomic
from jnas.utils.xla import config_compiler_options

log = logging.getLogger(__name__)


def search_gradient(config, wd: Path, chash: str) -> dict[str, Any]:
  """Runs a gradient-strategy search and (optionally) the retraining in ``wd``.

  Called by :func:`jnas.search.dispatch.search` after it claimed the work
  directory (``chash`` is the config's hash) and checked that
  ``config.search.strategy`` is a gradient strategy.

  Example:
    >>> cfg = load_config("experiments/darts_mnist1d.py")  # doctest: +SKIP
    >>> jnas.run.search(cfg, "runs/darts")["genotype"]  # doctest: +SKIP
  """
  sc = config.search
  clock = CheckpointClock(checkpoint_every_s(sc))

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
  # A key of its own: strategies may keep their init key in the state, and the jitted step
  # donates the state, which would delete `key` itself before it is checkpointed below.
  state = strategy.init(jax.random.fold_in(key, 3))
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
  xla_options = config_compiler_options(config, data_ndim(ds))
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
  early_stop = build_early_stop(sc, space)
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
    sums, elapsed0 = sums_from_json(meta.get("partial_sums")), float(meta["elapsed_s"])
    records, history = list(meta["metrics"]), meta["alpha_history"]
    if meta.get("early_stopped"):
      start_epoch = sc.epochs  # DARTS+ stopped this search; resume straight to the results
    log.info("resuming the search from checkpoint step %d (epoch %d, batch %d of %d)",
             ck_step, start_epoch + 1, start_batch, steps_per_epoch)
  replace_phase(str(wd), "search", records)
  write_alpha_history(wd, history, space)

  stopped_early = False

  def save_checkpoint(state, epoch: int, batch: int, partial: dict | None) -> None:
    meta = {"phase": "search", "config_hash": chash, "epoch": epoch, "batch": batch,
            "partial_sums": sums_to_json(partial), "elapsed_s": elapsed0 + time.time() - t0,
            "metrics": records, "alpha_history": history, "early_stopped": stopped_early}
    ckpt.save(int(jax.device_get(state.step)), {"strategy": state, "key": key}, meta)

  # ---- Search loop. ----
  t0 = time.time()
  with ckpt, MetricWriter(str(wd), tensorboard="search") as writer, StopOnSignal() as stop:
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
      write_alpha_history(wd, history, space)
      stopped_early = early_stop is not None and early_stop(alpha_now)
      if clock.due(force=epoch + 1 == sc.epochs or stopped_early or bool(stop.requested)):
        save_checkpoint(state, epoch + 1, 0, None)
        clock.saved()
      log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f", epoch + 1,
               means["train_loss"], means["train_acc"], means["val_loss"])
      if stopped_early:
        log.info("DARTS+ early stop after epoch %d: the derived cell has %d skip connections",
                 epoch + 1, int(sc.get("early_stop_skips", 0)))
        break
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
  save_supernet(wd, state.params, state.batch_stats)
  genotype = space.encoding_to_genotype(alpha)
  write_json_atomic(str(wd / "genotype.json"), space.genotype_to_json(genotype))
  summary: dict[str, Any] = {"genotype": space.genotype_to_json(genotype),
                             "search_seconds": round(search_s, 1),
                             "search_epochs": len(history["epoch"])}
  if config.retrain.enabled:
    summary.update(train(config, str(wd), str(wd / "genotype.json")))
  summary["workdir"] = str(wd)
  write_json_atomic(str(wd / SUMMARY_FILE), summary)
  return summary

