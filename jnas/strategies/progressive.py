"""Progressive search with a learned predictor: PNAS (Liu et al., ECCV 2018) and DPP-Net
(Dong et al., ECCV 2018), as ask/tell strategies.

Both grow architectures **level by level** in the order of the space's integer
form (``space.index_sizes()``): for the NAS-Bench-201 cell a level is one edge,
in the benchmark's order; for the DARTS cell it is one node (op and input of
its two kept edges, PNAS's "block"), normal cell first, then reduction cell.
Level ``t`` holds *prefixes* covering the first ``t + 1`` levels.

A prefix is a real, smaller architecture: the decisions not yet made take
their **fill** value (by default the candidate named ``skip_connect`` where a
decision has one, else the first candidate; for DARTS inputs, input 0 and 1),
as a PNAS cell with ``b`` blocks simply lacks the later blocks. So a prefix can
be measured, and the predictor (an MLP ensemble over the integer form,
:mod:`jnas.estimation.predictor`) ranks prefixes by the predicted score of the
architecture they stand for.

The loop, per level:

1. expand every prefix of the beam by every value of the next decision;
2. rank the candidates: measured ones by their measured score, the others
   by the predictor trained on everything measured so far;
3. PNAS keeps the top ``beam_size``; DPP-Net keeps the Pareto-optimal
   candidates over (predicted score, device cost), front by front, up to
   ``beam_size``;
4. ``ask`` returns the kept candidates that are not measured yet (their
   filled-in architectures); ``tell`` records the scores and retrains the
   predictor.

After the last level a new pass starts from level 0 with the better-trained
predictor. Only the first pass measures every level (that is what trains the
predictor, as in PNAS); later passes rank the partial levels by prediction
alone and measure only complete architectures, and at the last level only
unmeasured ones are kept, so every pass measures something new. State is a pytree (NumPy arrays and the
predictor's weights); ``ask``/``tell`` run on the host (they train a
predictor), so they are not jitted.

Example:
  >>> from jnas.spaces.nb201 import NB201Space
  >>> space = NB201Space()
  >>> strategy = pnas(space, beam_size=4)
  >>> state = strategy.init(jax.random.key(0))
  >>> state, arch = strategy.ask(state)            # int32 [<=4, 6]: integer forms
  >>> state = strategy.tell(state, arch, np.ones(len(arch)))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from jnas.estimation.pareto import non_dominated_mask
from jnas.estimation.predictor import PredictorParams, fit_predictor, predict
from jnas.strategies.base import AskTellStrategy

__all__ = ["ProgressiveState", "pnas", "dpp_net", "default_fill", "progressive",
           "measured_front"]


class ProgressiveState(NamedTuple):
  """Pytree state of :func:`pnas` / :func:`dpp_net`.

  ``measured_x`` ``[n, steps]``, ``measured_y`` ``[n]`` and ``measured_cost``
  ``[n, c]`` hold everything told so far; ``beam`` ``[k, level]`` the kept
  prefixes of the current pass; ``pending`` the architectures of the last
  ``ask``; ``predictor`` the ensemble trained on the measurements (``None``
  before the first ``tell``).
  """

  key: jax.Array
  level: np.ndarray
  beam: np.ndarray
  pending: np.ndarray
  measured_x: np.ndarray
  measured_y: np.ndarray
  measured_cost: np.ndarray
  predictor: PredictorParams | None


def default_fill(space: Any) -> np.ndarray:
  """The value each not-yet-made decision takes: ``skip_connect`` where possible.

  For spaces whose integer form is one decision per choice point (NAS-Bench-
  201, chain spaces) that is the candidate named ``skip_connect`` if present,
  else the first one. For DARTS (``[op, input]`` per kept edge) it is
  ``skip_connect`` on inputs 0 and 1 of every node.

  Example:
    >>> from jnas.spaces.nb201 import NB201Space
    >>> default_fill(NB201Space()).tolist()
    [1, 1, 1, 1, 1, 1]
  """
  return space.index_fill()


def _pareto_ranks(values: np.ndarray, at_least: int | None = None) -> np.ndarray:
  """Front number (0 = non-dominated) of each row; every column is minimised.

  With ``at_least``, fronts are peeled only until that many rows have one; the
  rest keep -1 (a beam of ``k`` needs the first fronts holding ``k`` rows).
  """
  n = values.shape[0]
  ranks = np.full(n, -1, np.int64)
  left = np.arange(n)
  r = 0
  while left.size and (at_least is None or n - left.size < at_least):
    first = non_dominated_mask(-values[left])
    ranks[left[first]] = r
    left = left[~first]
    r += 1
  return ranks


def _spread_pick(costs: np.ndarray, k: int) -> np.ndarray:
  """``k`` indices spread evenly along the first cost (keeps both ends of a front)."""
  order = np.argsort(costs[:, 0], kind="stable")
  if k >= len(order):
    return order
  return order[np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))]


def progressive(space: Any, *, beam_size: int = 8, fill: Sequence[int] | None = None,
                select: str = "topk", cost_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                groups: Sequence[int] | None = None,
                valid_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                predictor_members: int = 5, predictor_steps: int = 300,
                predictor_hidden: int = 64, pool_size: int = 2000) -> AskTellStrategy:
  """The progressive loop shared by :func:`pnas` (``select="topk"``) and :func:`dpp_net`
  (``select="pareto"``).

  Args:
    space: a search space with an integer form (``index_sizes``,
      ``decode_indices``).
    beam_size: candidates kept (and at most measured) per level: PNAS's K.
    fill: value of each undecided decision (default :func:`default_fill`).
    select: ``"topk"`` (PNAS) or ``"pareto"`` (DPP-Net).
    cost_fn: ``cost_fn(int [n, steps]) -> [n] or [n, c]`` device costs to
      minimise (latency from a lookup table, FLOPs, params); needed by
      ``"pareto"``.
    groups: decisions added per level (default: one for NB201 and chain
      spaces; for DARTS the ``2 * inputs_per_node`` decisions of one node, a
      PNAS block: two inputs and two ops).
    valid_fn: optional ``valid_fn(int [n, steps]) -> bool [n]``: which filled
      architectures the space accepts (default: all; for DARTS, the distinct-
      inputs rule is applied automatically).
    predictor_members, predictor_steps, predictor_hidden: the ensemble.
    pool_size: when a pass finds nothing new to measure, this many random
      unmeasured architectures are ranked by the predictor instead.

  Returns:
    ``AskTellStrategy``; ``ask`` returns integer forms ``int32 [b, steps]``
    (``b <= beam_size``; ``0`` rows only when every architecture was measured),
    ``tell(state, arch, scores)`` takes scores ``[b]`` (higher is better) or
    ``[b, 1 + c]`` (score, then measured costs, kept for the final front).

  Example:
    >>> s = progressive(NB201Space(), beam_size=4)  # doctest: +SKIP
  """
  sizes = tuple(int(v) for v in space.index_sizes())
  steps = len(sizes)
  fill_v = default_fill(space) if fill is None else np.asarray(fill, np.int32)
  if fill_v.shape != (steps,) or (fill_v < 0).any() or (fill_v >= np.asarray(sizes)).any():
    raise ValueError(f"fill must give one valid value per decision ({steps}), got {fill_v}")
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  if select not in ("topk", "pareto"):
    raise ValueError(f"select must be 'topk' or 'pareto', got {select!r}")
  if select == "pareto" and cost_fn is None:
    raise ValueError("DPP-Net's Pareto selection needs a cost_fn (latency, FLOPs or params)")
  group = space.index_groups() if groups is None else [int(g) for g in groups]
  if sum(group) != steps or min(group) < 1:
    raise ValueError(f"groups must split the {steps} decisions into levels of >= 1, got {group}")
  bounds = np.concatenate([[0], np.cumsum(group)]).astype(int)
  levels = len(group)
  radix = np.cumprod((1,) + sizes[::-1])[:-1][::-1].astype(np.float64)
  valid = valid_fn or space.valid_indices

  def keys_of(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) @ radix  # exact below 2**53 (every space here)

  def costs_of(x: np.ndarray) -> np.ndarray:
    c = np.asarray(cost_fn(x), np.float64)
    return c.reshape(len(x), -1)

  def init(key: jax.Array) -> ProgressiveState:
    return ProgressiveState(key=key, level=np.int32(0), beam=np.zeros((1, 0), np.int32),
                            pending=np.zeros((0, steps), np.int32),
                            measured_x=np.zeros((0, steps), np.int32),
                            measured_y=np.zeros((0,), np.float64),
                            measured_cost=np.zeros((0, 0), np.float64), predictor=None)

  def scores_of(state: ProgressiveState, full: np.ndarray) -> np.ndarray:
    """Measured score where known, else the predictor's mean (0 before any data)."""
    pred = (predict(state.predictor, sizes, full)[0].astype(np.float64)
            if state.predictor is not None else np.zeros(len(full)))
    if len(state.measured_x):
      known = dict(zip(keys_of(state.measured_x).tolist(), state.measured_y.tolist()))
      for i, k in enumerate(keys_of(full).tolist()):
        if k in known:
          pred[i] = known[k]
    return pred

  def choose(state: ProgressiveState, score: np.ndarray, full: np.ndarray, rng) -> np.ndarray:
    k = min(beam_size, len(score))
    if state.predictor is None and len(score) > k:
      return rng.choice(len(score), size=k, replace=False)  # nothing learned yet
    if select == "topk":
      return np.argsort(-score, kind="stable")[:k]
    costs = costs_of(full)
    ranks = _pareto_ranks(np.concatenate([-score[:, None], costs], axis=1), at_least=k)
    picked: list[int] = []
    for r in range(int(ranks.max()) + 1):
      front = np.flatnonzero(ranks == r)
      need = k - len(picked)
      if need <= 0:
        break
      picked += front[_spread_pick(costs[front], need)].tolist()
    return np.asarray(picked[:k])

  def ask(state: ProgressiveState) -> tuple[ProgressiveState, np.ndarray]:
    key, sub = jax.random.split(state.key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(sub)).ravel())
    level, beam = int(state.level), state.beam
    measured = set(keys_of(state.measured_x).tolist())
    replan = False
    for _ in range(2 * levels + 1):
      if level == levels:
        # A pass is over: plan a new one with the better predictor. The first
        # pass measured every level to train the predictor (PNAS); later passes
        # rank the partial levels by prediction alone and measure only complete
        # architectures, so the budget is not spent on skip-filled cells again.
        level, beam, replan = 0, np.zeros((1, 0), np.int32), state.predictor is not None
      t = level
      lo, hi = bounds[t], bounds[t + 1]
      grid = np.stack(np.meshgrid(*[np.arange(v) for v in sizes[lo:hi]], indexing="ij"),
                      axis=-1).reshape(-1, hi - lo).astype(np.int32)
      cand = np.concatenate([np.repeat(beam, len(grid), axis=0), np.tile(grid, (len(beam), 1))],
                            axis=1)
      full = np.tile(fill_v, (len(cand), 1))
      full[:, :hi] = cand
      ok = valid(full)
      cand, full = cand[ok], full[ok]
      last = t == levels - 1
      fresh = np.asarray([k not in measured for k in keys_of(full).tolist()], bool)
      if last and fresh.any():
        cand, full = cand[fresh], full[fresh]
      if len(cand) == 0:
        level = levels
        continue
      keep = choose(state, scores_of(state, full), full, rng)
      beam, level = cand[keep], t + 1
      if replan and not last:
        continue
      new = full[keep]
      _, first = np.unique(keys_of(new), return_index=True)
      new = new[np.sort(first)]
      new = new[[k not in measured for k in keys_of(new).tolist()]]
      if len(new):
        return state._replace(key=key, level=np.int32(level), beam=beam,
                              pending=new.astype(np.int32)), new.astype(np.int32)
    # Every pass re-found measured architectures: rank a random unmeasured pool instead.
    pool = np.stack([rng.integers(0, s, pool_size) for s in sizes], axis=1).astype(np.int32)
    pool = pool[valid(pool)]
    pool = pool[[k not in measured for k in keys_of(pool).tolist()]]
    _, first = np.unique(keys_of(pool), return_index=True)
    pool = pool[np.sort(first)]
    if len(pool):
      pool = pool[choose(state, scores_of(state, pool), pool, rng)]
    return (state._replace(key=key, level=np.int32(levels), beam=np.zeros((1, 0), np.int32),
                           pending=pool), pool)

  def tell(state: ProgressiveState, arch: Any, scores: Any) -> ProgressiveState:
    x = np.asarray(arch, np.int32).reshape(-1, steps)
    s = np.asarray(scores, np.float64)
    s = s.reshape(len(x), -1) if s.size else s.reshape(0, 1)
    if s.shape[0] != x.shape[0]:
      raise ValueError(f"told {x.shape[0]} architectures with {s.shape[0]} scores")
    if len(x) == 0:
      return state
    if not np.isfinite(s[:, 0]).all():
      raise ValueError("scores must be finite (a NaN or inf would poison the predictor)")
    extra = s[:, 1:]
    old_cost = state.measured_cost
    if len(state.measured_x) == 0:
      old_cost = np.zeros((0, extra.shape[1]), np.float64)
    elif old_cost.shape[1] != extra.shape[1]:
      raise ValueError(f"told {extra.shape[1]} cost columns, earlier tells had "
                       f"{old_cost.shape[1]}")
    mx = np.concatenate([state.measured_x, x])
    my = np.concatenate([state.measured_y, s[:, 0]])
    mc = np.concatenate([old_cost, extra])
    key, sub = jax.random.split(state.key)
    predictor = fit_predictor(sub, sizes, mx, my, members=predictor_members,
                              steps=predictor_steps, hidden=predictor_hidden)
    return state._replace(key=key, measured_x=mx, measured_y=my, measured_cost=mc,
                          predictor=predictor, pending=np.zeros((0, steps), np.int32))

  return AskTellStrategy(init, ask, tell)


