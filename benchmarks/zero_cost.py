"""Zero-cost proxies against an exhaustive NAS-Bench-201-space table: Kendall tau and Spearman rho (issue 27).

  python benchmarks/zero_cost.py --table benchmarks/results/nb201_mnist1d/table.csv --sample 500

Draws a fixed sample of unique cells of the table (``jnas bench``'s
:func:`~jnas.nb201_table.sample_cells`, so the same cells for the
same ``--sample-seed``), scores each with every proxy of
:mod:`jnas.estimation.zero_cost` in the table's own skeleton (its
``protocol.json``: dataset, ``C``, ``N``), and ranks the scores against the
table's test accuracy (the mean over its seeds). Each unique cell is scored as
the string the table trained for it (the member with the fewest live edges,
:func:`~jnas.nb201_table.unique_cells`), so no proxy is credited or
charged for dead edges the table never trained. Beside the proxies it prints
the noise ceiling on the same cells: Kendall/Spearman between the table's
seeds (seed 0 against seed 1; the mean over pairs when there are more).

The data proxies draw one minibatch of the protocol's dataset (training
split) with ``--seed``, which also draws the weights. Prints a Markdown table
and writes the figures as JSON to ``--out`` (default
``benchmarks/results/zero_cost/<table folder>.json``). Run it on another
table (e.g. ``benchmarks/results/nb201_mnist1d_v2/table.csv``) by ``--table``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seed_columns(path: str) -> dict[str, dict[int, float]]:
  """Per-seed test accuracy by arch string (``test_acc_s<seed>`` columns of ``table.csv``)."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    cols = [c for c in reader.fieldnames or () if c.startswith("test_acc_s") and c[10:].isdigit()]
    return {r["arch_str"].strip(): {int(c[10:]): float(r[c]) for c in cols if r[c] != ""}
            for r in reader}


def _noise_ceiling(per_seed: dict[str, dict[int, float]], archs: list[str]):
  from jnas.nb201_table import rank_correlation  # noqa: PLC0415

  seeds = sorted(set.intersection(*(set(per_seed.get(a, {})) for a in archs))) if archs else []
  pairs = list(itertools.combinations(seeds, 2))
  if not pairs:
    return None
  figures = [rank_correlation([per_seed[a][s] for a in archs], [per_seed[a][t] for a in archs])
             for s, t in pairs]
  mean = lambda k: sum(f[k] for f in figures) / len(figures)
  return {"seeds": seeds, "pairs": len(pairs), "kendall_tau": mean("kendall_tau"),
          "spearman_rho": mean("spearman_rho")}


