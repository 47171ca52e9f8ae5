"""The one loop of every run: ``jnas search`` and ``jnas train`` from claim to results.

:func:`search` claims and locks the work directory, picks the family's plan
(:data:`PLANS`), runs it with :func:`run_phase`, writes the results
(``genotype.json``, ``arch_params.npz``, ``summary.json``) and retrains the
architecture found with :func:`train`, which runs the retraining's plan
through the same :func:`run_phase`. A family is a :class:`jnas.search.plan.Plan`:
its state, batches, step, metric line and result; nothing here knows a
family or a space.

One batch, loader to metric, in this file: ``plan.batches(unit)`` gives
``batch_at(i)`` (the family's data order: a pure function of the seed and the
epoch), :func:`run_unit` feeds it to the jitted ``plan.step`` and sums the
step's metrics on the device, one mean per unit goes through
``plan.end_unit`` into the unit's metrics line, and :class:`MetricWriter`
writes that line to ``metrics.jsonl`` and TensorBoard, with the run's seconds so far
by the wall clock (``elapsed_s``) and in process CPU time (``cpu_s``), both carried
over resumes.

Checkpoints (:func:`run_phase`): after a unit once ``plan.every_s`` seconds
passed since the last save (the first unit a process runs, the last one, an
early stop and a stop request always save), and, on SIGINT/SIGTERM, after the
step in flight with the position in the unit. A checkpoint holds the carry,
the position (unit, batch, metric sums so far), the metric lines up to it and
the plan's own resume data, so rerunning the command resumes there and ends
bit-identical to an uninterrupted run.

Example:
  >>> from jnas.search.loop import search
  >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jnas.checkpoint import Checkpoints
from jnas.config import config_to_dict
from jnas.ops.primitives import set_depthwise_impl
from jnas.search.ask_tell import (ASK_TELL_STRATEGIES, AskTellPlan, check_supernet_plan,
                                  uses_supernet)
from jnas.search.chain import ChainPlan
from jnas.search.common import enable_compilation_cache, is_chain, resolve_architecture
from jnas.search.gradient import GradientPlan
from jnas.search.plan import Found, Plan
from jnas.search.retrain import RetrainPlan
from jnas.search.spos import SposPlan, add_spos_defaults
from jnas.search.workdir import (SUMMARY_FILE, CheckpointClock, StopOnSignal, checkpoint_every_s,
                                 claim_workdir, dict_hash, finished, lock_workdir, sums_from_json,
                                 sums_to_json)
from jnas.strategies.registry import GRADIENT_STRATEGIES
from jnas.utils.metrics import MetricWriter, replace_phase, write_json_atomic
from jnas.utils.progress import Progress, progress

log = logging.getLogger(__name__)

#: The search families by name, each a plan class built from ``(config, wd)``.
PLANS: dict[str, Callable[[Any, Path], Plan]] = {
    "gradient": GradientPlan, "spos": SposPlan, "ask_tell": AskTellPlan, "chain": ChainPlan}


def family(config) -> str:
  """The key of :data:`PLANS` that runs ``config``; one-line ``ValueError`` for an unknown
  strategy.

  Example:
    >>> family(load_config("experiments/spos_mnist1d.py"))  # doctest: +SKIP
    'spos'
  """
  sc = config.search
  if sc.strategy == "spos" or uses_supernet(config):
    return "spos"  # SPOS's training, then SPOS's evolution or the named strategy
  if sc.strategy in ASK_TELL_STRATEGIES:
    return "ask_tell"
  if is_chain(config):
    return "chain"
  if sc.strategy not in GRADIENT_STRATEGIES:
    known = GRADIENT_STRATEGIES + ("spos",) + ASK_TELL_STRATEGIES
    raise ValueError(f"unknown search strategy {sc.strategy!r} "
                     f"(known: {', '.join(known)}; 'fbnet' on chain spaces)")
  return "gradient"


# ---- The step loop. ----

def run_unit(plan: Plan, carry: Any, unit: int, *, first: int, sums: dict | None,
             stop: StopOnSignal, save_partial: Callable[[Any, int, dict], None]
             ) -> tuple[Any, dict[str, float]]:
  """Runs steps ``first ..`` of unit ``unit``; returns the carry and the unit's mean metrics.

  ``sums`` are the metric sums of the steps before ``first`` (a resumed unit).
  Metrics are summed on the device and fetched once, at the end. On a stop
  request before the last step (when ``plan.stop_within_unit``),
  ``save_partial(carry, next_step, sums)`` checkpoints the position and
  ``KeyboardInterrupt`` is raised. A NaN/inf ``train_loss`` raises ``FloatingPointError``.
  """
  n, batch_at, desc = plan.steps(unit), plan.batches(unit), plan.label(unit)
  keys = plan.metric_keys
  # A one-step unit (a round, a scanned epoch) shows no bar of its own, nor does a unit of a
  # plan with one bar over its units.
  bar = (progress(total=n, desc=desc, unit="step") if n > 1 and plan.bar_unit() is None else
         Progress(None, total=n, desc=desc, unit="step", mode="off"))
  k = (plan.steps_per_call or n) if plan.multi_step is not None else 1
  with bar:
    bar.update(first)
    i = first
    while i < n:
      if k > 1:
        # Calls aligned to the unit's start, so a resumed unit runs the same calls.
        j = min(n, (i // k + 1) * k)
        carry, metrics = plan.multi_step(carry, *batch_at(slice(i, j)))
      else:
        j = i + 1
        carry, metrics = plan.step(carry, *batch_at(i))
      if keys is not None:
        metrics = {key: metrics[key] for key in keys}
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
      bar.update(j - i)
      i = j
      if stop.requested and plan.stop_within_unit and i < n:
        save_partial(carry, i, sums)
        log.warning("%s stopped by %s in %s, step %d; rerun the same command to resume",
                    plan.what, stop.requested, desc, i)
        raise KeyboardInterrupt
    # One host transfer per unit, not per step.
    means = {k: float(v) / n for k, v in jax.device_get(sums or {}).items()}
    if "train_loss" in means:
      if not np.isfinite(means["train_loss"]):
        raise FloatingPointError(f"{plan.what} diverged in {desc}: train loss is NaN/inf")
      bar.set_postfix(loss=means["train_loss"], acc=means.get("train_acc", float("nan")))
  return carry, means


def run_phase(plan: Plan, wd: Path, run_id: str) -> tuple[Any, float]:
  """Runs ``plan`` to its end in ``wd``, resuming its newest readable checkpoint.

  ``run_id`` (the config's hash, or the retraining's id) is stored with each
  checkpoint; a checkpoint of another run is refused (``ValueError``, one line).
  Returns the final carry and the phase's wall-clock seconds (across resumes).

  Example:
    >>> carry, seconds = run_phase(GradientPlan(cfg, wd), wd, config_hash(cfg))  # doctest: +SKIP
  """
  clock = CheckpointClock(plan.every_s)
  ckpt = Checkpoints(wd / plan.ckpt_dir, max_to_keep=2)
  carry = plan.init()
  unit, batch, ticks, sums, elapsed0, cpu0 = 0, 0, 0, None, 0.0, 0.0
  records: list[dict] = []
  restored = ckpt.latest_good(plan.target(carry))
  if restored is not None:
    ck_step, tree, meta = restored
    if meta.get(plan.id_key) != run_id:
      raise ValueError(plan.foreign(ckpt.directory / str(ck_step), meta.get(plan.id_key),
                                    run_id))
    plan.load_meta(meta)
    carry = plan.from_tree(tree, meta, carry)
    unit, batch, ticks = int(meta["unit"]), int(meta["batch"]), int(meta["ticks"])
    sums, elapsed0 = sums_from_json(meta.get("partial_sums")), float(meta["elapsed_s"])
    cpu0 = float(meta.get("cpu_s", 0.0))
    records = list(meta["metrics"])
    log.info("resuming the %s from checkpoint step %d (%s, from its step %d)", plan.what,
             ck_step, plan.label(unit), batch)
  # The files get the checkpoint's lines before the writer (and its TensorBoard view) opens.
  replace_phase(str(wd), plan.phase, records)
  plan.started(wd)
  t0, c0 = time.time(), time.process_time()

  def elapsed() -> float:
    return elapsed0 + time.time() - t0

  # The process's CPU time beside the wall clock: on a shared machine a pinned run's CPU seconds
  # are what it cost, the measure the NB201 tables charge their queries in.
  def cpu() -> float:
    return round(cpu0 + time.process_time() - c0, 3)

  def save(carry: Any, unit: int, batch: int, partial: dict | None, ticks: int) -> None:
    tree, extra = plan.to_tree(carry)
    meta = {"phase": plan.phase, plan.id_key: run_id, "unit": unit, "batch": batch,
            "ticks": ticks, "partial_sums": sums_to_json(partial), "elapsed_s": elapsed(),
            "cpu_s": cpu(), "metrics": records, **extra, **plan.save_meta()}
    ckpt.save(plan.checkpoint_step(ticks, unit), tree, meta)
    clock.saved()

  units_bar = (progress(total=plan.total_units(), desc=plan.phase, unit=plan.bar_unit())
               if plan.bar_unit() is not None else
               Progress(None, total=None, desc=plan.phase, unit="unit", mode="off"))
  with ckpt, MetricWriter(str(wd), tensorboard=plan.phase) as writer, StopOnSignal() as stop, \
      units_bar:
    units_bar.update(unit)
    while not plan.done(unit):
      first, batch = batch, 0
      carry, means = run_unit(
          plan, carry, unit, first=first, sums=sums if first else None, stop=stop,
          save_partial=lambda c, b, partial: save(c, unit, b, partial, ticks + b - first))
      ticks += plan.steps(unit) - first
      end = plan.end_unit(carry, unit, means)
      if end.line is not None:
        records.append(writer.write(end.step, phase=plan.phase, **end.line,
                                    elapsed_s=elapsed(), cpu_s=cpu()))
      unit += 1
      units_bar.update(1)
      shown = {k: v for k, v in means.items() if k in ("train_loss", "train_acc")}
      if shown:
        units_bar.set_postfix(**shown)
      if clock.due(force=plan.done(unit) or end.stop or bool(stop.requested)):
        save(carry, unit, 0, None, ticks)
      if end.stop:
        break
      if stop.requested and not plan.done(unit):
        log.warning("%s stopped by %s after %s; rerun the same command to resume", plan.what,
                    stop.requested, plan.label(unit - 1))
        raise KeyboardInterrupt
  return carry, elapsed()


# ---- jnas search. ----

def search(config, workdir: str) -> dict[str, Any]:
  """Runs an architecture search, writes its results to ``workdir``, optionally retrains.

  Writes ``config.json``, ``metrics.jsonl`` (one line per epoch or round) and
  TensorBoard events under ``tb/search``, checkpoints under
  ``checkpoints/search`` (see the module docstring; the newest two are kept),
  the family's own files (``alpha_history.npz`` and ``supernet.npz`` for the
  gradient strategies, ``evolution.json`` for SPOS, ``evaluations.json`` for
  the sample-based strategies, ``latency_table.json`` for FBNet), and at the
  end ``genotype.json``, ``arch_params.npz``, ``summary.json`` and, when
  ``config.retrain.enabled``, ``report.json``.

  Calling it again on the same work directory with the same config resumes
  from the newest readable checkpoint and ends with the same result as an
  uninterrupted run; on a finished run it changes nothing and returns the
  stored summary with ``status: finished``. Another config in the same
  directory is refused (ValueError), and so is a second process while this
  one runs in it (:func:`jnas.search.workdir.lock_workdir`).

  Example:
    >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  if config.search.strategy == "darts2":
    # Second-order DARTS by name: config.json records what runs (darts, order 2).
    config = copy.deepcopy(config)
    config.search.strategy, config.search.order = "darts", 2
  if config.search.strategy == "spos" or uses_supernet(config):
    if uses_supernet(config):
      check_supernet_plan(config)
    # A config written for another strategy gets SPOS's pool and evolution settings, before
    # the config is hashed and saved, so config.json says what ran.
    config = copy.deepcopy(config)
    add_spos_defaults(config)
  wd = Path(workdir)
  with lock_workdir(wd):
    return _search_locked(config, wd)


