"""A proxy as a cheap pre-filter of a population: keep the candidates it ranks best.

:class:`jnas.estimation.candidates.ProxyFiltered` applies a proxy inside a
search (``search.prefilter``); :func:`prefilter` is the same idea for a
population in hand.

Example:
  >>> prefilter(["a", "b", "c"], np.array([0.1, 2.0, 0.5]), 2).encodings
  ['b', 'c']
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Prefiltered", "prefilter"]


# ---------------------------------------------------------------------------------------------
# A proxy as a cheap pre-filter
# ---------------------------------------------------------------------------------------------


class Prefiltered(NamedTuple):
  """What :func:`prefilter` keeps: the encodings, their rows in the input, and their scores."""

  encodings: Any
  index: np.ndarray
  scores: np.ndarray


def prefilter(encodings: Any, scores: Any, keep: int | float) -> Prefiltered:
  """Keeps the ``keep`` best-scoring candidates of a population (a proxy as a cheap filter).

  A sample-based search can ask for many candidates, score them all with a
  zero-cost proxy (milliseconds each) and pay its expensive estimator
  (training, shared weights) only for the survivors, as Abdelfattah et al.
  (ICLR 2021) warm up and filter REA and random search with synflow.

  Args:
    encodings: stacked encodings (a dict of ``[n, ...]`` arrays), an array
      with the population on axis 0, or a list.
    scores: ``[n]`` proxy scores, higher is better; NaN counts as worst.
    keep: how many to keep (an int, at most ``n``) or a fraction in ``(0, 1]``
      (rounded up, at least one).

  Returns:
    :class:`Prefiltered`: the kept encodings in the same form, best first;
    ``index``, their rows in the input (ties keep input order); their scores.

  Example:
    >>> enc = {"cell": np.eye(5)[np.array([[0] * 6, [3] * 6, [1] * 6])]}
    >>> kept = prefilter(enc, np.array([0.1, 2.0, 0.5]), 2)
    >>> kept.index.tolist(), kept.encodings["cell"].shape
    ([1, 2], (2, 6, 5))
  """
  s = np.asarray(scores, np.float64).reshape(-1)
  n = len(s)
  if isinstance(encodings, list):
    sizes = {len(encodings)}
  else:
    leaves = jax.tree.leaves(encodings)
    sizes = {len(a) for a in leaves} if leaves else {n}
  if sizes != {n}:
    raise ValueError(f"{n} scores for a population of {sorted(sizes)} candidates")
  if isinstance(keep, (bool, np.bool_)) or not isinstance(keep, (int, float, np.integer,
                                                                 np.floating)):
    raise ValueError(f"keep must be a count or a fraction, got {keep!r}")
  if isinstance(keep, (float, np.floating)):
    if not 0 < keep <= 1:
      raise ValueError(f"a fraction to keep must lie in (0, 1], got {keep}")
    count = max(1, math.ceil(keep * n))
  else:
    count = int(keep)
    if not 0 < count <= n:
      raise ValueError(f"cannot keep {count} of {n} candidates")
  order = np.argsort(-np.where(np.isnan(s), -np.inf, s), kind="stable")[:count]
  if isinstance(encodings, list):
    kept = [encodings[i] for i in order]
  else:
    kept = jax.tree.map(lambda a: np.asarray(a)[order], encodings)
  return Prefiltered(kept, order, s[order])
