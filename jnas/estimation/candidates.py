"""Estimators of the sample-based search loop: candidate genotypes -> signal, cost, extras.

:class:`jnas.search.ask_tell.AskTellPlan` asks a strategy for candidates
and hands them to one of these; each returns an :class:`Estimate` (the signal
the strategy maximises, the seconds charged to the budget, a second objective
for NSGA-II) and can rebuild its cache from the archive of a resumed run.

* :class:`TableEstimator`: look cells up in an NB201 benchmark table; every
  query is charged that cell's COST column (its real training time).
* :class:`ScratchEstimator`: train each new candidate's single path from
  scratch (:class:`~jnas.estimation.scratch.PathScratchScorer`); a repeat is
  read from the cache and charged nothing.
* :class:`WithObjective`: another estimator with a computed second objective.
* :class:`ProxyFiltered`: another estimator paid only for the candidates a
  zero-cost proxy ranks high (the rest are rejected unmeasured, at no cost).

Example:
  >>> est = TableEstimator(load_table("t.csv", arch_column="arch_str", signal_column="val_acc",
  ...                                 report_column="test_acc", cost_column="train_seconds"),
  ...                      space, report_name="test_acc")  # doctest: +SKIP
  >>> est.estimate([space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")]).signal
  ... # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np

from jnas.estimation.tabular import TabularBenchmark
from jnas.spaces.base import SearchSpace

__all__ = ["Estimate", "Estimator", "ProxyFiltered", "ScratchEstimator", "TableEstimator",
           "WithObjective"]


@dataclasses.dataclass
class Estimate:
  """What an estimator returns for ``n`` candidates (all ``[n]`` float64)."""

  signal: np.ndarray          # the strategy's objective, higher is better
  cost: np.ndarray            # charged to search.budget_s
  objective2: np.ndarray      # nsga2's second objective (minimised)
  extra: dict[str, np.ndarray]


class Estimator:
  """One estimator: ``estimate(genotypes)``, its names, and its cache for a resumed run."""

  signal_name = "signal"
  objective2_name = "cost"

  def estimate(self, genotypes: list) -> Estimate:
    """The estimate of every genotype, in order."""
    raise NotImplementedError

  def restore(self, archive: list[dict]) -> None:
    """Rebuilds what the estimator caches from the archive of a resumed run."""
    del archive


class TableEstimator(Estimator):
  """Looks cells up in an NB201 benchmark table; every query is charged its COST column.

  ``report_name`` (optional) names the table's report column, recorded with
  each query (what the summary reports for the cell found).
  """

  def __init__(self, bench: TabularBenchmark, space: SearchSpace, *,
               report_name: str | None = None):
    self.bench = bench
    self.space = space
    self.signal_name = bench.columns["signal"]
    self.cost_name = self.objective2_name = bench.columns["cost"]
    self.report_name = report_name
    # The second objective: the table's objective column when it was loaded with one.
    self._objective = bench.cost if bench.objective is None else bench.objective
    if bench.objective is not None:
      self.objective2_name = bench.columns["objective"]

  def rows(self, genotypes: list) -> np.ndarray:
    """The table rows of ``genotypes``."""
    return self.bench.rows(np.stack([self.space.encode_indices(g) for g in genotypes]))

  def cost_of_indices(self, x: np.ndarray) -> np.ndarray:
    """DPP-Net's device cost of integer forms ``[n, steps]``: the second objective's column."""
    return self._objective[self.bench.rows(np.asarray(x))][:, None]

  def estimate(self, genotypes: list) -> Estimate:
    rows = self.rows(genotypes)
    extra = {} if self.report_name is None else {self.report_name: self.bench.report[rows]}
    return Estimate(signal=self.bench.signal[rows], cost=self.bench.cost[rows],
                    objective2=self._objective[rows], extra=extra)


class ScratchEstimator(Estimator):
  """Trains each new candidate's single path from scratch; a repeat is read from the cache.

  ``scorer`` is a :class:`~jnas.estimation.scratch.PathScratchScorer` (or
  anything with its ``evaluate(genotype) -> {val_accuracy, num_params,
  train_seconds}``).
  """

  signal_name = "val_accuracy"
  objective2_name = "num_params"

  def __init__(self, scorer: Any, space: SearchSpace):
    self.space = space
    self.scorer = scorer
    self.cache: dict[str, dict[str, float]] = {}

  @staticmethod
  def _key(genotype_json: Any) -> str:
    # Through JSON, so a record read back from a checkpoint (lists, not tuples) finds its entry.
    return json.dumps(genotype_json, sort_keys=True)

  def restore(self, archive: list[dict]) -> None:
    # A resumed run must not train again what the killed run trained (and a
    # repeat costs 0 s either way), so the cache is rebuilt from the archive.
    for rec in archive:
      self.cache.setdefault(self._key(rec["genotype"]), {
          "val_accuracy": rec["val_accuracy"], "num_params": rec["num_params"],
          "train_seconds": rec["cost_s"]})

  def estimate(self, genotypes: list) -> Estimate:
    out, cost = [], []
    for g in genotypes:
      k = self._key(self.space.genotype_to_json(g))
      if k in self.cache:
        out.append(self.cache[k])
        cost.append(0.0)  # nothing is trained for a repeat
        continue
      r = self.scorer.evaluate(g)
      self.cache[k] = {"val_accuracy": float(r["val_accuracy"]),
                       "num_params": float(r["num_params"]),
                       "train_seconds": float(r["train_seconds"])}
      out.append(self.cache[k])
      cost.append(float(r["train_seconds"]))
    col = lambda name: np.asarray([o[name] for o in out], np.float64)  # noqa: E731
    return Estimate(signal=col("val_accuracy"), cost=np.asarray(cost),
                    objective2=col("num_params"), extra={})


class WithObjective(Estimator):
  """``estimator`` with its second objective replaced by ``cost(genotype)`` (named ``name``).

  The objective nsga2 minimises beside the signal and DPP-Net's cost, e.g. the
  retraining network's latency on this machine
  (:func:`jnas.estimation.objectives.objective_fn`).

  Example:
    >>> est = WithObjective(TableEstimator(bench, space), "latency", cost, space)  # doctest: +SKIP
  """

  def __init__(self, estimator: Estimator, name: str, cost: Callable[[Any], float],
               space: SearchSpace):
    self.inner, self.cost, self.space = estimator, cost, space
    self.signal_name = estimator.signal_name
    self.objective2_name = name

  def __getattr__(self, attr: str) -> Any:
    # The table estimator's rows/bench/report_name stay reachable through the wrapper.
    if attr == "inner":
      raise AttributeError(attr)
    return getattr(self.inner, attr)

  def restore(self, archive: list[dict]) -> None:
    self.inner.restore(archive)

  def cost_of_indices(self, x: np.ndarray) -> np.ndarray:
    """DPP-Net's cost of integer forms ``[n, steps]``."""
    return np.asarray([[self.cost(self.space.decode_indices(r))] for r in np.asarray(x)])

  def estimate(self, genotypes: list) -> Estimate:
    e = self.inner.estimate(genotypes)
    return dataclasses.replace(e, objective2=np.asarray([self.cost(g) for g in genotypes],
                                                        np.float64))


