"""Building the table: resumable raw results per unique cell and seed, the 15,625-row table, its summary.

``out_dir`` holds ``protocol.json`` (the protocol and its hash), ``raw.csv``
(one row per trained unique cell and seed, appended, flushed and fsynced row
by row) and, after :func:`expand`, ``table.csv``. A killed build loses at most
the row it was writing: the next :func:`build` drops a half-written last line
and skips what is done, so it ends with the rows an uninterrupted build writes
(all columns but the two times).

Example:
  >>> build("benchmarks/results/nb201_mnist1d", Protocol(), minutes=60)  # doctest: +SKIP
  >>> expand("benchmarks/results/nb201_mnist1d")  # doctest: +SKIP
  >>> summary("benchmarks/results/nb201_mnist1d/table.csv")["test_acc"]["best"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jnas.nb201_table.canonical import genotype_at, nb201_params, unique_cells
from jnas.nb201_table.train import CellTrainer, Protocol
from jnas.spaces.nb201 import NB201Space
from jnas.utils.metrics import write_json_atomic
from jnas.utils.progress import progress

__all__ = ["build", "read_raw", "work_order", "expand", "summary", "markdown", "RAW_COLUMNS"]

RAW_COLUMNS = ("canonical", "arch_str", "seed", "val_acc", "test_acc", "train_loss",
               "cpu_seconds", "wall_seconds")


def work_order(space: NB201Space | None = None, order_seed: int = 0) -> list[tuple[str, int]]:
  """``(canonical form, trained cell's position)`` of every unique cell, in a fixed shuffled order.

  A shuffled order makes any prefix of the build a uniform random sample of
  the unique cells, so a partial table already shows the spread.
  """
  groups = unique_cells(space)
  keys = sorted(groups)
  perm = np.random.default_rng(order_seed).permutation(len(keys))
  return [(keys[i], groups[keys[i]][0]) for i in perm]


def _check_protocol(out: Path, protocol: Protocol) -> None:
  path = out / "protocol.json"
  if path.exists():
    old = Protocol.from_json(json.loads(path.read_text()))
    if old.recipe() != protocol.recipe():
      diff = ", ".join(f"{k}={v!r} there, {protocol.recipe()[k]!r} here"
                       for k, v in old.recipe().items() if protocol.recipe()[k] != v)
      raise ValueError(f"{out} holds a table of protocol {old.short_hash()}, not "
                       f"{protocol.short_hash()} ({diff}); use another output folder")
  record = {**protocol.to_json(), "hash": protocol.short_hash()}
  if path.exists() and json.loads(path.read_text()) == record:
    return
  # Shard processes start together: a private temporary file per writer keeps them from racing.
  write_json_atomic(path, record)


def _append_rows(path: Path, rows: list[list[Any]]) -> None:
  """Appends ``rows`` to ``path`` and fsyncs, opening the file for each cell.

  A kill loses at most the cell in progress, and a file replaced under a
  running build (a ``git stash``/``checkout`` of the tracked CSV) is written to
  by path: a handle held for hours would keep appending to the unlinked old
  file, and its rows would be lost when the process ends.
  """
  with open(path, "a", newline="") as f:
    csv.writer(f).writerows(rows)
    f.flush()
    os.fsync(f.fileno())


def _repair_tail(path: Path) -> None:
  """Cuts a last line that a kill left without its newline (or the whole file if that was the header)."""
  if not path.exists():
    return
  data = path.read_bytes()
  if data and not data.endswith(b"\n"):
    with open(path, "r+b") as f:
      f.truncate(data.rfind(b"\n") + 1)


def _raw_files(out: Path) -> list[Path]:
  """``raw.csv`` and the shards' ``raw-*.csv`` (one per builder process), in a fixed order."""
  return sorted(p for p in [out / "raw.csv", *out.glob("raw-*.csv")] if p.exists())


def read_raw(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
  """The rows of ``raw.csv`` and any shard files ``raw-*.csv`` (numbers parsed); ``ValueError`` names a damaged line.

  Example:
    >>> rows = read_raw("benchmarks/results/nb201_mnist1d")  # doctest: +SKIP
    >>> rows[0]["canonical"], rows[0]["seed"]  # doctest: +SKIP
  """
  rows = []
  for path in _raw_files(Path(out_dir)):
    rows += _read_raw_file(path)
  return rows


def _read_raw_file(path: Path) -> list[dict[str, Any]]:
  with open(path, newline="") as f:
    lines = f.read().split("\n")
  complete = lines[:-1]  # the text after the last newline is a row a kill cut short
  if not complete:
    return []
  reader = csv.reader(complete)
  header = next(reader)
  if tuple(header) != RAW_COLUMNS:
    raise ValueError(f"{path} has columns {header}, expected {list(RAW_COLUMNS)}")
  rows = []
  for line, row in enumerate(reader, start=2):
    if len(row) != len(RAW_COLUMNS):
      raise ValueError(f"{path} line {line}: {len(row)} fields, expected {len(RAW_COLUMNS)}")
    try:
      rows.append({"canonical": row[0], "arch_str": row[1], "seed": int(row[2]),
                   **{k: float(v) for k, v in zip(RAW_COLUMNS[3:], row[3:])}})
    except ValueError:
      raise ValueError(f"{path} line {line}: a field is not a number: {row}") from None
  return rows


def build(out_dir: str | os.PathLike, protocol: Protocol, *, limit: int | None = None,
          minutes: float | None = None, order_seed: int = 0, space: NB201Space | None = None,
          trainer: CellTrainer | None = None, shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
  """Trains the unique cells of the NAS-Bench-201 space under ``protocol``, resumably.

  Work goes cell by cell in :func:`work_order`, every seed of a cell before
  the next cell, so a partial table holds complete cells: its spread and its
  seed-to-seed rank correlation can be read at any time.

  Args:
    out_dir: the table's folder (created).
    protocol: the training protocol; a folder holding another protocol's
      results is refused with ``ValueError``.
    limit: only the first ``limit`` unique cells of the order.
    minutes: start no new training after this many minutes (a clean stop).
    order_seed: the order of the cells.
    space: the cell space (the benchmark's by default).
    trainer: a :class:`CellTrainer` for ``protocol`` (built if not given).
    shard: ``(i, n)``: train only every ``n``-th cell of the order from the
      ``i``-th, into ``raw-{i}of{n}.csv``, so that ``n`` processes (one per
      core) build one table together; ``(0, 1)`` writes ``raw.csv``.

  Returns:
    ``{"trained": rows written now, "done": rows in raw.csv, "total": rows
    of the finished table, "stopped": whether minutes ran out}``.

  Example:
    >>> build("runs/nb201_table", Protocol(), limit=40)  # doctest: +SKIP
  """
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  index, count = shard
  if not 0 <= index < count:
    raise ValueError(f"shard {index} of {count} does not exist (0 <= i < n)")
  _check_protocol(out, protocol)
  path = out / ("raw.csv" if count == 1 else f"raw-{index}of{count}.csv")
  _repair_tail(path)
  done = {(r["canonical"], r["seed"]) for r in read_raw(out)}
  space = space or NB201Space()
  order = work_order(space, order_seed)
  if limit is not None:
    order = order[:limit]
  total = len(order) * len(protocol.seeds)
  # Each cell with the seeds it still lacks; a shard takes every n-th cell.
  todo = [(key, pos, seeds) for key, pos in order[index::count]
          if (seeds := [s for s in protocol.seeds if (key, s) not in done])]
  deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
  stopped, trained = False, 0
  if todo:
    if not path.exists() or path.stat().st_size == 0:
      _append_rows(path, [RAW_COLUMNS])
    with progress(total=sum(len(t[2]) for t in todo), desc="nb201 table", unit="run") as bar:
      for key, pos, seeds in todo:
        if deadline is not None and time.monotonic() > deadline:
          stopped = True
          break
        if trainer is None:  # built here, so that a stop before any run costs nothing
          trainer = CellTrainer(protocol, space=space)
        g = genotype_at(pos, space)
        cell = space.encode_indices(g)
        if protocol.vmap_seeds:
          results = trainer.train_seeds(cell, seeds)
        else:
          results = [trainer.train(cell, seed) for seed in seeds]
        _append_rows(path, [[key, space.format(g), seed] + [
            f"{r[k]:.6g}" if k == "train_loss" else
            f"{r[k]:.3f}" if k.endswith("seconds") else f"{r[k]:.6f}" for k in RAW_COLUMNS[3:]]
            for seed, r in zip(seeds, results)])
        trained += len(seeds)
        bar.update(len(seeds))
        bar.set_postfix(test_acc=round(results[0]["test_acc"], 3),
                        s=round(results[0]["wall_seconds"], 2))
  return {"trained": trained, "done": len(done) + trained, "total": total, "stopped": stopped}


def expand(out_dir: str | os.PathLike, *, space: NB201Space | None = None) -> Path:
  """Writes ``table.csv``: one row per NAS-Bench-201 string whose unique cell has results.

  Columns: ``arch_str``, ``canonical``, ``val_acc_s{k}`` and ``test_acc_s{k}``
  per seed (empty where missing), their means ``val_acc`` and ``test_acc``,
  ``train_seconds`` (mean CPU seconds of the trained cell: the cost column)
  and ``params`` (the string's own
  :class:`~jnas.train.nb201_network.NB201Network`). It loads with
  ``load_table(path, arch_column="arch_str", signal_column="val_acc",
  report_column="test_acc", cost_column="train_seconds")``.

  Example:
    >>> expand("benchmarks/results/nb201_mnist1d")  # doctest: +SKIP
    PosixPath('benchmarks/results/nb201_mnist1d/table.csv')
  """
  out = Path(out_dir)
  protocol = Protocol.from_json(json.loads((out / "protocol.json").read_text()))
  space = space or NB201Space()
  results: dict[str, dict[int, dict[str, Any]]] = {}
  for r in read_raw(out):
    results.setdefault(r["canonical"], {})[r["seed"]] = r
  seeds = sorted(set(protocol.seeds) | {s for by in results.values() for s in by})
  groups = unique_cells(space)
  members = sorted((n, key) for key, ns in groups.items() if key in results for n in ns)
  strings = [space.format(genotype_at(n, space)) for n, _ in members]
  params = nb201_params(strings, channels=protocol.channels,
                        cells_per_stage=protocol.cells_per_stage, space=space)
  header = (["arch_str", "canonical"] + [f"{m}_s{s}" for s in seeds for m in ("val_acc", "test_acc")]
            + ["val_acc", "test_acc", "train_seconds", "params"])
  path, tmp = out / "table.csv", out / "table.csv.tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for (n, key), arch, n_params in zip(members, strings, params):
      by = results[key]
      row = [arch, key]
      for s in seeds:
        row += [f"{by[s]['val_acc']:.4f}", f"{by[s]['test_acc']:.4f}"] if s in by else ["", ""]
      row += [f"{np.mean([r[m] for r in by.values()]):.4f}" for m in ("val_acc", "test_acc")]
      row += [f"{np.mean([r['cpu_seconds'] for r in by.values()]):.3f}", n_params]
      w.writerow(row)
  os.replace(tmp, path)
  return path


def _read_table(path: str | os.PathLike) -> list[dict[str, str]]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def summary(table: str | os.PathLike) -> dict[str, Any]:
  """Spread and seed-to-seed agreement of a ``table.csv``.

  ``best``/``median``/``worst`` of the mean test (and validation) accuracy
  are over the table's strings (what a search over strings meets; cells with
  many equivalent strings, such as pooling-only ones, weigh more),
  ``median_unique`` over unique cells; Kendall's
  tau and Spearman's rho between the first two seeds are over unique cells
  having both (counting each once, since copies of a cell agree trivially).

  Example:
    >>> s = summary("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
    >>> s["rank_correlation"]["test_acc"]["kendall_tau"]  # doctest: +SKIP
  """
  from scipy import stats  # noqa: PLC0415 (scipy comes with scikit-learn; only summaries need it)

  rows = _read_table(table)
  if not rows:
    raise ValueError(f"table {table} has no rows")
  seeds = sorted(int(c.rsplit("_s", 1)[1]) for c in rows[0] if c.startswith("test_acc_s"))
  out: dict[str, Any] = {"table": str(table), "strings": len(rows),
                         "unique_cells": len({r["canonical"] for r in rows}), "seeds": seeds}
  cells = {r["canonical"]: r for r in rows}.values()
  for metric in ("test_acc", "val_acc"):
    v = np.asarray([float(r[metric]) for r in rows])
    order = np.argsort(-v, kind="stable")
    out[metric] = {"best": float(v[order[0]]), "best_arch": rows[order[0]]["arch_str"],
                   "median": float(np.median(v)), "worst": float(v[order[-1]]),
                   "worst_arch": rows[order[-1]]["arch_str"], "mean": float(v.mean()),
                   "median_unique": float(np.median([float(r[metric]) for r in cells])),
                   "iqr_unique": float(np.subtract(*np.percentile(
                       [float(r[metric]) for r in cells], [75, 25])))}
  out["train_seconds_mean"] = float(np.mean([float(r["train_seconds"]) for r in rows]))
  corr: dict[str, Any] = {}
  if len(seeds) >= 2:
    a, b = seeds[:2]
    for metric in ("test_acc", "val_acc"):
      pairs = [(float(r[f"{metric}_s{a}"]), float(r[f"{metric}_s{b}"])) for r in cells
               if r[f"{metric}_s{a}"] and r[f"{metric}_s{b}"]]
      if len(pairs) >= 3:
        x, y = np.asarray(pairs).T
        corr[metric] = {"cells": len(pairs), "seeds": [a, b],
                        "kendall_tau": _finite(stats.kendalltau(x, y)[0]),
                        "spearman_rho": _finite(stats.spearmanr(x, y)[0]),
                        "mean_abs_diff": float(np.mean(np.abs(x - y)))}
  out["rank_correlation"] = corr
  # Every pair of seeds, and their mean: with three or more seeds one pair says little.
  pairs_out: dict[str, Any] = {}
  for metric in ("test_acc", "val_acc"):
    taus = []
    for i, a in enumerate(seeds):
      for b in seeds[i + 1:]:
        pairs = [(float(r[f"{metric}_s{a}"]), float(r[f"{metric}_s{b}"])) for r in cells
                 if r[f"{metric}_s{a}"] and r[f"{metric}_s{b}"]]
        if len(pairs) >= 3:
          x, y = np.asarray(pairs).T
          taus.append({"seeds": [a, b], "cells": len(pairs),
                       "kendall_tau": _finite(stats.kendalltau(x, y)[0]),
                       "spearman_rho": _finite(stats.spearmanr(x, y)[0])})
    if taus:
      ok = [t["kendall_tau"] for t in taus if t["kendall_tau"] is not None]
      pairs_out[metric] = {"pairs": taus, "mean_kendall_tau": float(np.mean(ok)) if ok else None}
  out["seed_pairs"] = pairs_out
  return out


def _finite(v: float) -> float | None:
  return float(v) if math.isfinite(v) else None


def markdown(s: dict[str, Any]) -> str:
  """:func:`summary`'s dict as a short Markdown block."""
  lines = [f"{s['strings']} strings, {s['unique_cells']} unique cells, seeds {s['seeds']}, "
           f"mean cost {s['train_seconds_mean']:.2f} CPU s per cell and seed", "",
           "| metric | best | median (strings) | median (unique cells) | worst | best cell |",
           "|---|---|---|---|---|---|"]
  for m in ("test_acc", "val_acc"):
    d = s[m]
    lines.append(f"| {m} | {100 * d['best']:.1f} % | {100 * d['median']:.1f} % | "
                 f"{100 * d['median_unique']:.1f} % | {100 * d['worst']:.1f} % | "
                 f"`{d['best_arch']}` |")
  iqr = s["test_acc"].get("iqr_unique")
  if iqr is not None:
    lines.append(f"\ninterquartile range of test accuracy over unique cells: {100 * iqr:.1f} points")
  for m, d in s.get("seed_pairs", {}).items():
    if d["mean_kendall_tau"] is not None and len(d["pairs"]) > 1:
      lines.append(f"\n{m}: mean Kendall tau over {len(d['pairs'])} seed pairs "
                   f"{d['mean_kendall_tau']:.3f}")
  for m, d in s["rank_correlation"].items():
    lines.append(f"\nseed {d['seeds'][0]} vs {d['seeds'][1]} ({m}, {d['cells']} unique cells): "
                 f"Kendall tau {d['kendall_tau']:.3f}, Spearman rho {d['spearman_rho']:.3f}, "
                 f"mean |difference| {100 * d['mean_abs_diff']:.1f} points")
  return "\n".join(lines)
