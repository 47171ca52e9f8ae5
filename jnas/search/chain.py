"""``jnas search`` on a chain space (FBNet / kernel chain): FBNet against a latency table.

Example:
  >>> from jnas.search.chain import ChainPlan
  >>> plan = ChainPlan(load_config("experiments/fbnet_mnist1d.py"), Path("runs/fbnet"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from jnas.config import config_hash
from jnas.data import load_dataset, split_train_val
from jnas.search.common import TRACED_DIR
from jnas.search.fbnet import FBNetRun
from jnas.search.plan import Found, Plan, UnitEnd
from jnas.search.workdir import checkpoint_every_s
from jnas.supernet.chain import check_chain_data

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


class ChainPlan(Plan):
  """FBNet against a latency table on a chain space (FBNet / kernel chain), as the loop's plan.

  Writes ``latency_table.json`` (unless ``latency.table`` names one). A unit
  is an epoch, run as one compiled scan, so a stop request takes effect
  after the epoch in flight.

  Example:
    >>> plan = ChainPlan(load_config("experiments/fbnet_mnist1d.py"), Path("runs/x"))  # doctest: +SKIP
  """

  what = "FBNet search"

  def __init__(self, config, wd: Path) -> None:
    from jnas.spaces.chain import space_from_config  # noqa: PLC0415

    sc = config.search
    if sc.strategy != "fbnet":
      raise ValueError(f"search.strategy={sc.strategy!r} does not apply to the "
                       f"{config.space.name} space; chain spaces are searched with 'fbnet'")
    self.every_s = checkpoint_every_s(sc)
    space = space_from_config(config)
    ds = load_dataset(config.data.name, seed=config.data.seed)
    check_chain_data(config, space, ds)
    table, self.table_path = _chain_latency_table(config, space, wd)
    fc = config.fbnet
    target = self.target_ms = float(fc.target_ms) if fc.get("target_ms") else None
    fastest = table.fixed_ms + float(table.ops_ms.min(axis=1).sum())
    if target is not None and target < fastest:
      raise ValueError(f"fbnet.target_ms={target} is below the fastest architecture of the "
                       f"latency table ({fastest:.4f} ms, {self.table_path}); no architecture "
                       f"can meet it")
    self.run = FBNetRun(
        space, table, split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed),
        epochs=int(sc.epochs), seed=int(config.seed), batch_size=int(sc.batch_size),
        warmup_epochs=int(sc.warmup_epochs), w_lr=float(sc.w_lr), momentum=float(sc.momentum),
        weight_decay=float(sc.weight_decay), a_lr=float(sc.a_lr), a=float(fc.alpha),
        b=float(fc.beta), tau0=float(fc.temperature), tau_decay=float(fc.temperature_decay),
        target_ms=target, enforce_target=target is not None, log=log.info,
        saved_steps=(wd / TRACED_DIR, config_hash(config)))
    self.step = self.run.train_epoch
    self.space = space
    self.history: list[dict] = []

  def init(self) -> Any:
    return self.run.init()

  def done(self, unit: int) -> bool:
    return unit >= self.run.epochs

  def batches(self, unit: int) -> Callable[[int], tuple]:
    return lambda i: (unit,)

  def label(self, unit: int) -> str:
    return f"FBNet epoch {unit + 1}/{self.run.epochs}"

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    m = self.run.describe(carry, unit, means)
    self.history.append(m)
    scalars = {k: float(v) for k, v in m.items()
               if k not in ("epoch", "genotype", "arch") and isinstance(v, (int, float))}
    return UnitEnd({"epoch": unit + 1, **scalars}, unit + 1)

  def save_meta(self) -> dict:
    return {"history": self.history}

  def load_meta(self, meta: dict) -> None:
    self.history = list(meta["history"])

  def finish(self, carry: Any, seconds: float) -> Found:
    result = self.run.result(carry, self.history, seconds)
    return Found(self.space.genotype_to_json(result.genotype), {"blocks": result.alpha}, {
        "predicted_ms": result.predicted_ms, "target_ms": self.target_ms,
        "target_repairs": result.repairs, "supernet_val_accuracy": result.val_acc,
        "latency_table": self.table_path, "search_seconds": round(result.seconds, 1)})