def run(args) -> dict:
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from jnas.data import load_dataset  # noqa: PLC0415
  from jnas.nb201_table import (Protocol, load_nb201_table, rank_correlation,  # noqa: PLC0415
                                           sample_cells, unique_cells, genotype_at)
  from jnas.estimation.zero_cost import (DATA_PROXIES, NB201Skeleton, ZeroCost,  # noqa: PLC0415
                                         check_proxy, default_batch)
  from jnas.spaces.nb201 import NB201Space  # noqa: PLC0415

  proxies = [check_proxy(p) for p in args.proxies.split(",") if p]
  table = load_nb201_table(args.table)
  proto_path = Path(args.table).parent / "protocol.json"
  if not proto_path.exists():
    raise FileNotFoundError(f"{proto_path} does not exist: the skeleton to score in is unknown")
  protocol = Protocol.from_json(json.loads(proto_path.read_text()))
  unique = len(set(table.canonical))
  if not 3 <= args.sample <= unique:
    raise ValueError(f"--sample {args.sample} must lie in [3, {unique}] (the table's unique cells)")
  space = NB201Space()
  sampled = sample_cells(table, args.sample, args.sample_seed)
  trained = {form: space.format(genotype_at(members[0], space))
             for form, members in unique_cells(space).items()}
  archs = [trained[table.canonical[table.row[a]]] for a in sampled]
  truth = np.asarray([table.test_acc[table.row[a]] for a in archs])

  ds = load_dataset(protocol.dataset)
  skeleton = NB201Skeleton(ds.input_shape, ds.num_classes, channels=protocol.channels,
                           cells_per_stage=protocol.cells_per_stage)
  zc = ZeroCost(skeleton, space=space, seed=args.seed, chunk=args.chunk)
  rng = np.random.default_rng(args.seed)
  out = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + args.argv),
         "table": str(args.table), "protocol_hash": protocol.short_hash(),
         "dataset": protocol.dataset, "skeleton": {"input_shape": list(skeleton.input_shape),
                                                   "channels": skeleton.channels,
                                                   "cells_per_stage": skeleton.cells_per_stage},
         "sample": len(archs), "sample_seed": args.sample_seed, "seed": args.seed,
         "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
         "jax": jax.__version__, "python": platform.python_version(),
         "noise_ceiling": _noise_ceiling(_seed_columns(args.table), archs), "proxies": {}}
  for name in proxies:
    batch = (args.batch or default_batch(name)) if name in DATA_PROXIES else 0
    x = y = None
    if batch:
      pick = rng.choice(len(ds.x_train), size=batch, replace=False)
      x, y = ds.x_train[pick], ds.y_train[pick]
    t = time.perf_counter()
    scores = zc.score(name, archs, x, y)
    seconds = time.perf_counter() - t
    # A second pass over one chunk, compiled: what each further cell costs (a chunk always
    # computes args.chunk cells, padding included).
    t = time.perf_counter()
    zc.score(name, archs[:args.chunk], x, y)
    per_cell = (time.perf_counter() - t) / args.chunk
    finite = np.isfinite(scores)
    corr = rank_correlation(np.where(finite, scores, np.min(scores[finite], initial=0) - 1),
                            truth)
    out["proxies"][name] = {**corr, "batch": batch, "seconds_first_pass": seconds,
                            "ms_per_cell_compiled": 1000 * per_cell,
                            "compilations": zc.compilations(name),
                            "non_finite": int((~finite).sum())}
  return out


def markdown(r: dict) -> str:
  lines = [f"Table {r['table']} (protocol {r['protocol_hash']}, {r['dataset']}, C={r['skeleton']['channels']}, "
           f"N={r['skeleton']['cells_per_stage']}); {r['sample']} unique cells (sample seed "
           f"{r['sample_seed']}), weights and minibatch seed {r['seed']}; {r['device']}.", "",
           "| estimator | Kendall tau | Spearman rho | batch | first pass (s) | ms per cell |",
           "|---|---|---|---|---|---|"]
  fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
  for name, p in r["proxies"].items():
    lines.append(f"| {name} | {fmt(p['kendall_tau'])} | {fmt(p['spearman_rho'])} | "
                 f"{p['batch'] or '-'} | {p['seconds_first_pass']:.1f} | "
                 f"{p['ms_per_cell_compiled']:.2f} |")
  nc = r["noise_ceiling"]
  if nc:
    lines.append(f"| noise ceiling (seeds {', '.join(map(str, nc['seeds']))}) | "
                 f"{fmt(nc['kendall_tau'])} | {fmt(nc['spearman_rho'])} | | | |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--table", default="benchmarks/results/nb201_mnist1d/table.csv",
                      help="an NB201 table.csv with protocol.json beside it")
  parser.add_argument("--sample", type=int, default=500, help="unique cells (default 500)")
  parser.add_argument("--sample-seed", type=int, default=0, help="which sample (default 0)")
  parser.add_argument("--seed", type=int, default=0, help="weights and minibatch (default 0)")
  parser.add_argument("--proxies", default="synflow,naswot,snip,grad_norm,params,flops",
                      help="comma-separated estimators (default: all)")
  parser.add_argument("--batch", type=int, default=0,
                      help="minibatch for the data proxies (default 0: each paper's)")
  parser.add_argument("--chunk", type=int, default=50, help="cells per compiled call")
  parser.add_argument("--out", default=None,
                      help="JSON file (default benchmarks/results/zero_cost/<table folder>.json)")
  args = parser.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  try:
    r = run(args)
  except (ValueError, FileNotFoundError) as e:
    sys.stderr.write(f"zero_cost.py: error: {' '.join(str(e).split())}\n")
    return 2
  print(markdown(r))
  from jnas.utils.metrics import write_json_atomic  # noqa: PLC0415

  out = args.out or str(ROOT / "benchmarks" / "results" / "zero_cost"
                        / f"{Path(args.table).resolve().parent.name}.json")
  write_json_atomic(out, r)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
