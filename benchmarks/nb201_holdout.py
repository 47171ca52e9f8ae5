"""A held-out test of one ``nb201_compare.py`` method against random search (issue 27 item 6).

  python benchmarks/nb201_holdout.py --compare runs/compare_v2 --budget 600 \
      --method 'spos@e1000+top(1/4)' --chosen-on 0-4 --test 5-14 \
      --out benchmarks/results/nb201_compare_v2/holdout.json

A comparison's best method at its largest budget was chosen among many, so its lead over random
search on the seeds it was chosen on is biased upward. This judges it on seeds it was not chosen
on (runs made afterwards with the same code and plan, e.g. the v2 pipeline's ``holdout-*`` jobs):
the found cell's table test accuracy per seed, the mean's 90 % bootstrap interval, the
difference from random search's mean over 500 replays at the same budget with its own bootstrap
interval (both sides resampled), and how often one run of the method finds a better cell than
one run of random search (ties count half). The selection seeds are printed beside them.

Only the ``+top`` methods (:data:`nb201_compare.TRAINED_TOP`) are supported: their cell is read
from a single-path run made with part of the budget, its candidates queried on the table, as the
comparison's report does (the same function).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TABLE = ROOT / "benchmarks" / "results" / "nb201_mnist1d_v2" / "table.csv"


def parse_seeds(text: str) -> list[int]:
  """``"5-14"`` or ``"0,2,3"`` -> seeds.

  Example:
    >>> parse_seeds("5-7"), parse_seeds("0,2")
    ([5, 6, 7], [0, 2])
  """
  try:
    if "-" in text:
      lo, hi = (int(x) for x in text.split("-"))
      seeds = list(range(lo, hi + 1))
    else:
      seeds = [int(x) for x in text.split(",") if x]
  except ValueError:
    raise SystemExit(f"seeds: want A-B or A,B,..., got {text!r}") from None
  if not seeds or min(seeds) < 0:
    raise SystemExit(f"seeds: want A-B or A,B,... of seeds >= 0, got {text!r}")
  return seeds


def found(compare: Path, budget: float, method: str, seeds: list[int], table, signal
          ) -> dict[int, float]:
  """Seed -> the found cell's table test accuracy, for the seeds whose run has finished."""
  from nb201_compare import TRAINED_TOP, _trained_top_run

  if method not in TRAINED_TOP:
    raise SystemExit(f"unknown method {method!r}: one of the +top methods "
                     f"({', '.join(TRAINED_TOP)})")
  source, share = TRAINED_TOP[method]
  part = compare / f"b{budget * share:g}" / "runs" / source
  out = {}
  for seed in seeds:
    wd = part / f"seed_{seed}"
    if (wd / "summary.json").exists():
      out[seed] = float(_trained_top_run(wd, budget, table, signal, share)["test_acc"])
  return out


def compare_with_random(values: list[float], random_runs: list[float], *,
                        resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
  """The method's mean and its difference from random search's, each with a 90 % bootstrap
  interval (both samples resampled), P(difference > 0) over the resamples, and P(one method run
  beats one random run), ties counted half.

  Example:
    >>> r = compare_with_random([0.93, 0.94], [0.92, 0.93, 0.94])
    >>> round(r["mean"], 3), round(r["p_run_beats_random"], 3)
    (0.935, 0.667)
  """
  import numpy as np

  from nb201_compare import bootstrap_means

  rng = np.random.default_rng(seed)
  v, r = np.asarray(values, np.float64), np.asarray(random_runs, np.float64)
  means = bootstrap_means(v, rng, resamples)
  diffs = means - bootstrap_means(r, rng, resamples)
  beats = (v[:, None] > r[None, :]).mean() + 0.5 * (v[:, None] == r[None, :]).mean()
  return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1
          else 0.0, "low": float(np.quantile(means, 0.05)),
          "high": float(np.quantile(means, 0.95)), "random_mean": float(r.mean()),
          "diff": float(v.mean() - r.mean()), "diff_low": float(np.quantile(diffs, 0.05)),
          "diff_high": float(np.quantile(diffs, 0.95)), "p_diff_above_0": float(np.mean(diffs > 0)),
          "p_run_beats_random": float(beats)}


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--compare", default="runs/compare_v2", help="the --budgets comparison's --out")
  p.add_argument("--table", default=str(TABLE))
  p.add_argument("--budget", type=float, default=600.0)
  p.add_argument("--method", default="spos@e1000+top(1/4)")
  p.add_argument("--chosen-on", default="0-4", help="the seeds the method was chosen on")
  p.add_argument("--test", default="5-14", help="the held-out seeds")
  p.add_argument("--replays", type=int, default=500, help="random search runs (500)")
  p.add_argument("--out", default=None, help="JSON file to write")
  args = p.parse_args(argv)

  from jnas.nb201_table import load_nb201_table
  from jnas.search.tabular import replay_many
  from nb201_compare import query_table

  compare = Path(args.compare)
  if not (compare / f"b{args.budget:g}").is_dir():
    raise SystemExit(f"{compare}: no b{args.budget:g} budget directory (give --compare, --budget)")
  table = load_nb201_table(args.table)
  bench, signal = query_table(Path(args.table))
  # The same replays as the comparison's report (seed 1): its "random (500 replays)" row.
  random_runs = replay_many("random", bench, budget=args.budget, runs=args.replays,
                            seed=1)["best_report"]
  res = {"method": args.method, "budget": args.budget, "table": args.table,
         "command": "python benchmarks/nb201_holdout.py " + " ".join(
             sys.argv[1:] if argv is None else argv)}
  for part, text in (("chosen_on", args.chosen_on), ("held_out", args.test)):
    per_seed = found(compare, args.budget, args.method, parse_seeds(text), table, signal)
    if not per_seed:
      raise SystemExit(f"{args.method}: no finished run for seeds {text} in {compare}")
    res[part] = {"per_seed": per_seed,
                 **compare_with_random(list(per_seed.values()), [float(x) for x in random_runs])}
  for part in ("chosen_on", "held_out"):
    r = res[part]
    print(f"{args.method} at {args.budget:g} s, {part.replace('_', ' ')} seeds "
          f"{sorted(r['per_seed'])}: {100 * r['mean']:.2f} % (90 % interval "
          f"{100 * r['low']:.2f} to {100 * r['high']:.2f}); random search "
          f"{100 * r['random_mean']:.2f} %: difference {100 * r['diff']:+.2f} points "
          f"({100 * r['diff_low']:+.2f} to {100 * r['diff_high']:+.2f}), P(diff > 0) "
          f"{r['p_diff_above_0']:.2f}, P(a run beats a random run) {r['p_run_beats_random']:.2f}")
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
