"""The yardsticks every ranking figure on a table is read against: its noise ceiling and free baselines.

A Kendall tau between an estimator and a table means little alone. Two
figures frame it, computed on the same cells:

* **the noise ceiling**: the table's own seed-to-seed tau (one seed's test
  accuracy against another's). An estimator that reaches it ranks as well as
  a second training run does. It is a conservative ceiling: estimators are
  ranked against the mean over the table's seeds, which is less noisy than one
  seed, so a good estimator can pass it (on the v2 pilot's cells #params did:
  0.64 against 0.54).
* **free baselines**: scores that cost (next to) nothing to compute: the
  network's weights (``params``), its multiply-adds (``flops``) and the
  zero-cost proxies synflow, NASWOT and snip. An estimator below them has not
  earned its cost.

Example:
  >>> from jnas.nb201_table import load_nb201_table, sample_cells
  >>> t = load_nb201_table("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
  >>> y = yardsticks("benchmarks/results/nb201_mnist1d/table.csv", sample_cells(t, 200))  # doctest: +SKIP
  >>> y["noise_ceiling"]["kendall_tau"], y["baselines"]["params"]["kendall_tau"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jnas.spaces.nb201 import NB201Space
from jnas.utils.metrics import write_json_atomic

__all__ = ["FREE_BASELINES", "seed_accuracies", "yardsticks"]

#: What ``jnas bench`` ranks beside every estimator: weights, multiply-adds and three zero-cost
#: proxies (:mod:`jnas.estimation.zero_cost`), each in the table's own skeleton. snip is the best
#: proxy measured on v1 (benchmarks/results/zero_cost), synflow and NASWOT the best published ones.
FREE_BASELINES = ("params", "flops", "synflow", "naswot", "snip")

def seed_accuracies(table: str | os.PathLike, metric: str = "test_acc"
                    ) -> dict[int, dict[str, float]]:
  """``{seed: {arch_str: accuracy}}`` from a table's per-seed columns (``test_acc_s0``, ...).

  Example:
    >>> by_seed = seed_accuracies("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
    >>> sorted(by_seed)  # doctest: +SKIP
    [0, 1]
  """
  with open(table, newline="") as f:
    reader = csv.DictReader(f)
    cols = [c for c in (reader.fieldnames or []) if c.startswith(f"{metric}_s")]
    out: dict[int, dict[str, float]] = {int(c.rsplit("_s", 1)[1]): {} for c in cols}
    for row in reader:
      for c in cols:
        if row[c]:
          out[int(c.rsplit("_s", 1)[1])][row["arch_str"]] = float(row[c])
  return out


def yardsticks(table: str | os.PathLike, cells: Sequence[str], *,
               baselines: Sequence[str] = FREE_BASELINES,
               space: NB201Space | None = None, cache: bool = True) -> dict[str, Any]:
  """The noise ceiling and free baselines' rank correlations on ``cells`` of ``table``.

  Args:
    table: a ``table.csv`` from :func:`jnas.nb201_table.expand`;
      its ``protocol.json`` beside it gives the skeleton and the data the
      baselines are computed in (the v1 skeleton, C=8, N=1, MNIST-1D, without one).
    cells: the cells (strings of the table) the estimator was judged on.
    baselines: names of :data:`jnas.estimation.zero_cost.PROXIES` to rank.
    space: the cell space (the benchmark's by default).
    cache: keep the result in ``yardsticks-<digest>.json`` beside the table
      (the digest covers the table's bytes, the cells and the baselines), so
      every ``jnas bench`` of one table pays for the proxies once.

  Returns:
    ``{"noise_ceiling": {kendall_tau, spearman_rho, cells, seeds} or None,
    "baselines": {name: {kendall_tau, spearman_rho, cells}}}``, every score
    ranked against the mean test accuracy of the table, as an estimator is.
    The noise ceiling is the mean over seed pairs (``None`` with one seed).

  Example:
    >>> y = yardsticks("benchmarks/results/nb201_mnist1d/table.csv", cells)  # doctest: +SKIP
  """
  space = space or NB201Space()
  path = Path(table)
  digest = hashlib.sha256(path.read_bytes())
  digest.update(json.dumps([list(cells), list(baselines)]).encode())
  cache_path = path.parent / f"yardsticks-{digest.hexdigest()[:16]}.json"
  if cache and cache_path.exists():
    try:
      return json.loads(cache_path.read_text())
    except ValueError:
      pass  # a damaged cache is recomputed
  out = _yardsticks(path, cells, baselines, space)
  if cache:
    try:
      write_json_atomic(cache_path, out)
    except OSError:
      pass  # a read-only table folder costs time, not the result
  return out


def _yardsticks(path: Path, cells: Sequence[str], baselines: Sequence[str], space: NB201Space
                ) -> dict[str, Any]:
  from jnas.nb201_table.bench import rank_correlation  # noqa: PLC0415
  from jnas.estimation.zero_cost import DATA_PROXIES, NB201Skeleton, ZeroCost  # noqa: PLC0415

  by_seed = seed_accuracies(path)
  mean = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      mean[row["arch_str"]] = float(row["test_acc"])
  missing = [c for c in cells if c not in mean]
  if missing:
    raise ValueError(f"{len(missing)} of the cells are not in the table {path} "
                     f"(first: {missing[0]})")
  truth = np.asarray([mean[c] for c in cells])
  seeds = sorted(by_seed)
  pairs = []
  for i, a in enumerate(seeds):
    for b in seeds[i + 1:]:
      both = [c for c in cells if c in by_seed[a] and c in by_seed[b]]
      if len(both) >= 3:
        pairs.append(rank_correlation([by_seed[a][c] for c in both],
                                      [by_seed[b][c] for c in both]))
  ceiling = None
  taus = [p["kendall_tau"] for p in pairs if p["kendall_tau"] is not None]
  if taus:
    ceiling = {"kendall_tau": float(np.mean(taus)),
               "spearman_rho": float(np.mean([p["spearman_rho"] for p in pairs
                                              if p["spearman_rho"] is not None])),
               "cells": min(p["cells"] for p in pairs), "seeds": seeds}
  out: dict[str, Any] = {"noise_ceiling": ceiling, "baselines": {}}
  if not baselines:
    return out
  proto_path = path.parent / "protocol.json"
  proto = json.loads(proto_path.read_text()) if proto_path.exists() else {}
  x = y = None
  if set(baselines) & set(DATA_PROXIES):
    from jnas.data import load_dataset  # noqa: PLC0415

    ds = load_dataset(proto.get("dataset", "mnist1d"))
    x, y = ds.x_train[:128], ds.y_train[:128]
    shape, classes = tuple(ds.input_shape), ds.num_classes
  else:
    shape, classes = (40, 1), 10
  zc = ZeroCost(NB201Skeleton(shape, classes, channels=int(proto.get("channels", 8)),
                              cells_per_stage=int(proto.get("cells_per_stage", 1))), space=space)
  for name in baselines:
    out["baselines"][name] = rank_correlation(zc.score(name, list(cells), x, y), truth)
  return out
