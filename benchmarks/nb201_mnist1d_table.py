"""Build, expand and summarise the exhaustive NAS-Bench-201-space table on MNIST-1D (issue 22).

  python benchmarks/nb201_mnist1d_table.py build --out benchmarks/results/nb201_mnist1d --minutes 120
  python benchmarks/nb201_mnist1d_table.py build --preset v2 --out benchmarks/results/nb201_mnist1d_v2 \
      --shard 0/2 &   # v2, one process per core
  python benchmarks/nb201_mnist1d_table.py build --preset v2 --out benchmarks/results/nb201_mnist1d_v2 \
      --shard 1/2
  python benchmarks/nb201_mnist1d_table.py expand --out benchmarks/results/nb201_mnist1d
  python benchmarks/nb201_mnist1d_table.py summary --out benchmarks/results/nb201_mnist1d

``build`` trains the 4,660 unique cells of the 15,625 (see
:func:`jnas.nb201_table.canonical_form`) for every seed of the
protocol, in a fixed shuffled order, appending to ``raw.csv``; run it again
to continue (``--minutes`` stops it cleanly, ``--limit`` stops after the first
N unique cells). ``expand`` writes ``table.csv`` (one row per benchmark string
with results); ``summary`` prints its spread and the seed-to-seed rank
correlation as Markdown, then one line of JSON. The protocol (the defaults of
:class:`jnas.nb201_table.Protocol`, changed by the flags below) is
kept in ``protocol.json``; a folder holding another protocol is refused.

The process pins itself to ``--cores`` CPU cores (1 by default) before JAX
starts: XLA sizes its thread pool from them, and on this network more threads
do not help (0.69 s of wall time per cell and seed on one core, 0.69-0.74 s
with two, which then burn 1.2 s of CPU time). One core leaves the rest of a
shared machine free, makes ``cpu_seconds`` equal the run's own time, and keeps
the results independent of the machine's core count. Replay a search on the
table with::

  jnas tabular --table benchmarks/results/nb201_mnist1d/table.csv --arch-column arch_str \\
      --signal-column val_acc --report-column test_acc --cost-column train_seconds ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from jnas.cli_support import shard_arg  # no JAX import: safe before pinning


def _pin(cores: int, shard: int = 0) -> None:
  # Before JAX starts: its CPU client sizes the thread pool from the cores it may use. Shards
  # take disjoint cores from the last one down, so N shards of one core fill N cores.
  if cores > 0 and hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    start = (shard * cores) % len(allowed)
    mine = [allowed[-1 - (start + k) % len(allowed)] for k in range(min(cores, len(allowed)))]
    os.sched_setaffinity(0, set(mine))


#: Named protocols: ``v1`` is the first table (``benchmarks/results/nb201_mnist1d``), ``v2`` the
#: converged-accuracy table chosen by ``benchmarks/nb201_table_v2_pilot.py`` (candidate D20:
#: the noisier MNIST-1D generator, 5,000 training sequences, 20 epochs, 30,000 test sequences,
#: three seeds trained in one vmapped program).
PRESETS = {
    "v1": {},
    "v2": dict(dataset="mnist1d_40k_noisy", train_size=5000, val_size=5000, test_size=30000,
               epochs=20, batch_size=128, seeds=(0, 1, 2), vmap_seeds=True),
}


def _protocol(args):
  from jnas.nb201_table import Protocol  # noqa: PLC0415 (after pinning)

  fields = {f.name for f in dataclasses.fields(Protocol)}
  given = dict(PRESETS[args.preset])
  given.update({k: v for k, v in vars(args).items() if k in fields and v is not None})
  if "seeds" in given:
    given["seeds"] = tuple(given["seeds"])
  return Protocol(**given)


def single_seed_cost(out: str, n: int, order_seed: int = 0) -> dict:
  """Trains the table's first ``n`` cells alone (seed 0, no vmap) and compares their CPU seconds
  with the per-seed cost the table charges a query (a three-seed vmapped run's time over three).

  A search trains one candidate at a time, so if the vmapped seeds are cheaper per seed, the
  table undercharges its queries. Writes ``OUT/single_seed_cost.json``.
  """
  import numpy as np  # noqa: PLC0415 (after pinning)

  from jnas import nb201_table as T  # noqa: PLC0415
  from jnas.spaces.nb201 import NB201Space  # noqa: PLC0415

  with open(os.path.join(out, "protocol.json")) as f:
    proto = T.Protocol.from_json(json.load(f))
  single = dataclasses.replace(proto, seeds=(0,), vmap_seeds=False)
  rows = {(r["canonical"], int(r["seed"])): r for r in T.read_raw(out)}
  space = NB201Space()
  trainer = T.CellTrainer(single, space=space)
  cells = []
  for key, pos in T.work_order(space, order_seed)[:n]:
    g = T.genotype_at(pos, space)
    r = trainer.train(space.encode_indices(g), 0)
    table = rows[(key, 0)]
    cells.append({"arch": space.format(g), "cpu_seconds": round(r["cpu_seconds"], 3),
                  "table_cpu_seconds": float(table["cpu_seconds"]),
                  "val_acc": r["val_acc"], "table_val_acc": float(table["val_acc"])})
    print(f"{len(cells)}/{n} {cells[-1]}", file=sys.stderr, flush=True)
  ratio = [c["cpu_seconds"] / c["table_cpu_seconds"] for c in cells]
  result = {"cells": len(cells), "protocol": proto.short_hash(),
            "median_ratio_single_to_table": round(float(np.median(ratio)), 3),
            "mean_single_cpu_seconds": round(float(np.mean([c["cpu_seconds"] for c in cells])), 3),
            "mean_table_cpu_seconds": round(
                float(np.mean([c["table_cpu_seconds"] for c in cells])), 3),
            "max_abs_val_acc_diff": round(float(max(
                abs(c["val_acc"] - c["table_val_acc"]) for c in cells)), 6),
            "command": f"python benchmarks/nb201_mnist1d_table.py cost --out {out} --limit {n}",
            "per_cell": cells}
  with open(os.path.join(out, "single_seed_cost.json"), "w") as f:
    json.dump(result, f, indent=1)
  return {k: v for k, v in result.items() if k != "per_cell"}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("command", choices=("build", "expand", "summary", "cost"))
  parser.add_argument("--out", default="benchmarks/results/nb201_mnist1d",
                      help="the table's folder")
  parser.add_argument("--limit", type=int,
                      help="build: only the first N unique cells; cost: how many (default 20)")
  parser.add_argument("--minutes", type=float, help="build: start no new run after M minutes")
  parser.add_argument("--order-seed", type=int, default=0, help="build: order of the cells")
  parser.add_argument("--json", action="store_true", help="summary: JSON only")
  parser.add_argument("--cores", type=int, default=1,
                      help="build: CPU cores to run on (0: all the process may use)")
  parser.add_argument("--preset", choices=sorted(PRESETS), default="v1",
                      help="build: a named protocol (the flags below change it)")
  proto = parser.add_argument_group("protocol (build; defaults: the preset's)")
  proto.add_argument("--dataset")
  proto.add_argument("--channels", type=int)
  proto.add_argument("--cells-per-stage", type=int)
  proto.add_argument("--epochs", type=int)
  proto.add_argument("--batch-size", type=int)
  proto.add_argument("--learning-rate", type=float)
  proto.add_argument("--weight-decay", type=float)
  proto.add_argument("--val-size", type=int)
  proto.add_argument("--train-size", type=int)
  proto.add_argument("--test-size", type=int)
  proto.add_argument("--seeds", type=int, nargs="+")
  proto.add_argument("--vmap-seeds", action="store_true", default=None,
                     help="train a cell's seeds in one vmapped program")
  parser.add_argument("--shard", type=shard_arg, default=(0, 1),
                      help="build: I/N, this process builds every N-th cell from the I-th "
                           "(run N processes, one per core)")
  args = parser.parse_args(argv)
  if args.command in ("build", "cost"):
    _pin(args.cores, args.shard[0])
  from jnas import nb201_table as T  # noqa: PLC0415 (after pinning)

  try:
    if args.command == "build":
      protocol = _protocol(args)
      t0 = time.time()
      r = T.build(args.out, protocol, limit=args.limit, minutes=args.minutes,
                  order_seed=args.order_seed, shard=args.shard)
      r.update(protocol=protocol.short_hash(), seconds=round(time.time() - t0, 1))
      print(json.dumps(r))
    elif args.command == "cost":
      print(json.dumps(single_seed_cost(args.out, args.limit or 20, args.order_seed)))
    elif args.command == "expand":
      print(T.expand(args.out))
    else:
      table = os.path.join(args.out, "table.csv")
      if not os.path.exists(table):
        table = str(T.expand(args.out))
      s = T.summary(table)
      if not args.json:
        print(T.markdown(s) + "\n")
      print(json.dumps(s))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
