"""``jnas search`` with a gradient strategy (DARTS, GDAS, SNAS, ...) on a cell space.

Alpha and supernet weights are trained on the two halves of the training set;
``search.data_parallel`` splits each batch over this host's devices. The
search is checkpointed after an epoch once ``search.checkpoint_every_s``
seconds passed since the last save (and after the first and the last epoch),
and at the step boundary after SIGINT/SIGTERM, so rerunning the command
resumes it bit-identically.

Example:
  >>> from jnas.search.loop import run_phase
  >>> plan = GradientPlan(cfg, Path("runs/x"))  # doctest: +SKIP
  >>> carry, seconds = run_phase(plan, Path("runs/x"), config_hash(cfg))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jnas.data import epoch_batches, load_dataset, split_train_val
from jnas.search.common import (build_space, build_supernet, config_compiler_options,
                                data_ndim, saved_step)
from jnas.search.plan import Found, Plan, UnitEnd
from jnas.search.workdir import (checkpoint_every_s, save_supernet, steps_per_call,
                                 write_alpha_history)
from jnas.strategies.registry import build_early_stop, build_gradient_strategy
from jnas.supernet.functional import count_params, split_model

log = logging.getLogger(__name__)


class GradientPlan(Plan):
  """A gradient-strategy search (DARTS, GDAS, SNAS, ...) on a cell space, as the loop's plan.

  A unit is an epoch; a step trains the weights on a batch of one half and
  alpha on a batch of the other. After each epoch the derived genotype goes
  into the metrics line, alpha into ``alpha_history.npz``, and DARTS+'s early
  stop (``search.early_stop_skips``) may end the search.

  Example:
    >>> plan = GradientPlan(load_config("experiments/darts_mnist1d.py"), Path("runs/x"))  # doctest: +SKIP
  """

  def __init__(self, config, wd: Path) -> None:
    sc = self.sc = config.search
    self.config, self.wd = config, wd
    self.every_s = checkpoint_every_s(sc)
    # ---- Data: the training set split in halves (weights / alpha). ----
    ds = load_dataset(config.data.name, seed=config.data.seed)
    self.halves = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
    (xw, _), (xa, _) = self.halves
    self.steps_per_epoch = min(len(xw), len(xa)) // sc.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"search.batch_size={sc.batch_size} is larger than half the training "
                       f"set ({min(len(xw), len(xa))} examples)")
    total_steps = sc.epochs * self.steps_per_epoch

    # ---- Supernet, architecture parameters and the strategy. ----
    space = self.space = build_space(config)
    key = jax.random.key(config.seed)
    split = split_model(build_supernet(config, space, ds))
    alpha = space.init_alpha(jax.random.fold_in(key, 1))
    self.strategy = build_gradient_strategy(
        sc, split.graphdef, split.params, split.state, alpha, total_steps=total_steps,
        steps_per_epoch=self.steps_per_epoch, key=jax.random.fold_in(key, 2))
    self._key = jax.random.fold_in(key, 3)
    self.place, self.step = self._placement(sc, data_ndim(ds))
    per_call = steps_per_call(sc)
    if per_call != 1 and self.n_dev:
      log.info("search.data_parallel runs one step per call (search.steps_per_call=%d unused)",
               per_call)
      per_call = 1
    self.use_scan(per_call, self.strategy.step, config=config, wd=wd,
                  compiler_options=config_compiler_options(config, data_ndim(ds)))
    self.early_stop = build_early_stop(sc, space)
    self.early_stopped = False
    self.history: dict[str, list] = {"epoch": [], **{k: [] for k in alpha}}
    log.info("search: %s order %d, %d supernet weights, %d steps (%d epochs)%s", sc.strategy,
             sc.order, count_params(split.params), total_steps, sc.epochs,
             f", batches split over {self.n_dev} devices" if self.n_dev else "")

  def _placement(self, sc, ndim: int) -> tuple[Callable, Callable]:
    """``(place, step)``: one device, or each batch split over ``search.data_parallel`` devices
    (0 = one device; n > 0 = n devices; -1 = all)."""
    n_dev = int(sc.get("data_parallel", 0))
    n_dev = self.n_dev = jax.device_count() if n_dev == -1 else n_dev
    if n_dev < 0 or n_dev > jax.device_count():
      raise ValueError(f"search.data_parallel={sc.get('data_parallel')} must be 0 (off), -1 "
                       f"(all) or 1..{jax.device_count()} (the devices JAX sees)")
    if n_dev and jax.process_count() > 1:
      raise ValueError("search.data_parallel in jnas search uses one host's devices; for "
                       "several processes use jnas.parallel from Python (see the README)")
    if n_dev and sc.batch_size % n_dev:
      raise ValueError(f"search.batch_size={sc.batch_size} must be a multiple of the {n_dev} "
                       f"devices of search.data_parallel")
    xla_options = config_compiler_options(self.config, ndim)
    if not n_dev:
      return (lambda st: st), saved_step(self.strategy.step, self.config, self.wd, "search_step",
                                         compiler_options=xla_options)
    from jnas import parallel  # noqa: PLC0415 (only data-parallel runs need meshes)

    mesh = parallel.make_mesh(n_dev)
    dp_step = parallel.data_parallel_step(self.strategy.step, mesh, compiler_options=xla_options)
    return (lambda st: parallel.replicate(st, mesh),
            lambda st, bt, bv: dp_step(st, parallel.shard_batch(bt, mesh),
                                       parallel.shard_batch(bv, mesh)))

  def init(self) -> Any:
    # A key of its own: strategies may keep their init key in the state, and the jitted step
    # donates the state.
    return self.place(self.strategy.init(self._key))

  def from_tree(self, tree: Any, meta: dict, fresh: Any) -> Any:
    return self.place(tree["strategy"])

  def done(self, unit: int) -> bool:
    return unit >= self.sc.epochs or self.early_stopped

  def total_units(self) -> int:
    return int(self.sc.epochs)  # DARTS+ may stop earlier

  def steps(self, unit: int) -> int:
    return self.steps_per_epoch

  def label(self, unit: int) -> str:
    return f"search epoch {unit + 1}/{self.sc.epochs}"

  def batches(self, unit: int) -> Callable[[int], tuple]:
    # Batches are a pure function of (seed, epoch), so (epoch, batch) is the whole position.
    (xw, yw), (xa, ya) = self.halves
    bs, seed = self.sc.batch_size, self.config.seed
    xw_b, yw_b = epoch_batches(xw, yw, bs, seed=seed, epoch=unit)
    xa_b, ya_b = epoch_batches(xa, ya, bs, seed=seed + 1, epoch=unit)
    return lambda i: ((xw_b[i], yw_b[i]), (xa_b[i], ya_b[i]))

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    alpha_now = jax.device_get(self.strategy.arch_params(carry))
    genotype = self.space.encoding_to_genotype(alpha_now)
    self.history["epoch"].append(unit + 1)
    for k, v in alpha_now.items():
      self.history[k].append(np.asarray(v, np.float32).tolist())
    write_alpha_history(self.wd, self.history, self.space)
    self.early_stopped = self.early_stop is not None and bool(self.early_stop(alpha_now))
    log.info("epoch %d: train loss %.4f acc %.4f, val loss %.4f", unit + 1,
             means["train_loss"], means["train_acc"], means["val_loss"])
    if self.early_stopped:
      log.info("DARTS+ early stop after epoch %d: the derived cell has %d skip connections",
               unit + 1, int(self.sc.get("early_stop_skips", 0)))
    line = {"epoch": unit + 1, **means,
            "genotype": self.space.genotype_dumps(genotype).replace("\n", "").replace(" ", "")}
    return UnitEnd(line, int(carry.step), stop=self.early_stopped)

  def save_meta(self) -> dict:
    return {"alpha_history": self.history, "early_stopped": self.early_stopped}

  def load_meta(self, meta: dict) -> None:
    self.history = meta["alpha_history"]
    self.early_stopped = bool(meta.get("early_stopped"))

  def started(self, wd: Path) -> None:
    write_alpha_history(wd, self.history, self.space)

  def finish(self, carry: Any, seconds: float) -> Found:
    alpha = jax.device_get(self.strategy.arch_params(carry))
    save_supernet(self.wd, carry.params, carry.batch_stats)
    genotype = self.space.genotype_to_json(self.space.encoding_to_genotype(alpha))
    return Found(genotype, {k: np.asarray(v) for k, v in alpha.items()},
                 {"search_seconds": round(seconds, 1),
                  "search_epochs": len(self.history["epoch"])})
