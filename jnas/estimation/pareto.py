"""Pareto fronts over named objectives: dominance, sorting, crowding, JSON and a plot.

Each objective has a name and a direction (``"max"`` or ``"min"``). Internally
everything is turned into maximisation by flipping the sign of the ``"min"``
columns, so one dominance test serves every mix of directions.

Example:
  >>> objs = [Objective("accuracy", "max"), Objective("latency_ms", "min")]
  >>> values = np.array([[0.9, 5.0], [0.8, 2.0], [0.7, 6.0]])
  >>> non_dominated_mask(values, objs).tolist()
  [True, True, False]
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Sequence

import numpy as np


class Objective(NamedTuple):
  """A named objective and whether larger (``"max"``) or smaller (``"min"``) is better.

  Example:
    >>> Objective("latency_ms", "min").sign
    -1.0
  """

  name: str
  mode: str = "max"

  @property
  def sign(self) -> float:
    return 1.0 if self.mode == "max" else -1.0


def as_objectives(objectives: Sequence[Objective | str | tuple[str, str]]) -> tuple[Objective, ...]:
  """Normalises ``["accuracy", ("latency", "min")]`` to ``Objective`` tuples; checks modes.

  Example:
    >>> as_objectives(["acc", ("lat", "min")])
    (Objective(name='acc', mode='max'), Objective(name='lat', mode='min'))
  """
  if isinstance(objectives, (str, Objective)):
    objectives = [objectives]
  out = []
  for o in objectives:
    o = Objective(o) if isinstance(o, str) else Objective(*o)
    if o.mode not in ("max", "min"):
      raise ValueError(f"objective {o.name!r} has mode {o.mode!r}; use 'max' or 'min'")
    out.append(o)
  if not out:
    raise ValueError("at least one objective is needed")
  names = [o.name for o in out]
  if len(set(names)) != len(names):
    raise ValueError(f"objective names must be distinct, got {names}")
  return tuple(out)


def _maximised(values: Any, objectives: Sequence[Objective] | None) -> np.ndarray:
  v = np.asarray(values, np.float64)
  if v.ndim == 1:
    v = v[:, None]
  if v.ndim != 2:
    raise ValueError(f"objective values must be [points, objectives], got shape {v.shape}")
  if objectives is None:
    return v
  objectives = as_objectives(objectives)
  if len(objectives) != v.shape[1]:
    raise ValueError(f"values have {v.shape[1]} objective columns, but {len(objectives)} "
                     f"objectives are named")
  return v * np.asarray([o.sign for o in objectives])


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Whether maximised points ``a`` dominate ``b`` (no worse anywhere, better somewhere).

  Broadcasts over leading axes.

  Example:
    >>> bool(dominates(np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    True
  """
  return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


def non_dominated_mask(values: Any, objectives: Sequence[Objective] | None = None) -> np.ndarray:
  """Boolean mask of the points that no other point dominates.

  ``values`` is ``[n, m]``; ``objectives`` gives each column's direction
  (all maximised when omitted). Duplicated points are all kept.

  Example:
    >>> non_dominated_mask([[1, 1], [2, 0], [0, 0]]).tolist()
    [True, True, False]
  """
  v = _maximised(values, objectives)
  if v.shape[1] == 2 and np.isfinite(v).all():
    return _non_dominated_2d(v)
  # [i, j]: does j dominate i? Fine for the few thousand points a search sees.
  dom = dominates(v[None, :, :], v[:, None, :])
  return ~dom.any(axis=1)