class ProxyFiltered(Estimator):
  """``estimator`` paid only for candidates whose zero-cost proxy score reaches ``threshold``.

  Abdelfattah et al. (ICLR 2021) use synflow to pick what evolution and random
  search train; here every candidate a strategy asks for is scored by
  ``proxy(genotypes) -> [n]`` (milliseconds) and only those at or above
  ``threshold`` go to ``estimator``. A rejected candidate costs nothing and is
  told the lowest signal measured so far (0 before any), so evolution never
  breeds from it; its record has ``measured = 0`` and NaN for what was not
  measured. Every record gets the proxy's score under ``proxy_name``. The
  search's result is the best *measured* candidate.

  Example:
    >>> est = ProxyFiltered(TableEstimator(bench, space), zc_score, 1.2e3, "synflow")  # doctest: +SKIP
  """

  def __init__(self, estimator: Estimator, proxy: Callable[[list], np.ndarray],
               threshold: float, proxy_name: str):
    self.inner, self.proxy, self.threshold = estimator, proxy, float(threshold)
    self.proxy_name = proxy_name
    self.signal_name = estimator.signal_name
    self.objective2_name = estimator.objective2_name
    self.floor: float | None = None

  def __getattr__(self, attr: str) -> Any:
    if attr == "inner":
      raise AttributeError(attr)
    return getattr(self.inner, attr)

  def restore(self, archive: list[dict]) -> None:
    measured = [r for r in archive if r.get("measured", 1.0) == 1.0]
    self.inner.restore(measured)
    if measured:
      self.floor = min(float(r[self.signal_name]) for r in measured)

  def estimate(self, genotypes: list) -> Estimate:
    n = len(genotypes)
    score = np.asarray(self.proxy(genotypes), np.float64).reshape(n)
    keep = np.flatnonzero(score >= self.threshold)
    nan = np.full(n, np.nan)
    signal, cost, objective2 = nan.copy(), np.zeros(n), nan.copy()
    extra = {self.proxy_name: score, "measured": np.zeros(n)}
    if keep.size:
      e = self.inner.estimate([genotypes[i] for i in keep])
      signal[keep], cost[keep], objective2[keep] = e.signal, e.cost, e.objective2
      for k, v in e.extra.items():
        extra.setdefault(k, nan.copy())[keep] = v
      extra["measured"][keep] = 1.0
      low = float(np.min(e.signal))
      self.floor = low if self.floor is None else min(self.floor, low)
    signal[extra["measured"] == 0] = 0.0 if self.floor is None else self.floor
    return Estimate(signal=signal, cost=cost, objective2=objective2, extra=extra)
