"""Pareto utilities: dominance with mixed directions, sorting, crowding, JSON and PNG output."""

import json

import numpy as np
import pytest

from jnas.estimation import (Objective, as_objectives, crowding_distance, fast_non_dominated_sort,
                             non_dominated_mask, pareto_front, plot_pareto, save_pareto_json)

OBJS = (Objective("accuracy", "max"), Objective("latency_ms", "min"))


def brute_front(values, signs):
  """Indices no other point dominates, by the definition, one pair at a time."""
  v = np.asarray(values) * np.asarray(signs)
  keep = []
  for i in range(len(v)):
    if not any(np.all(v[j] >= v[i]) and np.any(v[j] > v[i]) for j in range(len(v)) if j != i):
      keep.append(i)
  return keep


def test_mask_matches_brute_force_with_mixed_directions():
  rng = np.random.default_rng(0)
  for _ in range(20):
    # Rounded values make ties and duplicates, the cases a sloppy test misses.
    v = np.round(rng.random((40, 3)), 1)
    objs = [("a", "max"), ("b", "min"), ("c", "max")]
    mask = non_dominated_mask(v, objs)
    assert np.flatnonzero(mask).tolist() == brute_front(v, [1, -1, 1])


def test_sort_ranks_are_successive_fronts():
  rng = np.random.default_rng(1)
  v = rng.random((60, 2))
  rank = fast_non_dominated_sort(v, OBJS)
  remaining = np.arange(len(v))
  for r in range(rank.max() + 1):
    front = remaining[non_dominated_mask(v[remaining], OBJS)]
    assert sorted(np.flatnonzero(rank == r).tolist()) == sorted(front.tolist())
    remaining = np.setdiff1d(remaining, front)
  assert remaining.size == 0 and rank.min() == 0


def test_crowding_distance():
  d = crowding_distance([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
  assert np.isinf(d[0]) and np.isinf(d[3])
  np.testing.assert_allclose(d[1:3], [(3 - 0) / 4 + (4 - 1) / 4, (4 - 1) / 4 + (3 - 0) / 4])
  assert np.all(np.isinf(crowding_distance([[1.0, 2.0], [2.0, 1.0]])))


def test_bad_objectives():
  with pytest.raises(ValueError, match="mode 'up'"):
    as_objectives([("acc", "up")])
  with pytest.raises(ValueError, match="distinct"):
    as_objectives(["acc", "acc"])
  with pytest.raises(ValueError, match="point 1 lacks objective 'latency_ms'"):
    pareto_front([{"accuracy": 1, "latency_ms": 2}, {"accuracy": 1}], OBJS)
  with pytest.raises(ValueError, match="3 objective columns"):
    non_dominated_mask(np.zeros((4, 3)), OBJS)


def test_json_and_png_are_written(tmp_path):
  rng = np.random.default_rng(2)
  points = [{"arch": f"a{i}", "accuracy": float(a), "latency_ms": float(l)}
            for i, (a, l) in enumerate(rng.random((50, 2)))]
  front = pareto_front(points, OBJS)
  assert 0 < len(front) < len(points)
  save_pareto_json(str(tmp_path / "front.json"), front, OBJS, strategy="test")
  data = json.loads((tmp_path / "front.json").read_text())
  assert data["objectives"] == [{"name": "accuracy", "mode": "max"},
                                {"name": "latency_ms", "mode": "min"}]
  assert data["size"] == len(front) and data["strategy"] == "test"
  accs = [p["accuracy"] for p in data["front"]]
  assert accs == sorted(accs, reverse=True)
  png = tmp_path / "sub" / "front.png"
  plot_pareto(str(png), points, front, OBJS, title="test")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_two_column_fronts_match_the_pairwise_test():
  """Two objectives take a sort-based path (a whole table in milliseconds); it gives the same
  mask as the pairwise dominance test, ties and duplicates included, and DPP-Net's front peeling
  gives the same ranks as peeling by the pairwise test, stopping once enough rows are ranked."""
  from jnas.estimation.pareto import dominates
  from jnas.strategies.progressive import _pareto_ranks

  def pairwise(v):
    return ~dominates(v[None], v[:, None]).any(1)

  def pairwise_ranks(v):  # every column minimised
    ranks, left, r = np.full(len(v), -1), np.arange(len(v)), 0
    while left.size:
      first = pairwise(-v[left])
      ranks[left[first]], left, r = r, left[~first], r + 1
    return ranks

  rng = np.random.default_rng(0)
  for t in range(600):
    n = int(rng.integers(0, 40))
    v = (rng.integers(0, int(rng.integers(1, 6)), (n, 2)).astype(float) if t % 2
         else rng.random((n, 2)))
    np.testing.assert_array_equal(non_dominated_mask(v), pairwise(v))
    np.testing.assert_array_equal(non_dominated_mask(v, [("a", "max"), ("b", "min")]),
                                  pairwise(v * [1, -1]))
    full = pairwise_ranks(v)
    np.testing.assert_array_equal(_pareto_ranks(v), full)
    k = int(rng.integers(1, 10))
    part = _pareto_ranks(v, at_least=k)
    ranked = part >= 0
    np.testing.assert_array_equal(part[ranked], full[ranked])
    assert ranked.sum() >= min(k, n) and (full[~ranked] > part.max(initial=-1)).all()