def pnas(space: Any, *, beam_size: int = 8, fill: Sequence[int] | None = None,
         **kwargs: Any) -> AskTellStrategy:
  """PNAS (Liu et al., ECCV 2018): grow decision by decision, measure the predicted top K.

  See :func:`progressive` for the arguments.

  Example:
    >>> s = pnas(NB201Space(), beam_size=5)  # doctest: +SKIP
  """
  return progressive(space, beam_size=beam_size, fill=fill, select="topk", **kwargs)


def dpp_net(space: Any, cost_fn: Callable[[np.ndarray], np.ndarray], *, beam_size: int = 8,
            fill: Sequence[int] | None = None, **kwargs: Any) -> AskTellStrategy:
  """DPP-Net (Dong et al., ECCV 2018): progressive search that keeps Pareto-optimal candidates.

  Candidates are kept front by front of the non-dominated sort over
  (predicted score, ``cost_fn`` costs), up to ``beam_size``, spread along the
  cost where a front has more. :func:`measured_front` gives the final front.

  Example:
    >>> lat = lambda x: (x >= 2).sum(1)  # doctest: +SKIP
    >>> s = dpp_net(NB201Space(), lat, beam_size=6)  # doctest: +SKIP
  """
  return progressive(space, beam_size=beam_size, fill=fill, select="pareto", cost_fn=cost_fn,
                     **kwargs)


def measured_front(state: ProgressiveState, cost_fn: Callable[[np.ndarray], np.ndarray] | None
                   = None) -> dict[str, np.ndarray]:
  """The measured architectures and which are non-dominated over (score up, costs down).

  Costs are the measured ones told with the scores (``[b, 1 + c]``), or else
  ``cost_fn`` of the architectures.

  Example:
    >>> front = measured_front(state)  # doctest: +SKIP
    >>> front["x"][front["mask"]]  # doctest: +SKIP
  """
  x, y, c = state.measured_x, state.measured_y, state.measured_cost
  if c.shape[1] == 0:
    if cost_fn is None:
      raise ValueError("no measured costs were told; pass cost_fn")
    c = np.asarray(cost_fn(x), np.float64).reshape(len(x), -1)
  mask = _pareto_ranks(np.concatenate([-y[:, None], c], axis=1), at_least=1) == 0
  return {"x": x, "score": y, "cost": c, "mask": mask}
