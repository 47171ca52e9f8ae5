"""``jnas search`` with ``search.strategy = "spos"``: single-path one-shot search, end to end.

The two-stage recipe of Guo et al. (2019) (following Bender et al., 2018), on
any space jnas has a supernet for (DARTS cells, NAS-Bench-201 cells, FBNet /
kernel chains):

1. **Supernet training.** Every step trains one path drawn uniformly from a
   pool of ``search.pool_size`` encodings (only that path runs, through the
   single-path supernet), on the first half of the training set.
2. **Evolution.** SPOS's top-k evolution (crossover and mutation of the best
   ``evolution.top_k``) over ``evolution.evals`` architectures, each scored by
   its validation accuracy on the *second* half of the training set with the
   shared weights, after recalibrating batch-norm statistics on
   ``evolution.calib_batches`` training batches. Every generation is scored
   by one compiled population evaluator (``lax.map`` over the encodings).
3. **Finalists** (``search.finalists`` = K > 0, off by default): the K best
   distinct candidates by shared-weight score are measured by
   ``search.finalist_estimator`` (``table``: ``search.table``'s validation
   column, NB201 cells; ``scratch``: trained from scratch for
   ``search.scratch_epochs``), and the best measured replaces evolution's
   best (Bender et al., 2018). Every finalist is in ``finalists.json``.
4. **Retraining** of the best architecture from scratch (``retrain.*``), as
   for every other strategy. The test set is used only there.

Writes, besides what every search writes (``config.json``, ``metrics.jsonl``,
TensorBoard events, ``genotype.json``, ``summary.json``, ``report.json``):
``evolution.json`` (every scored architecture) and ``arch_params.npz`` (the
found architecture's one-hot encoding: SPOS has no continuous alpha).
Supernet training is checkpointed after an epoch once
``search.checkpoint_every_s`` seconds passed since the last save (and after
the first and the last epoch), and on SIGINT/SIGTERM after the step in flight;
rerunning the command resumes it. Evolution is a
pure function of the trained weights and the seed, so a run killed during
evolution repeats it exactly.

Train once, search many: with ``search.supernet_from = RUN`` nothing is trained;
phases 2-4 run on the supernet a finished run ``RUN`` saved, with this config's
evolution and finalist settings (:func:`supernet_source`). Its summary charges
``RUN``'s supernet seconds beside this search's own.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jnas.data import epoch_batches, load_dataset, split_train_val
from jnas.search.common import (build_space, build_supernet, config_compiler_options,
                                data_ndim, saved_step)
from jnas.search.estimators import scratch_estimator, search_option, table_estimator
from jnas.search.plan import Found, Plan, UnitEnd
from jnas.search.workdir import (checkpoint_every_s, finished, load_supernet, save_supernet,
                                 steps_per_call)
from jnas.spaces.base import SearchSpace
from jnas.spaces.nb201_canonical import unique_cell_sampler
from jnas.strategies.darts import weight_optimizer
from jnas.strategies.driver import run_ask_tell
from jnas.strategies.evolution import topk_evolution
from jnas.strategies.spos import (encoding_pool, few_shot_apply, make_population_evaluator,
                                  pad_population, parse_few_shot, spos)
from jnas.supernet.functional import count_params, make_apply, make_prefix, split_model
from jnas.utils.metrics import MetricWriter, write_json_atomic

log = logging.getLogger(__name__)

EVOLUTION_FILE = "evolution.json"
FINALISTS_FILE = "finalists.json"


def evolution_config(population: int = 50, top_k: int = 10, evals: int = 200,
                     val_batches: int = 8) -> ml_collections.ConfigDict:
  """A config's ``evolution`` section: SPOS's settings (population 50, top 10, half crossovers).

  Example:
    >>> evolution_config(evals=1000).evals
    1000
  """
  e = ml_collections.ConfigDict()
  e.population = population
  e.top_k = top_k
  e.evals = evals
  e.crossover_fraction = 0.5
  e.calib_batches = 2  # BN recalibration batches per candidate (weights half)
  e.val_batches = val_batches  # scoring batches per candidate (validation half)
  # One inference pass over all val_batches * batch_size examples: the same scores
  # from fewer kernel launches (small networks); False bounds memory by one batch.
  e.merge_val_batches = True
  return e


def add_spos_defaults(config) -> None:
  """Gives a config that was written for another strategy what SPOS reads, where it lacks it.

  ``search.pool_size`` (4096 sampled paths) and the ``evolution`` section
  (:func:`evolution_config`); :func:`jnas.search.loop.search` applies it for ``spos``, so
  ``--config.search.strategy=spos`` works on any search config.
  """
  # A config from apply_overrides is locked against new keys; these are the ones SPOS adds.
  with config.unlocked():
    if "pool_size" not in config.search:
      config.search.pool_size = 4096
    if "evolution" not in config:
      config.evolution = evolution_config()


def _check_positive(section, names: tuple[str, ...], prefix: str) -> None:
  for name in names:
    if int(section[name]) < 1:
      raise ValueError(f"{prefix}.{name}={section[name]} must be >= 1")


def after_name(config) -> str:
  """The strategy that searches the trained supernet: SPOS's ``topk`` evolution, or the
  sample-based ``search.strategy`` of a config with ``search.estimator = "supernet"``."""
  return "topk" if config.search.strategy == "spos" else str(config.search.strategy)


def phase2_evals(config) -> int:
  """Architectures phase 2 scores: ``evolution.evals``, or ``search.evals`` when a
  sample-based strategy with the supernet estimator sets it."""
  own = int(config.search.get("evals", 0)) if config.search.strategy != "spos" else 0
  return own or int(config.evolution.evals)


def search_strategy(config, space: SearchSpace):
  """The ask/tell strategy of phase 2 (see :func:`after_name`), scored by the shared weights.

  ``topk`` takes SPOS's settings from ``evolution.*``; another strategy takes its
  table defaults (:data:`jnas.search.tabular.STRATEGIES`) updated by
  ``search.strategy_settings``.

  Example:
    >>> search_strategy(load_config("experiments/spos_mnist1d.py"), space)  # doctest: +SKIP
  """
  from jnas.search.tabular import make_strategy, settings_from_text  # noqa: PLC0415

  ev, name = config.evolution, after_name(config)
  if name == "topk":
    return topk_evolution(space, population_size=int(ev.population), top_k=int(ev.top_k),
                          crossover_fraction=float(ev.crossover_fraction))
  return make_strategy(name, space,
                       settings_from_text(config.search.get("strategy_settings", "")))[0]


def score_batches(config, xw, yw, xv, yv) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BN-calibration batches (weights half) and validation batches (the other half)."""
  ev, bs = config.evolution, config.search.batch_size
  calib_xb, _ = epoch_batches(xw, yw, bs, seed=config.seed + 7, epoch=0)
  if ev.calib_batches > len(calib_xb):
    raise ValueError(f"evolution.calib_batches={ev.calib_batches} exceeds the "
                     f"{len(calib_xb)} batches of the weights half")
  need = ev.val_batches * bs
  if need > len(xv):
    raise ValueError(f"evolution.val_batches={ev.val_batches} x search.batch_size={bs} needs "
                     f"{need} validation examples; the validation half has {len(xv)}")
  calib_x = jnp.asarray(calib_xb[:ev.calib_batches], jnp.float32)
  val_x = jnp.asarray(np.asarray(xv[:need], np.float32).reshape(
      (ev.val_batches, bs) + tuple(xv.shape[1:])))
  val_y = jnp.asarray(np.asarray(yv[:need]).reshape(ev.val_batches, bs))
  return calib_x, val_x, val_y