def _search_locked(config, wd: Path) -> dict[str, Any]:
  checkpoint_every_s(config.search)  # refused before config.json records a bad value
  plan_class = PLANS[family(config)]
  config_dict = config_to_dict(config)
  chash = claim_workdir(wd, config_dict)
  done = finished(wd, SUMMARY_FILE)
  if done is not None:
    log.info("the run in %s is finished; nothing to do (use a new --workdir to search again)",
             wd)
    return {**done, "status": "finished"}
  write_json_atomic(str(wd / "config.json"), config_dict)
  plan = plan_class(config, wd)
  carry, seconds = run_phase(plan, wd, chash)
  return _write_results(config, wd, plan.finish(carry, seconds))


def _write_results(config, wd: Path, found: Found) -> dict[str, Any]:
  """``arch_params.npz``, ``genotype.json``, the retraining and ``summary.json``."""
  if found.arch_params is not None:
    tmp = wd / ".arch_params.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in found.arch_params.items()})
    os.replace(tmp, wd / "arch_params.npz")
  write_json_atomic(str(wd / "genotype.json"), found.genotype)
  summary: dict[str, Any] = {"genotype": found.genotype, **found.summary}
  if config.retrain.enabled:
    summary.update(train(config, str(wd), str(wd / "genotype.json")))
  summary["workdir"] = str(wd)
  write_json_atomic(str(wd / SUMMARY_FILE), summary)
  return summary


