"""Choose the protocol of the NB201 MNIST-1D table v2 by a pilot (issue 27, item 1).

  python benchmarks/nb201_table_v2_pilot.py run --candidate B --shard 0/2 &   # one process per core
  python benchmarks/nb201_table_v2_pilot.py run --candidate B --shard 1/2
  python benchmarks/nb201_table_v2_pilot.py report

Each candidate protocol trains the same first ``--cells`` unique cells of the
table's fixed shuffled order (a uniform sample of the 4,660) for three seeds,
into ``OUT/pilot/NAME`` (resumable: rerun to continue). The candidates form a
ladder of epochs (``LADDER``), each rung twice the last, to tell whether the
ranking has settled. ``report`` prints, per candidate, the mean seed-to-seed Kendall tau
over the three seed pairs, the interquartile range of the mean test accuracy
over cells, the median, and the CPU seconds per cell and seed; for each rung
with results for the next, the Kendall tau between the two protocols' seed
means over their common cells; and writes ``OUT/pilot.json`` and
``OUT/pilot.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jnas.cli_support import shard_arg  # no JAX import: safe before pinning

# Every candidate: 40,000 generated MNIST-1D sequences split 10,000 / 30,000 (mnist1d_40k*), a
# validation set carved from the 10,000, a small training set from the rest, and the whole test
# set (sampling error of a test accuracy p: sqrt(p (1 - p) / n) <= 0.29 points at n = 30,000).
_COMMON = dict(dataset="mnist1d_40k_noisy", train_size=2000, batch_size=128, val_size=5000,
               test_size=30000, seeds=(0, 1, 2), vmap_seeds=True)
# A screen of 24 cells (one seed, 1x and 2x epochs) ruled out the clean generator: with 500-1,000
# training sequences converged cells still bunch at 93-96 % (IQR 1.4-1.6 points). On the noisier
# generator (corr_noise 0.5, shear 1.0; mnist1d_40k_noisy) with 2,000 training sequences the IQR is
# 4.5 points, but the median still rose from 58 % (10 epochs) to 74 % (20): not converged. So the
# pilot climbs an epoch ladder on that task; each rung is the next one's "half the epochs".
CANDIDATES = {
    "N20": dict(epochs=20, **_COMMON),
    "N40": dict(epochs=40, **_COMMON),
    "N80": dict(epochs=80, **_COMMON),
    # N20 gave a seed-to-seed tau of only 0.40: a cell's seeds differ by 2.3 points (sd) against
    # an IQR of 3.8, and among the better half of cells seeds do not agree at all (tau -0.04).
    # Training noise, not the test set's (0.25 points), so: 2.5x the training data (every
    # sequence not held out for validation), the same 20 epochs.
    "D20": dict(_COMMON, epochs=20, train_size=5000),
    "D40": dict(_COMMON, epochs=40, train_size=5000),
    # D20 (first 71 cells): seed-to-seed tau 0.52 but an IQR of only 1.6 points (median 91 %): less
    # noise, more bunching. Half the skeleton's width (C=4) leaves the cell more of the work.
    "W20": dict(_COMMON, epochs=20, train_size=5000, channels=4),
    "W40": dict(_COMMON, epochs=40, train_size=5000, channels=4),
}
LADDER = ("N20", "N40", "N80")
LADDER_D = ("D20", "D40")
LADDER_W = ("W20", "W40")

def _pin(shard: tuple[int, int]) -> None:
  # One core per shard process, before JAX starts (XLA sizes its thread pool from it).
  if hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[shard[0] % len(allowed)]})


def _report(out: Path) -> dict:
  import numpy as np  # noqa: PLC0415
  from scipy import stats  # noqa: PLC0415

  from jnas import nb201_table as T  # noqa: PLC0415

  res: dict = {}
  for name in CANDIDATES:
    folder = out / "pilot" / name
    if not (folder / "protocol.json").exists() or not T.read_raw(folder):
      continue
    s = T.summary(T.expand(folder))
    rows = T.read_raw(folder)
    res[name] = {
        "protocol": CANDIDATES[name], "hash": T.Protocol(**CANDIDATES[name]).short_hash(),
        "unique_cells": s["unique_cells"],
        "seed_tau_mean": s["seed_pairs"].get("test_acc", {}).get("mean_kendall_tau"),
        "seed_pairs": s["seed_pairs"].get("test_acc", {}).get("pairs"),
        "iqr_points": 100 * s["test_acc"]["iqr_unique"],
        "median_unique": 100 * s["test_acc"]["median_unique"],
        "best": 100 * s["test_acc"]["best"],
        "cpu_s_per_cell_seed": float(np.mean([r["cpu_seconds"] for r in rows])),
    }
  for name, double in [*zip(LADDER, LADDER[1:]), *zip(LADDER_D, LADDER_D[1:]),
                       *zip(LADDER_W, LADDER_W[1:])]:
    if name not in res or double not in res:
      continue
    a = {r["canonical"]: r for r in _table(out / "pilot" / name)}
    b = {r["canonical"]: r for r in _table(out / "pilot" / double)}
    common = sorted(set(a) & set(b))
    if len(common) >= 3:
      x = [float(a[c]["test_acc"]) for c in common]
      y = [float(b[c]["test_acc"]) for c in common]
      res[name]["tau_vs_next"] = {"cells": len(common), "kendall_tau": float(stats.kendalltau(x, y)[0]),
                                "vs": double, "median_gain_points": 100 * float(np.median(np.subtract(y, x))),
                                "other_seed_tau": _other_seed_tau(a, b, common)}
  return res


def _other_seed_tau(a: dict, b: dict, common: list[str]) -> float | None:
  """Mean Kendall tau between one seed of protocol ``a`` and another seed of ``b`` (6 pairs).

  Set beside the seed-to-seed tau within a protocol: if twice the epochs changes the ranking no
  more than another seed does, the two are about equal, and the ranking has settled."""
  import numpy as np  # noqa: PLC0415
  from scipy import stats  # noqa: PLC0415

  pairs = [(s, t) for s in range(3) for t in range(3) if s != t]
  if not all(f"test_acc_s{s}" in a[common[0]] and f"test_acc_s{s}" in b[common[0]]
             for s in range(3)):
    return None
  return float(np.mean([stats.kendalltau([float(a[c][f"test_acc_s{s}"]) for c in common],
                                         [float(b[c][f"test_acc_s{t}"]) for c in common])[0]
                        for s, t in pairs]))


def _table(folder: Path) -> list[dict]:
  import csv  # noqa: PLC0415

  with open(folder / "table.csv", newline="") as f:
    return list(csv.DictReader(f))


def _markdown(res: dict) -> str:
  lines = ["| candidate | protocol | cells | seed-to-seed tau (mean of 3 pairs) | IQR (points) | "
           "median | best | CPU s per cell-seed | tau vs twice the epochs |", "|---|---|---|---|---|---|---|---|---|"]
  for name, r in res.items():
    p = r["protocol"]
    desc = (f"{p['dataset']}, C={p.get('channels', 8)}, train {p['train_size']}, "
            f"{p['epochs']} ep x batch {p['batch_size']}")
    t2 = r.get("tau_vs_next")
    t2_text = "" if t2 is None else f"{t2['kendall_tau']:.3f} ({t2['cells']} cells)"
    if t2 is not None and t2.get("other_seed_tau") is not None:
      t2_text += f"; one seed vs another seed of {t2['vs']}: {t2['other_seed_tau']:.3f}"
    lines.append(f"| {name} | {desc} | {r['unique_cells']} | "
                 f"{r['seed_tau_mean'] if r['seed_tau_mean'] is None else round(r['seed_tau_mean'], 3)} | "
                 f"{r['iqr_points']:.1f} | {r['median_unique']:.1f} % | {r['best']:.1f} % | "
                 f"{r['cpu_s_per_cell_seed']:.2f} | "
                 f"{t2_text} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("command", choices=("run", "report"))
  parser.add_argument("--candidate", choices=sorted(CANDIDATES))
  parser.add_argument("--cells", type=int, default=200, help="run: unique cells of the order")
  parser.add_argument("--shard", type=shard_arg, default=(0, 1), help="run: I/N (one process per core)")
  parser.add_argument("--minutes", type=float, help="run: start no new cell after M minutes")
  parser.add_argument("--out", default="benchmarks/results/nb201_mnist1d_v2")
  args = parser.parse_args(argv)
  out = Path(args.out)
  try:
    if args.command == "run":
      if args.candidate is None:
        raise ValueError("run needs --candidate (one of " + ", ".join(CANDIDATES) + ")")
      _pin(args.shard)
      from jnas import nb201_table as T  # noqa: PLC0415 (after pinning)

      r = T.build(out / "pilot" / args.candidate, T.Protocol(**CANDIDATES[args.candidate]),
                  limit=args.cells, minutes=args.minutes, shard=args.shard)
      print(json.dumps(r))
    else:
      res = _report(out)
      (out / "pilot.json").write_text(json.dumps(res, indent=2) + "\n")
      (out / "pilot.md").write_text(_markdown(res) + "\n")
      print(_markdown(res))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