def _non_dominated_2d(v: np.ndarray) -> np.ndarray:
  # O(n log n) for two maximised columns, the same mask as the pairwise test (a whole table's
  # 15,625 points took 8 s that way). Sorted by the first column, a point survives when it
  # has its group's best second value (equal first values) and beats every group ahead of it.
  n = v.shape[0]
  if n == 0:
    return np.zeros(0, bool)
  order = np.lexsort((-v[:, 1], -v[:, 0]))
  a, b = v[order, 0], v[order, 1]
  new_group = np.r_[True, a[1:] != a[:-1]]
  group = np.cumsum(new_group) - 1
  best = b[new_group]  # each group's largest second value comes first
  ahead = np.r_[-np.inf, np.maximum.accumulate(best)[:-1]]
  keep = (b == best[group]) & (b > ahead[group])
  mask = np.empty(n, bool)
  mask[order] = keep
  return mask


def fast_non_dominated_sort(values: Any, objectives: Sequence[Objective] | None = None
                            ) -> np.ndarray:
  """Front rank of every point (0 = non-dominated), as in NSGA-II (Deb et al. 2002).

  Example:
    >>> fast_non_dominated_sort([[1, 1], [2, 0], [0, 0], [-1, -1]]).tolist()
    [0, 0, 1, 2]
  """
  v = _maximised(values, objectives)
  n = v.shape[0]
  dom = dominates(v[:, None, :], v[None, :, :])  # [i, j]: i dominates j
  count = dom.sum(axis=0)  # how many points dominate j
  rank = np.full(n, -1, np.int32)
  front = np.flatnonzero(count == 0)
  r = 0
  while front.size:
    rank[front] = r
    count = count - dom[front].sum(axis=0)
    count[rank >= 0] = -1  # already placed
    front = np.flatnonzero(count == 0)
    r += 1
  return rank


def crowding_distance(values: Any, objectives: Sequence[Objective] | None = None) -> np.ndarray:
  """NSGA-II crowding distance within one front (boundary points get ``inf``).

  Example:
    >>> crowding_distance([[0, 2], [1, 1], [2, 0]]).tolist()
    [inf, 2.0, inf]
  """
  v = _maximised(values, objectives)
  n, m = v.shape
  dist = np.zeros(n)
  if n <= 2:
    return np.full(n, np.inf)
  for k in range(m):
    order = np.argsort(v[:, k], kind="stable")
    lo, hi = v[order[0], k], v[order[-1], k]
    dist[order[0]] = dist[order[-1]] = np.inf
    if hi > lo:
      dist[order[1:-1]] += (v[order[2:], k] - v[order[:-2], k]) / (hi - lo)
  return dist


def hypervolume_2d(values: Any, reference: Sequence[float],
                   objectives: Sequence[Objective | str | tuple[str, str]] | None = None) -> float:
  """Area dominated by ``values`` ``[n, 2]`` and bounded by ``reference`` (exact, two objectives).

  Each column's direction comes from ``objectives`` (both maximised when
  omitted). Points no better than the reference in both columns add nothing,
  so a reference inside the cloud (e.g. the medians) measures only the
  corner that matters. A sweep over the second objective: ``O(n log n)``.

  Example:
    >>> hypervolume_2d([[0.9, 2.0], [0.8, 1.0]], (0.5, 4.0), ["acc", ("lat", "min")])
    1.1
  """
  v = _maximised(values, objectives)
  if v.shape[1] != 2:
    raise ValueError(f"hypervolume_2d needs two objective columns, got {v.shape[1]}")
  signs = (np.ones(2) if objectives is None
           else np.asarray([o.sign for o in as_objectives(objectives)]))
  ref = np.asarray(reference, np.float64).reshape(2) * signs
  v = v[(v[:, 0] > ref[0]) & (v[:, 1] > ref[1])]
  if not len(v):
    return 0.0
  # Walk the second column from best to worst; the first column's best so
  # far is the height of the strip down to the next point (or the reference).
  v = v[np.argsort(-v[:, 1], kind="stable")]
  heights = np.maximum.accumulate(v[:, 0]) - ref[0]
  widths = v[:, 1] - np.append(v[1:, 1], ref[1])
  return float(np.sum(heights * widths))


