"""Do a zero-cost proxy or a learned predictor as filters help REA and random search on a table?

Issue 27 item 5 (a proxy as a cheap pre-filter) and issue 28's predictor estimator.

  python benchmarks/proxy_prefilter.py --table benchmarks/results/nb201_mnist1d/table.csv \
      --budgets 60,240 --seeds 5 --out benchmarks/results/proxy_prefilter/v1

Runs ``jnas search`` (``experiments/rea_table_mnist1d.py``: REA, population 10, tournament 3)
for each strategy (``rea``, ``random``), with and without ``search.prefilter`` (``--proxy``,
default synflow, measuring only candidates in the proxy's top ``--keep`` of 1,000 random cells),
and REA with ``search.estimator=predictor`` (an MLP ensemble fitted on the measured cells,
measuring only where its upper bound reaches the best so far), at each budget of charged
training seconds, for ``--seeds`` seeds. Every table query is charged
the cell's training time; a rejected candidate costs nothing. Writes ``OUT/prefilter.json`` and
``OUT/prefilter.md``: per method and budget, the mean and standard deviation over seeds of the
found cell's table test accuracy, its regret against the table's best by validation accuracy,
and how many candidates were measured. Work directories ``--runs/...`` (default
``runs/proxy_prefilter/OUT-NAME``, outside git) are kept, so a killed run resumes (a finished
search is not run again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
CONFIG = ROOT / "experiments" / "rea_table_mnist1d.py"


def _run(table: Path, strategy: str, proxy: str, keep: float, budget: float, seed: int,
         wd: Path, predictor: bool = False) -> dict:
  from jnas import run  # noqa: PLC0415
  from jnas.config import apply_overrides, load_config  # noqa: PLC0415

  overrides = [f"search.table={table}", f"search.strategy={strategy}", f"search.budget_s={budget}",
               f"seed={seed}", "search.checkpoint_every_s=60"]
  if strategy == "random":
    overrides.append("search.strategy_settings=")
  if proxy:
    overrides += [f"search.prefilter={proxy}", f"search.prefilter_keep={keep}"]
  if predictor:
    overrides.append("search.estimator=predictor")
  return run.search(apply_overrides(load_config(str(CONFIG)), overrides), str(wd))


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--table", type=Path, default=ROOT / "benchmarks/results/nb201_mnist1d/table.csv")
  p.add_argument("--budgets", default="60,240", help="charged seconds, comma-separated")
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--proxy", default="synflow")
  p.add_argument("--keep", type=float, default=0.5)
  p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/proxy_prefilter/v1")
  p.add_argument("--runs", type=Path, default=None,
                 help="work directories (default: runs/proxy_prefilter/<name of --out>)")
  args = p.parse_args(argv)
  runs = args.runs or ROOT / "runs" / "proxy_prefilter" / args.out.name
  logging.basicConfig(level=logging.WARNING)
  budgets = [float(b) for b in args.budgets.split(",")]
  methods = {"rea": ("rea", "", False), f"rea+{args.proxy}": ("rea", args.proxy, False),
             "rea+predictor": ("rea", "", True),
             "random": ("random", "", False), f"random+{args.proxy}": ("random", args.proxy, False)}
  rows = []
  for budget in budgets:
    for name, (strategy, proxy, predictor) in methods.items():
      found = []
      for seed in range(args.seeds):
        wd = runs / name / f"{budget:g}s" / f"seed_{seed}"
        s = _run(args.table.resolve(), strategy, proxy, args.keep, budget, seed, wd, predictor)
        found.append((s["test_acc"], s["table_best_test_acc"], s.get("measured", s["evaluated"]),
                      s["evaluated"]))
      acc = np.asarray([f[0] for f in found])
      best = found[0][1]
      rows.append({"method": name, "budget_s": budget, "seeds": args.seeds,
                   "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)),
                   "regret_mean": float(best - acc.mean()),
                   "measured_mean": float(np.mean([f[2] for f in found])),
                   "asked_mean": float(np.mean([f[3] for f in found])),
                   "test_acc": acc.tolist()})
      r = rows[-1]
      print(f"{budget:>6g} s  {name:<16} test acc {r['test_acc_mean']:.4f} +- "
            f"{r['test_acc_std']:.4f}  regret {r['regret_mean']:.4f}  measured "
            f"{r['measured_mean']:.0f} of {r['asked_mean']:.0f} asked", flush=True)
  args.out.mkdir(parents=True, exist_ok=True)
  table_name = os.path.relpath(args.table.resolve(), ROOT)
  meta = {"table": table_name, "proxy": args.proxy, "keep": args.keep,
          "command": "python benchmarks/proxy_prefilter.py " + " ".join(argv or sys.argv[1:])}
  (args.out / "prefilter.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
  lines = [f"# {args.proxy} as a pre-filter, and the predictor estimator, on {table_name}", "",
           f"`{meta['command']}`", "",
           "| budget (s) | method | test acc (mean +- sd) | regret | measured / asked |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['budget_s']:g} | {r['method']} | {r['test_acc_mean']:.4f} +- "
            f"{r['test_acc_std']:.4f} | {r['regret_mean']:.4f} | {r['measured_mean']:.0f} / "
            f"{r['asked_mean']:.0f} |" for r in rows]
  (args.out / "prefilter.md").write_text("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
