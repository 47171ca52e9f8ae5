"""Multi-objective replays on the MNIST-1D NB201 table: hypervolume ratio per strategy and objective.

  python benchmarks/multiobjective.py                       # 100 runs each, budget 40 s
  python benchmarks/multiobjective.py --runs 20 --strategies nsga2,random --objectives params
  # the seed's comparison on this machine's two latency settings (issue 30 item 4)
  python benchmarks/multiobjective.py --table benchmarks/results/nb201_latency/table.csv \
      --objectives latency_edge_ms,latency_server_ms --out benchmarks/results/multiobjective_latency

For each objective column of ``--table`` (``params`` and ``train_seconds`` of the
v1 table by default; ``benchmarks/nb201_latency_columns.py report`` writes the v1
table with two latency columns) and each strategy (``nsga2``, ``dpp_net``, ``random``,
``rea``, ``reinforce``), ``jnas.search.tabular_front.replay_front_many``
runs the strategy ``--runs`` times under the table's cost column
(``train_seconds`` per query, ``--budget`` simulated seconds) and judges each
run by the hypervolume of the front of every cell it evaluated (``test_acc``
up, the objective down) over the table's true front, from the reference point
(median ``test_acc``, median objective). Writes into ``--out`` (default
``benchmarks/results/multiobjective``): ``<objective>_<strategy>.json`` (every
run and its front), ``multiobjective.json`` and ``.md`` (hv ratio mean, std,
percentiles, queries per run) and ``fronts_<objective>.png`` (the median run
of each strategy against the true front).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jnas.estimation.tabular import load_table  # noqa: E402
from jnas.search.tabular_front import replay_front_many  # noqa: E402
from jnas.utils.metrics import write_json_atomic  # noqa: E402

TABLE = ROOT / "benchmarks/results/nb201_mnist1d/table.csv"
COLORS = {"nsga2": "tab:red", "dpp_net": "tab:purple", "random": "tab:gray", "rea": "tab:blue",
          "reinforce": "tab:green"}


def figure(objective: str, results: dict[str, dict], path: Path) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  from jnas.plot import _staircase

  fig = Figure(figsize=(8.8, 4.6), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  any_r = next(iter(results.values()))
  ref = any_r["reference"]
  _staircase(ax, any_r["true_front"], ref, c="k", lw=1.6, label="table's true front")
  for name, r in results.items():
    order = np.argsort([p["hv_ratio"] for p in r["per_run"]], kind="stable")
    run = r["per_run"][int(order[len(order) // 2])]
    _staircase(ax, run["front"], ref, c=COLORS.get(name), lw=1.1,
               label=f"{name}: median run {run['hv_ratio']:.2f} (mean {r['hv_ratio_mean']:.2f})")
  ax.axhline(ref["report"], c="0.6", ls="--", lw=0.8)
  ax.axvline(ref["objective"], c="0.6", ls="--", lw=0.8, label="reference (table medians)")
  tf = any_r["true_front"]
  # Only the corner beyond the reference counts toward the hypervolume, so zoom to it.
  corner = [p for p in tf if p["report"] > ref["report"] and p["objective"] < ref["objective"]]
  lo = min(p["objective"] for p in corner or tf)
  hi = max(p["report"] for p in corner or tf)
  ax.set_xlim(lo - 0.05 * (ref["objective"] - lo), ref["objective"] * 1.03)
  ax.set_ylim(ref["report"] - 0.03 * (hi - ref["report"]), hi + 0.03 * (hi - ref["report"]))
  ax.set_xlabel(f"{objective} (lower is better)")
  ax.set_ylabel("test_acc (higher is better)")
  ax.set_title(f"MNIST-1D NB201 table, budget {any_r['budget']:g} s, {any_r['runs']} runs each",
               fontsize=9)
  ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)  # outside: keep fronts clear
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", type=int, default=100)
  ap.add_argument("--budget", type=float, default=40.0)
  ap.add_argument("--strategies", default="nsga2,dpp_net,random,rea,reinforce")
  ap.add_argument("--objectives", default="params,train_seconds")
  ap.add_argument("--out", default=str(ROOT / "benchmarks/results/multiobjective"))
  ap.add_argument("--table", default=str(TABLE),
                  help="table CSV with arch_str, val_acc, test_acc, train_seconds and the "
                       "objectives")
  args = ap.parse_args()
  table = Path(args.table).resolve()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rows, lines = [], []
  for objective in args.objectives.split(","):
    bench = load_table(str(table), arch_column="arch_str", signal_column="val_acc",
                       report_column="test_acc", cost_column="train_seconds",
                       objective_column=objective)
    results = {}
    for name in args.strategies.split(","):
      path = out / f"{objective}_{name}.json"
      if path.exists():  # resumable: a finished pair is read back
        r = json.loads(path.read_text())
      else:
        t0 = time.time()
        r = replay_front_many(name, bench, budget=args.budget, runs=args.runs, seed=0)
        r["table"] = str(table.relative_to(ROOT)) if table.is_relative_to(ROOT) else str(table)
        write_json_atomic(str(path), r)
        print(f"  [{time.time() - t0:.0f} s]", flush=True)
      results[name] = r
      hv = np.asarray([p["hv_ratio"] for p in r["per_run"]])
      row = {"objective": objective, "strategy": name, "runs": r["runs"],
             "hv_ratio_mean": r["hv_ratio_mean"], "hv_ratio_std": r["hv_ratio_std"],
             "hv_ratio_p10_p50_p90": np.percentile(hv, [10, 50, 90]).round(3).tolist(),
             "mean_queries": r["mean_queries"],
             "mean_front_size": float(np.mean([len(p["front"]) for p in r["per_run"]])),
             "settings": r["settings"]}
      rows.append(row)
      line = (f"| {objective} | {name} | {row['hv_ratio_mean']:.3f} | {row['hv_ratio_std']:.3f} | "
              f"{' / '.join(f'{x:.2f}' for x in row['hv_ratio_p10_p50_p90'])} | "
              f"{row['mean_queries']:.1f} | {row['mean_front_size']:.1f} |")
      lines.append(line)
      print(line, flush=True)
    figure(objective, results, out / f"fronts_{objective}.png")
  cmd = "python benchmarks/multiobjective.py " + " ".join(sys.argv[1:])
  write_json_atomic(str(out / "multiobjective.json"),
                    {"command": cmd, "budget": args.budget, "runs": args.runs, "results": rows})
  head = ("| objective | strategy | hv ratio mean | std | p10 / p50 / p90 | queries per run | "
          "front size |\n|---|---|---|---|---|---|---|\n")
  (out / "multiobjective.md").write_text(f"    {cmd.strip()}\n\n" + head + "\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
