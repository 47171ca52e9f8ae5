"""Pictures of a search's work directory (PNG, matplotlib Agg; no display needed).

``plot_workdir(DIR)`` (the ``jnas plot DIR`` command) draws what the directory
holds, for a finished or a still running search:

* ``alpha_normal.png``, ``alpha_reduce.png``: the softmax of alpha over epochs,
  one panel per edge (from ``alpha_history.npz``);
* ``cell_normal.png``, ``cell_reduce.png``: the derived cell as a graph (from
  ``genotype.json``, or the latest epoch's genotype in ``metrics.jsonl`` while
  the search runs); with Graphviz's ``dot`` installed also ``cell_*.dot.png``;
* ``learning_curves.png``: losses and accuracies per epoch (``metrics.jsonl``);
* ``pareto.png``: the Pareto front, when the directory has a ``pareto.json``
  (written by multi-objective searches, see :mod:`jnas.estimation.pareto`).

``plot_workdir(FILE.json)`` (``jnas plot FILE.json``) takes the result of a
multi-objective table replay (``jnas tabular --objective ... --out FILE.json``)
and draws ``FILE_front.png``: found fronts against the table's true front
(:func:`plot_tabular_front`).

Figures are bare ``matplotlib.figure.Figure`` objects on an Agg canvas, not
pyplot, so a notebook's backend and open figures are left alone.

Example:
  >>> made, skipped = plot_workdir("runs/darts_mnist1d")   # doctest: +SKIP
  >>> sorted(p.name for p in made)                           # doctest: +SKIP
  ['alpha_normal.png', 'alpha_reduce.png', 'cell_normal.png', 'cell_reduce.png', 'learning_curves.png']
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from jnas.utils.metrics import read_metrics

__all__ = ["plot_alpha_history", "plot_cell", "plot_learning_curves", "plot_pareto_file",
           "plot_tabular_front", "plot_workdir", "latest_genotype"]


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp.png")
  fig.savefig(tmp)
  os.replace(tmp, path)  # a viewer never sees a half-written picture
  return path


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------
# alpha over epochs
# ---------------------------------------------------------------------------


def plot_alpha_history(history_npz: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
  """``alpha_<cell>.png`` per cell type: softmax(alpha) of every edge over epochs.

  Reads the ``alpha_history.npz`` that ``jnas.run.search`` writes after every
  epoch (``epoch``, ``primitives``, ``edges``, ``alpha_<cell>`` of shape
  ``[epochs, edges, ops]``).

  Example:
    >>> plot_alpha_history("runs/x/alpha_history.npz", "runs/x/plots")  # doctest: +SKIP
  """
  made = []
  with np.load(history_npz) as h:
    epochs = h["epoch"]
    primitives = [str(p) for p in h["primitives"]]
    edges = h["edges"].tolist() if "edges" in h else None
    edge_labels = [str(t) for t in h["edge_labels"]] if "edge_labels" in h else None
    cells = {k[len("alpha_"):]: h[k] for k in h.files if k.startswith("alpha_")}
  from matplotlib import colormaps

  colors = colormaps["tab10"]
  for cell, alpha in sorted(cells.items()):
    probs = _softmax(alpha.astype(np.float64))  # [epochs, edges, ops]
    n_edges = probs.shape[1]
    cols = min(n_edges, 5)
    rows = math.ceil(n_edges / cols)
    fig = _figure(2.6 * cols + 1.8, 2.0 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for e in range(rows * cols):
      ax = axes[e // cols][e % cols]
      if e >= n_edges:
        ax.axis("off")
        continue
      for o, name in enumerate(primitives):
        ax.plot(epochs, probs[:, e, o], color=colors(o % 10), lw=1.3, label=name,
                marker="." if len(epochs) < 15 else None)
      if edge_labels is not None:
        title = edge_labels[e]
      elif edges:
        title = f"node {edges[e][0]} <- {_input_name(edges[e][1])}"
      else:
        title = f"edge {e}"
      ax.set_title(title, fontsize=8)
      ax.tick_params(labelsize=7)
      ax.ticklabel_format(axis="y", useOffset=False)
      ax.grid(alpha=0.3)
    for ax in axes[-1]:
      ax.set_xlabel("epoch", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"softmax(alpha), {cell} cell", fontsize=10)
    # Fixed margins: tight_layout over many panels costs seconds per figure.
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.7 / width, bottom=0.55 / height,
                        top=1 - 0.65 / height, wspace=0.25, hspace=0.45)
    made.append(_save(fig, Path(out_dir) / f"alpha_{cell}.png"))
  return made


def _input_name(i: int) -> str:
  return {0: "c_{k-2}", 1: "c_{k-1}"}.get(int(i), str(int(i) - 2))


# ---------------------------------------------------------------------------
# the derived cell
# ---------------------------------------------------------------------------


def latest_genotype(workdir: str | os.PathLike) -> dict | None:
  """The run's genotype JSON: ``genotype.json``, else the newest one in ``metrics.jsonl``.

  Example:
    >>> latest_genotype("/nonexistent") is None
    True
  """
  path = Path(workdir) / "genotype.json"
  if path.exists():
    return json.loads(path.read_text())
  for record in reversed(read_metrics(str(workdir))):
    if isinstance(record.get("genotype"), str):
      try:
        return json.loads(record["genotype"])
      except json.JSONDecodeError:
        continue
  return None


def _cell_edges(genotype: dict, cell: str, inputs_per_node: int = 2
                ) -> tuple[list[tuple[int, int, str]], list[int], int]:
  """``(input_state, node_state, op)`` edges, the concatenated states, the node count."""
  pairs = genotype[cell]
  nodes = len(pairs) // inputs_per_node
  edges = [(int(inp), 2 + k // inputs_per_node, str(op)) for k, (op, inp) in enumerate(pairs)]
  concat = [int(c) for c in genotype.get(f"{cell}_concat", range(2, 2 + nodes))]
  return edges, concat, nodes


def _state_label(s: int) -> str:
  return {0: "c_{k-2}", 1: "c_{k-1}"}.get(s, str(s - 2))


def plot_cell(genotype: dict, cell: str, out_png: str | os.PathLike) -> Path:
  """Draws one cell of a DARTS-style genotype as a graph (matplotlib).

  Inputs ``c_{k-2}``, ``c_{k-1}`` on the left, intermediate nodes in the
  middle, the output ``c_{k}`` (concatenation) on the right; every kept edge
  is labelled with its operation.

  Example:
    >>> g = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [2]}
    >>> plot_cell(g, "normal", "/tmp/cell.png").name
    'cell.png'
  """
  from matplotlib.patches import FancyArrowPatch

  edges, concat, nodes = _cell_edges(genotype, cell)
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  for j in range(nodes):
    # Nodes march right and alternate up/down so that edges and labels separate.
    pos[2 + j] = (1.0 + j, 0.9 if j % 2 == 0 else -0.9)
  out_state = 2 + nodes
  pos[out_state] = (1.0 + nodes, 0.0)
  fig = _figure(2.0 + 1.7 * nodes, 3.6)
  ax = fig.add_subplot()
  ax.set_axis_off()
  colors = {"none": "0.6", "skip_connect": "tab:gray", "max_pool_3x3": "tab:blue",
            "avg_pool_3x3": "tab:cyan", "sep_conv_3x3": "tab:red", "sep_conv_5x5": "tab:orange",
            "dil_conv_3x3": "tab:green", "dil_conv_5x5": "tab:olive"}
  for k, (src, dst, op) in enumerate(edges):
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    rad = 0.25 if (k % 2) else -0.25
    arrow = FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                            arrowstyle="-|>", mutation_scale=12, lw=1.4,
                            color=colors.get(op, "tab:purple"), shrinkA=16, shrinkB=16)
    ax.add_patch(arrow)
    # The label sits on the arc (a quadratic Bezier through arc3's control
    # point), before or after its middle by turns, so crossing edges' labels part.
    dx, dy = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rad * dy, (y0 + y1) / 2 - rad * dx
    t = 0.35 if k % 2 == 0 else 0.65
    lx = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1
    ly = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1
    ax.text(lx, ly, op, fontsize=7, ha="center", va="center",
            color=colors.get(op, "tab:purple"),
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
  for s in concat:
    (x0, y0), (x1, y1) = pos[s], pos[out_state]
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10,
                                 lw=0.8, ls="--", color="0.5", shrinkA=16, shrinkB=18))
  for s, (x, y) in pos.items():
    label = "c_{k}" if s == out_state else _state_label(s)
    face = "#cfe3ff" if s < 2 else ("#ffe9b3" if s == out_state else "#d9f2d9")
    ax.text(x, y, f"${label}$" if "_" in label else label, ha="center", va="center", fontsize=9,
            bbox=dict(boxstyle="round,pad=0.4", fc=face, ec="0.3"))
  ax.set_xlim(-0.5, nodes + 1.5)
  ax.set_ylim(-1.6, 1.6)
  ax.set_title(f"{cell} cell", fontsize=10)
  fig.tight_layout()
  return _save(fig, Path(out_png))


def _graphviz_cell(genotype: dict, cell: str, out_png: Path) -> Path | None:
  """The same cell through Graphviz's ``dot``, when it is installed."""
  dot = shutil.which("dot")
  if dot is None:
    return None
  edges, concat, nodes = _cell_edges(genotype, cell)
  lines = ["digraph cell {", "  rankdir=LR; node [shape=box, style=filled, fontsize=11];",
           '  s0 [label="c_{k-2}", fillcolor=lightblue]; s1 [label="c_{k-1}", fillcolor=lightblue];']
  lines += [f'  s{2 + j} [label="{j}", fillcolor=palegreen];' for j in range(nodes)]
  lines.append(f'  s{2 + nodes} [label="c_{{k}}", fillcolor=lightyellow];')
  lines += [f'  s{a} -> s{b} [label="{op}", fontsize=9];' for a, b, op in edges]
  lines += [f"  s{c} -> s{2 + nodes} [style=dashed, color=gray];" for c in concat]
  lines.append("}")
  try:
    png = subprocess.run([dot, "-Tpng"], input="\n".join(lines).encode(), capture_output=True,
                         check=True, timeout=30).stdout
  except (subprocess.SubprocessError, OSError):
    return None
  out_png.write_bytes(png)
  return out_png


