"""``jnas search`` on a chain space (FBNet / kernel chain): FBNet against a latency table.

Example:
  >>> from jnas.search.chain import search_chain
  >>> cfg = load_config("experiments/fbnet_mnist1d.py")  # doctest: +SKIP
  >>> search_chain(cfg, Path("runs/fbnet"))["predicted_ms"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jnas.data import load_dataset, split_train_val
from jnas.search.common import check_chain_data
from jnas.search.retrain import train
from jnas.search.workdir import SUMMARY_FILE
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


def search_chain(config, wd: Path) -> dict[str, Any]:
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
  check_chain_data(config, space, ds)
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
