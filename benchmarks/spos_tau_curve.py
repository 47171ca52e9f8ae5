"""How well SPOS supernets rank cells against training time, one-shot and few-shot (issue 27 items 3-4).

  python benchmarks/spos_tau_curve.py run --table benchmarks/results/nb201_mnist1d_v2/table.csv \
      --minutes 1,3,10,30 --seeds 3                       # the searches (resumable)
  python benchmarks/spos_tau_curve.py report --table ...  # Kendall tau per budget: JSON, Markdown, PNG

``run`` trains SPOS supernets on the table's task (``experiments/nb201_table_search.py`` with the
table protocol's dataset and skeleton) for each budget of supernet training, for ``--seeds``
seeds, one-shot, few-shot (split on ``--split``, default edge 0 of the cell, after half the
steps: both variants take the same steps, so the same time up to the few-shot step's extra
optimizer updates, which the calibration measures) and one-shot with paths drawn per function
(``unique``: ``search.pool_sampling=unique``). Epochs per budget come from a two-epoch
calibration run of each variant (``OUT/calib``). Work directories ``OUT/runs/VARIANT/Mmin/seed_I``
are kept, so a killed run resumes.

``report --compare DIR`` draws the same curve from the single-path runs of an
``nb201_compare.py --budgets`` comparison (``spos`` and ``spos_few_shot`` at every budget, five
seeds), so the comparison's runs need not be repeated here:

  python benchmarks/spos_tau_curve.py report --table ... --compare runs/compare_v2 \
      --out benchmarks/results/spos_tau_curve/v2

``report`` scores every supernet with ``jnas bench`` on ``--sample`` cells of the table (the same
cells for all) and writes ``OUT/curve.{json,md,png}``: per variant and budget the mean and
standard deviation over seeds of the shared-weight Kendall tau and of the found cell's table
accuracy, beside the table's noise ceiling and the free baselines on those cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONFIG = ROOT / "experiments" / "nb201_table_search.py"
VARIANTS = {"one_shot": {}, "few_shot": {"search.few_shot": "cell:0", "search.few_shot_warmup": 0.5},
            "unique": {"search.pool_sampling": "unique"}}


def variant_config(table: Path, variant: str, seed: int, epochs: int, split: str):
  """The experiment on the table's dataset and skeleton, with the variant's overrides."""
  from jnas.config import apply_overrides, load_config  # noqa: PLC0415

  proto = json.loads((table.parent / "protocol.json").read_text())
  over = {"search.strategy": "spos", "seed": seed, "search.epochs": epochs,
          "data.name": proto["dataset"], "search.channels": proto["channels"],
          "search.cells_per_stage": proto["cells_per_stage"], **VARIANTS[variant]}
  if variant == "few_shot":
    over["search.few_shot"] = split
  return apply_overrides(load_config(str(CONFIG)), [f"{k}={v}" for k, v in over.items()])


def _epoch_seconds(wd: Path) -> float:
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()
             if line.strip()]
  elapsed = [r["elapsed_s"] for r in records if r.get("phase") == "search"]
  return elapsed[1] - elapsed[0] if len(elapsed) >= 2 else elapsed[0]


def cmd_run(args) -> None:
  from jnas.run import search  # noqa: PLC0415

  out, table = Path(args.out), Path(args.table)
  plan_path = out / "plan.json"
  plan = json.loads(plan_path.read_text()) if plan_path.exists() else {"epoch_seconds": {}}
  minutes = [float(m) for m in args.minutes.split(",")]
  for variant in VARIANTS:
    if variant not in plan["epoch_seconds"]:
      wd = out / "calib" / variant
      search(variant_config(table, variant, 100, 2, args.split), str(wd))
      plan["epoch_seconds"][variant] = round(_epoch_seconds(wd), 3)
      out.mkdir(parents=True, exist_ok=True)
      plan_path.write_text(json.dumps(plan, indent=2) + "\n")
  for m in minutes:
    for variant in VARIANTS:
      epochs = max(2, round(60 * m / plan["epoch_seconds"][variant]))
      for seed in range(args.seeds):
        wd = out / "runs" / variant / f"{m:g}min" / f"seed_{seed}"
        s = search(variant_config(table, variant, seed, epochs, args.split), str(wd))
        print(json.dumps({"variant": variant, "minutes": m, "seed": seed, "epochs": epochs,
                          "arch": s["genotype"]["arch"]}), flush=True)


#: nb201_compare.py's single-path methods, by this curve's variant names (same few-shot split).
COMPARE_METHODS = {"spos": "one_shot", "spos_few_shot": "few_shot", "spos_unique": "unique"}


def _runs(out: Path, compare: str | None) -> list[tuple[str, str, Path]]:
  """``(variant, "Mmin", workdir)`` of this script's runs, or of the single-path runs of an
  ``nb201_compare.py --budgets`` directory (``OUT/bB/runs/spos*/seed_I``), whose supernet
  training time is their calibrated epochs times the seconds per epoch."""
  if not compare:
    return [(wd.parts[-3], wd.parts[-2], wd) for wd in sorted((out / "runs").glob("*/*/seed_*"))]
  found = []
  for plan_path in sorted(Path(compare).glob("b*/plan.json")):
    plan = json.loads(plan_path.read_text())
    for method, variant in COMPARE_METHODS.items():
      entry = plan["methods"].get(method)
      if entry is None:
        continue
      minutes = f"{entry['epochs'] * entry['epoch_seconds'] / 60:.2g}min"
      found += [(variant, minutes, wd) for wd in sorted(
          (plan_path.parent / "runs" / method).glob("seed_*"))]
  return found


def cmd_report(args) -> None:
  import numpy as np  # noqa: PLC0415

  from nb201_compare import _bench_run, _file_id  # noqa: PLC0415

  from jnas.nb201_table import load_nb201_table  # noqa: PLC0415

  # Benched through nb201_compare.py's per-run cache (wd/bench.json), which a comparison's
  # report has usually filled already.
  table, table_id = load_nb201_table(args.table), _file_id(Path(args.table))
  out = Path(args.out)
  res: dict = {"table": args.table, "sample": args.sample, "curve": {},
               "source": args.compare or str(out)}
  for variant, minutes, wd in _runs(out, args.compare):
    if not (wd / "summary.json").exists():
      continue
    r = _bench_run(wd, table, table_id, args.sample)
    res["yardsticks"] = r.get("yardsticks")
    res["curve"].setdefault(variant, {}).setdefault(minutes, []).append(
        {"seed": wd.name, "kendall_tau": r["correlation"]["shared_weights"]["kendall_tau"],
         "test_acc": r["test_acc"], "epochs": r["search_epochs"]})
  lines = ["| variant | supernet training | runs | Kendall tau (mean +- sd) | found cell's test acc |",
           "|---|---|---|---|---|"]
  for variant, by in res["curve"].items():
    for minutes, runs in sorted(by.items(), key=lambda kv: float(kv[0][:-3])):
      tau = np.asarray([r["kendall_tau"] for r in runs if r["kendall_tau"] is not None])
      # On a partial table a found cell may be missing (None): its accuracy is then not known.
      acc = 100 * np.asarray([r["test_acc"] for r in runs if r["test_acc"] is not None])
      acc_text = (f"{acc.mean():.1f} +- {acc.std():.1f} % ({len(acc)} in the table)" if len(acc)
                  else "not in the (partial) table")
      lines.append(f"| {variant} | {minutes} | {len(runs)} | {tau.mean():.3f} +- {tau.std():.3f} | "
                   f"{acc_text} |")
  y = res.get("yardsticks") or {}
  if y.get("noise_ceiling"):
    lines.append(f"\nnoise ceiling (seed vs seed): {y['noise_ceiling']['kendall_tau']:.3f}; free "
                 "baselines: " + ", ".join(f"{k} {v['kendall_tau']:.3f}"
                                           for k, v in y["baselines"].items()
                                           if v["kendall_tau"] is not None))
  out.mkdir(parents=True, exist_ok=True)
  (out / "curve.json").write_text(json.dumps(res, indent=2) + "\n")
  (out / "curve.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  _plot(res, out / "curve.png")


def _plot(res: dict, path: Path) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  # Left the ranking, right what the evolution found with it: they need not move together.
  fig, (ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
  ticks = set()
  for variant, by in res["curve"].items():
    pts = sorted((float(m[:-3]), runs) for m, runs in by.items())
    x = [p[0] for p in pts]
    ticks.update(x)
    tau = [[r["kendall_tau"] for r in runs if r["kendall_tau"] is not None] for _, runs in pts]
    ax.errorbar(x, [np.mean(t) for t in tau], yerr=[np.std(t) for t in tau], marker="o",
                capsize=3, label=variant.replace("_", "-"))
    acc = [[100 * r["test_acc"] for r in runs if r["test_acc"] is not None] for _, runs in pts]
    keep = [i for i, a in enumerate(acc) if a]
    acc_ax.errorbar([x[i] for i in keep], [np.mean(acc[i]) for i in keep],
                    yerr=[np.std(acc[i]) for i in keep], marker="o", capsize=3,
                    label=variant.replace("_", "-"))
  y = res.get("yardsticks") or {}
  if y.get("noise_ceiling"):
    ax.axhline(y["noise_ceiling"]["kendall_tau"], color="k", ls="--", lw=1, label="noise ceiling")
  for name, c in (y.get("baselines") or {}).items():
    if c["kendall_tau"] is not None:
      ax.axhline(c["kendall_tau"], ls=":", lw=1, color="gray")
      # Named at the line itself: six gray legend entries could not be told apart.
      ax.annotate(name, (1.0, c["kendall_tau"]), xycoords=("axes fraction", "data"),
                  xytext=(3, 0), textcoords="offset points", va="center", fontsize=7,
                  color="gray", annotation_clip=False)
  shown: list[float] = []
  for t in sorted(ticks):  # one tick for 2.4 and 2.5 (one-shot's and few-shot's calibrations)
    if not shown or t > 1.1 * shown[-1]:
      shown.append(t)
  for a in (ax, acc_ax):
    a.set_xscale("log")
    a.set_xticks(shown, [f"{t:g}" for t in shown])
    a.minorticks_off()
    a.set_xlabel("supernet training (minutes, from the calibrated epoch time)")
    a.legend(fontsize=7)
  ax.set_ylabel("Kendall tau, shared weights vs table")
  acc_ax.set_ylabel("found cell's table test accuracy (%)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("command", choices=("run", "report"))
  parser.add_argument("--table", required=True, help="table.csv (protocol.json beside it)")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spos_tau_curve"))
  parser.add_argument("--minutes", default="1,3,10,30", help="run: budgets of supernet training")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--split", default="cell:0", help="run: the few-shot split, KEY:EDGE")
  parser.add_argument("--sample", type=int, default=200, help="report: cells ranked")
  parser.add_argument("--compare", help="report: the curve of an nb201_compare.py --budgets "
                                        "directory's SPOS runs instead of this script's")
  args = parser.parse_args(argv)
  cmd_run(args) if args.command == "run" else cmd_report(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
