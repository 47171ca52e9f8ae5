"""REINFORCE against random search on the MNIST-1D NB201 table (issue 30, part 3).

  python benchmarks/reinforce_table.py --more-budgets 120   # as in benchmarks/results/reinforce
  python benchmarks/reinforce_table.py --runs 100 --ablation-runs 0 --out /tmp/rf

Replays (``jnas.search.tabular.replay_many``) on
``benchmarks/results/nb201_mnist1d/table.csv``: the search sees ``val_acc``
(mean of two seeds), the result is judged on ``test_acc``, a query costs the
cell's ``train_seconds``; run ``i`` starts from ``fold_in(key(0), i)``. The
main budget is 40 s, the one ``benchmarks/results/nb201_compare`` gave every
method (about 65 queries). It compares

* ``random`` and ``rea`` (NAS-Bench-201's settings),
* ``reinforce``: today's defaults (``jnas tabular --strategy reinforce``),
* ``reinforce_lstm``: the earlier defaults (Zoph & Le's LSTM controller,
  Adam 0.02, entropy 0.01), and single changes to the defaults (``--ablation``),

printing mean, std (ddof 0), percentiles and queries per run, and writes
``reinforce.json`` and ``README.md`` into ``--out`` (default
``benchmarks/results/reinforce``). ``--more-budgets`` repeats random search
and both REINFORCE settings at longer budgets (``--more-runs`` each).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jnas.search.tabular import STRATEGIES, load_table, replay_many  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks/results/nb201_mnist1d/table.csv"
OLD = {"controller": "lstm", "learning_rate": 0.02, "entropy_weight": 0.01, "batch_size": 1,
       "reward_shaping": "baseline", "unseen_draws": 1}

# label -> (strategy, settings changed from its defaults)
MAIN = {"random": ("random", {}), "rea": ("rea", {}), "reinforce": ("reinforce", {}),
        "reinforce_lstm": ("reinforce", OLD)}
# One change at a time, from the earlier defaults (lstm_*) or from today's (logits_*).
# label -> (strategy, settings, runs).
ABLATION = {
    "lstm_lr0.05": ("reinforce", {**OLD, "learning_rate": 0.05}, 200),
    "lstm_lr0.01": ("reinforce", {**OLD, "learning_rate": 0.01}, 200),
    "lstm_no_entropy": ("reinforce", {**OLD, "entropy_weight": 0.0}, 200),
    "lstm_entropy0.05": ("reinforce", {**OLD, "entropy_weight": 0.05}, 200),
    "lstm_normalised": ("reinforce", {**OLD, "normalize_advantage": True}, 200),
    "lstm_unseen16": ("reinforce", {**OLD, "unseen_draws": 16}, 200),
    "lstm_batch4": ("reinforce", {**OLD, "batch_size": 4}, 200),
    "lstm_rank": ("reinforce", {**OLD, "reward_shaping": "rank"}, 200),
    "logits_batch1": ("reinforce", {"batch_size": 1}, 500),
    "logits_batch1_lr0.03": ("reinforce", {"batch_size": 1, "learning_rate": 0.03}, 500),
    "logits_batch1_lr0.1": ("reinforce", {"batch_size": 1, "learning_rate": 0.1}, 500),
    "logits_batch1_no_entropy": ("reinforce", {"batch_size": 1, "entropy_weight": 0.0}, 500),
    "logits_batch1_entropy0.05": ("reinforce", {"batch_size": 1, "entropy_weight": 0.05}, 500),
    "logits_batch1_rank": ("reinforce", {"batch_size": 1, "reward_shaping": "rank"}, 500),
    "logits_batch1_unseen16": ("reinforce", {"batch_size": 1, "unseen_draws": 16}, 500),
    "logits_batch4": ("reinforce", {"batch_size": 4}, 500),
}
MORE = ("random", "reinforce", "reinforce_lstm")


def summary(r: dict) -> dict:
  b = np.asarray(r["best_report"])
  return {"strategy": r["strategy"], "settings": r["settings"], "budget": r["budget"],
          "runs": r["runs"], "mean": r["mean"], "std": r["std"],
          "se_mean": float(b.std(ddof=1) / np.sqrt(len(b))),
          "percentiles": dict(zip(("p5", "p25", "p50", "p75", "p95"),
                                  np.percentile(b, [5, 25, 50, 75, 95]).round(4).tolist())),
          "mean_queries": r["mean_queries"], "seconds": r["seconds"]}


def row(s: dict) -> str:
  p = s["percentiles"]
  return (f"| {s['budget']:g} | {s['label']} | {s['runs']} | {100 * s['mean']:.2f} | "
          f"{100 * s['std']:.2f} | {100 * s['se_mean']:.2f} | "
          f"{' / '.join(f'{100 * p[k]:.1f}' for k in ('p5', 'p50', 'p95'))} | "
          f"{s['mean_queries']:.1f} |")


HEAD = ("| budget (s) | strategy | runs | mean test acc (%) | std | s.e. of mean | "
        "p5 / p50 / p95 | queries per run |\n|---|---|---|---|---|---|---|---|\n")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", type=int, default=500, help="runs of the main comparison")
  ap.add_argument("--budget", type=float, default=40.0, help="simulated seconds per run")
  ap.add_argument("--no-ablation", action="store_true", help="skip the ablation")
  ap.add_argument("--more-budgets", default="120",
                  help="further budgets for random and both REINFORCE settings ('' for none)")
  ap.add_argument("--more-runs", type=int, default=100)
  ap.add_argument("--out", default=str(ROOT / "benchmarks/results/reinforce"))
  ap.add_argument("--reverse", action="store_true",
                  help="work through the plan backwards (a second process fills the cache "
                       "from the other end; a plain run afterwards collects everything)")
  ap.add_argument("--cached-only", action="store_true",
                  help="collect what the cache holds, run nothing (entries not run are listed)")
  ap.add_argument("--readme-only", action="store_true",
                  help="rewrite README.md from an existing reinforce.json, no replays")
  args = ap.parse_args()
  out = Path(args.out)
  if args.readme_only:
    write_readme(out, json.loads((out / "reinforce.json").read_text()))
    return
  bench = load_table(str(TABLE), arch_column="arch_str", signal_column="val_acc",
                     report_column="test_acc", cost_column="train_seconds")
  plan = [(args.budget, args.runs, k, *MAIN[k]) for k in MAIN]
  if not args.no_ablation:
    plan += [(args.budget, runs, k, name, st) for k, (name, st, runs) in ABLATION.items()]
  for b in (float(x) for x in args.more_budgets.split(",") if x):
    plan += [(b, args.more_runs, k, *MAIN[k]) for k in MORE]
  results, skipped = [], []
  cache = out / "cache"
  cache.mkdir(parents=True, exist_ok=True)
  for budget, runs, label, name, settings in (plan[::-1] if args.reverse else plan):
    # Resumable: each replay's summary is kept under its strategy, merged
    # settings, budget and runs, so a killed benchmark loses one entry.
    merged = {**STRATEGIES[name][1], **settings}
    key = hashlib.sha1(json.dumps([name, merged, budget, runs, 0], sort_keys=True)
                       .encode()).hexdigest()[:12]
    path = cache / f"{name}-{key}.json"
    if path.exists():
      s = json.loads(path.read_text())
    elif args.cached_only:
      print(f"not run: {label} at {budget:g} s ({runs} runs)")
      skipped.append(f"{label} at {budget:g} s ({runs} runs)")
      continue
    else:
      s = summary(replay_many(name, bench, budget=budget, runs=runs, seed=0, settings=settings))
      path.write_text(json.dumps(s) + "\n")
    s["label"] = label
    results.append(s)
    print(row(s), f"[{s['seconds']:.0f} s]", flush=True)
  out.mkdir(parents=True, exist_ok=True)
  argv = [a for a in sys.argv[1:] if a != "--cached-only"]  # the command that makes them all
  cmd = "python benchmarks/reinforce_table.py " + " ".join(argv)
  data = {"command": cmd.strip(), "table": str(TABLE.relative_to(ROOT)), "seed": 0,
          "columns": {"signal": "val_acc", "report": "test_acc", "cost": "train_seconds"},
          "defaults": STRATEGIES["reinforce"][1], "earlier_defaults": OLD, "results": results,
          "not_run": skipped}
  data["budget"] = args.budget
  (out / "reinforce.json").write_text(json.dumps(data, indent=1) + "\n")
  write_readme(out, data)
  print(f"wrote {out}/reinforce.json and README.md")


def write_readme(out: Path, data: dict) -> None:
  results, budget = data["results"], data.get("budget", 40.0)
  main_rows = [row(s) for s in results if s["label"] in MAIN and s["budget"] == budget]
  abl_rows = [row(s) for s in results if s["label"] in ABLATION]
  more_rows = [row(s) for s in results if s["budget"] != budget]
  (out / "README.md").write_text(README.format(
      cmd=data["command"], defaults=json.dumps(data["defaults"]),
      old=json.dumps(data["earlier_defaults"]), main=HEAD + "\n".join(main_rows),
      ablation=HEAD + "\n".join(abl_rows)
      + "".join(f"\n\nNot run in this collection: {', '.join(data.get('not_run', []))}."
                for _ in [0] if data.get("not_run")),
      more=HEAD + "\n".join(more_rows), notes=NOTES))


README = """# REINFORCE against random search on the MNIST-1D NB201 table (issue 30, part 3)

    {cmd}

