"""What every sample-based strategy shares: hard constraints, RNG from the state's key, batching.

Hard constraints are checked on each candidate *before* it is asked for, so a
scorer never sees an architecture that violates them. A candidate that
violates is rejected and a new one drawn; after a bounded number of tries
with no feasible candidate the search stops with a :class:`ConstraintError`
that names the limits and the best values seen, instead of looping forever.

Example:
  >>> from jnas.spaces import NB201Space
  >>> space = NB201Space()
  >>> convs = lambda g: {"flops": sum(op.startswith("nor_conv") for op in g.ops)}
  >>> c = Constraints(cost_fn=convs, max_flops=2)
  >>> g = c.sample(lambda: space.random_genotype(np.random.default_rng(0)))
  >>> convs(g)["flops"] <= 2
  True
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The convenience keyword arguments and the cost they limit.
_NAMED_LIMITS = {"max_flops": "flops", "max_params": "params", "max_latency": "latency"}


class ConstraintError(ValueError):
  """No candidate satisfied the hard constraints within the allowed number of tries."""


class Constraints:
  """Hard constraints on genotypes: a predicate and/or upper limits on named costs.

  Args:
    predicate: optional ``predicate(genotype) -> bool``; ``False`` rejects.
    cost_fn: ``cost_fn(genotype) -> {"flops": ..., "params": ..., ...}``;
      needed when any limit is given (FLOPs counters, parameter counts, a
      latency lookup table all fit).
    max_flops, max_params, max_latency: limits on ``cost_fn``'s ``"flops"``,
      ``"params"`` and ``"latency"`` entries (a candidate passes when its
      cost is ``<=`` the limit).
    limits: further limits on entries of ``cost_fn``: ``{name: max}`` or
      ``{name: (min, max)}`` for a range (SPOS samples within a FLOPs range);
      either end of a range may be ``None``.
    max_tries: candidates drawn per requested architecture before giving up.

  Example:
    >>> c = Constraints(lambda g: g != "bad", cost_fn=lambda g: {"flops": len(g)}, max_flops=3)
    >>> c.check("ok"), c.check("bad"), c.check("long")
    (True, False, False)
  """

  def __init__(self, predicate: Callable[[Any], bool] | None = None, *,
               cost_fn: Callable[[Any], Mapping[str, float]] | None = None,
               max_flops: float | None = None, max_params: float | None = None,
               max_latency: float | None = None, limits: Mapping[str, float] | None = None,
               max_tries: int = 1000):
    self.predicate = predicate
    self.cost_fn = cost_fn
    named = {"max_flops": max_flops, "max_params": max_params, "max_latency": max_latency}
    # name -> (lower, upper); -inf/inf where a side is open.
    self.bounds: dict[str, tuple[float, float]] = {
        _NAMED_LIMITS[k]: (-math.inf, float(v)) for k, v in named.items() if v is not None}
    for k, v in (limits or {}).items():
      lo, hi = v if isinstance(v, (tuple, list)) else (None, v)
      lo = -math.inf if lo is None else float(lo)
      hi = math.inf if hi is None else float(hi)
      if lo > hi:
        raise ValueError(f"limit on {k!r} has min {lo:g} > max {hi:g}")
      self.bounds[str(k)] = (lo, hi)
    self.limits = self.bounds  # the names limited, for messages and cost_fn checks
    if self.limits and cost_fn is None:
      raise ValueError(f"limits on {', '.join(self.limits)} need a cost_fn(genotype) -> dict")
    if max_tries < 1:
      raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    self.max_tries = int(max_tries)
    self._reset_stats()

  @property
  def active(self) -> bool:
    """Whether anything is constrained at all."""
    return self.predicate is not None or bool(self.limits)

  def _reset_stats(self) -> None:
    self._tries = 0
    self._predicate_rejects = 0
    self._smallest: dict[str, float] = {k: math.inf for k in self.limits}
    self._largest: dict[str, float] = {k: -math.inf for k in self.limits}

  def costs(self, genotype: Any) -> dict[str, float]:
    """The limited costs of ``genotype`` (empty when nothing is limited)."""
    if not self.limits:
      return {}
    got = self.cost_fn(genotype)
    missing = [k for k in self.limits if k not in got]
    if missing:
      raise ValueError(f"cost_fn returned no {missing[0]!r} (returned: {', '.join(got)}), "
                       f"but a limit on it was given")
    return {k: float(got[k]) for k in self.limits}

  def check(self, genotype: Any) -> bool:
    """Whether ``genotype`` satisfies every constraint (records what it saw, for errors)."""
    self._tries += 1
    ok = True
    for k, v in self.costs(genotype).items():
      self._smallest[k] = min(self._smallest[k], v)
      self._largest[k] = max(self._largest[k], v)
      lo, hi = self.bounds[k]
      ok &= lo <= v <= hi
    if ok and self.predicate is not None and not self.predicate(genotype):
      self._predicate_rejects += 1
      ok = False
    return bool(ok)

  def describe(self) -> str:
    """The constraints in words, e.g. ``max_flops=1e+03 and the predicate``."""
    parts = []
    for k, (lo, hi) in self.bounds.items():
      if lo == -math.inf:
        parts.append(f"max_{k}={hi:.3g}")
      elif hi == math.inf:
        parts.append(f"min_{k}={lo:.3g}")
      else:
        parts.append(f"{lo:.3g}<={k}<={hi:.3g}")
    if self.predicate is not None:
      parts.append("the predicate")
    return " and ".join(parts) or "no constraint"

  def sample(self, *proposers: Callable[[], Any], what: str = "samples") -> Any:
    """First feasible candidate from ``proposers``, each tried up to ``max_tries`` times.

    Proposers are tried in order (e.g. mutate a parent, then fall back to a
    random architecture). Raises :class:`ConstraintError` when none yields a
    feasible candidate.

    Example:
      >>> Constraints().sample(lambda: 7)
      7
    """
    if not self.active:
      return proposers[0]()
    self._reset_stats()
    for propose in proposers:
      for _ in range(self.max_tries):
        g = propose()
        if self.check(g):
          return g
    raise ConstraintError(self._failure(what))

  def _failure(self, what: str) -> str:
    msg = f"no architecture satisfies {self.describe()} after {self._tries} {what}"
    small = [f"{k}={v:.3g}" for k, v in self._smallest.items() if v > self.bounds[k][1]]
    large = [f"{k}={v:.3g}" for k, v in self._largest.items() if v < self.bounds[k][0]]
    if small:
      msg += f"; the smallest seen had {', '.join(small)}"
    if large:
      msg += f"; the largest seen had {', '.join(large)}"
    if self._predicate_rejects:
      msg += f"; {self._predicate_rejects} met the limits but failed the predicate"
    return msg


def as_constraints(constraints: Constraints | Callable[[Any], bool] | None) -> Constraints:
  """``None`` → no constraint; a bare callable → a predicate constraint.

  Example:
    >>> as_constraints(None).active
    False
  """
  if constraints is None:
    return Constraints()
  if isinstance(constraints, Constraints):
    return constraints
  if callable(constraints):
    return Constraints(constraints)
  raise ValueError(f"constraints must be a Constraints, a predicate or None, "
                   f"got {type(constraints).__name__}")


def host_key(key: jax.Array) -> np.ndarray:
  """The raw bits of a ``jax.random`` key (typed or legacy) as a host ``uint32`` array.

  Strategy states keep their key in this form: it is a plain pytree leaf, and
  drawing from it needs no device dispatch per ``ask``.

  Example:
    >>> host_key(jax.random.key(0)).dtype
    dtype('uint32')
  """
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key, np.uint32).ravel().copy()


def key_rng(key: np.ndarray, counter: int) -> np.random.Generator:
  """A NumPy generator for the ``counter``-th draw of a run keyed by ``key``.

  Host-side work (mutation, crossover, constraint checks) draws from it, so a
  strategy's whole run follows from the key in its state and how many times
  it was asked; ``(key, counter)`` pairs give independent streams
  (NumPy's ``SeedSequence`` hashes them).

  Example:
    >>> k = host_key(jax.random.key(0))
    >>> int(key_rng(k, 3).integers(100)) == int(key_rng(k, 3).integers(100))
    True
  """
  return np.random.default_rng([*np.asarray(key, np.uint32).tolist(), int(counter)])


def encode_batch(space, genotypes: Sequence[Any]) -> dict[str, np.ndarray]:
  """The encodings of ``genotypes`` stacked along a new leading axis (for ``vmap``).

  Example:
    >>> from jnas.spaces import NB201Space
    >>> s = NB201Space()
    >>> encode_batch(s, [s.random_genotype(np.random.default_rng(0))])["cell"].shape
    (1, 6, 5)
  """
  encs = [space.genotype_to_encoding(g) for g in genotypes]
  return {k: np.stack([e[k] for e in encs]) for k in encs[0]}


def decode_batch(space, indices: np.ndarray) -> list[Any]:
  """Genotypes of each row of an ``[n, decisions]`` integer matrix."""
  return [space.decode_indices(row) for row in np.asarray(indices)]


def encode_indices_batch(space, genotypes: Sequence[Any]) -> np.ndarray:
  """``[n, decisions]`` integer forms of ``genotypes``."""
  d = len(space.index_sizes())
  if not genotypes:
    return np.zeros((0, d), np.int32)
  return np.stack([space.encode_indices(g) for g in genotypes]).astype(np.int32)


def told_rows(pending: np.ndarray, num_pending: Any, encodings: Any, scores: Any,
              columns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The asked rows that ``scores`` belong to, and the scores as float64.

  ``pending[:num_pending]`` are the integer forms of the last ``ask``.
  ``tell`` may get scores for the first ``n`` of them only (a budget ran out
  mid-batch); more than were asked is an error.
  """
  s = np.asarray(scores, np.float64)
  if columns is None:
    if s.ndim == 2 and s.shape[1] == 1:
      s = s[:, 0]
    if s.ndim != 1:
      raise ValueError(f"scores must be [batch] (one value to maximise per candidate), "
                       f"got shape {s.shape}")
  elif columns == -1:  # any number of columns (random search ignores the scores' meaning)
    s = s.reshape(s.shape[0], -1) if s.ndim else s
  elif s.shape[1:] != (columns,) or s.ndim != 2:
    raise ValueError(f"scores must be [batch, {columns}] (one column per objective), "
                     f"got shape {s.shape}")
  n, asked = s.shape[0], int(num_pending)
  if n > asked:
    raise ValueError(f"told {n} scores but only {asked} candidates were asked since the last tell")
  leaves = jax.tree_util.tree_leaves(encodings)
  if leaves and np.shape(leaves[0])[0] not in (n, asked):
    raise ValueError(f"told {np.shape(leaves[0])[0]} encodings with {n} scores")
  return pending[:n], s


def pending_rows(space, genotypes: Sequence[Any], capacity: int) -> tuple[np.ndarray, np.ndarray]:
  """``(pending, num_pending)``: the integer forms padded to a fixed ``[capacity, D]``.

  A fixed shape keeps a strategy state's pytree structure the same before and
  after ``ask``, so any state restores into a target made by ``init``.
  """
  rows = encode_indices_batch(space, genotypes)
  out = np.zeros((capacity, len(space.index_sizes())), np.int32)
  out[:rows.shape[0]] = rows
  return out, np.asarray(rows.shape[0], np.int32)
