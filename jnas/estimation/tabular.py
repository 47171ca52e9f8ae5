"""A tabular benchmark: one CSV row per NAS-Bench-201 cell, queried in O(1).

A benchmark table is a CSV file with one row per NAS-Bench-201 cell: a column
holding the benchmark's architecture string
(``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|``) and
numeric columns the user names for

* the **search signal** a strategy sees (e.g. validation accuracy after 12
  epochs),
* the **reported metric** of the architecture a run returns (e.g. test accuracy
  after 200 epochs),
* the **cost** in seconds of one query (its simulated training time).

The search protocol that replays strategies on a table (Dong & Yang, ICLR
2020, section 5) is :mod:`jnas.search.tabular`.

Example:
  >>> bench = load_table("nb201.csv", arch_column="arch_str", signal_column="valid12",
  ...                    report_column="test200", cost_column="time12")  # doctest: +SKIP
  >>> bench.report.max()  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from jnas.spaces.nb201 import NB201Space

__all__ = ["TabularBenchmark", "load_table"]


@dataclasses.dataclass(frozen=True)
class TabularBenchmark:
  """A benchmark table, indexed by the NB201 integer form for O(1) queries.

  ``row_of_code[c]`` is the row of the cell whose integer form, read as a
  base-``len(ops)`` number with the first edge most significant, is ``c``
  (``-1`` when the table lacks that cell).
  """

  space: NB201Space
  arch: tuple[str, ...]
  signal: np.ndarray
  report: np.ndarray
  cost: np.ndarray
  row_of_code: np.ndarray
  radix: np.ndarray
  columns: dict[str, str]
  path: str = ""
  objective: np.ndarray | None = None  # a second column to minimise (latency, cost), if loaded

  def __len__(self) -> int:
    return len(self.arch)

  def rows(self, indices: np.ndarray) -> np.ndarray:
    """Table rows of integer forms ``[n, edges]``; ``ValueError`` for a cell not in the table.

    Example:
      >>> bench.rows(np.zeros((1, 6), np.int32))  # doctest: +SKIP
      array([0])
    """
    idx = np.asarray(indices, np.int64).reshape(-1, self.radix.shape[0])
    rows = self.row_of_code[idx @ self.radix]
    if (rows < 0).any():
      missing = idx[int(np.flatnonzero(rows < 0)[0])]
      raise ValueError(f"architecture {self.space.format(self.space.decode_indices(missing))} "
                       f"is not in the table {self.path or ''}".rstrip())
    return rows

  def best_report(self) -> float:
    """The reported metric of the row with the best search signal (the table's optimum)."""
    return float(self.report[int(np.argmax(self.signal))])


def _float(text: str, line: int, column: str, path: str) -> float:
  try:
    v = float(text)
  except ValueError:
    raise ValueError(f"{path} line {line}: column {column!r} holds {text!r}, "
                     f"not a number") from None
  if not math.isfinite(v):
    raise ValueError(f"{path} line {line}: column {column!r} holds {text!r}, not a finite number")
  return v


def load_table(path: str, *, arch_column: str, signal_column: str, report_column: str,
               cost_column: str, objective_column: str | None = None,
               space: NB201Space | None = None) -> TabularBenchmark:
  """Reads a benchmark CSV; ``ValueError`` naming the column or the line that is wrong.

  Args:
    path: the CSV file (header row, then one row per architecture).
    arch_column: column with the NB201 architecture string.
    signal_column: what a search sees (higher is better).
    report_column: what a run reports for the architecture it returns.
    cost_column: seconds one query costs (must be > 0).
    objective_column: optional second objective to minimise (a latency, a
      cost, a parameter count; must be > 0), for the multi-objective replays
      of :mod:`jnas.search.tabular_front`.
    space: the NB201 space (default: the benchmark's 4-node, 5-op cell).

  Example:
    >>> bench = load_table("t.csv", arch_column="arch", signal_column="val",
    ...                    report_column="test", cost_column="time")  # doctest: +SKIP
  """
  space = space or NB201Space()
  p = Path(path)
  if not p.exists():
    raise FileNotFoundError(f"table {path} does not exist")
  names = {"arch": arch_column, "signal": signal_column, "report": report_column,
           "cost": cost_column}
  if objective_column is not None:
    names["objective"] = objective_column
  with open(p, newline="") as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      raise ValueError(f"table {path} is empty (no header row)") from None
    for role, col in names.items():
      if col not in header:
        raise ValueError(f"table {path} has no column {col!r} (the {role} column; columns: "
                         f"{', '.join(header)})")
    pos = {role: header.index(col) for role, col in names.items()}
    need = max(pos.values()) + 1
    n_ops = len(space.ops)
    radix = n_ops ** np.arange(space.num_edges - 1, -1, -1, dtype=np.int64)
    row_of_code = np.full(n_ops ** space.num_edges, -1, np.int64)
    op_index = {op: k for k, op in enumerate(space.ops)}
    parsed: dict[str, np.ndarray] = {}  # a string seen before parses the same way
    arch, signal, report, cost, objective, line_of_row = [], [], [], [], [], []
    for row in reader:
      line = reader.line_num
      if not row or all(not c.strip() for c in row):
        continue
      if len(row) < need:
        raise ValueError(f"{path} line {line}: has {len(row)} fields, the header names "
                         f"{len(header)}")
      text = row[pos["arch"]].strip()
      idx = parsed.get(text)
      if idx is None:
        try:
          g = space.parse(text)
        except ValueError as e:
          raise ValueError(f"{path} line {line}: column {arch_column!r} does not parse as an "
                           f"NB201 architecture: {e}") from None
        idx = np.asarray([op_index[o] for o in g.ops], np.int64)
        parsed[text] = idx
      code = int(idx @ radix)
      if row_of_code[code] >= 0:
        raise ValueError(f"{path} line {line}: architecture {text} already appears on line "
                         f"{line_of_row[row_of_code[code]]}")
      c = _float(row[pos["cost"]], line, cost_column, path)
      if c <= 0:
        raise ValueError(f"{path} line {line}: column {cost_column!r} must be > 0 seconds, "
                         f"got {c}")
      if objective_column is not None:
        o = _float(row[pos["objective"]], line, objective_column, path)
        if o <= 0:
          # MnasNet's reward divides by it, and a latency or cost is never 0.
          raise ValueError(f"{path} line {line}: objective column {objective_column!r} must be "
                           f"> 0, got {o}")
        objective.append(o)
      row_of_code[code] = len(arch)
      arch.append(text)
      signal.append(_float(row[pos["signal"]], line, signal_column, path))
      report.append(_float(row[pos["report"]], line, report_column, path))
      cost.append(c)
      line_of_row.append(line)
  if not arch:
    raise ValueError(f"table {path} has a header but no rows")
  return TabularBenchmark(space, tuple(arch), np.asarray(signal), np.asarray(report),
                          np.asarray(cost), row_of_code, radix, dict(names), str(path),
                          np.asarray(objective) if objective_column is not None else None)
