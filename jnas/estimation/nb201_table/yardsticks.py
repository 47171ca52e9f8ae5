"""The yardsticks every ranking figure on a table is read against: its noise ceiling and free baselines.

A Kendall tau between an estimator and a table means little alone. Two
figures frame it, computed on the same cells:

* **the noise ceiling**: the table's own seed-to-seed tau (one seed's test
  accuracy against another's). An estimator that reaches it ranks as well as
  a second training run does.
* **free baselines**: scores that cost nothing to compute: the network's
  weights (``params``), its multiply-adds (``flops``) and, when the caller
  passes them, zero-cost proxies. An estimator below them has not earned its
  cost.

Example:
  >>> from jnas.estimation.nb201_table import load_nb201_table, sample_cells
  >>> t = load_nb201_table("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
  >>> y = yardsticks("benchmarks/results/nb201_mnist1d/table.csv", sample_cells(t, 200))  # doctest: +SKIP
  >>> y["noise_ceiling"]["kendall_tau"], y["baselines"]["params"]["kendall_tau"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jnas.spaces.nb201 import NB201Genotype, NB201Space

__all__ = ["nb201_flops", "seed_accuracies", "yardsticks"]

_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def nb201_flops(cells: Iterable[NB201Genotype | str], *, channels: int, cells_per_stage: int,
                length: int = 40, in_channels: int = 1, num_classes: int = 10, ndim: int = 1,
                space: NB201Space | None = None) -> list[int]:
  """Floating-point operations (2 x multiply-adds) of one example through each cell's network.

  Counted analytically over what dominates: the convolutions of the stem,
  the cells (every conv edge, dead ones too, as the string builds them), the
  residual reductions, and the classifier; batch norm, ReLU and pooling are
  left out. Spatial sizes halve at each reduction (``length`` per axis at the
  input, rounded up).

  Example:
    >>> nb201_flops(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    ...              "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
    ...             channels=8, cells_per_stage=1)
    [156160, 263680]
  """
  from jnas.train.nb201_network import nb201_plan  # noqa: PLC0415 (train sits above estimation)

  space = space or NB201Space()
  size = length**ndim
  skeleton = 3**ndim * in_channels * channels * size  # the stem
  cell_sizes: list[tuple[int, int]] = []  # (channels, spatial size) of every cell
  c, n = channels, length
  for kind, c_in, c_out in nb201_plan(channels, cells_per_stage):
    if kind == "cell":
      cell_sizes.append((c, n**ndim))
    else:
      n = -(-n // 2)
      s = n**ndim
      skeleton += 3**ndim * c_in * c_out * s + 3**ndim * c_out * c_out * s + c_in * c_out * s
      c = c_out
  skeleton += c * num_classes
  out = []
  for cell in cells:
    g = space.parse(cell) if isinstance(cell, str) else cell
    macs = skeleton
    for op in g.ops:
      if op in _KERNELS:
        macs += sum(_KERNELS[op]**ndim * ch * ch * s for ch, s in cell_sizes)
    out.append(2 * int(macs))
  return out


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
               proxies: Mapping[str, Sequence[float]] | None = None,
               space: NB201Space | None = None) -> dict[str, Any]:
  """The noise ceiling and free baselines' rank correlations on ``cells`` of ``table``.

  Args:
    table: a ``table.csv`` from :func:`jnas.estimation.nb201_table.expand`
      (its ``protocol.json`` beside it gives the skeleton for ``flops``).
    cells: the cells (strings of the table) the estimator was judged on.
    proxies: optional extra baselines, ``{name: one score per cell}``.
    space: the cell space (the benchmark's by default).

  Returns:
    ``{"noise_ceiling": {kendall_tau, spearman_rho, cells, seeds} or None,
    "baselines": {name: {kendall_tau, spearman_rho, cells}}}``, every score
    ranked against the mean test accuracy of the table, as an estimator is.
    The noise ceiling is the mean over seed pairs (``None`` with one seed).

  Example:
    >>> y = yardsticks("benchmarks/results/nb201_mnist1d/table.csv", cells)  # doctest: +SKIP
  """
  from jnas.estimation.nb201_table.bench import rank_correlation  # noqa: PLC0415
  from jnas.estimation.nb201_table.canonical import nb201_params  # noqa: PLC0415

  space = space or NB201Space()
  path = Path(table)
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
  proto_path = path.parent / "protocol.json"
  proto = json.loads(proto_path.read_text()) if proto_path.exists() else {}
  channels = int(proto.get("channels", 8))
  per_stage = int(proto.get("cells_per_stage", 1))
  baselines = {
      "params": rank_correlation(
          nb201_params(cells, channels=channels, cells_per_stage=per_stage, space=space), truth),
      "flops": rank_correlation(
          nb201_flops(cells, channels=channels, cells_per_stage=per_stage, space=space), truth),
  }
  for name, scores in (proxies or {}).items():
    if len(scores) != len(cells):
      raise ValueError(f"proxy {name!r} has {len(scores)} scores for {len(cells)} cells")
    baselines[name] = rank_correlation(np.asarray(scores, np.float64), truth)
  return {"noise_ceiling": ceiling, "baselines": baselines}
