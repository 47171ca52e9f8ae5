"""Latency of every unique NB201 MNIST-1D cell on this machine, in two settings that act as two devices (issue 30 item 1).

  python benchmarks/nb201_latency_columns.py measure --setting edge             # batch 1
  python benchmarks/nb201_latency_columns.py measure --setting server           # batch 256
  python benchmarks/nb201_latency_columns.py measure --setting edge --repeat 1 --limit 500
  python benchmarks/nb201_latency_columns.py report    # columns, agreement, Pareto fronts: CSV, JSON, MD, PNG

``measure`` times the forward pass of each unique cell's network under the v1 table's protocol
(``benchmarks/results/nb201_mnist1d/protocol.json``: C=8, one cell per stage, 40x1 inputs, 10
classes), freshly initialised (latency does not depend on the weights' values), compiled once
per cell. Cells go in the table build's fixed shuffled order, so any prefix is a uniform sample
(the repeat, ``--repeat 1``, may stop at ``--limit`` cells); a killed run resumes where it
stopped (``OUT/latency-SETTING-rREPEAT.csv``, one row per cell).

How it is timed, so that it holds on a shared machine: one pinned core (``--core``, default the
last), XLA's intra-op threading off, and each call timed by this process's CPU time, the
minimum over ``--repeats`` rounds (``jnas.estimation.latency.time_calls(stat="min",
clock="cpu")``). A single-threaded call's CPU time is its run time without the time another
process held the core. What each setting needs, as measured (two repeats, Spearman between them):

* ``server`` (``--group 25``): 25 cells compiled together and timed in interleaved rounds, so
  each cell's rounds spread over a few seconds and a burst of host load (this is a VM) hits a
  few rounds of every cell, which the minimum drops: 0.966 over 150 cells with the edge
  measurement running on the other core (0.81 over 300 cells timing each cell back to back).
  It can run beside other work.
* ``edge`` (``--group 1``): each cell back to back, **with the other cores quiet**: 0.949 over
  100 cells alone, but 0.68-0.80 with the server measurement on the other core (interleaved or
  not). At batch 1 a forward pass is a fraction of a millisecond spent mostly in per-op
  overhead and cache misses, so another core's memory traffic moves it by 30-50 %.

The two settings, and why they differ like devices do:

* ``edge``: batch 1: latency-bound, every op pays its launch and memory-access overhead, so
  cheap ops (pooling, skip) are not free and the number of ops counts (a phone-like regime).
* ``server``: batch 256: throughput-bound, the convolutions' FLOPs dominate and parameter-free
  ops nearly vanish (an accelerator-like regime). One core, as the other setting: on this
  2-core machine a second core changes the regime less than the batch does, and a
  single-threaded run can be timed by its CPU time.

``report`` writes ``OUT/latency.csv`` (canonical cell, architecture, v1 test accuracy, one column
per setting), ``OUT/latency.json`` and ``.md`` (each setting's repeatability: Spearman between
two repeats; the Spearman between settings; each setting's (accuracy, latency) Pareto-optimal
cells and how many the two fronts share), ``OUT/fronts.png`` and, once every cell has both
columns, ``OUT/table.csv``: the v1 table with ``latency_edge_ms`` and ``latency_server_ms``
appended, for ``jnas tabular --objective`` and ``benchmarks/multiobjective.py --table``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE_V1 = ROOT / "benchmarks" / "results" / "nb201_mnist1d"
OUT = ROOT / "benchmarks" / "results" / "nb201_latency"
# group: cells compiled together and timed in interleaved rounds (see the module docstring).
SETTINGS = {"edge": {"batch": 1, "group": 1}, "server": {"batch": 256, "group": 25}}
COLUMNS = ["canonical", "arch_str", "latency_ms", "seconds"]


def _setup(core: int | None) -> None:
  # Before JAX starts: the CPU client sizes its thread pools from the cores it may use.
  if hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[-1] if core is None else core})
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1").strip()


def _done(path: Path) -> set[str]:
  if not path.exists():
    return set()
  with open(path, newline="") as f:
    return {r["canonical"] for r in csv.DictReader(f)}


def cmd_measure(args) -> None:
  _setup(args.core)
  from flax import nnx  # noqa: PLC0415 (after the thread settings)

  from jnas.nb201_table.build import work_order  # noqa: PLC0415
  from jnas.nb201_table.canonical import genotype_at  # noqa: PLC0415
  from jnas.spaces.nb201 import NB201Space  # noqa: PLC0415
  from jnas.train.nb201_network import NB201Network  # noqa: PLC0415

  proto = json.loads((TABLE_V1 / "protocol.json").read_text())
  space = NB201Space()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f"latency-{args.setting}-r{args.repeat}.csv"
  done = _done(path)
  todo = [(k, n) for k, n in work_order(space) if k not in done][:args.limit or None]
  batch = SETTINGS[args.setting]["batch"]
  new = not path.exists()
  t_start = time.time()
  with open(path, "a", newline="") as f:
    w = csv.writer(f)
    if new:
      w.writerow(COLUMNS)
    size = args.group or SETTINGS[args.setting]["group"]
    for lo in range(0, len(todo), size):
      t0 = time.time()
      group = todo[lo:lo + size]
      genotypes = [genotype_at(n, space) for _, n in group]
      nets = [NB201Network(g, 1, 10, ndim=1, channels=proto["channels"],
                           cells_per_stage=proto["cells_per_stage"], space=space,
                           rngs=nnx.Rngs(0)) for g in genotypes]
      ms = _latencies(nets, batch, args.repeats)
      each = (time.time() - t0) / len(group)
      for (key, _), g, m in zip(group, genotypes, ms):
        w.writerow([key, space.format(g), f"{m:.5f}", f"{each:.2f}"])
      f.flush()
      print(f"{args.setting} r{args.repeat}: {len(done) + lo + len(group)} cells, "
            f"{time.time() - t_start:.0f} s this run", flush=True)


def _latencies(nets, batch: int, repeats: int) -> list[float]:
  """Milliseconds per forward pass of each network, timed in interleaved rounds (see the module
  docstring): a burst of load from the host lasts a fraction of a second and hits a few rounds
  of every network, which the minimum drops."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from jnas.estimation.latency import time_calls  # noqa: PLC0415

  x = jnp.zeros((batch, 40, 1), jnp.float32)
  calls = []
  for net in nets:
    graphdef, state = nnx.split(net)
    fwd = jax.jit(lambda s, x, g=graphdef: nnx.merge(g, s)(x, train=False))
    calls.append((fwd.lower(state, x).compile(), (state, x)))
  return [1e3 * t for t in time_calls(calls, repeats=repeats, stat="min", clock="cpu")]