# ---- jnas train. ----

def train(config, workdir: str, genotype: str | None = None) -> dict[str, Any]:
  """Trains the discrete network of ``genotype`` from scratch; reports test accuracy.

  The genotype is a published name (``DARTS_V2``), a JSON file, or, if
  ``None``, ``WORKDIR/genotype.json``. Writes ``WORKDIR/report.json``, metrics
  (``phase: retrain``, TensorBoard under ``tb/retrain``) and a checkpoint after
  every epoch under ``checkpoints/retrain``, so calling it again with the same
  config and genotype resumes; when ``report.json`` of that same retraining
  exists, nothing is done and the report is returned. A second process on the
  same work directory is refused while this one runs
  (:func:`jnas.search.workdir.lock_workdir`; re-entrant, so a search may call it).

  Example:
    >>> train(load_config("experiments/darts_mnist1d.py"), "runs/x", "DARTS_V2")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  with lock_workdir(workdir):
    return _train_locked(config, Path(workdir), genotype)


def _train_locked(config, wd: Path, genotype: str | None) -> dict[str, Any]:
  space, geno = resolve_architecture(config, genotype, str(wd))
  geno_json = space.genotype_to_json(geno)
  retrain_id = dict_hash({"config": config_to_dict(config), "genotype": geno_json})
  done = finished(wd, "report.json")
  if done is not None and done.get("retrain_id") == retrain_id:
    log.info("the retraining in %s is finished; nothing to do", wd)
    return {"test_accuracy": done["test_accuracy"], "num_params": done["num_params"],
            "report": str(wd / "report.json")}
  plan = RetrainPlan(config, space, geno)
  carry, seconds = run_phase(plan, wd, retrain_id)
  report = {"genotype": geno_json, **plan.finish(carry, seconds), "retrain_id": retrain_id}
  write_json_atomic(str(wd / "report.json"), report)
  return {"test_accuracy": report["test_accuracy"], "num_params": report["num_params"],
          "report": str(wd / "report.json")}
