"""Evolutionary search as ask/tell strategies over any search space.

* :func:`regularized_evolution`: aging evolution with tournament selection
  (Real et al., AAAI 2019): sample ``S`` of the population, mutate the best,
  add the child and remove the *oldest* member.
* :func:`topk_evolution`: the evolution of Single Path One-Shot (Guo et al.,
  ECCV 2020): each generation is half crossovers, half mutations of the top-k
  seen so far.
* :func:`nsga2`: NSGA-II (Deb et al. 2002) for several objectives: fast
  non-dominated sort + crowding distance.

Every ``tell`` takes scores where higher is better (``[n]``, or ``[n, M]`` for
NSGA-II); :func:`jnas.strategies.driver.run_ask_tell` turns named objectives,
each ``"max"`` or ``"min"``, into that form (it negates minimised ones).

All three work on the integer form of genotypes (``space.encode_indices``), so
they serve any :class:`~jnas.spaces.base.SearchSpace` that implements
``mutate``/``crossover``; ``ask`` returns stacked one-hot encodings that the
pure supernet evaluator vmaps over. States are pytrees of NumPy arrays plus a
``jax.random`` key; all host randomness is drawn from that key (see
:func:`jnas.strategies.sampling.key_rng`), so a run follows from its seed.
Every asked candidate satisfies the hard constraints.

Example:
  >>> import jax
  >>> from jnas.spaces import NB201Space
  >>> space = NB201Space()
  >>> strategy = regularized_evolution(space, population_size=10, sample_size=3)
  >>> state = strategy.init(jax.random.key(0))
  >>> for _ in range(30):
  ...   state, enc = strategy.ask(state)
  ...   state = strategy.tell(state, enc, enc["cell"][:, :, 3].sum((1,)))  # count nor_conv_3x3
  >>> int(state.size)
  10
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jnas.estimation.pareto import crowding_distance, fast_non_dominated_sort
from jnas.spaces.base import SearchSpace
from jnas.strategies.base import AskTellStrategy
from jnas.strategies.sampling import (Constraints, as_constraints, encode_batch,
                                      host_key, key_rng, pending_rows, told_rows)


def _nan_to_worst(s: np.ndarray) -> np.ndarray:
  return np.where(np.isnan(s), -np.inf, s)


# Regularized (aging) evolution ----------------------------------------------


class AgingState(NamedTuple):
  """Pytree state of :func:`regularized_evolution`.

  The first ``size`` rows of ``population``/``fitness``/``born`` are the
  living members; ``born`` counts births, so the oldest has the smallest.
  """

  key: np.ndarray         # raw uint32 bits of the run's jax.random key
  asks: np.ndarray        # () int64: how many times ask ran (the key's draw counter)
  population: np.ndarray  # [P, D] int32
  fitness: np.ndarray     # [P] float64
  born: np.ndarray        # [P] int64
  size: np.ndarray        # () int32
  births: np.ndarray      # () int64
  pending: np.ndarray     # [B, D] int32
  num_pending: np.ndarray  # () int32: rows of pending asked since the last tell
  best_indices: np.ndarray
  best_score: np.ndarray


def regularized_evolution(space: SearchSpace, *, population_size: int = 50,
                          sample_size: int = 10, batch_size: int = 1,
                          constraints: Constraints | Any = None) -> AskTellStrategy:
  """Regularized (aging) evolution, Real et al. 2019.

  The first ``population_size`` candidates are random. Afterwards each child
  is a mutation (``space.mutate``) of the fittest of ``sample_size`` members
  drawn without replacement; telling its score adds it and removes the oldest
  member, so the population always holds the most recent ``population_size``.

  Args:
    space: any search space with ``mutate``.
    population_size: ``P``.
    sample_size: tournament size ``S``.
    batch_size: children per ``ask`` (1 is the paper's sequential form).
    constraints: hard constraints (see
      :class:`~jnas.strategies.sampling.Constraints`); a mutation that
      violates them is redrawn (with a new tournament); if ``max_tries``
      mutations fail, random architectures are tried before giving up.

  Returns:
    ``AskTellStrategy``; ``tell`` takes scores ``[n]`` to maximise for the
    first ``n`` asked candidates.

  Example:
    >>> strategy = regularized_evolution(NB201Space(), population_size=20,
    ...                                  sample_size=5)  # doctest: +SKIP
  """
  if population_size < 1 or not 1 <= sample_size <= population_size:
    raise ValueError(f"need population_size >= 1 and 1 <= sample_size <= population_size, "
                     f"got population_size={population_size}, sample_size={sample_size}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  constraints = as_constraints(constraints)
  d = len(space.index_sizes())
  p = population_size

  def init(key: jax.Array) -> AgingState:
    return AgingState(key=host_key(key), asks=np.int64(0), population=np.zeros((p, d), np.int32),
                      fitness=np.full((p,), -np.inf), born=np.zeros((p,), np.int64),
                      size=np.int32(0), births=np.int64(0),
                      pending=np.zeros((batch_size, d), np.int32),
                      num_pending=np.asarray(0, np.int32),
                      best_indices=np.zeros((d,), np.int32), best_score=np.float64(-np.inf))

  def ask(state: AgingState) -> tuple[AgingState, dict[str, np.ndarray]]:
    rng = key_rng(state.key, state.asks)
    size = int(state.size)

    def random_one():
      return space.random_genotype(rng)

    def child():
      members = rng.choice(size, size=min(sample_size, size), replace=False)
      parent = members[np.argmax(state.fitness[members])]
      return space.mutate(space.decode_indices(state.population[parent]), rng)

    genotypes = []
    for _ in range(batch_size):
      if size < p:
        genotypes.append(constraints.sample(random_one, what="random samples"))
      else:
        genotypes.append(constraints.sample(child, random_one,
                                            what="candidates (mutations, then random samples)"))
    pending, num_pending = pending_rows(space, genotypes, state.pending.shape[0])
    state = state._replace(asks=np.int64(state.asks + 1), pending=pending,
                           num_pending=num_pending)
    return state, encode_batch(space, genotypes)

  def tell(state: AgingState, encodings: Any, scores: Any) -> AgingState:
    rows, s = told_rows(state.pending, state.num_pending, encodings, scores)
    s = _nan_to_worst(s)
    n, size = rows.shape[0], int(state.size)
    pop = np.concatenate([state.population[:size], rows])
    fit = np.concatenate([state.fitness[:size], s])
    born = np.concatenate([state.born[:size], state.births + np.arange(n)])
    keep = np.sort(np.argsort(-born, kind="stable")[:p])  # the youngest p, in birth order
    new_size = keep.size
    population = np.zeros((p, d), np.int32)
    fitness = np.full((p,), -np.inf)
    born_out = np.zeros((p,), np.int64)
    population[:new_size], fitness[:new_size] = pop[keep], fit[keep]
    born_out[:new_size] = born[keep]
    state = state._replace(population=population, fitness=fitness, born=born_out,
                           size=np.int32(new_size), births=np.int64(state.births + n),
                           num_pending=np.asarray(0, np.int32))
    if n and s.max() > state.best_score:
      i = int(np.argmax(s))
      state = state._replace(best_indices=rows[i].copy(), best_score=np.float64(s[i]))
    return state

  return AskTellStrategy(init=init, ask=ask, tell=tell)


# SPOS top-k evolution --------------------------------------------------------


class TopKState(NamedTuple):
  """Pytree state of :func:`topk_evolution`: the best ``K`` seen so far (first ``size`` rows)."""

  key: np.ndarray         # raw uint32 bits of the run's jax.random key
  asks: np.ndarray        # () int64: how many times ask ran (the key's draw counter)
  top: np.ndarray          # [K, D] int32
  top_fitness: np.ndarray  # [K] float64
  size: np.ndarray         # () int32
  generation: np.ndarray   # () int32
  pending: np.ndarray      # [P, D] int32
  num_pending: np.ndarray  # () int32: rows of pending asked since the last tell


def topk_evolution(space: SearchSpace, *, population_size: int = 50, top_k: int = 10,
                   crossover_fraction: float = 0.5, constraints: Constraints | Any = None,
                   max_duplicate_tries: int = 20) -> AskTellStrategy:
  """SPOS evolution (Guo et al. 2020): generations of crossovers and mutations of the top-k.

  Generation 0 is ``population_size`` random architectures. Every later
  generation has ``round(crossover_fraction * population_size)`` crossovers
  of two distinct top-k parents and mutations of one top-k parent for the
  rest; the top-k is kept over *all* candidates told so far. Children equal
  to a top-k member or to another child of the same generation are redrawn
  (up to ``max_duplicate_tries`` times), as SPOS skips already-seen
  architectures.

  Args:
    space: any search space with ``mutate`` and ``crossover``.
    population_size: candidates per generation (= per ``ask``); 50 in SPOS.
    top_k: parents kept; 10 in SPOS.
    crossover_fraction: share of crossovers per generation; 0.5 in SPOS.
    constraints: hard constraints; violating children are redrawn.

  Returns:
    ``AskTellStrategy``; ``tell`` takes scores ``[n]`` to maximise.

  Example:
    >>> strategy = topk_evolution(NB201Space(), population_size=50, top_k=10)  # doctest: +SKIP
  """
  if population_size < 1 or top_k < 1:
    raise ValueError(f"population_size and top_k must be >= 1, got {population_size}, {top_k}")
  if not 0.0 <= crossover_fraction <= 1.0:
    raise ValueError(f"crossover_fraction must be in [0, 1], got {crossover_fraction}")
  constraints = as_constraints(constraints)
  d = len(space.index_sizes())
  n_cross = int(round(crossover_fraction * population_size))

  def init(key: jax.Array) -> TopKState:
    return TopKState(key=host_key(key), asks=np.int64(0), top=np.zeros((top_k, d), np.int32),
                     top_fitness=np.full((top_k,), -np.inf), size=np.int32(0),
                     generation=np.int32(0), pending=np.zeros((population_size, d), np.int32),
                     num_pending=np.asarray(0, np.int32))

  def ask(state: TopKState) -> tuple[TopKState, dict[str, np.ndarray]]:
    rng = key_rng(state.key, state.asks)
    size = int(state.size)
    parents = [space.decode_indices(r) for r in state.top[:size]]
    seen = {tuple(r) for r in state.top[:size].tolist()}

    def random_one():
      return space.random_genotype(rng)

    def crossed():
      i, j = rng.choice(size, size=2, replace=False)
      return space.crossover(parents[i], parents[j], rng)

    def mutated():
      return space.mutate(parents[rng.integers(size)], rng)

    genotypes = []
    for c in range(population_size):
      if size == 0:
        kinds = (random_one,)
      elif c < n_cross and size >= 2:
        kinds = (crossed, random_one)
      else:
        kinds = (mutated, random_one)
      for _ in range(max_duplicate_tries):
        g = constraints.sample(*kinds, what="random samples" if len(kinds) == 1 else
                               "candidates (offspring, then random samples)")
        k = tuple(space.encode_indices(g).tolist())
        if k not in seen:
          break
      seen.add(k)
      genotypes.append(g)
    pending, num_pending = pending_rows(space, genotypes, state.pending.shape[0])
    state = state._replace(asks=np.int64(state.asks + 1), pending=pending,
                           num_pending=num_pending)
    return state, encode_batch(space, genotypes)

  def tell(state: TopKState, encodings: Any, scores: Any) -> TopKState:
    rows, s = told_rows(state.pending, state.num_pending, encodings, scores)
    size = int(state.size)
    pool = np.concatenate([state.top[:size], rows])
    fit = np.concatenate([state.top_fitness[:size], _nan_to_worst(s)])
    # Unique architectures only; earlier entries win ties so the order is stable.
    _, first = np.unique(pool, axis=0, return_index=True)
    first = np.sort(first)
    order = first[np.argsort(-fit[first], kind="stable")][:top_k]
    top = np.zeros((top_k, d), np.int32)
    top_fitness = np.full((top_k,), -np.inf)
    top[:order.size], top_fitness[:order.size] = pool[order], fit[order]
    return state._replace(top=top, top_fitness=top_fitness, size=np.int32(order.size),
                          generation=np.int32(state.generation + 1),
                          num_pending=np.asarray(0, np.int32))

  return AskTellStrategy(init=init, ask=ask, tell=tell)


# NSGA-II ---------------------------------------------------------------------


class NSGA2State(NamedTuple):
  """Pytree state of :func:`nsga2`: the parent population (first ``size`` rows).

  ``values`` are the objectives as told (higher is better in every column);
  ``rank`` and ``crowding`` come from the last environmental selection.
  """

  key: np.ndarray         # raw uint32 bits of the run's jax.random key
  asks: np.ndarray        # () int64: how many times ask ran (the key's draw counter)
  population: np.ndarray  # [P, D] int32
  values: np.ndarray      # [P, M] float64
  rank: np.ndarray        # [P] int32
  crowding: np.ndarray    # [P] float64
  size: np.ndarray
  generation: np.ndarray
  pending: np.ndarray
  num_pending: np.ndarray  # () int32: rows of pending asked since the last tell


def nsga2(space: SearchSpace, num_objectives: int = 2, *, population_size: int = 50,
          crossover_prob: float = 0.9,
          constraints: Constraints | Any = None,
          max_duplicate_tries: int = 20) -> AskTellStrategy:
  """NSGA-II (Deb et al. 2002) over ``num_objectives`` objectives, all maximised.

  Generation 0 is random. Each child: two binary tournaments (lower front
  rank wins, then larger crowding distance) pick parents; with probability
  ``crossover_prob`` they are crossed (``space.crossover``), and the result
  is mutated once (``space.mutate``). ``tell`` merges parents and children,
  drops duplicate architectures, and keeps ``population_size`` by front rank,
  then crowding distance.

  Args:
    space: any search space with ``mutate`` and ``crossover``.
    num_objectives: ``M``, the columns ``tell`` receives. Name them, and say
      which are minimised, in ``run_ask_tell(objectives=...)``, e.g.
      ``[("accuracy", "max"), ("latency_ms", "min")]``; it negates the
      minimised columns before ``tell``.
    population_size: candidates per generation (= per ``ask``).
    crossover_prob: probability that a child is a crossover before mutation.
    constraints: hard constraints; violating children are redrawn.

  Returns:
    ``AskTellStrategy``; ``tell`` takes ``[n, M]`` values, higher is better
    (``[n]`` when ``M == 1``).

  Example:
    >>> strategy = nsga2(NB201Space(), num_objectives=2)  # doctest: +SKIP
    >>> result = run_ask_tell(strategy, space, scorer, key=jax.random.key(0), num_evals=500,
    ...                       objectives=[("acc", "max"), ("flops", "min")])  # doctest: +SKIP
  """
  m = int(num_objectives)
  if m < 1:
    raise ValueError(f"num_objectives must be >= 1, got {num_objectives}")
  if population_size < 2:
    raise ValueError(f"population_size must be >= 2, got {population_size}")
  if not 0.0 <= crossover_prob <= 1.0:
    raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob}")
  constraints = as_constraints(constraints)
  d = len(space.index_sizes())
  p = population_size

  def init(key: jax.Array) -> NSGA2State:
    return NSGA2State(key=host_key(key), asks=np.int64(0), population=np.zeros((p, d), np.int32),
                      values=np.full((p, m), np.nan), rank=np.zeros((p,), np.int32),
                      crowding=np.zeros((p,)), size=np.int32(0), generation=np.int32(0),
                      pending=np.zeros((p, d), np.int32), num_pending=np.asarray(0, np.int32))

  def ask(state: NSGA2State) -> tuple[NSGA2State, dict[str, np.ndarray]]:
    rng = key_rng(state.key, state.asks)
    size = int(state.size)
    parents = [space.decode_indices(r) for r in state.population[:size]]
    seen = {tuple(r) for r in state.population[:size].tolist()}

    def tournament() -> int:
      i, j = rng.integers(size, size=2)
      ri, rj = state.rank[i], state.rank[j]
      if ri != rj:
        return int(i if ri < rj else j)
      return int(i if state.crowding[i] >= state.crowding[j] else j)

    def random_one():
      return space.random_genotype(rng)

    def offspring():
      g = parents[tournament()]
      if size >= 2 and rng.random() < crossover_prob:
        g = space.crossover(g, parents[tournament()], rng)
      return space.mutate(g, rng)

    genotypes = []
    for _ in range(p):
      kinds = (offspring, random_one) if size else (random_one,)
      for _ in range(max_duplicate_tries):
        g = constraints.sample(*kinds, what="random samples" if len(kinds) == 1 else
                               "candidates (offspring, then random samples)")
        k = tuple(space.encode_indices(g).tolist())
        if k not in seen:
          break
      seen.add(k)
      genotypes.append(g)
    pending, num_pending = pending_rows(space, genotypes, state.pending.shape[0])
    state = state._replace(asks=np.int64(state.asks + 1), pending=pending,
                           num_pending=num_pending)
    return state, encode_batch(space, genotypes)

  def tell(state: NSGA2State, encodings: Any, scores: Any) -> NSGA2State:
    if m == 1 and np.ndim(scores) == 1:
      scores = np.asarray(scores)[:, None]
    rows, s = told_rows(state.pending, state.num_pending, encodings, scores, columns=m)
    s = _nan_to_worst(s)
    size = int(state.size)
    pool = np.concatenate([state.population[:size], rows])
    vals = np.concatenate([state.values[:size], s])
    _, first = np.unique(pool, axis=0, return_index=True)
    first = np.sort(first)
    pool, vals = pool[first], vals[first]
    rank = fast_non_dominated_sort(vals)
    crowd = np.zeros(len(pool))
    for r in np.unique(rank):
      members = np.flatnonzero(rank == r)
      crowd[members] = crowding_distance(vals[members])
    order = np.lexsort((-crowd, rank))[:p]
    n = order.size
    population = np.zeros((p, d), np.int32)
    values = np.full((p, m), np.nan)
    rank_out = np.zeros((p,), np.int32)
    crowd_out = np.zeros((p,))
    population[:n], values[:n], rank_out[:n], crowd_out[:n] = (pool[order], vals[order],
                                                               rank[order], crowd[order])
    # Ranks of the kept members among themselves, for the next tournaments.
    rank_out[:n] = fast_non_dominated_sort(values[:n])
    return state._replace(population=population, values=values, rank=rank_out,
                          crowding=crowd_out, size=np.int32(n),
                          generation=np.int32(state.generation + 1),
                          num_pending=np.asarray(0, np.int32))

  return AskTellStrategy(init=init, ask=ask, tell=tell)
