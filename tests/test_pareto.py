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
