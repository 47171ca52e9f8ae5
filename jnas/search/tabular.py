"""Replays of the NAS-Bench-201 search protocol on a benchmark table.

A benchmark table (:mod:`jnas.estimation.tabular`) is a CSV file with one row per NAS-Bench-201 cell: a column
holding the benchmark's architecture string
(``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|``) and
numeric columns the user names for

* the **search signal** a strategy sees (e.g. validation accuracy after 12
  epochs),
* the **reported metric** of the architecture a run returns (e.g. test accuracy
  after 200 epochs),
* the **cost** in seconds of one query (its simulated training time).

The protocol (Dong & Yang, ICLR 2020, section 5): each query advances a
simulated clock by ``cost * cost_scale``; a query whose training would end
after the time budget is not counted and ends the run; the run returns the
queried architecture with the best signal; many runs (500 in the paper) give
the mean and standard deviation of its reported metric. Run ``i`` of a batch
starts from ``jax.random.fold_in(jax.random.key(seed), i)``, so every run is
reproducible from the seed alone.

Example:
  >>> bench = load_table("nb201.csv", arch_column="arch_str", signal_column="valid12",
  ...                    report_column="test200", cost_column="time12")  # doctest: +SKIP
  >>> result = replay_many("rea", bench, budget=12000, runs=500, seed=0)  # doctest: +SKIP
  >>> result["mean"], result["std"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jnas.estimation.tabular import TabularBenchmark, load_table
from jnas.spaces.nb201 import NB201Space

__all__ = ["TabularBenchmark", "load_table", "replay", "replay_many", "STRATEGIES",
           "strategy_names", "make_strategy"]


# Strategies by name ---------------------------------------------------------

def _random(space, **kw):
  from jnas.strategies.random_search import random_search
  return random_search(space, **kw), False


def _reinforce(space, **kw):
  from jnas.strategies.reinforce import reinforce
  return reinforce(space, **kw), True


def _pnas(space, **kw):
  from jnas.strategies.progressive import pnas
  return pnas(space, **kw), False


def _evolution(name: str):
  def make(space, **kw):
    from jnas.strategies import evolution
    return getattr(evolution, name)(space, **kw), False
  return make


# name -> (factory(space, **settings) -> (strategy, jit?), default settings).
# REA uses NAS-Bench-201's settings (population 10, tournament 3). REINFORCE
# uses NAS-Bench-201's policy (free per-edge logits, not Zoph & Le's LSTM),
# Adam 0.05, 2 samples per update (benchmarks/results/reinforce: on the
# MNIST-1D table the LSTM at 0.02 spread its results wider than random search;
# the paper settings are in jnas.strategies.reinforce). top-k and PNAS were
# tuned on the synthetic tables of tests/test_tabular.py.
STRATEGIES: dict[str, tuple[Callable[..., tuple[Any, bool]], dict[str, Any]]] = {
    "random": (_random, {}),
    "rea": (_evolution("regularized_evolution"), {"population_size": 10, "sample_size": 3}),
    "reinforce": (_reinforce, {"controller": "logits", "learning_rate": 0.05,
                               "entropy_weight": 0.01, "batch_size": 2}),
    "topk": (_evolution("topk_evolution"), {"population_size": 10, "top_k": 5}),
    "pnas": (_pnas, {"beam_size": 5, "predictor_members": 3, "predictor_steps": 100,
                     "predictor_hidden": 32}),
}


def parse_settings(items: list[str]) -> dict[str, Any]:
  """``["population_size=20", "learning_rate=0.02"]`` -> a dict (values read as JSON when they parse).

  Example:
    >>> parse_settings(["a=2", "b=0.5", "c=x"])
    {'a': 2, 'b': 0.5, 'c': 'x'}
  """
  out: dict[str, Any] = {}
  for item in items:
    k, sep, v = item.partition("=")
    if not sep or not k.strip():
      raise ValueError(f"strategy setting {item!r} must be KEY=VALUE")
    try:
      out[k.strip()] = json.loads(v)
    except json.JSONDecodeError:
      out[k.strip()] = v
  return out


def settings_from_text(text: str | None) -> dict[str, Any]:
  """A config's ``search.strategy_settings`` (``"population_size=20,sample_size=5"``) as a dict.

  Example:
    >>> settings_from_text("population_size=20, sample_size=5")
    {'population_size': 20, 'sample_size': 5}
  """
  return parse_settings([s for s in str(text or "").split(",") if s.strip()])


def strategy_names() -> list[str]:
  """Names ``jnas tabular --strategy`` accepts."""
  return sorted(STRATEGIES)


def make_strategy(name: str, space: NB201Space, settings: Mapping[str, Any] | None = None
                  ) -> tuple[Any, bool, dict[str, Any]]:
  """The strategy ``name`` with its default settings updated by ``settings``.

  Returns ``(strategy, jit, settings)``: ``jit`` says whether its ``ask`` and
  ``tell`` are pure JAX (then the runner jits them).

  Example:
    >>> s, jit, settings = make_strategy("reinforce", NB201Space())
    >>> jit, settings["learning_rate"]
    (True, 0.05)
  """
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(strategy_names())})")
  factory, defaults = STRATEGIES[name]
  merged = {**defaults, **dict(settings or {})}
  try:
    strategy, jit = factory(space, **merged)
  except TypeError as e:
    raise ValueError(f"strategy {name!r} does not accept these settings "
                     f"({', '.join(sorted(merged)) or 'none'}): {e}") from None
  return strategy, jit, merged


# The protocol ----------------------------------------------------------------

def _as_indices(asked: Any) -> np.ndarray:
  # Sample-based strategies hand out either the integer form or stacked encodings.
  if isinstance(asked, Mapping):
    return np.argmax(np.asarray(asked["cell"]), axis=-1)
  return np.asarray(asked)


def replay_rows(strategy: Any, score: Callable[[np.ndarray], np.ndarray],
                bench: TabularBenchmark, *, budget: float, key: jax.Array,
                cost_scale: float = 1.0, max_queries: int = 100_000,
                _compiled: tuple | None = None, jit: bool = False) -> dict[str, Any]:
  """The protocol's loop: ask/tell until the clock would pass ``budget``; every row, in order.

  Each query advances the simulated clock by its row's cost times
  ``cost_scale``; the query that would end after ``budget`` is not counted and
  ends the run. ``score(rows)`` turns table rows into what ``tell`` takes.
  Returns ``rows`` (int array of the evaluated rows), ``queries`` and ``time``.

  Example:
    >>> s, jit, _ = make_strategy("random", bench.space)  # doctest: +SKIP
    >>> replay_rows(s, lambda r: bench.signal[r], bench, budget=40,
    ...             key=jax.random.key(0))["queries"]  # doctest: +SKIP
  """
  if budget <= 0:
    raise ValueError(f"budget must be > 0 seconds, got {budget}")
  if cost_scale <= 0:
    raise ValueError(f"cost_scale must be > 0, got {cost_scale}")
  init, ask, tell = _compiled or (
      (jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell)) if jit
      else strategy)
  state = init(key)
  clock, seen = 0.0, []
  while sum(len(r) for r in seen) < max_queries:
    state, asked = ask(state)
    idx = _as_indices(asked)
    if idx.shape[0] == 0:
      break  # the strategy has nothing left to propose
    rows = bench.rows(idx)
    ends = clock + np.cumsum(bench.cost[rows] * cost_scale)
    n = int(np.searchsorted(ends, budget, side="right"))
    if n:
      clock = float(ends[n - 1])
      seen.append(rows[:n])
    if n < len(rows):
      break
    state = tell(state, asked, score(rows))
  rows = np.concatenate(seen) if seen else np.zeros((0,), np.int64)
  return {"rows": rows, "queries": int(len(rows)), "time": clock}


def replay(strategy: Any, bench: TabularBenchmark, *, budget: float, cost_scale: float = 1.0,
           key: jax.Array, jit: bool = False, max_queries: int = 100_000,
           _compiled: tuple | None = None) -> dict[str, Any]:
  """One run of the protocol: ask/tell until the simulated clock would pass ``budget``.

  The strategy sees the signal column. Returns the best row by signal
  (``best_row``; ``-1`` if not even one query fit), its ``report``,
  ``signal`` and ``arch``, the number of ``queries`` and the simulated
  ``time`` used.

  Example:
    >>> s, jit, _ = make_strategy("random", bench.space)  # doctest: +SKIP
    >>> replay(s, bench, budget=12000, cost_scale=0.06, key=jax.random.key(0))  # doctest: +SKIP
  """
  run = replay_rows(strategy, lambda rows: bench.signal[rows].astype(np.float32), bench,
                    budget=budget, key=key, cost_scale=cost_scale, max_queries=max_queries,
                    _compiled=_compiled, jit=jit)
  rows, queries, clock = run["rows"], run["queries"], run["time"]
  best_row, best_signal = -1, -np.inf
  if len(rows):
    i = int(np.argmax(bench.signal[rows]))  # the first of equal signals, as queried
    best_row, best_signal = int(rows[i]), float(bench.signal[rows[i]])
  out = {"best_row": best_row, "queries": queries, "time": clock}
  if best_row >= 0:
    out.update(report=float(bench.report[best_row]), signal=best_signal,
               arch=bench.arch[best_row])
  return out


_COMPILED: dict[tuple, tuple] = {}


def run_header(name: str, settings: Mapping[str, Any], bench: TabularBenchmark, *,
               budget: float, cost_scale: float, seed: int, runs: int) -> dict[str, Any]:
  """What every replay result JSON starts with: the strategy, the table and the protocol."""
  return {"strategy": name, "settings": dict(settings), "table": bench.path,
          "columns": bench.columns, "report_column": bench.columns["report"],
          "rows": len(bench), "budget": budget, "cost_scale": cost_scale, "seed": seed,
          "runs": runs}


def compiled_strategy(name: str, strategy: Any, settings: Mapping[str, Any],
                      bench: TabularBenchmark) -> tuple:
  """Jitted ``(init, ask, tell)`` of a pure-JAX strategy, compiled once per (strategy, settings)
  per process, not per replay."""
  key = (name, json.dumps(dict(settings), sort_keys=True, default=str), bench.space.num_edges)
  if key not in _COMPILED:
    _COMPILED[key] = (jax.jit(strategy.init), jax.jit(strategy.ask), jax.jit(strategy.tell))
  return _COMPILED[key]


def replay_many(name: str, bench: TabularBenchmark, *, budget: float, runs: int = 500,
                seed: int = 0, cost_scale: float = 1.0, settings: Mapping[str, Any] | None = None,
                max_queries: int = 100_000) -> dict[str, Any]:
  """``runs`` runs of strategy ``name``; mean and std (ddof 0) of the reported metric.

  Pure-JAX strategies (``reinforce``) have their ``init``/``ask``/``tell``
  jitted once for all runs.

  Example:
    >>> r = replay_many("random", bench, budget=12000, runs=500, cost_scale=0.06)  # doctest: +SKIP
    >>> sorted(r)[:3]  # doctest: +SKIP
    ['arch', 'best_report', 'best_signal']
  """
  if runs < 1:
    raise ValueError(f"runs must be >= 1, got {runs}")
  strategy, jit, merged = make_strategy(name, bench.space, settings)
  base = jax.random.key(seed)
  t0 = time.time()
  compiled = compiled_strategy(name, strategy, merged, bench) if jit else None
  results = [replay(strategy, bench, budget=budget, cost_scale=cost_scale,
                    key=jax.random.fold_in(base, i), max_queries=max_queries, _compiled=compiled)
             for i in range(runs)]
  empty = sum(r["best_row"] < 0 for r in results)
  if empty:
    raise ValueError(f"budget {budget} s is smaller than the cost of a first query in {empty} "
                     f"of {runs} runs (cost_scale {cost_scale}); raise --budget")
  reports = np.asarray([r["report"] for r in results])
  return {
      **run_header(name, merged, bench, budget=budget, cost_scale=cost_scale, seed=seed,
                   runs=runs),
      "mean": float(reports.mean()),
      "std": float(reports.std()),
      "mean_queries": float(np.mean([r["queries"] for r in results])),
      "table_best_by_signal": bench.best_report(),
      "best_report": reports.tolist(),
      "best_signal": [r["signal"] for r in results],
      "best_arch": [r["arch"] for r in results],
      "queries": [r["queries"] for r in results],
      "seconds": round(time.time() - t0, 2),
  }
