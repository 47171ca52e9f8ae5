"""Multi-objective replays on a benchmark table: a found front against the table's true front.

A table loaded with an ``objective_column`` (:func:`jnas.estimation.tabular.load_table`)
has a second column to minimise, a latency or a cost. A search sees the search
signal and that objective; it runs under the same budget protocol as the
single-objective replays (each query advances a simulated clock by its cost,
the query that would pass the budget ends the run). Known for every cell
without training (a latency table, a parameter count), the objective is free:
strategies with a hard limit skip cells over it before asking for them.

A run is judged on the **report** column: the front of every architecture it
evaluated (report maximised, objective minimised, cells within the limit) is
measured by its hypervolume, divided by that of the table's true front. Both
are taken from the reference point (the table's median report, the table's
median objective), so only the corner better than a typical cell in both
counts: from the worst values, a few hundred random cells already cover
nearly all of the area and nothing could be told apart.

Strategies (:data:`FRONT_STRATEGIES`):

* ``nsga2``: NSGA-II on (signal, -objective), limit as a hard constraint;
* ``dpp_net``: DPP-Net's progressive Pareto search, the objective as its
  device cost, the limit as a validity rule;
* ``random``, ``rea``: single-objective on the signal, limit as a hard
  constraint (REA is Real et al.'s aging evolution);
* ``reinforce``: MnasNet's soft reward ``signal * (objective / target) ** w``,
  ``w = -0.07``, target = the limit (the table's median objective without
  one); it may query cells over the limit, which are then charged but do not
  count in its front.

Example:
  >>> bench = load_table("table.csv", arch_column="arch_str", signal_column="val_acc",
  ...                    report_column="test_acc", cost_column="train_seconds",
  ...                    objective_column="params")  # doctest: +SKIP
  >>> r = replay_front_many("nsga2", bench, budget=40, runs=100)  # doctest: +SKIP
  >>> r["hv_ratio_mean"], r["hv_ratio_std"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jnas.estimation.pareto import hypervolume_2d, non_dominated_mask
from jnas.estimation.tabular import TabularBenchmark
from jnas.search.tabular import STRATEGIES, compiled_strategy, replay_rows, run_header

__all__ = ["FRONT_STRATEGIES", "front_strategy_names", "reference_point", "true_front",
           "replay_front", "replay_front_many"]

_DIRS = ("max", "min")  # (report, objective)

# MnasNet's soft-constraint exponent (Tan et al., CVPR 2019, section 3).
MNASNET_W = -0.07


def _check(bench: TabularBenchmark, max_objective: float | None) -> np.ndarray:
  """Rows within the limit; one-line ``ValueError`` for a table or limit that cannot serve."""
  if bench.objective is None:
    raise ValueError("the table was loaded without an objective column (objective_column=)")
  if max_objective is None:
    return np.ones(len(bench), bool)
  ok = bench.objective <= max_objective
  if not ok.any():
    raise ValueError(f"no cell meets --max-objective {max_objective:g}: the smallest "
                     f"{bench.columns['objective']!r} in the table is "
                     f"{float(bench.objective.min()):g}")
  return ok


def reference_point(bench: TabularBenchmark) -> tuple[float, float]:
  """(median report, median objective) over the table's rows: the hypervolume's corner.

  Example:
    >>> reference_point(bench)  # doctest: +SKIP
    (0.7215, 31098.0)
  """
  _check(bench, None)
  return float(np.median(bench.report)), float(np.median(bench.objective))


def _front_rows(bench: TabularBenchmark, rows: np.ndarray) -> np.ndarray:
  rows = np.unique(rows)
  pts = np.stack([bench.report[rows], bench.objective[rows]], 1)
  keep = rows[non_dominated_mask(pts, [("r", "max"), ("o", "min")])]
  return keep[np.argsort(bench.objective[keep], kind="stable")]


def _hv(bench: TabularBenchmark, rows: np.ndarray, ref: tuple[float, float]) -> float:
  if not len(rows):
    return 0.0
  pts = np.stack([bench.report[rows], bench.objective[rows]], 1)
  return hypervolume_2d(pts, ref, [("r", "max"), ("o", "min")])


def true_front(bench: TabularBenchmark, max_objective: float | None = None) -> dict[str, Any]:
  """The table's own front (rows within the limit), its hypervolume and the reference point.

  Example:
    >>> t = true_front(bench)  # doctest: +SKIP
    >>> t["hv"] > 0, len(t["rows"])  # doctest: +SKIP
    (True, 12)
  """
  ok = _check(bench, max_objective)
  ref = reference_point(bench)
  rows = _front_rows(bench, np.flatnonzero(ok))
  hv = _hv(bench, rows, ref)
  if hv <= 0:
    raise ValueError(f"no cell within the limit beats the table's medians (report "
                     f"{ref[0]:g}, {bench.columns['objective']} {ref[1]:g}) in both, so the "
                     f"hypervolume ratio is undefined; raise --max-objective")
  return {"rows": rows, "hv": hv, "reference": ref}


# Strategies ------------------------------------------------------------------
# Each factory gets (space, lookup, limit, target, **settings) and returns
# (strategy, jit, score_fn); score_fn(rows) is what tell receives.

def _limit_constraint(space, lookup, limit, tries=20_000):
  if limit is None:
    return None
  from jnas.strategies.sampling import Constraints
  # The limit is free to check (the objective is known without training), so
  # candidates over it are redrawn, never charged. Many tries: a tight limit
  # may leave few cells.
  return Constraints(lambda g: lookup(space.encode_indices(g)[None])[0] <= limit,
                     max_tries=tries)


def _fs_random(space, lookup, limit, target, bench, **kw):
  from jnas.strategies.random_search import random_search
  return (random_search(space, constraints=_limit_constraint(space, lookup, limit), **kw), False,
          lambda rows: bench.signal[rows])


def _fs_rea(space, lookup, limit, target, bench, **kw):
  from jnas.strategies.evolution import regularized_evolution
  return (regularized_evolution(space, constraints=_limit_constraint(space, lookup, limit), **kw),
          False, lambda rows: bench.signal[rows])


def _fs_nsga2(space, lookup, limit, target, bench, **kw):
  from jnas.strategies.evolution import nsga2
  return (nsga2(space, 2, constraints=_limit_constraint(space, lookup, limit), **kw), False,
          lambda rows: np.stack([bench.signal[rows], -bench.objective[rows]], 1))


def _fs_dpp_net(space, lookup, limit, target, bench, **kw):
  from jnas.strategies.progressive import dpp_net
  valid = None if limit is None else (lambda x: lookup(x) <= limit)
  return (dpp_net(space, lookup, valid_fn=valid, **kw), False,
          lambda rows: bench.signal[rows])


def _fs_reinforce(space, lookup, limit, target, bench, *, w=MNASNET_W, **kw):
  from jnas.strategies.reinforce import reinforce

  def score(rows):
    ratio = bench.objective[rows] / target
    return (bench.signal[rows] * ratio ** w).astype(np.float32)
  return reinforce(space, **kw), True, score


# name -> (factory, default settings). REA, REINFORCE and the predictor of
# DPP-Net keep their single-objective tabular defaults (jnas.estimation.tabular);
# NSGA-II's population is REA's 10, so that a run of ~60 queries sees several
# generations (the paper's 100 suits thousands of evaluations).
FRONT_STRATEGIES: dict[str, tuple[Callable[..., tuple[Any, bool, Callable]], dict[str, Any]]] = {
    "random": (_fs_random, {}),
    "rea": (_fs_rea, dict(STRATEGIES["rea"][1])),
    "nsga2": (_fs_nsga2, {"population_size": 10}),
    "dpp_net": (_fs_dpp_net, dict(STRATEGIES["pnas"][1])),
    "reinforce": (_fs_reinforce, {**STRATEGIES["reinforce"][1], "w": MNASNET_W}),
}


def front_strategy_names() -> list[str]:
  """Names ``jnas tabular --objective`` accepts."""
  return sorted(FRONT_STRATEGIES)


def _make(name: str, bench: TabularBenchmark, limit: float | None,
          settings: Mapping[str, Any] | None):
  if name not in FRONT_STRATEGIES:
    raise ValueError(f"strategy {name!r} has no multi-objective replay (with --objective: "
                     f"{', '.join(front_strategy_names())})")
  factory, defaults = FRONT_STRATEGIES[name]
  merged = {**defaults, **dict(settings or {})}
  target = float(limit) if limit is not None else float(np.median(bench.objective))

  def lookup(x):
    return bench.objective[bench.rows(np.asarray(x))]
  try:
    strategy, jit, score = factory(bench.space, lookup, limit, target, bench, **merged)
  except TypeError as e:
    raise ValueError(f"strategy {name!r} does not accept these settings "
                     f"({', '.join(sorted(merged)) or 'none'}): {e}") from None
  return strategy, jit, score, merged, target


# The protocol ----------------------------------------------------------------

#: One run: every evaluated row in order (the loop single-objective replays use too).
replay_front = replay_rows


def _point(bench: TabularBenchmark, r: int) -> dict[str, Any]:
  return {"arch": bench.arch[r], "report": float(bench.report[r]),
          "objective": float(bench.objective[r]), "signal": float(bench.signal[r])}


def replay_front_many(name: str, bench: TabularBenchmark, *, budget: float, runs: int = 100,
                      seed: int = 0, cost_scale: float = 1.0,
                      max_objective: float | None = None,
                      settings: Mapping[str, Any] | None = None,
                      max_queries: int = 100_000) -> dict[str, Any]:
  """``runs`` multi-objective runs of ``name``; per run ``hv_ratio`` and front, and their summary.

  Run ``i`` starts from ``fold_in(key(seed), i)``. A run's ``hv_ratio`` is the
  hypervolume of the front of every architecture it evaluated within the
  limit (report up, objective down) over that of the table's front within
  the limit, both from :func:`reference_point`.

  Returns a JSON-ready dict: ``hv_ratio_mean``, ``hv_ratio_std`` (ddof 0),
  ``mean_queries``, ``reference``, ``true_front`` (points), ``target`` (for
  ``reinforce``), and ``per_run``: ``hv_ratio``, ``queries``, ``time``,
  ``over_limit`` (queries over the limit, only a soft reward makes them) and
  ``front`` (points ``arch``, ``report``, ``objective``, ``signal``).

  Example:
    >>> r = replay_front_many("random", bench, budget=40, runs=100,
    ...                       max_objective=40000)  # doctest: +SKIP
    >>> r["hv_ratio_mean"]  # doctest: +SKIP
  """
  if runs < 1:
    raise ValueError(f"runs must be >= 1, got {runs}")
  if budget <= 0:
    raise ValueError(f"budget must be > 0 seconds, got {budget}")
  truth = true_front(bench, max_objective)
  ref = truth["reference"]
  strategy, jit, score, merged, target = _make(name, bench, max_objective, settings)
  compiled = compiled_strategy(name, strategy, merged, bench) if jit else None
  base = jax.random.key(seed)
  t0 = time.time()
  per_run = []
  for i in range(runs):
    r = replay_front(strategy, score, bench, budget=budget, cost_scale=cost_scale,
                     key=jax.random.fold_in(base, i), max_queries=max_queries,
                     _compiled=compiled)
    rows = r["rows"]
    if not len(rows):
      raise ValueError(f"budget {budget} s is smaller than the cost of a first query "
                       f"(run {i}, cost_scale {cost_scale}); raise --budget")
    ok = (rows if max_objective is None
          else rows[bench.objective[rows] <= max_objective])
    front = _front_rows(bench, ok) if len(ok) else ok
    per_run.append({"hv_ratio": _hv(bench, front, ref) / truth["hv"], "queries": r["queries"],
                    "time": r["time"], "over_limit": int(len(rows) - len(ok)),
                    "front": [_point(bench, int(k)) for k in front]})
  hv = np.asarray([p["hv_ratio"] for p in per_run])
  return {
      **run_header(name, merged, bench, budget=budget, cost_scale=cost_scale, seed=seed,
                   runs=runs),
      "objective_column": bench.columns["objective"],
      "max_objective": max_objective,
      "target": target if name == "reinforce" else None,
      "reference": {"report": ref[0], "objective": ref[1]},
      "true_hv": truth["hv"],
      "hv_ratio_mean": float(hv.mean()),
      "hv_ratio_std": float(hv.std()),
      "mean_queries": float(np.mean([p["queries"] for p in per_run])),
      "true_front": [_point(bench, int(k)) for k in truth["rows"]],
      "per_run": per_run,
      "seconds": round(time.time() - t0, 2),
  }