# ---------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------


def plot_learning_curves(workdir: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
  """Loss and accuracy per epoch of the search (train/val) and of retraining.

  Returns ``None`` when ``metrics.jsonl`` has no epoch records yet.

  Example:
    >>> plot_learning_curves("runs/x", "runs/x/plots/learning_curves.png")  # doctest: +SKIP
  """
  records = read_metrics(str(workdir))
  search = [r for r in records if r.get("phase", "search") == "search" and "epoch" in r]
  retrain = [r for r in records if r.get("phase") == "retrain"]
  if not search and not retrain:
    return None
  fig = _figure(9.5, 3.6)
  ax_loss, ax_acc = fig.subplots(1, 2)
  series = [(search, "epoch", "train_loss", "search train", ax_loss),
            (search, "epoch", "val_loss", "search val", ax_loss),
            (search, "epoch", "train_acc", "search train", ax_acc),
            (search, "epoch", "val_acc", "search val", ax_acc),
            (retrain, "step", "retrain_loss", "retrain", ax_loss),
            (retrain, "step", "retrain_acc", "retrain", ax_acc)]
  for recs, x_key, y_key, label, ax in series:
    pts = [(r[x_key], r[y_key]) for r in recs if isinstance(r.get(y_key), (int, float))]
    if pts:
      xs, ys = zip(*pts)
      ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
  for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  fig.suptitle(f"learning curves: {Path(workdir).name}", fontsize=10)
  fig.tight_layout()
  return _save(fig, Path(out_png))


# ---------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------


def plot_pareto_file(pareto_json: str | os.PathLike, out_png: str | os.PathLike) -> Path:
  """Draws a ``pareto.json`` (as :func:`jnas.estimation.pareto.save_pareto_json` writes it).

  Every evaluated point is drawn when the file lists them (under
  ``evaluated``, ``all_points`` or ``history``), the front always.

  Example:
    >>> plot_pareto_file("runs/evo/pareto.json", "runs/evo/plots/pareto.png")  # doctest: +SKIP
  """
  from jnas.estimation.pareto import plot_pareto

  data = json.loads(Path(pareto_json).read_text())
  objectives = [(o["name"], o["mode"]) for o in data["objectives"]]
  points: list[Any] = []
  for key in ("evaluated", "all_points", "history"):
    if isinstance(data.get(key), list):
      points = [p for p in data[key] if isinstance(p, dict)]
      break
  plot_pareto(str(out_png), points, data["front"], objectives,
              title=f"Pareto front: {Path(pareto_json).parent.name}")
  return Path(out_png)


def _staircase(ax, front: list[dict], ref: dict, **style) -> None:
  # A front as the boundary of the area it dominates (report up, objective
  # down), closed at the reference objective, so the picture is the hypervolume.
  # Points outside the reference corner add no area and are not drawn.
  pts = sorted((p["objective"], p["report"]) for p in front
               if p["objective"] < ref["objective"] and p["report"] > ref["report"])
  if not pts:
    return
  best = np.maximum.accumulate([y for _, y in pts]).tolist()
  xs = [pts[0][0]] + [x for x, _ in pts] + [ref["objective"]]
  ys = [ref["report"]] + best + [best[-1]]
  ax.step(xs, ys, where="post", **style)


def plot_tabular_front(result_json: str | os.PathLike, out_png: str | os.PathLike) -> Path:
  """Draws a multi-objective table replay: its runs' fronts against the table's true front.

  Shows the true front (black), the fronts of the runs with the median, best
  and worst hypervolume ratio, every point the median run kept, and the
  reference point (the table's medians) from which the ratios are measured.

  Example:
    >>> plot_tabular_front("nsga2.json", "nsga2_front.png")  # doctest: +SKIP
  """
  data = json.loads(Path(result_json).read_text())
  if not isinstance(data, dict) or not {"per_run", "true_front", "reference"} <= set(data):
    raise ValueError(f"{result_json} is not a multi-objective replay result "
                     f"(jnas tabular --objective ... --out FILE.json)")
  runs = data["per_run"]
  ref = data["reference"]
  order = np.argsort([r["hv_ratio"] for r in runs], kind="stable")
  fig = _figure(6.0, 4.4)
  ax = fig.add_subplot()
  _staircase(ax, data["true_front"], ref, c="k", lw=1.4,
             label=f"table's front ({len(data['true_front'])} cells)")
  picks = [("worst", order[0], "tab:orange", ":"), ("best", order[-1], "tab:blue", "--"),
           ("median", order[len(order) // 2], "tab:red", "-")]
  for name, i, color, ls in picks[3 - min(3, len(runs)):]:
    run = runs[int(i)]
    _staircase(ax, run["front"], ref, c=color, ls=ls, lw=1.2,
               label=f"{name} run {int(i)}: ratio {run['hv_ratio']:.3f}")
  med = runs[int(order[len(order) // 2])]["front"]
  if med:
    ax.scatter([p["objective"] for p in med], [p["report"] for p in med], s=16, c="tab:red",
               zorder=3)
  ax.axhline(ref["report"], c="0.6", ls="--", lw=0.8)
  ax.axvline(ref["objective"], c="0.6", ls="--", lw=0.8, label="reference (table medians)")
  tf = data["true_front"]
  lo_x = min([p["objective"] for p in tf] + [ref["objective"]])
  ax.set_xlim(lo_x - 0.05 * (ref["objective"] - lo_x), ref["objective"] * 1.05)
  hi_y = max(p["report"] for p in tf) if tf else ref["report"]
  ax.set_ylim(ref["report"] - 0.05 * (hi_y - ref["report"]), hi_y + 0.05 * (hi_y - ref["report"]))
  limit = data.get("max_objective")
  if limit is not None:
    ax.axvline(limit, c="tab:purple", lw=0.8, label=f"limit {limit:g}")
  ax.set_xlabel(f"{data['objective_column']} (lower is better)")
  ax.set_ylabel(f"{data['report_column']} (higher is better)")
  ax.set_title(f"{data['strategy']}: hypervolume ratio {data['hv_ratio_mean']:.3f} +- "
               f"{data['hv_ratio_std']:.3f} ({data['runs']} runs)", fontsize=9)
  ax.legend(loc="lower right", fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, Path(out_png))


# ---------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------


def plot_workdir(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None
                 ) -> tuple[list[Path], list[str]]:
  """Draws every picture the work directory has data for; ``(files made, skipped reasons)``.

  A ``.json`` file instead of a directory is a multi-objective table replay:
  its fronts are drawn into ``out_dir`` (default: the file's folder) as
  ``FILE_front.png`` (:func:`plot_tabular_front`).

  ``out_dir`` defaults to ``WORKDIR/plots``. Raises ValueError when
  ``workdir`` is not a directory.

  Example:
    >>> made, skipped = plot_workdir("runs/darts_mnist1d")   # doctest: +SKIP
  """
  wd = Path(workdir)
  if wd.is_file() and wd.suffix == ".json":
    out = Path(out_dir) if out_dir is not None else wd.parent
    return [plot_tabular_front(wd, out / f"{wd.stem}_front.png")], []
  if not wd.is_dir():
    raise ValueError(f"work directory {wd} does not exist")
  out = Path(out_dir) if out_dir is not None else wd / "plots"
  made: list[Path] = []
  skipped: list[str] = []

  history = wd / "alpha_history.npz"
  if history.exists():
    made += plot_alpha_history(history, out)
  else:
    skipped.append(f"alpha over epochs: no {history.name} (written after each search epoch)")

  genotype = latest_genotype(wd)
  if genotype is None:
    skipped.append("cell graph: no genotype.json and no genotype in metrics.jsonl yet")
  elif not all(isinstance(genotype.get(c), list) for c in ("normal", "reduce")):
    skipped.append("cell graph: the genotype is not a DARTS-style cell (normal/reduce)")
  else:
    for cell in ("normal", "reduce"):
      made.append(plot_cell(genotype, cell, out / f"cell_{cell}.png"))
      dot_png = _graphviz_cell(genotype, cell, out / f"cell_{cell}.dot.png")
      if dot_png is not None:
        made.append(dot_png)

  curves = plot_learning_curves(wd, out / "learning_curves.png")
  if curves is None:
    skipped.append("learning curves: metrics.jsonl has no epoch records yet")
  else:
    made.append(curves)

  pareto = wd / "pareto.json"
  if pareto.exists():
    made.append(plot_pareto_file(pareto, out / "pareto.png"))
  else:
    skipped.append("Pareto front: no pareto.json (only multi-objective searches write one)")
  return made, skipped