def pareto_front(points: Sequence[dict], objectives: Sequence[Objective | str | tuple[str, str]]
                 ) -> list[dict]:
  """The non-dominated records among ``points`` (dicts holding each objective's value by name).

  Example:
    >>> pts = [{"acc": 0.9, "lat": 5.0}, {"acc": 0.8, "lat": 6.0}]
    >>> pareto_front(pts, ["acc", ("lat", "min")])
    [{'acc': 0.9, 'lat': 5.0}]
  """
  objectives = as_objectives(objectives)
  if not points:
    return []
  values = _values_of(points, objectives)
  mask = non_dominated_mask(values, objectives)
  return [p for p, keep in zip(points, mask) if keep]


def _values_of(points: Sequence[dict], objectives: Sequence[Objective]) -> np.ndarray:
  rows = []
  for i, p in enumerate(points):
    missing = [o.name for o in objectives if o.name not in p]
    if missing:
      raise ValueError(f"point {i} lacks objective {missing[0]!r} (has: {', '.join(p)})")
    rows.append([float(p[o.name]) for o in objectives])
  return np.asarray(rows, np.float64).reshape(len(points), len(objectives))


def save_pareto_json(path: str, front: Sequence[dict],
                     objectives: Sequence[Objective | str | tuple[str, str]],
                     **extra: Any) -> None:
  """Writes the non-dominated set with its named objectives as JSON.

  ``front`` is a list of records (e.g. ``{"genotype": ..., "accuracy": ...,
  "latency_ms": ...}``); they are written sorted by the first objective, best
  first, under ``"front"``, next to ``"objectives"`` (name and mode) and any
  ``extra`` fields. The file is replaced atomically.

  Example:
    >>> save_pareto_json("/tmp/front.json", [{"acc": 0.9}], ["acc"])  # doctest: +SKIP
  """
  objectives = as_objectives(objectives)
  values = _values_of(front, objectives) if front else np.zeros((0, len(objectives)))
  order = np.argsort(-objectives[0].sign * values[:, 0], kind="stable") if front else []
  data = {"objectives": [{"name": o.name, "mode": o.mode} for o in objectives],
          "size": len(front), "front": [front[i] for i in order], **extra}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if hasattr(obj, "to_str"):
    return obj.to_str()
  raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def plot_pareto(path_png: str, all_points: Sequence[dict], front: Sequence[dict],
                objectives: Sequence[Objective | str | tuple[str, str]], *,
                title: str | None = None) -> None:
  """Plots every evaluated point and the front over the first two objectives (PNG).

  Uses matplotlib's Agg backend (no display needed). Evaluated points are
  grey; the front is red, joined in order of the first objective.

  Example:
    >>> plot_pareto("/tmp/front.png", history, front, ["acc", ("lat", "min")])  # doctest: +SKIP
  """
  objectives = as_objectives(objectives)
  if len(objectives) < 2:
    raise ValueError("a Pareto plot needs two objectives")
  # A bare Figure on an Agg canvas: no pyplot, so a notebook's backend and
  # figure list are left alone.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  ox, oy = objectives[0], objectives[1]
  fig = Figure(figsize=(5.5, 4.0), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  if all_points:
    v = _values_of(all_points, (ox, oy))
    ax.scatter(v[:, 0], v[:, 1], s=10, c="0.65", label=f"evaluated ({len(all_points)})")
  if front:
    f = _values_of(front, (ox, oy))
    f = f[np.argsort(f[:, 0], kind="stable")]
    ax.plot(f[:, 0], f[:, 1], c="tab:red", lw=1.0)
    ax.scatter(f[:, 0], f[:, 1], s=24, c="tab:red", label=f"Pareto front ({len(front)})")
  ax.set_xlabel(f"{ox.name} ({'higher' if ox.mode == 'max' else 'lower'} is better)")
  ax.set_ylabel(f"{oy.name} ({'higher' if oy.mode == 'max' else 'lower'} is better)")
  if title:
    ax.set_title(title)
  ax.legend(loc="best", fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path_png)), exist_ok=True)
  fig.savefig(path_png)
