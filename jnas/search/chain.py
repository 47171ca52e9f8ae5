"""``jnas search`` on a chain space (FBNet / kernel chain): FBNet against a latency table.

Example:
  >>> from jnas.search.chain import search_chain
  >>> cfg = load_config("experiments/fbnet_mnist1d.py")  # doctest: +SKIP
  >>> search_chain(cfg, Path("runs/fbnet"), config_hash(cfg))["predicted_ms"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jnas.checkpoint import Checkpoints
from jnas.data import load_dataset, split_train_val
from jnas.supernet.chain import check_chain_data
from jnas.search.retrain import train
from jnas.search.workdir import (SEARCH_CKPT_DIR, SUMMARY_FILE, CheckpointClock, StopOnSignal,
                                 checkpoint_every_s)
from jnas.utils.metrics import MetricWriter, replace_phase, write_json_atomic

log = logging.getLogger(__name__)


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


def _scalars(m: dict) -> dict[str, float]:
  return {k: float(v) for k, v in m.items()
          if k not in ("epoch", "genotype", "arch") and isinstance(v, (int, float))}


def search_chain(config, wd: Path, chash: str) -> dict[str, Any]:
  """``search`` for chain spaces (FBNet / kernel chain): FBNet against a measured latency table.

  Writes ``latency_table.json`` (unless ``latency.table`` names one),
  ``metrics.jsonl`` (one line per epoch), ``arch_params.npz``,
  ``genotype.json`` and ``summary.json``; retrains when
  ``config.retrain.enabled``. The search is checkpointed after an epoch
  (the first, the last, and others once ``search.checkpoint_every_s`` seconds
  passed) and after the epoch in flight on SIGINT/SIGTERM (an epoch is one
  compiled scan), so rerunning the command resumes it and ends as an
  uninterrupted run; ``chash`` is the config's hash, checked against the
  checkpoint's.

  Example:
    >>> search_chain(cfg, Path("runs/fbnet"), config_hash(cfg))  # doctest: +SKIP
  """
  from jnas.spaces.chain import space_from_config
  from jnas.search.fbnet import search_fbnet

  sc = config.search
  if sc.strategy != "fbnet":
    raise ValueError(f"search.strategy={sc.strategy!r} does not apply to the "
                     f"{config.space.name} space; chain spaces are searched with 'fbnet'")
  space = space_from_config(config)
  ds = load_dataset(config.data.name, seed=config.data.seed)
  check_chain_data(config, space, ds)
  table, table_path = _chain_latency_table(config, space, wd)
  data = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
  fc = config.fbnet
  target = float(fc.target_ms) if fc.get("target_ms") else None
  fastest = table.fixed_ms + float(table.ops_ms.min(axis=1).sum())
  if target is not None and target < fastest:
    raise ValueError(f"fbnet.target_ms={target} is below the fastest architecture of the "
                     f"latency table ({fastest:.4f} ms, {table_path}); no architecture can meet it")
  epochs = int(sc.epochs)
  ckpt = Checkpoints(wd / SEARCH_CKPT_DIR, max_to_keep=2)
  clock = CheckpointClock(checkpoint_every_s(sc))
  records: list[dict] = []
  writer: MetricWriter | None = None

  def resume(state):
    # The metric lines of the epochs a checkpoint holds replace the files' ones, so
    # the MetricWriter (and its TensorBoard view) opens only once they are in place.
    nonlocal writer
    restored = ckpt.latest_good({"strategy": state})
    out = None
    if restored is not None:
      ck_step, tree, meta = restored
      if meta.get("config_hash") != chash:
        raise ValueError(f"checkpoint {ckpt.directory / str(ck_step)} belongs to another config "
                         f"(hash {meta.get('config_hash')}, this config {chash})")
      records.extend(meta["metrics"])
      out = tree["strategy"], int(meta["epoch"]), meta["history"], float(meta["elapsed_s"])
      log.info("resuming the FBNet search from checkpoint step %d (after epoch %d of %d)",
               ck_step, out[1], epochs)
    replace_phase(str(wd), "search", records)
    writer = MetricWriter(str(wd), tensorboard="search")
    return out

  def after_epoch(state, done: int, history: list, elapsed_s: float) -> None:
    records.append(writer.write(done, phase="search", **_scalars(history[-1])))
    if clock.due(force=done == epochs or bool(stop.requested)):
      meta = {"phase": "search", "config_hash": chash, "epoch": done, "history": history,
              "metrics": records, "elapsed_s": elapsed_s}
      ckpt.save(int(jax.device_get(state.step)), {"strategy": state}, meta)
      clock.saved()
    if stop.requested:
      log.warning("FBNet search stopped by %s after epoch %d; rerun the same command to "
                  "resume", stop.requested, done)
      raise KeyboardInterrupt

  try:
    with ckpt, StopOnSignal() as stop:
      result = search_fbnet(
          space, table, data, epochs=epochs, seed=int(config.seed),
          batch_size=int(sc.batch_size), warmup_epochs=int(sc.warmup_epochs),
          w_lr=float(sc.w_lr), momentum=float(sc.momentum), weight_decay=float(sc.weight_decay),
          a_lr=float(sc.a_lr), a=float(fc.alpha), b=float(fc.beta), tau0=float(fc.temperature),
          tau_decay=float(fc.temperature_decay), target_ms=target,
          enforce_target=target is not None, log=log.info, resume=resume,
          after_epoch=after_epoch)
  finally:
    if writer is not None:
      writer.close()
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