#: What a search of another run's supernet may set differently from that run: the after-search
#: (the strategy that searches the supernet, ``evolution.*``, finalists), the retraining and how
#: often the loop saves. Everything else built or trained the supernet, so it must match.
AFTER_SEARCH_KEYS = frozenset({
    "supernet_from", "strategy", "estimator", "evals", "budget_s", "strategy_settings",
    "objective", "prefilter", "prefilter_keep", "prefilter_pool", "finalists",
    "finalist_estimator", "table", "table_columns", "checkpoint_every_s", "steps_per_call"})


def supernet_source(config) -> Path | None:
  """The finished SPOS run whose supernet ``search.supernet_from`` names, checked; or ``None``.

  The run must hold ``supernet.npz`` and ``config.json``, and its config must equal
  ``config`` but for the after-search: the ``evolution`` and ``retrain`` sections and
  :data:`AFTER_SEARCH_KEYS` (optional keys count at their defaults). Raises a one-line
  ``ValueError`` naming the first key that differs, or the missing file.

  The search that reads it may be SPOS's evolution or another strategy over the supernet
  (``search.estimator=supernet``), whichever trained it.

  Example:
    >>> supernet_source(load_config("experiments/spos_mnist1d.py")) is None  # doctest: +SKIP
    True
  """
  from jnas.config import SEARCH_OPTIONAL_DEFAULTS, config_to_dict  # noqa: PLC0415

  source = str(search_option(config.search, "supernet_from") or "")
  if not source:
    return None
  src = Path(source)
  for name in ("config.json", "supernet.npz", "summary.json"):
    if not (src / name).is_file():
      raise ValueError(f"search.supernet_from={source!r}: {src / name} does not exist (the "
                       f"run must be a finished SPOS search)")
  try:
    theirs = json.loads((src / "config.json").read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"search.supernet_from={source!r}: {src / 'config.json'} is not JSON "
                     f"({e})") from None

  sc = theirs.get("search", {}) if isinstance(theirs, dict) else {}
  if sc.get("strategy") != "spos" and sc.get("estimator") != "supernet":
    raise ValueError(f"search.supernet_from={source!r}: that run is a {sc.get('strategy')!r} "
                     f"search; only a single-path supernet (search.strategy=spos, or "
                     f"search.estimator=supernet) is searched again")

  def trained(d: dict) -> dict[str, Any]:
    d = {k: v for k, v in d.items() if k not in ("evolution", "retrain")}
    d["search"] = {k: v for k, v in {**SEARCH_OPTIONAL_DEFAULTS, **d.get("search", {})}.items()
                   if k not in AFTER_SEARCH_KEYS}
    return {f"{sec}.{k}" if isinstance(part, dict) else sec: v
            for sec, part in d.items()
            for k, v in (part.items() if isinstance(part, dict) else [(None, part)])}

  ours, theirs = trained(config_to_dict(config)), trained(theirs)
  for key in sorted(set(ours) | set(theirs)):
    if ours.get(key, "<unset>") != theirs.get(key, "<unset>"):
      raise ValueError(f"search.supernet_from={source!r}: that run's supernet was trained with "
                       f"{key}={theirs.get(key, '<unset>')!r}, this config has "
                       f"{ours.get(key, '<unset>')!r} (only the search of the supernet, evolution.*"
                       f" and retrain.* may differ)")
  return src


