"""Random search: the baseline every comparison needs (Li & Talwalkar 2019; Bergstra & Bengio 2012).

An ask/tell strategy (see :class:`jnas.strategies.base.AskTellStrategy`):
``ask`` returns a batch of uniformly sampled architectures that satisfy the
hard constraints, as stacked encodings; ``tell`` records the best one seen.

Example:
  >>> import jax
  >>> from jnas.spaces import NB201Space
  >>> space = NB201Space()
  >>> strategy = random_search(space, batch_size=4)
  >>> state = strategy.init(jax.random.key(0))
  >>> state, enc = strategy.ask(state)
  >>> enc["cell"].shape
  (4, 6, 5)
  >>> state = strategy.tell(state, enc, np.arange(4.0))
  >>> float(state.best_score)
  3.0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jnas.spaces.base import SearchSpace
from jnas.strategies.base import AskTellStrategy
from jnas.strategies.sampling import (Constraints, as_constraints, encode_batch,
                                      host_key, key_rng, pending_rows, told_rows)


class RandomSearchState(NamedTuple):
  """Pytree state of :func:`random_search`.

  ``pending`` holds the integer forms of the last asked batch; ``best_*``
  the best told candidate (by the first score column; ``-inf`` before any).
  """

  key: np.ndarray         # raw uint32 bits of the run's jax.random key
  asks: np.ndarray        # () int64: how many times ask ran (the key's draw counter)
  num_asked: np.ndarray
  num_told: np.ndarray
  pending: np.ndarray
  num_pending: np.ndarray  # () int32: rows of pending asked since the last tell
  best_indices: np.ndarray
  best_score: np.ndarray


def random_search(space: SearchSpace, *, batch_size: int = 1,
                  constraints: Constraints | Any = None) -> AskTellStrategy:
  """Uniform random search over ``space`` under hard ``constraints``.

  Args:
    space: any :class:`~jnas.spaces.base.SearchSpace`.
    batch_size: architectures per ``ask``.
    constraints: a :class:`~jnas.strategies.sampling.Constraints`, a
      predicate on genotypes, or ``None``.

  Returns:
    ``AskTellStrategy(init, ask, tell)``. ``tell`` takes scores ``[n]``
    (higher is better) or ``[n, m]`` (the first column is tracked as best),
    for the first ``n`` asked candidates.

  Example:
    >>> strategy = random_search(NB201Space(),
    ...                          constraints=lambda g: "none" not in g.ops)  # doctest: +SKIP
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  constraints = as_constraints(constraints)
  d = len(space.index_sizes())

  def init(key: jax.Array) -> RandomSearchState:
    return RandomSearchState(key=host_key(key), asks=np.int64(0), num_asked=np.int32(0),
                             num_told=np.int32(0),
                             pending=np.zeros((batch_size, d), np.int32),
                             num_pending=np.asarray(0, np.int32),
                             best_indices=np.zeros((d,), np.int32),
                             best_score=np.float64(-np.inf))

  def ask(state: RandomSearchState) -> tuple[RandomSearchState, dict[str, np.ndarray]]:
    rng = key_rng(state.key, state.asks)
    genotypes = [constraints.sample(lambda: space.random_genotype(rng), what="random samples")
                 for _ in range(batch_size)]
    pending, num_pending = pending_rows(space, genotypes, batch_size)
    state = state._replace(asks=np.int64(state.asks + 1),
                           num_asked=np.int32(state.num_asked + batch_size),
                           pending=pending, num_pending=num_pending)
    return state, encode_batch(space, genotypes)

  def tell(state: RandomSearchState, encodings: Any, scores: Any) -> RandomSearchState:
    rows, s = told_rows(state.pending, state.num_pending, encodings, scores, columns=-1)
    state = state._replace(num_told=np.int32(state.num_told + rows.shape[0]),
                           num_pending=np.asarray(0, np.int32))
    if rows.shape[0] == 0:
      return state
    first = np.where(np.isnan(s[:, 0]), -np.inf, s[:, 0])
    i = int(np.argmax(first))
    if first[i] > state.best_score:
      state = state._replace(best_indices=rows[i].copy(), best_score=np.float64(first[i]))
    return state

  return AskTellStrategy(init=init, ask=ask, tell=tell)