def _read(path: Path) -> dict[str, float]:
  with open(path, newline="") as f:
    return {r["canonical"]: float(r["latency_ms"]) for r in csv.DictReader(f)}


def cmd_report(args) -> None:
  import numpy as np  # noqa: PLC0415
  from scipy.stats import spearmanr  # noqa: PLC0415

  from jnas.estimation.pareto import non_dominated_mask  # noqa: PLC0415

  out = Path(args.out)
  runs = {p.stem[len("latency-"):]: _read(p) for p in sorted(out.glob("latency-*-r*.csv"))}
  if not runs:
    raise SystemExit(f"nb201_latency_columns: error: no latency-SETTING-rN.csv in {out}; run "
                     f"'measure' first")
  with open(TABLE_V1 / "table.csv", newline="") as f:
    acc = {}
    for r in csv.DictReader(f):
      acc.setdefault(r["canonical"], (r["arch_str"], float(r["test_acc"])))
  res: dict = {"settings": SETTINGS, "repeatability": {}, "cells": {}}
  for s in SETTINGS:
    a, b = runs.get(f"{s}-r0", {}), runs.get(f"{s}-r1", {})
    common = sorted(set(a) & set(b))
    res["cells"][s] = len(a)
    if len(common) >= 3:
      res["repeatability"][s] = {"cells": len(common), "spearman": float(spearmanr(
          [a[k] for k in common], [b[k] for k in common])[0])}
  e, v = runs.get("edge-r0", {}), runs.get("server-r0", {})
  common = sorted(set(e) & set(v) & set(acc))
  fronts = {}
  if len(common) >= 3:
    res["between_settings"] = {"cells": len(common), "spearman": float(spearmanr(
        [e[k] for k in common], [v[k] for k in common])[0])}
    for s, lat in (("edge", e), ("server", v)):
      pts = np.asarray([[acc[k][1], lat[k]] for k in common])
      mask = non_dominated_mask(np.stack([-pts[:, 0], pts[:, 1]], 1))  # max acc, min latency
      fronts[s] = [common[i] for i in np.flatnonzero(mask)]
    shared = set(fronts["edge"]) & set(fronts["server"])
    res["fronts"] = {s: [{"canonical": k, "arch": acc[k][0], "test_acc": acc[k][1],
                          "latency_ms": (e if s == "edge" else v)[k]} for k in f]
                     for s, f in fronts.items()}
    res["fronts_shared"] = len(shared)
    res["fronts_union"] = len(set(fronts["edge"]) | set(fronts["server"]))
  with open(out / "latency.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["canonical", "arch_str", "test_acc", "latency_edge_ms", "latency_server_ms"])
    for k in sorted(set(e) | set(v)):
      arch, ta = acc.get(k, ("", float("nan")))
      w.writerow([k, arch, ta, e.get(k, ""), v.get(k, "")])
  res["table"] = _write_table(out, e, v)
  (out / "latency.json").write_text(json.dumps(res, indent=2) + "\n")
  lines = [f"cells measured: {res['cells']}"]
  for s, r in res["repeatability"].items():
    lines.append(f"- {s}: two repeats agree at Spearman {r['spearman']:.3f} ({r['cells']} cells)")
  lines.append(f"- table with latency columns: {res['table']}")
  if "between_settings" in res:
    b = res["between_settings"]
    lines.append(f"- edge vs server: Spearman {b['spearman']:.3f} ({b['cells']} cells)")
    lines.append(f"- Pareto-optimal (v1 test accuracy, latency) cells: edge {len(fronts['edge'])}, "
                 f"server {len(fronts['server'])}, in both {res['fronts_shared']}")
  (out / "latency.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  if fronts:
    _plot(common, acc, e, v, fronts, out / "fronts.png")


def _write_table(out: Path, edge: dict[str, float], server: dict[str, float]) -> str:
  """The v1 table with ``latency_edge_ms`` and ``latency_server_ms`` appended, as ``OUT/table.csv``,
  once every unique cell has both (``jnas tabular --objective`` and ``multiobjective.py --table``
  read it); until then, says how many cells are missing."""
  with open(TABLE_V1 / "table.csv", newline="") as f:
    rows = list(csv.reader(f))
  at = rows[0].index("canonical")
  missing = {r[at] for r in rows[1:]} - (set(edge) & set(server))
  if missing:
    return f"not written: {len(missing)} unique cells lack a latency in one setting or both"
  tmp = out / ".table.csv.tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(rows[0] + ["latency_edge_ms", "latency_server_ms"])
    for r in rows[1:]:
      w.writerow(r + [f"{edge[r[at]]:.5f}", f"{server[r[at]]:.5f}"])
  os.replace(tmp, out / "table.csv")
  return str(out / "table.csv")


def _plot(common, acc, e, v, fronts, path: Path) -> None:
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, (s, lat) in zip(axes, (("edge", e), ("server", v))):
    ax.scatter([lat[k] for k in common], [100 * acc[k][1] for k in common], s=4, c="lightgray")
    other = fronts["server" if s == "edge" else "edge"]
    for keys, style, label in ((fronts[s], "C0o-", f"{s} front"),
                               (other, "C3x", "the other setting's front")):
      pts = sorted((lat[k], 100 * acc[k][1]) for k in keys)
      ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=4, label=label,
              lw=1 if style.endswith("-") else 0)
    ax.set_xlabel(f"latency on this machine, {s} setting (ms)")
    ax.set_ylabel("v1 table test accuracy (%)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("command", choices=("measure", "report"))
  parser.add_argument("--setting", choices=tuple(SETTINGS), default="edge")
  parser.add_argument("--repeat", type=int, default=0, help="measure: 0, or 1 for the re-check")
  parser.add_argument("--repeats", type=int, default=50,
                      help="measure: timed rounds per cell (the minimum CPU time is kept)")
  parser.add_argument("--group", type=int, default=None,
                      help="measure: cells compiled together and timed in interleaved rounds "
                           "(default: 1 for edge, 25 for server)")
  parser.add_argument("--core", type=int, default=None,
                      help="measure: the core to pin to (default: the last one allowed)")
  parser.add_argument("--limit", type=int, default=0, help="measure: at most this many new cells")
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args(argv)
  cmd_measure(args) if args.command == "measure" else cmd_report(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
