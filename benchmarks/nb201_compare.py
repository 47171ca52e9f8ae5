"""Search strategies compared on the exhaustive NAS-Bench-201 MNIST-1D table, at equal search time.

  python benchmarks/nb201_compare.py run --budget 40 --seeds 5      # the searches (resumable)
  python benchmarks/nb201_compare.py report                         # bench every run: Markdown, JSON, PNG

``run`` searches the NAS-Bench-201 cell space on MNIST-1D with every
weight-sharing method (DARTS first and second order, GDAS, SNAS, SPOS, and
DARTS with each collapse mitigation) for ``--seeds`` seeds, each run in its own
work directory ``OUT/runs/METHOD/seed_I`` of ``experiments/nb201_table_search.py``
(so a killed comparison resumes: finished runs are kept). Equal search time:
a short calibration run per method (``OUT/calib/METHOD``, two epochs) measures
its steady epoch time (compilation excluded, checkpointing included) and SPOS's
evolution time; each method then gets ``round(budget / epoch time)`` epochs.

``report`` scores every run with :func:`jnas.estimation.nb201_table.bench`
(the found cell's table accuracy, percentile, regret; the supernet's rank
correlation with the table on a fixed sample of cells) and adds random search
and regularised evolution replayed on the table itself with the same time
budget (each query costs the table's measured training time of that cell), for
the same seeds and for 500 runs. Writes ``OUT/compare.{json,md,png}``.

The table must be complete for ``report`` (``benchmarks/nb201_mnist1d_table.py``).
Pinned to one core (``--cores``) so that timings match the table's costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

CONFIG = ROOT / "experiments" / "nb201_table_search.py"
TABLE = ROOT / "benchmarks" / "results" / "nb201_mnist1d" / "table.csv"
OUT = ROOT / "benchmarks" / "results" / "nb201_compare"

# Method name -> config overrides on experiments/nb201_table_search.py.
METHODS: dict[str, dict[str, object]] = {
    "darts1": {"search.strategy": "darts", "search.order": 1},
    "darts2": {"search.strategy": "darts", "search.order": 2},
    "gdas": {"search.strategy": "gdas"},
    "snas": {"search.strategy": "snas"},
    "spos": {"search.strategy": "spos"},
    "fairdarts": {"search.mitigations": "fairdarts"},
    "drnas": {"search.mitigations": "drnas"},
    "darts_minus": {"search.mitigations": "darts_minus"},
    "beta_decay": {"search.mitigations": "beta_decay"},
    "sdarts_rs": {"search.mitigations": "sdarts_rs"},
    "pruning": {"search.mitigations": "pruning"},
    "darts_plus": {"search.early_stop_skips": 2},
}
TABLE_METHODS = ("random", "rea")

log = logging.getLogger("nb201_compare")


def _pin(cores: int) -> None:
  if cores > 0 and hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    # The table build pins itself to the last cores; take the first ones.
    os.sched_setaffinity(0, allowed[:cores])


def method_config(method: str, seed: int, epochs: int):
  """The config of one run: the experiment, the method's overrides, seed and epochs."""
  from jnas.config import apply_overrides, load_config

  over = {**METHODS[method], "seed": seed, "search.epochs": epochs}
  return apply_overrides(load_config(str(CONFIG)), [f"{k}={v}" for k, v in over.items()])


def _records(wd: Path) -> list[dict]:
  path = wd / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calibrate(method: str, out: Path) -> dict[str, float]:
  """Seconds per steady epoch (and SPOS's evolution seconds) from a two-epoch run."""
  from jnas.run import search

  wd = out / "calib" / method
  summary = search(method_config(method, seed=100, epochs=2), str(wd))
  elapsed = [r["elapsed_s"] for r in _records(wd) if r.get("phase") == "search"]
  epoch_s = elapsed[1] - elapsed[0] if len(elapsed) >= 2 else elapsed[0]
  return {"epoch_seconds": round(epoch_s, 3),
          "evolution_seconds": float(summary.get("evolution_seconds", 0.0)),
          "first_epoch_seconds": round(elapsed[0], 3)}


def cmd_run(args) -> None:
  from jnas.run import search

  out = Path(args.out)
  plan_path = out / "plan.json"
  plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
  if plan and plan.get("budget") != args.budget:
    raise SystemExit(f"{plan_path} was made for a budget of {plan['budget']} s, not "
                     f"{args.budget}; use another --out")
  plan["budget"] = args.budget
  plan.setdefault("methods", {})
  methods = [m for m in args.methods.split(",") if m]
  for m in methods:
    if m not in METHODS:
      raise SystemExit(f"unknown method {m!r} (known: {', '.join(METHODS)})")
  for m in methods:
    if m not in plan["methods"]:
      cal = calibrate(m, out)
      spare = args.budget - cal["evolution_seconds"]
      cal["epochs"] = max(2, round(spare / cal["epoch_seconds"]))
      plan["methods"][m] = cal
      out.mkdir(parents=True, exist_ok=True)
      plan_path.write_text(json.dumps(plan, indent=2) + "\n")
      log.info("%s: %.2f s per epoch -> %d epochs", m, cal["epoch_seconds"], cal["epochs"])
    for seed in range(args.seeds):
      t = time.time()
      wd = out / "runs" / m / f"seed_{seed}"
      s = search(method_config(m, seed, plan["methods"][m]["epochs"]), str(wd))
      log.info("%s seed %d: %s in %.0f s (search %.1f s)", m, seed, s["genotype"]["arch"],
               time.time() - t, s["search_seconds"])


def cmd_report(args) -> None:
  from jnas.estimation.nb201_table.compare import report

  res = report(Path(args.out), Path(args.table), budget=None, seeds=args.seeds,
               sample=args.sample)
  print(res["markdown"])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  r = sub.add_parser("run", help="run (or resume) the searches")
  r.add_argument("--budget", type=float, default=40.0, help="search seconds per run (40)")
  r.add_argument("--methods", default=",".join(METHODS))
  rp = sub.add_parser("report", help="bench every finished run against the table")
  rp.add_argument("--table", default=str(TABLE))
  rp.add_argument("--sample", type=int, default=200,
                  help="cells scored with the shared weights for the rank correlation (200)")
  for q in (r, rp):
    q.add_argument("--out", default=str(OUT))
    q.add_argument("--seeds", type=int, default=5)
    q.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pinning)")
  args = p.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  _pin(args.cores)
  {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
  main()
