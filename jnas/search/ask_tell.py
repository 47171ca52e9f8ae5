"""``jnas search`` for the sample-based strategies: ask → estimate → tell, resumable.

``search.strategy`` names the strategy (:data:`ASK_TELL_STRATEGIES`: random
search, regularized evolution ``rea``, SPOS's ``topk`` evolution, ``nsga2``,
the RL controller ``reinforce``, progressive ``pnas`` and ``dpp_net``) and
``search.estimator`` what scores each candidate it asks for:

* ``table``: look the cell up in a benchmark CSV (``search.table``, e.g. the
  NB201 MNIST-1D table ``benchmarks/results/nb201_mnist1d/table.csv``), read
  the columns ``search.table_columns`` = ``ARCH,SIGNAL,COST[,REPORT]``
  (default ``arch_str,val_acc,train_seconds``): the strategy sees SIGNAL, each
  query is charged COST seconds (what training that cell really cost), and
  REPORT, if named, is what the summary reports for the cell found (NB201 space).
* ``scratch``: train each candidate from scratch for ``search.scratch_epochs``
  epochs on the config's data (its path through the space's supernet,
  :class:`jnas.estimation.scratch.PathScratchScorer`: one compilation for the
  whole search) and read its validation accuracy; the charge is the measured
  training time, and a candidate asked for again is not trained again (any
  registered space with a supernet and a network: DARTS, NAS-Bench-201, ...).

The search ends after ``search.evals`` evaluations or once ``search.budget_s``
seconds are charged (whichever comes first; the evaluation that crosses the
budget is the last one counted, as in :func:`jnas.strategies.driver.run_ask_tell`).
``nsga2`` and ``dpp_net`` trade the signal against a cost to minimise:
``search.objective`` names it (``params``, ``flops`` or ``latency`` of the
retraining network, measured on this machine, :mod:`jnas.estimation.objectives`;
or, with ``table``, one of the table's columns, which comes first when the
names agree); unset, it is the table's COST column, or (``scratch``) the
parameter count at the search's size.
``search.strategy_settings`` (``"population_size=20,sample_size=5"``) changes a
strategy's defaults (:data:`jnas.search.tabular.STRATEGIES`).
``search.prefilter`` (a zero-cost proxy: ``synflow``, ``naswot``, ``snip``,
``grad_norm``, ``params``, ``flops``; NAS-Bench-201 cells, one-objective
strategies) puts the table or scratch estimator behind the proxy
(:class:`jnas.estimation.candidates.ProxyFiltered`): only candidates scoring in
the proxy's top ``search.prefilter_keep`` fraction of ``search.prefilter_pool``
random cells are measured; the others cost nothing, are told the lowest signal
measured so far and are recorded with ``measured: 0``.

Writes ``metrics.jsonl`` (one line per ask/tell round, ``phase: search``) and
TensorBoard events, ``evaluations.json`` (every evaluated architecture in
order, with its values and the budget spent), ``genotype.json`` (the best by
the signal), ``summary.json`` and, with ``retrain.enabled``, the retraining's
``report.json``. After a round, once ``search.checkpoint_every_s`` seconds
passed since the last save (and after the first and the last round, and on
SIGINT/SIGTERM), ``checkpoints/search`` gets the strategy state, the archive,
the budget used and the metric lines; the strategy's RNG key is part of its
state. Rerunning the same command after a kill resumes there and ends with the
same genotype and archive as an uninterrupted run.

Example:
  >>> cfg = load_config("experiments/rea_table_mnist1d.py")  # doctest: +SKIP
  >>> jnas.run.search(cfg, "runs/rea")["genotype"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jnas.estimation.candidates import (Estimator, PredictorEstimator, ProxyFiltered,
                                        TableEstimator, WithObjective)
from jnas.search.common import build_space, space_kit_of
from jnas.search.estimators import (proxy_filtered, scratch_estimator, search_option,
                                   table_columns, table_estimator, with_objective)
from jnas.search.plan import Found, Plan, UnitEnd
from jnas.search.tabular import STRATEGIES, make_strategy, settings_from_text
from jnas.search.workdir import checkpoint_every_s
from jnas.utils.metrics import write_json_atomic
from jnas.spaces.base import SearchSpace
from jnas.strategies.base import AskTellStrategy
from jnas.strategies.driver import _candidates

__all__ = ["ASK_TELL_STRATEGIES", "ESTIMATORS", "EVALUATIONS_FILE", "AskTellPlan",
           "table_columns"]

log = logging.getLogger(__name__)

#: Strategies this family runs (``search.strategy``), and the estimators that score them.
ASK_TELL_STRATEGIES = ("random", "rea", "topk", "nsga2", "reinforce", "pnas", "dpp_net")
ESTIMATORS = ("table", "scratch", "supernet", "predictor")
#: Strategies the shared-weight estimator runs (one objective: nsga2 and dpp_net need a cost).
SUPERNET_STRATEGIES = ("random", "rea", "topk", "reinforce", "pnas")


def uses_supernet(config) -> bool:
  """Whether a config runs a sample-based strategy on a trained supernet (``search.estimator =
  "supernet"``): SPOS's training, then that strategy instead of SPOS's evolution
  (:class:`jnas.search.spos.SposPlan`).

  Example:
    >>> uses_supernet(load_config("experiments/rea_table_mnist1d.py"))  # doctest: +SKIP
    False
  """
  sc = config.search
  return sc.strategy in ASK_TELL_STRATEGIES and search_option(sc, "estimator") == "supernet"


def check_supernet_plan(config) -> None:
  """A strategy the supernet estimator runs; one-line ``ValueError`` otherwise."""
  if config.search.strategy not in SUPERNET_STRATEGIES:
    raise ValueError(f"search.estimator='supernet' scores one objective; search.strategy="
                     f"{config.search.strategy!r} needs a cost per candidate (use one of "
                     f"{', '.join(SUPERNET_STRATEGIES)}, or search.estimator='table')")
EVALUATIONS_FILE = "evaluations.json"


# ---- The plan: space, estimator, strategy. ----

def _build_strategy(name: str, space: SearchSpace, estimator: Estimator, settings: dict
                    ) -> tuple[AskTellStrategy, int]:
  """The strategy and how many objectives its ``tell`` takes (2 for nsga2)."""
  try:
    if name == "nsga2":
      from jnas.strategies.evolution import nsga2  # noqa: PLC0415
      return nsga2(space, 2, **{"population_size": 10, **settings}), 2
    if name == "dpp_net":
      from jnas.strategies.progressive import dpp_net  # noqa: PLC0415
      if not isinstance(estimator, (TableEstimator, WithObjective)):
        raise ValueError("search.strategy='dpp_net' needs the cost of every candidate before it "
                         "is measured: use search.estimator='table' or set search.objective "
                         "(params, flops, latency)")
      return dpp_net(space, estimator.cost_of_indices,
                     **{**STRATEGIES["pnas"][1], **settings}), 1
  except TypeError as e:
    raise ValueError(f"strategy {name!r} does not accept search.strategy_settings "
                     f"({', '.join(sorted(settings))}): {e}") from None
  strategy, jit, _ = make_strategy(name, space, settings)
  if jit:
    # Pure-JAX ask/tell (REINFORCE): one compilation for the whole search.
    strategy = AskTellStrategy(jax.jit(strategy.init), jax.jit(strategy.ask),
                               jax.jit(strategy.tell))
  return strategy, 1


def _check_plan(config) -> None:
  """The pair (strategy, estimator) and the budget fit; one-line ``ValueError`` otherwise."""
  sc = config.search
  if sc.strategy not in ASK_TELL_STRATEGIES:
    raise ValueError(f"search.strategy={sc.strategy!r} is not a sample-based strategy "
                     f"(known: {', '.join(ASK_TELL_STRATEGIES)})")
  est = search_option(sc, "estimator")
  if est not in ESTIMATORS:
    raise ValueError(f"search.estimator={est!r}: search.strategy={sc.strategy!r} needs one of "
                     f"{', '.join(ESTIMATORS)}")
  if est == "predictor":
    if sc.strategy in ("nsga2", "dpp_net"):
      raise ValueError(f"search.estimator='predictor' predicts one objective; search.strategy="
                       f"{sc.strategy!r} needs two")
    est = search_option(sc, "predictor_base")
    if est not in ("table", "scratch"):
      raise ValueError(f"search.predictor_base={est!r}: the predictor learns from 'table' or "
                       f"'scratch' measurements")
  if est == "table" and config.space.name != "nb201":
    raise ValueError(f"search.estimator='table' scores nb201 cells, not the "
                     f"{config.space.name} space")
  kit = space_kit_of(config)
  if est == "scratch" and (kit.supernet is None or kit.network is None):
    raise ValueError(f"search.estimator='scratch' trains single paths of a supernet; the "
                     f"{config.space.name} space registers no supernet or network")
  if search_option(sc, "prefilter") and (est == "supernet" or sc.strategy in ("nsga2", "dpp_net")
                                 or config.space.name != "nb201"):
    raise ValueError(f"search.prefilter={sc.prefilter!r} filters what a table or scratch "
                     f"estimator measures for a one-objective strategy on nb201 cells")
  if int(search_option(sc, "evals")) < 1 and not float(search_option(sc, "budget_s")) > 0:
    raise ValueError("a sample-based search needs search.evals >= 1 or search.budget_s > 0 "
                     "to end")


# ---- State and archive in a checkpoint. ----

def _is_key(x: Any) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _state_to_tree(state: Any) -> tuple[dict[str, np.ndarray], list]:
  """The state's leaves as ``{position: array}`` plus a JSON description of each leaf.

  Orbax cannot save zero-size arrays (progressive search starts with empty
  measurement arrays) and the state's structure changes as the search goes
  (PNAS's predictor is ``None`` until the first ``tell``), so the leaves are
  saved by position, and the description (kind, shape, dtype, tree path) says
  how to rebuild each one.
  """
  arrays, leaves = {}, []
  for i, (path, x) in enumerate(jax.tree_util.tree_flatten_with_path(state)[0]):
    kind = "key" if _is_key(x) else ("jax" if isinstance(x, jax.Array) else
                                     "scalar" if isinstance(x, np.generic) else "numpy")
    a = np.asarray(jax.device_get(jax.random.key_data(x) if kind == "key" else x))
    leaves.append([kind, list(a.shape), a.dtype.str, jax.tree_util.keystr(path)])
    if a.size:
      arrays[f"{i:05d}"] = a
  return arrays, leaves


def _state_from_tree(arrays: dict, leaves: list, template: Any) -> Any:
  """Inverse of :func:`_state_to_tree`; ``template`` gives the tree structure and key type."""
  tleaves, treedef = jax.tree.flatten(template)
  out = []
  for i, ((kind, shape, dt, _), t) in enumerate(zip(leaves, tleaves)):
    a = np.asarray(arrays.get(f"{i:05d}", np.zeros(shape, np.dtype(dt))), np.dtype(dt))
    a = a.reshape(shape)
    if kind == "key":
      out.append(jax.random.wrap_key_data(jnp.asarray(a), impl=jax.random.key_impl(t)))
    elif kind == "jax":
      out.append(jnp.asarray(a))
    else:
      out.append(a[()] if kind == "scalar" else a)
  return jax.tree.unflatten(treedef, out)


def _paths(state: Any) -> list[str]:
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


# ---- The search. ----

class AskTellPlan(Plan):
  """A sample-based search as the loop's plan: a unit is one ask → estimate → tell round.

  The carry is the strategy state; the archive (every evaluation, in order),
  the budget charged and the round count travel in the checkpoint's metadata,
  and the estimator's caches are rebuilt from the archive on resume. See the
  module docstring for the settings and the files.

  Example:
    >>> plan = AskTellPlan(load_config("experiments/rea_table_mnist1d.py"), Path("runs/rea"))  # doctest: +SKIP
  """

  def __init__(self, config, wd: Path) -> None:
    _check_plan(config)
    sc = self.sc = config.search
    self.config, self.wd = config, wd
    self.what = f"{sc.strategy} search"
    self.every_s = checkpoint_every_s(sc)
    space = self.space = build_space(config)
    self.est_name = search_option(sc, "estimator")
    # What measures a candidate: the estimator, or the one a predictor learns from.
    self.base = search_option(sc, "predictor_base") if self.est_name == "predictor" else self.est_name
    settings = settings_from_text(search_option(sc, "strategy_settings"))
    if self.base == "table":
      self.estimator: Estimator = with_objective(config, space, table_estimator(config, space))
      self.strategy, self.num_objectives = _build_strategy(sc.strategy, space, self.estimator,
                                                           settings)
    else:
      # The strategy first: a bad setting is refused before the data is loaded (DPP-Net's cost
      # does not need the trained estimator, only the objective).
      costed = with_objective(config, space, Estimator())
      self.strategy, self.num_objectives = _build_strategy(sc.strategy, space, costed, settings)
      self.estimator = scratch_estimator(config, space)
      if isinstance(costed, WithObjective):
        self.estimator = WithObjective(self.estimator, costed.objective2_name, costed.cost, space)
    if self.est_name == "predictor":
      self.estimator = PredictorEstimator(
          self.estimator, space, warmup=int(search_option(sc, "predictor_warmup")),
          kappa=float(search_option(sc, "predictor_kappa")), seed=int(config.seed))
    if search_option(sc, "prefilter"):
      self.estimator = proxy_filtered(config, space, self.estimator)
    self.max_evals = int(search_option(sc, "evals")) or None
    self.budget = float(search_option(sc, "budget_s")) or None
    self.key = jax.random.key(int(config.seed))
    self.sig = self.estimator.signal_name
    self.archive: list[dict] = []
    self.spent, self.rounds, self.exhausted = 0.0, 0, False
    self.best = -np.inf

  def _round(self, state: Any, archive: list[dict], spent: float, round_no: int,
             replay: list[dict] | None = None) -> tuple[Any, float, int]:
    """One ask → estimate → tell round; appends to ``archive``. ``replay``: the round's
    archived records instead of estimates (rebuilds a state's structure on resume)."""
    space, sig, est = self.space, self.sig, self.estimator
    state, asked = self.strategy.ask(state)
    n = int(np.shape(jax.tree.leaves(asked)[0])[0])
    if self.max_evals is not None:
      n = min(n, self.max_evals - len(archive))
    if replay is not None:
      n = len(replay)
    if n == 0:
      return state, spent, 0  # the strategy has nothing left to propose
    asked = jax.tree.map(lambda a: a[:n], asked)
    _, genotypes = _candidates(space, asked)
    if replay is None:
      e = est.estimate(genotypes)
      used = n
      for i in range(n):
        # Sequential accounting: the evaluation that uses up the budget is the last one.
        spent += float(e.cost[i])
        archive.append({"index": len(archive), "round": round_no,
                        "genotype": space.genotype_to_json(genotypes[i]),
                        sig: float(e.signal[i]), est.objective2_name: float(e.objective2[i]),
                        **{k: float(v[i]) for k, v in e.extra.items()},
                        "cost_s": float(e.cost[i]), "spent": spent})
        if self.budget is not None and spent >= self.budget:
          used = i + 1
          break
      recs = archive[-used:]
    else:
      recs, used = replay, n
    told = np.asarray([r[sig] for r in recs], np.float64)
    if self.num_objectives == 2:
      # nsga2 maximises every column: the cost is told negated.
      told = np.stack([told, -np.asarray([r[est.objective2_name] for r in recs])], 1)
    state = self.strategy.tell(state, jax.tree.map(lambda a: a[:used], asked), told)
    return state, spent, used

  def step(self, state: Any) -> tuple[Any, dict]:
    state, self.spent, self.used = self._round(state, self.archive, self.spent, self.rounds + 1)
    return state, {}

  def init(self) -> Any:
    return self.strategy.init(self.key)

  def done(self, unit: int) -> bool:
    return (self.exhausted or (self.max_evals is not None and len(self.archive) >= self.max_evals)
            or (self.budget is not None and self.spent >= self.budget))

  def label(self, unit: int) -> str:
    return f"{self.sc.strategy} round {self.rounds + 1}"

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    if self.used == 0:
      self.exhausted = True
      log.info("%s has nothing left to propose after %d evaluations", self.sc.strategy,
               len(self.archive))
      return UnitEnd(None, len(self.archive))
    self.rounds += 1
    new = [r[self.sig] for r in self.archive[-self.used:]]
    self.best = max(self.best, max(new))
    sig = self.sig
    return UnitEnd({"round": self.rounds, "evaluated": len(self.archive), "spent_s": self.spent,
                    f"best_{sig}": self.best, f"round_best_{sig}": max(new)}, len(self.archive))

  # Orbax cannot save zero-size arrays and the state's structure may change as the search goes,
  # so the state is saved as flat leaves with a description (see _state_to_tree).
  def target(self, carry: Any) -> Any:
    return None

  def to_tree(self, carry: Any) -> tuple[Any, dict]:
    arrays, leaves = _state_to_tree(carry)
    return arrays, {"leaves": leaves}

  def from_tree(self, tree: Any, meta: dict, fresh: Any) -> Any:
    saved_paths = [leaf[3] for leaf in meta["leaves"]]
    template = fresh
    if _paths(template) != saved_paths:
      # The structure grew after the first tell (PNAS's predictor): replay round 1
      # from the archive, without estimating, to get it.
      template, _, _ = self._round(self.strategy.init(self.key), [], 0.0, 1,
                                   replay=[r for r in self.archive if r["round"] == 1])
    if _paths(template) != saved_paths:
      raise ValueError(f"a checkpoint in {self.wd} holds a state of another structure than "
                       f"strategy {self.sc.strategy!r} makes")
    state = _state_from_tree(tree, meta["leaves"], template)
    self.estimator.restore(self.archive)
    log.info("%s: %d evaluations in %d rounds, %.1f s charged", self.sc.strategy,
             len(self.archive), self.rounds, self.spent)
    return state

  def save_meta(self) -> dict:
    return {"archive": self.archive, "spent": self.spent, "rounds": self.rounds,
            "exhausted": self.exhausted}

  def load_meta(self, meta: dict) -> None:
    self.archive = list(meta["archive"])
    self.spent, self.rounds = float(meta["spent"]), int(meta["rounds"])
    self.exhausted = bool(meta["exhausted"])
    self.best = max((r[self.sig] for r in self.archive), default=-np.inf)

  def finish(self, carry: Any, seconds: float) -> Found:
    archive, sig, sc = self.archive, self.sig, self.sc
    if not archive:
      raise ValueError(f"search.budget_s={self.budget:g} is smaller than the cost of the first "
                       f"evaluation: nothing was evaluated")
    # The best measured by the signal (a prefilter's rejects were told a floor, not measured);
    # the earliest wins ties (as SearchResult.best).
    measured = [r for r in archive if r.get("measured", 1.0) == 1.0] or archive
    best_rec = max(measured, key=lambda r: (r[sig], -r["index"]))
    write_json_atomic(str(self.wd / EVALUATIONS_FILE), {
        "strategy": sc.strategy, "estimator": self.est_name, "signal": sig,
        "num_evaluated": len(archive), "spent_s": self.spent, "best": best_rec,
        "history": archive})
    summary: dict[str, Any] = {
        "strategy": sc.strategy,
        "estimator": self.est_name,
        f"best_{sig}": best_rec[sig],
        "evaluated": len(archive),
        "rounds": self.rounds,
        "spent_s": round(self.spent, 3),
        "search_seconds": round(seconds, 1),
    }
    if isinstance(self.estimator, (ProxyFiltered, PredictorEstimator)):
      summary["measured"] = sum(r.get("measured") == 1.0 for r in archive)
    if isinstance(self.estimator, ProxyFiltered):
      # Not charged to the budget (a resumed search would charge differently): reported, so that
      # a comparison at equal time can charge it (benchmarks/nb201_compare.py does).
      summary["prefilter_setup_s"] = round(self.estimator.setup_seconds, 3)
      summary["prefilter_s_per_candidate"] = round(self.estimator.seconds_per_candidate(), 5)
    if self.base == "table":
      est = self.estimator
      bench = est.bench
      summary["arch"] = bench.arch[int(est.rows([self.space.genotype_from_json(
          best_rec["genotype"])])[0])]
      if est.report_name is not None:
        summary[est.report_name] = best_rec[est.report_name]
        summary[f"table_best_{est.report_name}"] = bench.best_report()
      summary[f"table_best_{sig}"] = float(bench.signal.max())
    return Found(best_rec["genotype"], None, summary)
