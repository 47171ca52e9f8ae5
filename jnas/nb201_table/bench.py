"""Score a finished NAS-Bench-201 search against an exhaustive table: what ``jnas bench`` prints.

For the cell a search returned (``WORKDIR/genotype.json``): its table
accuracy, its rank among the table's unique cells, the percentile of the
space it beats and its regret to the table's best cell. For weight-sharing
searches (those that wrote ``supernet.npz``): Kendall's tau and Spearman's
rho between the table and the supernet's own scores of a fixed sample of
cells (validation accuracy with the shared weights, after recalibrating batch
norm as SPOS does) and, for gradient searches, the architecture parameters'
score of each cell (the sum over edges of ``log softmax(alpha)`` of its op).

A work directory of another space, or a table of another space or dataset, is
refused with a one-line ``ValueError``.

Example:
  >>> r = bench_workdir("runs/nb201_t", "benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
  >>> r["test_acc"], r["percentile"], r["correlation"]["shared_weights"]["kendall_tau"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jnas.spaces.nb201 import NB201Space

__all__ = ["NB201Table", "load_nb201_table", "bench_workdir", "rank_correlation",
           "sample_cells", "format_bench"]

_COLUMNS = ("arch_str", "canonical", "val_acc", "test_acc", "train_seconds")


@dataclasses.dataclass(frozen=True)
class NB201Table:
  """A table written by :func:`jnas.nb201_table.expand`, by string and by unique cell.

  ``test_acc``/``val_acc`` are the means over the table's seeds, one entry per
  string (``arch``); ``row`` maps a string to its index. ``dataset`` is the
  protocol's dataset when ``protocol.json`` lies beside the table.
  """

  path: str
  arch: tuple[str, ...]
  canonical: tuple[str, ...]
  test_acc: np.ndarray
  val_acc: np.ndarray
  train_seconds: np.ndarray
  row: dict[str, int]
  dataset: str | None

  def unique_test_acc(self) -> dict[str, float]:
    """Mean test accuracy per unique cell (its strings all hold the same figures)."""
    return {c: float(a) for c, a in zip(self.canonical, self.test_acc)}


def load_nb201_table(path: str | os.PathLike, space: NB201Space | None = None) -> NB201Table:
  """Reads an NB201 ``table.csv``; one-line ``ValueError`` if it is not one of ``space``.

  Example:
    >>> t = load_nb201_table("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
    >>> len(t.arch)  # doctest: +SKIP
    15625
  """
  space = space or NB201Space()
  p = Path(path)
  if not p.exists():
    raise FileNotFoundError(f"table {p} does not exist")
  if p.is_dir():
    raise ValueError(f"table {p} is a directory; give its table.csv")
  try:
    with open(p, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
      if missing:
        raise ValueError(f"table {p} is not a NAS-Bench-201 table: it has no column(s) "
                         f"{', '.join(missing)}")
      rows = [(reader.line_num, r) for r in reader]
  except (UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"table {p} is not a readable CSV file: {e}") from None
  if not rows:
    raise ValueError(f"table {p} has no rows")
  arch, canonical = [], []
  cols = {c: np.empty(len(rows), np.float64) for c in ("test_acc", "val_acc", "train_seconds")}
  for k, (line, r) in enumerate(rows):
    # csv fills a short row (a file cut mid-row, a lost field) with None and
    # collects extra fields under the key None: both mean the columns are off.
    if None in r or any(r[c] is None for c in _COLUMNS):
      have = len([v for key, v in r.items() if key is not None and v is not None])
      extra = len(r.get(None) or [])
      raise ValueError(f"table {p} line {line} has {have + extra} fields, the header has "
                       f"{len(reader.fieldnames)} (a row cut short or a stray comma?)")
    try:
      arch.append(space.format(space.parse(r["arch_str"].strip())))
    except ValueError as e:
      raise ValueError(f"table {p} line {line} is not a cell of this NAS-Bench-201 space "
                       f"({space.num_nodes} nodes, ops {', '.join(space.ops)}): {e}") from None
    canonical.append(r["canonical"])
    for c, out in cols.items():
      try:
        out[k] = float(r[c])
      except ValueError:
        out[k] = np.nan
      if not np.isfinite(out[k]):
        raise ValueError(f"table {p} line {line}: {c} is {r[c]!r}, not a finite number "
                         f"(a failed or unfinished training run?)")
  dataset = None
  proto = p.parent / "protocol.json"
  if proto.exists():
    try:
      dataset = json.loads(proto.read_text()).get("dataset")
    except (ValueError, AttributeError):
      raise ValueError(f"{proto} is not a JSON object (the table's protocol)") from None
  return NB201Table(path=str(p), arch=tuple(arch), canonical=tuple(canonical),
                    test_acc=cols["test_acc"], val_acc=cols["val_acc"],
                    train_seconds=cols["train_seconds"],
                    row={a: i for i, a in enumerate(arch)}, dataset=dataset)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
  """Kendall's tau-b and Spearman's rho of two score vectors (``None`` when undefined).

  Example:
    >>> rank_correlation(np.arange(5.0), np.arange(5.0))["kendall_tau"]
    1.0
  """
  from scipy import stats  # noqa: PLC0415 (scipy comes with scikit-learn)

  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return {"cells": int(len(x)), "kendall_tau": None, "spearman_rho": None}
  return {"cells": int(len(x)), "kendall_tau": float(stats.kendalltau(x, y)[0]),
          "spearman_rho": float(stats.spearmanr(x, y)[0])}


def sample_cells(table: NB201Table, n: int, seed: int = 0) -> list[str]:
  """``n`` distinct unique cells drawn uniformly (a fixed sample for a fixed seed), as strings.

  Each unique cell is represented by its first string in the table, so the
  sample does not depend on how many strings compute the same function.

  Example:
    >>> sample_cells(table, 3)  # doctest: +SKIP
    ['|nor_conv_3x3~0|+|...', ...]
  """
  first: dict[str, str] = {}
  for a, c in zip(table.arch, table.canonical):
    first.setdefault(c, a)
  keys = sorted(first)
  pick = np.random.default_rng(seed).choice(len(keys), size=min(n, len(keys)), replace=False)
  return [first[keys[i]] for i in sorted(pick)]


def cell_figures(table: NB201Table, arch: str) -> dict[str, Any]:
  """Where cell ``arch`` (an NB201 string) stands in ``table``: its accuracies, rank, percentile, regret.

  Returns ``arch``, ``canonical``, ``test_acc``, ``val_acc``, ``rank`` (1 =
  best of ``unique_cells``), ``percentile`` (of the table's strings below it),
  ``regret`` (the table's best test accuracy minus the cell's) and the table's
  best. A partial table (a build in progress) may lack the cell: its figures
  are then None.

  Example:
    >>> t = load_nb201_table("benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
    >>> cell_figures(t, "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|"
    ...              "skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")["rank"]  # doctest: +SKIP
  """
  unique = table.unique_test_acc()
  best = int(np.argmax(table.test_acc))
  i = table.row.get(arch)
  found = None if i is None else float(table.test_acc[i])
  return {
      "arch": arch, "canonical": None if i is None else table.canonical[i], "test_acc": found,
      "val_acc": None if i is None else float(table.val_acc[i]),
      "rank": None if i is None else 1 + sum(v > found for v in unique.values()),
      "unique_cells": len(unique),
      "percentile": None if i is None else float(100.0 * np.mean(table.test_acc < found)),
      "regret": None if i is None else float(table.test_acc[best] - found),
      "table_best_test_acc": float(table.test_acc[best]), "table_best_arch": table.arch[best]}


def _check_workdir(wd: Path, table: NB201Table) -> tuple[Any, NB201Space]:
  """The run's config and space; one-line ``ValueError`` when they do not fit the table."""
  import ml_collections  # noqa: PLC0415

  from jnas.search.common import build_space  # noqa: PLC0415

  path = wd / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {wd} is not a jnas search work directory")
  raw = _read_json(path)
  if not isinstance(raw, dict) or not isinstance(raw.get("space"), dict):
    raise ValueError(f"{path} is not a jnas config (no 'space' section)")
  config = ml_collections.ConfigDict(raw)
  name = config.space.get("name")
  if name != "nb201":
    raise ValueError(f"work directory {wd} searched the {name!r} space; the table {table.path} "
                     f"is of the NAS-Bench-201 space (space.name = 'nb201')")
  space = build_space(config)
  if (space.num_nodes, tuple(space.ops)) != (NB201Space().num_nodes, NB201Space().ops):
    raise ValueError(f"work directory {wd} searched an NB201 space with {space.num_nodes} nodes "
                     f"and ops {', '.join(space.ops)}; the table {table.path} has the "
                     f"benchmark's 4 nodes and ops {', '.join(NB201Space().ops)}")
  if table.dataset is not None and table.dataset != config.data.name:
    raise ValueError(f"work directory {wd} searched on {config.data.name!r}; the table "
                     f"{table.path} was trained on {table.dataset!r}")
  return config, space


def _shared_weight_scores(wd: Path, config: Any, space: NB201Space, cells: list[str]
                          ) -> np.ndarray:
  """Validation accuracy of each cell with the run's shared weights (BN recalibrated)."""
  import jax  # noqa: PLC0415

  from jnas.data import load_dataset, split_train_val  # noqa: PLC0415
  from jnas.search.common import build_supernet  # noqa: PLC0415
  from jnas.search.spos import add_spos_defaults, score_batches  # noqa: PLC0415
  from jnas.search.workdir import load_supernet  # noqa: PLC0415
  from jnas.strategies.spos import (few_shot_apply, make_population_evaluator,  # noqa: PLC0415
                                    pad_population, parse_few_shot, stack_sub_supernets)
  from jnas.supernet.functional import make_apply, split_model  # noqa: PLC0415

  config = copy.deepcopy(config)
  add_spos_defaults(config)
  ds = load_dataset(config.data.name, seed=config.data.seed)
  (xw, yw), (xv, yv) = split_train_val(ds.x_train, ds.y_train, fraction=0.5, seed=config.seed)
  # The scoring half of the search (alpha's half for gradient searches): 16 batches, the
  # same for every cell, so the sample is ranked on the same examples.
  config.evolution.val_batches = min(16, len(xv) // config.search.batch_size)
  calib_x, val_x, val_y = score_batches(config, xw, yw, xv, yv)
  split = split_model(build_supernet(config, space, ds))
  apply = make_apply(split.graphdef, single_path=True)
  params, stats = split.params, split.state
  encodings = [space.genotype_to_encoding(space.parse(c)) for c in cells]
  few_shot = parse_few_shot(config.search.get("few_shot", ""),
                            {k: np.asarray(v)[None] for k, v in encodings[0].items()}, 0)
  if few_shot is not None:
    # A few-shot search saved its sub-supernets stacked; each cell is scored in its own.
    params = stack_sub_supernets(params, few_shot.num_ops)
    stats = stack_sub_supernets(stats, few_shot.num_ops)
    apply = few_shot_apply(apply, few_shot)
  params, stats = load_supernet(wd, params, stats)
  evaluate = jax.jit(make_population_evaluator(apply))
  chunk = 50
  out = []
  for i in range(0, len(encodings), chunk):
    part = encodings[i:i + chunk]
    stacked = {k: np.stack([e[k] for e in part]) for k in part[0]}
    acc = evaluate(params, stats, pad_population(stacked, chunk), calib_x, val_x, val_y)
    out.append(np.asarray(acc["accuracy"])[:len(part)])
  return np.concatenate(out)


def _alpha_scores(wd: Path, space: NB201Space, cells: list[str]) -> np.ndarray | None:
  path = wd / "arch_params.npz"
  if not path.exists():
    return None
  with np.load(path) as f:
    alpha = np.asarray(f["cell"], np.float64)
  m = alpha.max(-1, keepdims=True)
  logp = alpha - m - np.log(np.exp(alpha - m).sum(-1, keepdims=True))
  edges = np.arange(space.num_edges)
  return np.asarray([logp[edges, space.encode_indices(space.parse(c))].sum() for c in cells])


def _read_json(path: Path) -> Any:
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); the run's files are damaged") from None


def _check_npz(path: Path) -> None:
  """Refuses a ``.npz`` that cannot be read whole (truncated, overwritten), before any work.

  ``np.load`` opens lazily, so a damaged archive would fail only after the
  supernet and the data are built; this reads every array once now.
  """
  import zipfile  # noqa: PLC0415

  try:
    with np.load(path) as f:
      for name in f.files:
        f[name]
  except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
    raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); it is truncated or "
                     f"damaged: rerun the search in a new --workdir, or pass --sample 0") from None


def bench_workdir(workdir: str | os.PathLike, table: str | os.PathLike | NB201Table, *,
                  sample: int = 200, sample_seed: int = 0,
                  yardsticks: bool = True) -> dict[str, Any]:
  """Scores the search in ``workdir`` on ``table`` (see the module docstring for the figures).

  Args:
    workdir: a finished ``jnas search`` work directory on the NB201 space.
    table: a ``table.csv`` path (or a loaded :class:`NB201Table`).
    sample: unique cells in the fixed sample for the rank correlations
      (0 skips them).
    sample_seed: which sample (the same seed gives the same cells for every run).
    yardsticks: beside the correlations, the table's noise ceiling and the
      free baselines' taus on the same cells
      (:func:`jnas.nb201_table.yardsticks.yardsticks`, cached beside
      the table after the first call), under ``"yardsticks"``.

  Example:
    >>> r = bench_workdir("runs/x", "benchmarks/results/nb201_mnist1d/table.csv")  # doctest: +SKIP
    >>> print(format_bench(r))  # doctest: +SKIP
  """
  if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
    raise ValueError(f"sample={sample!r} must be an integer >= 0 (0: no rank correlations)")
  wd = Path(workdir)
  if not wd.is_dir():
    raise FileNotFoundError(f"work directory {wd} does not exist" if not wd.exists()
                            else f"{wd} is not a work directory (a directory)")
  t = table if isinstance(table, NB201Table) else load_nb201_table(table)
  config, space = _check_workdir(wd, t)
  gpath = wd / "genotype.json"
  if not gpath.exists():
    raise FileNotFoundError(f"{gpath} does not exist: the search in {wd} has not finished")
  try:
    arch = space.format(space.genotype_loads(gpath.read_text()))
  except ValueError as e:
    raise ValueError(f"{gpath}: {e}") from None
  supernet = wd / "supernet.npz"
  if sample > 0 and supernet.exists():
    n_unique = len(set(t.canonical))
    if sample > n_unique:
      raise ValueError(f"sample={sample} is more than the {n_unique} unique cells of the table "
                       f"{t.path}; ask for at most {n_unique}")
    _check_npz(supernet)
  coverage = len(t.arch) / space.num_architectures
  if arch not in t.row and coverage >= 1:
    raise ValueError(f"the found cell {arch} is not in the table {t.path}")
  summary = _read_json(wd / "summary.json") if (wd / "summary.json").exists() else {}
  sc = config.search
  out: dict[str, Any] = {
      "workdir": str(wd), "table": t.path, "strategy": sc.strategy,
      "mitigations": sc.get("mitigations", "") or "", "seed": int(config.seed),
      **cell_figures(t, arch), "table_coverage": coverage,
      "search_seconds": summary.get("search_seconds"),
      "search_epochs": summary.get("search_epochs", sc.get("epochs")),
      "correlation": {},
  }
  if sample > 0 and supernet.exists():
    cells = sample_cells(t, sample, sample_seed)
    truth = np.asarray([t.test_acc[t.row[c]] for c in cells])
    shared = _shared_weight_scores(wd, config, space, cells)
    out["correlation"]["shared_weights"] = rank_correlation(shared, truth)
    if sc.strategy != "spos":
      alpha = _alpha_scores(wd, space, cells)
      if alpha is not None:
        out["correlation"]["alpha"] = rank_correlation(alpha, truth)
    if yardsticks:
      from jnas.nb201_table.yardsticks import yardsticks as _yard  # noqa: PLC0415

      out["yardsticks"] = _yard(t.path, cells, space=space)
  return out


def format_bench(r: dict[str, Any]) -> str:
  """:func:`bench_workdir`'s result as a few lines of text.

  Example:
    >>> print(format_bench(bench_workdir("runs/x", "table.csv")))  # doctest: +SKIP
  """
  method = r["strategy"] + (f" + {r['mitigations']}" if r["mitigations"] else "")
  lines = [f"{r['workdir']}: {method}, seed {r['seed']}",
           f"found cell:     {r['arch']}"]
  if r["test_acc"] is None:
    lines.append("table test acc: the found cell is not in this partial table")
  else:
    lines += [f"table test acc: {100 * r['test_acc']:.2f} % (val {100 * r['val_acc']:.2f} %)",
              f"rank:           {r['rank']} of {r['unique_cells']} unique cells; better than "
              f"{r['percentile']:.1f} % of the space",
              f"regret:         {100 * r['regret']:.2f} points to the table's best "
              f"({100 * r['table_best_test_acc']:.2f} %, {r['table_best_arch']})"]
  if r["table_coverage"] < 1:
    lines.append(f"note:           the table covers {100 * r['table_coverage']:.1f} % of the "
                 f"space; rank and percentile are within what it covers")
  names = {"shared_weights": "supernet scores", "alpha": "alpha scores"}
  for kind, c in r["correlation"].items():
    label = f"{names.get(kind, kind)} vs table:"
    if c["kendall_tau"] is None:
      lines.append(f"{label} undefined on {c['cells']} cells (constant scores)")
    else:
      lines.append(f"{label} Kendall tau {c['kendall_tau']:.3f}, Spearman rho "
                   f"{c['spearman_rho']:.3f} ({c['cells']} sampled cells)")
  y = r.get("yardsticks")
  if y:
    # Every tau above is read against these, on the same cells.
    ceiling = y["noise_ceiling"]
    if ceiling is not None:
      lines.append(f"  noise ceiling (seed vs seed of the table): Kendall tau "
                   f"{ceiling['kendall_tau']:.3f}, Spearman rho {ceiling['spearman_rho']:.3f}")
    for name, c in y["baselines"].items():
      tau = "undefined" if c["kendall_tau"] is None else f"{c['kendall_tau']:.3f}"
      rho = "undefined" if c["spearman_rho"] is None else f"{c['spearman_rho']:.3f}"
      lines.append(f"  free baseline {name + ':':<9} Kendall tau {tau}, Spearman rho {rho}")
  return "\n".join(lines)