Replays of `../nb201_mnist1d/table.csv` (search signal `val_acc`, result judged on `test_acc`, each query
charged the cell's `train_seconds`), run i from `fold_in(key(0), i)`, under the budget that
`../nb201_compare` gave every method. Written by `benchmarks/reinforce_table.py`; every number below is
in `reinforce.json`.

Defaults now (`jnas tabular --strategy reinforce`): `{defaults}`.
Earlier defaults (`reinforce_lstm`): `{old}`.

## Main comparison

{main}

## One change at a time

{ablation}

## Other budgets

{more}

{notes}
"""

# What the numbers mean; written from a run of this script (2026-12-06).
NOTES = """## Findings

- **What was wrong.** With the earlier defaults (Zoph & Le's LSTM controller, Adam 0.02, entropy 0.01,
  one sample per update) REINFORCE's mean was not below random search's at this budget (the issue saw a
  lower mean; here it is 84.03 against 83.62 %), but its spread was wider: std 2.19 against 1.83 points,
  both tails longer. Within a run of about 60 queries the LSTM (about 35,000 weights for 6 decisions)
  takes 60 noisy single-sample steps, and a few early rewards decide where it goes: some runs find the
  two best cells (test 89.0 and 90.4 %), others settle in a mediocre family.
- **What did not fix it** (one change at a time on the LSTM, 200 replays, where random search has
  83.59 +- 1.80 %): Adam 0.05 83.47 +- 2.60, Adam 0.01 83.70 +- 1.95, no entropy 83.72 +- 2.32, entropy
  0.05 84.01 +- 2.02, advantages divided by a running std 83.64 +- 2.48, rank rewards 83.67 +- 2.35,
  4 samples per update 83.88 +- 2.01, only cells not told before 84.18 +- 2.02 (the earlier defaults on
  these 200: 84.16 +- 2.05). Every std stayed between 1.95 and 2.60. These are the `lstm_*` rows; rows
  listed as not run below the tables were measured with the same `replay_many` calls while looking for
  the cause (`jnas.search.tabular.replay_many(..., budget=40, runs=200 or 500, seed=0, settings=...)`) and
  are quoted here. Re-queried cells are not the cause at this budget: in 60 queries the controllers almost
  never draw a string twice (with the per-edge policy, `unseen_draws=16` gives the very same runs). Repeats
  matter only once a policy has converged, and the replay charges a repeat for every strategy alike, as
  NAS-Bench-201's own code does.
- **What fixed it.** NAS-Bench-201's own policy: one free softmax per edge (30 numbers), Adam 0.05,
  entropy 0.01, the moving-average baseline (decay 0.9, as in both papers), and 2 samples per update.
  Over the same 500 replays it ends at 83.85 +- 1.81 % against random search's 83.62 +- 1.83 %; at every
  percentile from p5 to p95 it is level with or above random search.
- **How sure.** The standard error of a std over 500 runs is about 0.06 points, and the per-edge
  variants (batch 1 or 4, learning rate 0.03-0.1, entropy 0-0.05, rank rewards) have stds of 1.81-2.03:
  2 samples per update is the one at or below random search's, and its margin is within noise. What is
  clear is that the per-edge policy removes the LSTM's extra spread and keeps the mean above random
  search. The mean gain at 40 s is small (+0.23 points, about 2 standard errors): 60 queries leave little
  to learn from.
- **Longer budgets cost the new defaults something.** At 120 s (about 190 queries, 100 replays) the
  per-edge policy is 0.66 points above random search (85.32 against 84.66 %, about 2.6 standard errors),
  but the LSTM with the earlier defaults is higher still (86.38 %): given enough queries the recurrent
  controller learns more. Both spread wider than random search there (std 1.94 and 2.18 against 1.61),
  and here the extra spread is mostly the upper tail (both reach the 90.4 % cell at p95, random search
  87.4 %). The defaults are chosen for the protocol budget of this table (40 s); a user with a long
  budget may prefer `--set controller=lstm --set learning_rate=0.02 --set batch_size=1`.
"""


if __name__ == "__main__":
  main()
