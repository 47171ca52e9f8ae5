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
* :class:`PredictorEstimator`: another estimator paid only for the candidates
  a learned predictor, fitted on what was measured so far, finds promising;
  the rest are told the prediction, at no cost.

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
import math
import time
from typing import Any, Callable

import numpy as np

from jnas.estimation.tabular import TabularBenchmark
from jnas.spaces.base import SearchSpace

__all__ = ["Estimate", "Estimator", "PredictorEstimator", "ProxyFiltered", "ScratchEstimator",
           "TableEstimator", "WithObjective"]


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


class _Filtered(Estimator):
  """An estimator in front of another that decides which candidates the other measures.

  A subclass's :meth:`_decide` says which candidates to measure and what to
  tell the strategy for the others (which cost nothing and are recorded with
  ``measured = 0``). After ``patience`` unmeasured candidates in a row the
  next one is measured whatever the decision, so a search with a seconds budget
  always ends. The caches are rebuilt from the measured records of a resumed run.
  """

  def __init__(self, estimator: Estimator, patience: int):
    if patience < 0:
      raise ValueError(f"patience must be >= 0, got {patience}")
    self.inner, self.patience, self.skipped = estimator, int(patience), 0
    self.signal_name = estimator.signal_name
    self.objective2_name = estimator.objective2_name

  def __getattr__(self, attr: str) -> Any:
    if attr == "inner":
      raise AttributeError(attr)
    return getattr(self.inner, attr)

  def _decide(self, genotypes: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(measure [n] bool, told [n] for the unmeasured, extra columns)``."""
    raise NotImplementedError

  def _learn(self, genotypes: list, signal: np.ndarray) -> None:
    """Takes in what was measured (in order)."""

  def restore(self, archive: list[dict]) -> None:
    measured = [r for r in archive if r.get("measured", 1.0) == 1.0]
    self.inner.restore(measured)
    self.skipped = 0
    for r in archive:
      self.skipped = 0 if r.get("measured", 1.0) == 1.0 else self.skipped + 1
    self._learn([self.space.genotype_from_json(r["genotype"]) for r in measured],
                np.asarray([float(r[self.signal_name]) for r in measured]))

  def estimate(self, genotypes: list) -> Estimate:
    n = len(genotypes)
    measure, told, extra = self._decide(genotypes)
    for i in range(n):  # in evaluation order, as the budget is charged
      if not measure[i] and self.skipped >= self.patience:
        measure[i] = True
      self.skipped = 0 if measure[i] else self.skipped + 1
    nan = np.full(n, np.nan)
    signal, cost, objective2 = np.asarray(told, np.float64).copy(), np.zeros(n), nan.copy()
    extra = {**extra, "measured": measure.astype(np.float64)}
    keep = np.flatnonzero(measure)
    if keep.size:
      picked = [genotypes[i] for i in keep]
      e = self.inner.estimate(picked)
      signal[keep], cost[keep], objective2[keep] = e.signal, e.cost, e.objective2
      for k, v in e.extra.items():
        extra.setdefault(k, nan.copy())[keep] = v
      self._learn(picked, np.asarray(e.signal, np.float64))
    return Estimate(signal=signal, cost=cost, objective2=objective2, extra=extra)


class ProxyFiltered(_Filtered):
  """``estimator`` paid only for candidates whose zero-cost proxy score reaches ``threshold``.

  Abdelfattah et al. (ICLR 2021) use synflow to pick what evolution and random
  search train; here every candidate a strategy asks for is scored by
  ``proxy(genotypes) -> [n]`` (milliseconds) and only those at or above
  ``threshold`` go to ``estimator`` (and, after ``patience`` rejects in a row,
  the next candidate). A rejected candidate costs nothing and is told the
  lowest signal measured before its round (0 before any), so evolution never
  breeds from it; its record has ``measured = 0`` and NaN for what was not
  measured. Every record gets the proxy's score under ``proxy_name``. The
  search's result is the best *measured* candidate. What the proxy costs in
  wall time, ``setup_seconds`` (choosing ``threshold``) and
  :meth:`seconds_per_candidate`, is reported beside the budget, not charged to it.

  Example:
    >>> est = ProxyFiltered(TableEstimator(bench, space), zc_score, 1.2e3, "synflow", space)  # doctest: +SKIP
  """

  def __init__(self, estimator: Estimator, proxy: Callable[[list], np.ndarray],
               threshold: float, proxy_name: str, space: SearchSpace, patience: int = 50,
               setup_seconds: float = 0.0):
    super().__init__(estimator, patience)
    self.proxy, self.threshold, self.proxy_name = proxy, float(threshold), proxy_name
    self.space = space
    self.floor: float | None = None
    # Wall-clock seconds of scoring in this process (setup: what choosing the threshold took):
    # what the proxy really cost, kept out of the records, which must match an unbroken run's.
    self.setup_seconds, self.proxy_seconds, self.scored = float(setup_seconds), 0.0, 0

  def seconds_per_candidate(self) -> float:
    """Mean wall-clock seconds of the proxy per candidate scored in this process (0 if none)."""
    return self.proxy_seconds / self.scored if self.scored else 0.0

  def _decide(self, genotypes: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    n = len(genotypes)
    t = time.perf_counter()
    score = np.asarray(self.proxy(genotypes), np.float64).reshape(n)
    self.proxy_seconds += time.perf_counter() - t
    self.scored += n
    told = np.full(n, 0.0 if self.floor is None else self.floor)
    return score >= self.threshold, told, {self.proxy_name: score}

  def _learn(self, genotypes: list, signal: np.ndarray) -> None:
    if len(signal):
      low = float(np.min(signal))
      self.floor = low if self.floor is None else min(self.floor, low)


class PredictorEstimator(_Filtered):
  """``estimator`` paid only where a predictor fitted on the measurements so far is hopeful.

  The first ``warmup`` candidates are measured. From then on an ensemble of
  MLPs over the integer form (:func:`jnas.estimation.predictor.fit_predictor`)
  predicts each candidate's signal as a mean and a spread; a candidate is
  measured when ``mean + kappa * spread`` reaches the best signal measured so
  far (an upper confidence bound, as BANANAS's ensemble acquisition, White et
  al. AAAI 2021, used here to filter a strategy's proposals rather than to
  make them), and after ``patience`` unmeasured candidates in a row. Otherwise
  it costs nothing and the strategy is told the predicted mean; its record has
  ``measured = 0``. The predictor is refitted on the first ``m`` measurements,
  ``m`` the largest of ``warmup, 1.25 warmup, 1.25^2 warmup, ...`` reached, with a
  key that depends only on ``m`` (so a resumed search predicts as an
  uninterrupted one). Every record carries ``predicted`` (NaN while warming
  up); the search's result is the best *measured* candidate.

  Example:
    >>> est = PredictorEstimator(TableEstimator(bench, space), space, warmup=20)  # doctest: +SKIP
  """

  def __init__(self, estimator: Estimator, space: SearchSpace, *, warmup: int = 20,
               kappa: float = 1.0, seed: int = 0, members: int = 5, steps: int = 200,
               patience: int = 50):
    if warmup < 2:
      raise ValueError(f"the predictor needs warmup >= 2 measured candidates, got {warmup}")
    super().__init__(estimator, patience)
    self.space, self.warmup, self.kappa = space, int(warmup), float(kappa)
    self.seed, self.members, self.steps = int(seed), int(members), int(steps)
    self.sizes = tuple(int(v) for v in space.index_sizes())
    self.x: list[np.ndarray] = []
    self.y: list[float] = []
    self._params: Any = None
    self._fitted_on = -1

  def _fit_size(self) -> int:
    m = self.warmup
    while math.ceil(m * 1.25) <= len(self.y):
      m = math.ceil(m * 1.25)
    return m

  def _decide(self, genotypes: list) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    import jax  # noqa: PLC0415

    from jnas.estimation.predictor import fit_predictor, predict  # noqa: PLC0415

    n = len(genotypes)
    if len(self.y) < self.warmup:  # the warm-up measures whole rounds
      return np.ones(n, bool), np.full(n, np.nan), {"predicted": np.full(n, np.nan)}
    m = self._fit_size()
    if self._fitted_on != m:
      key = jax.random.fold_in(jax.random.key(self.seed), m)
      self._params = fit_predictor(key, self.sizes, np.stack(self.x[:m]), np.asarray(self.y[:m]),
                                   members=self.members, steps=self.steps)
      self._fitted_on = m
    x = np.stack([self.space.encode_indices(g) for g in genotypes])
    mean, std = (np.asarray(v, np.float64) for v in predict(self._params, self.sizes, x))
    return mean + self.kappa * std >= max(self.y), mean, {"predicted": mean}

  def _learn(self, genotypes: list, signal: np.ndarray) -> None:
    self.x += [np.asarray(self.space.encode_indices(g)) for g in genotypes]
    self.y += [float(v) for v in signal]