class SposPlan(Plan):
  """SPOS as the loop's plan: single-path supernet training, then evolution in :meth:`finish`.

  A unit is an epoch of single-path steps on the weights half. Evolution
  (or the strategy ``search.strategy`` names, with ``search.estimator =
  "supernet"``) runs after the last epoch, scored by the shared weights; it
  is a pure function of the trained weights and the seed, so it is not
  checkpointed: a run killed during it repeats it exactly.

  Example:
    >>> plan = SposPlan(load_config("experiments/spos_mnist1d.py"), Path("runs/x"))  # doctest: +SKIP
  """

  what = "SPOS training"
  metric_keys = ("train_loss", "train_acc")

  def __init__(self, config, wd: Path) -> None:
    sc, ev = config.search, config.evolution
    self.sc = sc
    _check_positive(sc, ("epochs", "batch_size", "pool_size"), "search")
    _check_positive(ev, ("population", "top_k", "evals", "calib_batches", "val_batches"),
                    "evolution")
    self.config, self.wd = config, wd
    self.every_s = checkpoint_every_s(sc)
    self.source = supernet_source(config)

    # ---- Data: the training set split in halves (weights / scoring). ----
    ds = load_dataset(config.data.name, seed=config.data.seed)
    (xw, yw), (xv, yv) = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
    self.weights_half = xw, yw
    self.steps_per_epoch = len(xw) // sc.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"search.batch_size={sc.batch_size} is larger than half the training "
                       f"set ({len(xw)} examples)")
    self.score_data = score_batches(config, xw, yw, xv, yv)

    # ---- Supernet and the SPOS step. ----
    space = self.space = build_space(config)
    supernet = build_supernet(config, space, ds)
    split = split_model(supernet)
    single = make_apply(split.graphdef, single_path=True)
    # Scoring runs forward only: unrolled edge loops are faster there (the DARTS supernet).
    self.score_apply = (make_apply(split.graphdef, single_path=True, unroll=True)
                        if getattr(supernet, "accepts_unroll", False) else single)
    total_steps = sc.epochs * self.steps_per_epoch
    w_opt = weight_optimizer(sc.w_lr, sc.w_lr_min, sc.momentum, sc.weight_decay, sc.grad_clip,
                             total_steps)
    unique = search_option(sc, "pool_sampling") == "unique"
    pool = encoding_pool(space, int(sc.pool_size), seed=config.seed,
                         sampler=unique_cell_sampler(space) if unique else None)
    few_shot = parse_few_shot(search_option(sc, "few_shot"), pool, int(round(
        float(search_option(sc, "few_shot_warmup")) * total_steps)))
    self.strategy = spos(single, split.params, split.state, pool, w_opt=w_opt,
                         few_shot=few_shot)
    # The part no architecture changes (the stem and every candidate on the edges it feeds) is
    # computed once per scored population; a few-shot split's sub-supernets differ there.
    self.score_prefix = (make_prefix(split.graphdef) if few_shot is None and getattr(
        supernet, "accepts_unroll", False) and hasattr(supernet, "shared_prefix") else None)
    if few_shot is not None:
      # Each candidate is trained and scored in the sub-supernet of its op on the split edge.
      self.score_apply = few_shot_apply(self.score_apply, few_shot)
    self.xla_options = config_compiler_options(config, data_ndim(ds))
    self.step = saved_step(self.strategy.step, config, wd, "search_step",
                           compiler_options=self.xla_options)
    self.use_scan(steps_per_call(sc), self.strategy.step, compiler_options=self.xla_options,
                  config=config, wd=wd)
    log.info("spos: %d supernet weights, %d steps (%d epochs), pool of %d paths",
             count_params(split.params), total_steps, sc.epochs, sc.pool_size)

  def init(self) -> Any:
    return self.strategy.init(jax.random.key(self.config.seed))

  def done(self, unit: int) -> bool:
    return unit >= self.total_units()

  def total_units(self) -> int:
    return 0 if self.source is not None else int(self.sc.epochs)

  def steps(self, unit: int) -> int:
    return self.steps_per_epoch

  def label(self, unit: int) -> str:
    return f"spos epoch {unit + 1}/{self.sc.epochs}"

  def batches(self, unit: int) -> Callable[[int], tuple]:
    xb, yb = epoch_batches(*self.weights_half, self.sc.batch_size, seed=self.config.seed,
                           epoch=unit)
    return lambda i: ((xb[i], yb[i]),)

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    log.info("spos epoch %d: train loss %.4f acc %.4f", unit + 1, means["train_loss"],
             means["train_acc"])
    return UnitEnd({"epoch": unit + 1, **means}, int(carry.step))

  def finish(self, carry: Any, seconds: float) -> Found:
    ev, space = self.config.evolution, self.space
    source: dict[str, Any] = {}
    if self.source is not None:
      params, stats = load_supernet(self.source, carry.params, carry.batch_stats)
      carry = carry._replace(params=params, batch_stats=stats)
      # The supernet's training is charged as its own run measured it.
      seconds = float((finished(self.source, "summary.json") or {}).get("supernet_seconds", 0.0))
      source = {"supernet_from": str(self.source)}
    save_supernet(self.wd, carry.params, carry.batch_stats)
    t1, c1 = time.time(), time.process_time()
    result = self._evolve(carry)
    evolution_s, evolution_cpu = time.time() - t1, time.process_time() - c1
    result.save(str(self.wd / EVOLUTION_FILE), space)
    best = result.best()
    shared = np.asarray([e.objectives["val_accuracy"] for e in result.history])
    first_gen = shared[:min(int(ev.population), len(shared))]
    with MetricWriter(str(self.wd)) as writer:
      writer.write(len(result.history), phase="evolution", evaluated=len(result.history),
                   best_val_accuracy=float(shared.max()),
                   first_generation_mean_val_accuracy=float(first_gen.mean()),
                   mean_val_accuracy=float(shared.mean()), elapsed_s=round(evolution_s, 1),
                   cpu_s=round(evolution_cpu, 1))
    log.info("evolution: %d architectures in %.0f s; best shared-weight val acc %.4f "
             "(first generation mean %.4f)", len(result.history), evolution_s,
             best.objectives["val_accuracy"], first_gen.mean())
    extra: dict[str, Any] = dict(source)
    if int(search_option(self.sc, "finalists")):
      best, more = self._finalists(result)
      extra.update(more)
    enc = space.genotype_to_encoding(best.genotype)
    return Found(space.genotype_to_json(best.genotype),
                 {k: np.asarray(v) for k, v in enc.items()}, {
                     **extra,
                     "shared_val_accuracy": best.objectives["val_accuracy"],
                     "first_generation_mean_val_accuracy": float(first_gen.mean()),
                     "evaluated": len(result.history),
                     "supernet_seconds": round(seconds, 1),
                     "evolution_seconds": round(evolution_s, 1),
                     "evolution_cpu_seconds": round(evolution_cpu, 1),
                     "search_seconds": round(seconds + evolution_s, 1)})

  def _finalists(self, result) -> tuple[Any, dict[str, Any]]:
    """Phase 3 (``search.finalists`` = K): the K best distinct candidates by shared-weight score
    are measured by ``search.finalist_estimator`` (the table, or training from scratch), and the
    best measured is the result. Bender et al. (ICML 2018) rank with the one-shot model and
    train its best from scratch before choosing; the shared weights then only have to put good
    cells near the top, not order them exactly. Writes ``finalists.json``."""
    space, sc = self.space, self.sc
    seen, picked = set(), []
    for e in sorted(result.history, key=lambda e: (-e.objectives["val_accuracy"], e.index)):
      key = json.dumps(space.genotype_to_json(e.genotype), sort_keys=True)
      if key not in seen:
        seen.add(key)
        picked.append(e)
      if len(picked) == int(search_option(sc, "finalists")):
        break
    kind = str(search_option(sc, "finalist_estimator"))
    est = (table_estimator if kind == "table" else scratch_estimator)(self.config, space)
    t = time.time()
    m = est.estimate([e.genotype for e in picked])
    i = int(np.argmax(m.signal))  # the first of equal signals: the better shared score
    records = [{"genotype": space.genotype_to_json(e.genotype),
                "shared_val_accuracy": e.objectives["val_accuracy"], est.signal_name: float(v),
                "cost_s": float(c), **{k: float(x[j]) for k, x in m.extra.items()}}
               for j, (e, v, c) in enumerate(zip(picked, m.signal, m.cost))]
    write_json_atomic(str(self.wd / FINALISTS_FILE), {
        "estimator": kind, "signal": est.signal_name, "chosen": i, "finalists": records})
    log.info("finalists: %d measured by the %s estimator (%.0f s charged); the best has %s %.4f "
             "(shared-weight rank %d)", len(picked), kind, float(np.sum(m.cost)),
             est.signal_name, float(m.signal[i]), i + 1)
    return picked[i], {"finalists": len(picked), "finalist_estimator": kind,
                       f"finalist_{est.signal_name}": float(m.signal[i]), "finalist_rank": i + 1,
                       "finalists_charged_s": round(float(np.sum(m.cost)), 3),
                       "finalists_seconds": round(time.time() - t, 1)}

  def _evolve(self, carry: Any):
    """Phase 2: the after-strategy over the trained supernet, every generation scored by one
    compiled population evaluator (``lax.map`` over the encodings)."""
    config, ev = self.config, self.config.evolution
    merged = bool(ev.get("merge_val_batches", True))
    evaluate = jax.jit(make_population_evaluator(
        self.score_apply, merge_val_batches=merged,
        prefix_fn=self.score_prefix if merged else None), compiler_options=self.xla_options)
    params, stats = carry.params, carry.batch_stats
    calib_x, val_x, val_y = self.score_data
    population = int(ev.population)

    def scorer(encodings, genotypes):
      del genotypes
      n = next(iter(encodings.values())).shape[0]
      acc, loss = [], []
      # One compiled population size: a larger batch is scored in chunks of it.
      for lo in range(0, n, population):
        chunk = {k: np.asarray(v)[lo:lo + population] for k, v in encodings.items()}
        out = evaluate(params, stats, pad_population(chunk, population), calib_x, val_x, val_y)
        m = next(iter(chunk.values())).shape[0]
        acc.append(np.asarray(out["accuracy"])[:m])
        loss.append(np.asarray(out["loss"])[:m])
      return {"val_accuracy": np.concatenate(acc), "val_loss": np.concatenate(loss)}

    return run_ask_tell(
        search_strategy(config, self.space), self.space, scorer,
        key=jax.random.key(config.seed + 1), num_evals=phase2_evals(config),
        objectives=("val_accuracy",), desc=after_name(config))
