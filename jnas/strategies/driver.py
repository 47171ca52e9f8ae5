"""The ask → score → tell loop shared by every sample-based strategy, and its history.

The scorer contract
-------------------
A *scorer* estimates how good a batch of candidates is. ``run_ask_tell`` calls
it once per ``ask`` as::

    scorer(encodings, genotypes) -> scores

* ``encodings``: the stacked encodings the strategy asked for, a dict of
  ``[n, ...]`` arrays (what a supernet evaluator vmaps or loops over);
* ``genotypes``: the same ``n`` candidates as genotypes, in order (what a
  tabular lookup, a train-from-scratch run or a FLOPs counter needs).

A scorer uses whichever it needs and returns, for the ``n`` candidates:

* a ``[n]`` array: one objective (named by ``objectives``, default
  ``"score"``, maximised);
* a ``[n, M]`` array: ``M`` objectives in the order of ``objectives``;
* a dict of ``[n]`` arrays: every objective by name, plus any extra metrics
  (recorded in the history), plus optionally the simulated cost of each
  query under ``cost_key`` (e.g. training seconds in a tabular benchmark),
  which ``budget`` is charged with.

So shared supernet weights (``vmap`` of the pure evaluator over
``encodings``), a tabular benchmark (look up ``str(genotype)``), training
from scratch, or a learned predictor all plug in the same way;
:func:`genotype_scorer` lifts a per-genotype function to the batch form.

What a strategy's ``tell`` receives: the objective values turned into
"higher is better" (each ``"min"`` objective negated), ``[n]`` for one
objective and ``[n, M]`` for several, in the order of ``objectives``. The
history and the Pareto output keep the values as the scorer returned them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jnas.estimation.pareto import (Objective, as_objectives, pareto_front, plot_pareto,
                                    save_pareto_json)
from jnas.spaces.base import SearchSpace
from jnas.strategies.base import AskTellStrategy
from jnas.utils.progress import progress

Scorer = Callable[[Mapping[str, np.ndarray], list], Any]


def genotype_scorer(fn: Callable[[Any], float | Mapping[str, float]]) -> Scorer:
  """Lifts ``fn(genotype) -> value or {name: value}`` to a batch scorer.

  Example:
    >>> scorer = genotype_scorer(lambda g: {"acc": g.ops.count("nor_conv_3x3") / 6})
    >>> from jnas.spaces import NB201Space
    >>> space = NB201Space()
    >>> scorer(None, [space.parse("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")])
    {'acc': array([0.16666667])}
  """

  def scorer(encodings, genotypes):
    outs = [fn(g) for g in genotypes]
    if outs and isinstance(outs[0], Mapping):
      return {k: np.asarray([o[k] for o in outs], np.float64) for k in outs[0]}
    return np.asarray(outs, np.float64)

  return scorer


@dataclasses.dataclass
class Evaluation:
  """One evaluated candidate: its genotype, objective values, other metrics and costs.

  ``spent`` is the budget used up to and including this evaluation.
  """

  index: int
  genotype: Any
  objectives: dict[str, float]
  metrics: dict[str, float]
  cost: dict[str, float]
  spent: float

  def flat(self) -> dict[str, Any]:
    """One flat record: objectives, metrics and costs side by side (for Pareto tools)."""
    return {**self.cost, **self.metrics, **self.objectives}


@dataclasses.dataclass
class SearchResult:
  """What :func:`run_ask_tell` returns: the final strategy state and the full history.

  Example:
    >>> result.best().genotype, result.front()  # doctest: +SKIP
  """

  state: Any
  history: list[Evaluation]
  objectives: tuple[Objective, ...]
  spent: float

  def best(self, objective: str | None = None) -> Evaluation:
    """The best evaluation by ``objective`` (default: the first); earliest wins ties."""
    if not self.history:
      raise ValueError("nothing was evaluated")
    o = self.objectives[0] if objective is None else next(
        (o for o in self.objectives if o.name == objective), None)
    if o is None:
      raise ValueError(f"unknown objective {objective!r} "
                       f"(objectives: {', '.join(x.name for x in self.objectives)})")
    vals = np.asarray([e.objectives[o.name] for e in self.history]) * o.sign
    return self.history[int(np.argmax(np.where(np.isnan(vals), -np.inf, vals)))]

  def front(self) -> list[Evaluation]:
    """The evaluations no other evaluation dominates over all objectives."""
    recs = [dict(e.objectives, _i=i) for i, e in enumerate(self.history)]
    return [self.history[r["_i"]] for r in pareto_front(recs, self.objectives)]

  def records(self, space: SearchSpace, evaluations: Sequence[Evaluation] | None = None
              ) -> list[dict]:
    """JSON-ready records: genotype (``space.genotype_to_json``) plus every value."""
    return [{"index": e.index, "genotype": space.genotype_to_json(e.genotype), **e.flat(),
             "spent": e.spent} for e in (self.history if evaluations is None else evaluations)]

  def save(self, path: str, space: SearchSpace) -> None:
    """Writes the history and the best evaluation as JSON."""
    best = self.records(space, [self.best()])[0] if self.history else None
    data = {"objectives": [o._asdict() for o in self.objectives], "spent": self.spent,
            "num_evaluated": len(self.history), "best": best,
            "history": self.records(space)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      json.dump(data, f, indent=1)
    os.replace(tmp, path)

  def save_pareto(self, directory: str, space: SearchSpace, *, name: str = "pareto",
                  title: str | None = None) -> tuple[str, str | None]:
    """Writes ``NAME.json`` (the non-dominated set) and, with 2+ objectives, ``NAME.png``."""
    front = self.records(space, self.front())
    json_path = os.path.join(directory, f"{name}.json")
    # Every evaluated point too, so `jnas plot` can redraw the front against them.
    save_pareto_json(json_path, front, self.objectives, num_evaluated=len(self.history),
                     evaluated=[e.flat() for e in self.history])
    png = None
    if len(self.objectives) >= 2:
      png = os.path.join(directory, f"{name}.png")
      plot_pareto(png, [e.flat() for e in self.history], [e.flat() for e in self.front()],
                  self.objectives, title=title)
    return json_path, png


def _columns(out: Any, n: int, objectives: tuple[Objective, ...], cost_key: str | None
             ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
  """Scorer output → (objective values [n, M], extra metrics, per-query cost or None)."""
  m = len(objectives)
  extra: dict[str, np.ndarray] = {}
  cost = None
  if isinstance(out, Mapping):
    missing = [o.name for o in objectives if o.name not in out]
    if missing:
      raise ValueError(f"scorer returned no {missing[0]!r} (returned: {', '.join(out)})")
    arrays = {k: np.asarray(jax.device_get(v), np.float64).reshape(-1) for k, v in out.items()}
    bad = [k for k, v in arrays.items() if v.shape != (n,)]
    if bad:
      raise ValueError(f"scorer's {bad[0]!r} has {arrays[bad[0]].size} values for {n} candidates")
    values = np.stack([arrays[o.name] for o in objectives], axis=1)
    names = {o.name for o in objectives}
    extra = {k: v for k, v in arrays.items() if k not in names and k != cost_key}
    if cost_key is not None:
      if cost_key not in arrays:
        raise ValueError(f"scorer returned no cost {cost_key!r} (returned: {', '.join(out)})")
      cost = arrays[cost_key]
  else:
    values = np.asarray(jax.device_get(out), np.float64)
    if values.ndim == 1:
      values = values[:, None]
    if values.shape != (n, m):
      raise ValueError(f"scorer returned shape {values.shape} for {n} candidates and {m} "
                       f"objective(s); expected ({n},) or ({n}, {m})")
    if cost_key is not None:
      raise ValueError(f"cost_key={cost_key!r} needs a scorer that returns a dict")
  return values, extra, cost


def _candidates(space: SearchSpace, asked: Any) -> tuple[dict[str, np.ndarray], list]:
  """Stacked encodings and genotypes of what ``ask`` returned.

  ``ask`` may return stacked encodings (a dict, the shape DESIGN.md gives
  strategies) or the integer form ``[n, decisions]`` (an RL controller's
  sampled decisions); the scorer gets both forms either way.
  """
  if isinstance(asked, Mapping):
    encodings = {k: np.asarray(jax.device_get(v)) for k, v in asked.items()}
    n = next(iter(encodings.values())).shape[0]
    genotypes = [space.encoding_to_genotype({k: v[i] for k, v in encodings.items()})
                 for i in range(n)]
    return encodings, genotypes
  indices = np.asarray(jax.device_get(asked))
  if indices.ndim != 2 or not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"ask must return stacked encodings (a dict) or an integer form "
                     f"[n, decisions], got {indices.dtype} of shape {indices.shape}")
  genotypes = [space.decode_indices(row) for row in indices]
  encs = [space.genotype_to_encoding(g) for g in genotypes]
  return {k: np.stack([e[k] for e in encs]) for k in encs[0]}, genotypes


def _costs(cost_fn, genotype, cost_key, query_cost) -> dict[str, float]:
  out = {} if cost_fn is None else {k: float(v) for k, v in cost_fn(genotype).items()}
  if query_cost is not None:
    out[cost_key] = float(query_cost)
  return out


def run_ask_tell(strategy: AskTellStrategy, space: SearchSpace, scorer: Scorer, *,
                 key: jax.Array, num_evals: int | None = None, budget: float | None = None,
                 objectives: Sequence[Objective | str | tuple[str, str]] = ("score",),
                 cost_key: str | None = None,
                 cost_fn: Callable[[Any], Mapping[str, float]] | None = None,
                 desc: str = "search", state: Any = None) -> SearchResult:
  """Runs ask → score → tell until ``num_evals`` candidates or ``budget`` cost are used up.

  Args:
    strategy: any ask/tell strategy (random search, evolution, RL, ...); its
      ``ask`` returns stacked encodings or the integer form ``[n, decisions]``,
      and ``tell`` gets back the same object (cut to the evaluated rows).
    space: the space the strategy searches (genotypes for the scorer and
      the history come from ``space.encoding_to_genotype`` of each asked row).
    scorer: see the module docstring for the contract.
    key: the run's ``jax.random`` key (``strategy.init(key)``).
    num_evals: stop after this many evaluations (the last batch is cut to fit).
    budget: stop once the summed ``cost_key`` of the evaluations reaches it;
      evaluation is sequential within a batch, so the candidate that crosses
      the budget is the last one counted (the NAS-Bench-201 protocol).
    objectives: names (and ``"max"``/``"min"``) of the scorer's objectives.
    cost_key: the scorer's dict entry that charges ``budget``; without it
      each evaluation costs 1.
    cost_fn: optional ``cost_fn(genotype) -> {name: value}`` (FLOPs,
      params) recorded with each evaluation.
    desc: progress label.
    state: resume from this strategy state instead of ``strategy.init(key)``.

  Returns:
    :class:`SearchResult` with every evaluated genotype, its objectives,
    metrics and costs, in evaluation order.

  Example:
    >>> result = run_ask_tell(regularized_evolution(space), space, scorer,
    ...                       key=jax.random.key(0), num_evals=500)  # doctest: +SKIP
    >>> result.best().genotype  # doctest: +SKIP
  """
  if num_evals is None and budget is None:
    raise ValueError("give num_evals or budget (or both) so the search ends")
  if num_evals is not None and num_evals < 1:
    raise ValueError(f"num_evals must be >= 1, got {num_evals}")
  if budget is not None and not budget > 0:
    raise ValueError(f"budget must be > 0, got {budget}")
  objectives = as_objectives(objectives)
  state = strategy.init(key) if state is None else state
  history: list[Evaluation] = []
  spent = 0.0
  primary = objectives[0]
  best = -math.inf

  def done() -> bool:
    return ((num_evals is not None and len(history) >= num_evals)
            or (budget is not None and spent >= budget))

  with progress(total=num_evals, desc=desc, unit="arch") as bar:
    while not done():
      state, asked = strategy.ask(state)
      n = int(np.shape(jax.tree_util.tree_leaves(asked)[0])[0])
      if num_evals is not None:
        n = min(n, num_evals - len(history))
      asked = jax.tree_util.tree_map(lambda a: a[:n], asked)
      encodings, genotypes = _candidates(space, asked)
      values, extra, cost = _columns(scorer(encodings, genotypes), n, objectives, cost_key)
      # Sequential accounting: stop after the candidate that uses up the budget.
      used = n
      for i in range(n):
        spent += 1.0 if cost is None else float(cost[i])
        history.append(Evaluation(
            index=len(history), genotype=genotypes[i],
            objectives={o.name: float(values[i, j]) for j, o in enumerate(objectives)},
            metrics={k: float(v[i]) for k, v in extra.items()},
            cost=_costs(cost_fn, genotypes[i], cost_key, None if cost is None else cost[i]),
            spent=spent))
        if budget is not None and spent >= budget:
          used = i + 1
          break
      told = values[:used] * np.asarray([o.sign for o in objectives])
      if len(objectives) == 1:
        told = told[:, 0]
      state = strategy.tell(state, jax.tree_util.tree_map(lambda a: a[:used], asked), told)
      col = values[:used, 0] * primary.sign
      if used and np.nanmax(col) > best:
        best = float(np.nanmax(col))
      bar.update(used)
      bar.set_postfix(**{f"best_{primary.name}": best * primary.sign, "spent": spent})
  return SearchResult(state=state, history=history, objectives=objectives, spent=spent)
