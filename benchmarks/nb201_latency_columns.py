"""Latency of every unique NB201 MNIST-1D cell on this machine, in two settings that act as two devices (issue 30 item 1).

  python benchmarks/nb201_latency_columns.py measure --setting edge             # batch 1
  python benchmarks/nb201_latency_columns.py measure --setting server           # batch 256
  python benchmarks/nb201_latency_columns.py measure --setting server --core 0 --shard 0/2 &
  python benchmarks/nb201_latency_columns.py measure --setting server --core 1 --shard 1/2  # two cores
  python benchmarks/nb201_latency_columns.py measure --setting edge --repeat 1 --limit 500
  python benchmarks/nb201_latency_columns.py report    # columns, agreement, fronts: CSV/JSON/MD/PNG

``measure`` times the forward pass of each unique cell's network under the v1 table's protocol
(``benchmarks/results/nb201_mnist1d/protocol.json``: C=8, one cell per stage, 40x1 inputs, 10
classes), freshly initialised (latency does not depend on the weights' values), compiled once
per cell. Cells go in the table build's fixed shuffled order, so any prefix is a uniform sample
(the repeat, ``--repeat 1``, may stop at ``--limit`` cells); a killed run resumes where it
stopped (``OUT/latency-SETTING-rREPEAT.csv``, one row per cell).

How it is timed, so that it holds on a shared machine: one pinned core (``--core``, default the
last), XLA's intra-op threading off, each call timed by this process's CPU time (a
single-threaded call's run time without the time another process held the core). Cells are
compiled in groups of ``--group`` (25), and a group is timed in ``--repeats`` (5) passes spread
over the next group's compilation: a pass runs each cell's calls back to back for about 10 ms,
so the caches are warm again after the compilation in between, and the latency is the minimum
over all passes. Measured, as the Spearman between two repeats (the whole trial table is in
benchmarks/results/README.md, "Latency columns"):

* one back-to-back block per cell, right after its compilation: edge alone 0.95 over 100 cells
  in one quiet stretch, 0.62 over 300 in another. The host (a VM) slows every call at times,
  for seconds, and a block falls inside such a stretch whole.
* rounds of a few calls spread over the next group's compilation: 0.79; each round ran cold
  after a compilation (latencies 14-20 % higher, some doubled).
* warm passes spread over the next group's compilation (this): **0.986** over 100 cells, 95 %
  of cells within 8 %.
* ``edge`` needs **the other cores quiet**: at batch 1 a pass is 0.13-0.45 ms of per-op
  overhead and cache misses, and the server measurement on the other core moved it by 30-50 %.
  ``server`` repeated at 0.966 over 150 cells with the edge measurement beside it (interleaved
  rounds, the method before this), so it can run beside other work.

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

from jnas.cli_support import shard_arg  # no JAX import: safe before pinning

ROOT = Path(__file__).resolve().parents[1]
TABLE_V1 = ROOT / "benchmarks" / "results" / "nb201_mnist1d"
OUT = ROOT / "benchmarks" / "results" / "nb201_latency"
# group: cells compiled together and timed in passes spread over the next group's compilation.
SETTINGS = {"edge": {"batch": 1, "group": 25}, "server": {"batch": 256, "group": 25}}
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
  todo = todo[args.shard[0]::args.shard[1]]
  batch = SETTINGS[args.setting]["batch"]
  try:  # exclusive create: shards started together write the header once
    with open(path, "x", newline="") as f:
      csv.writer(f).writerow(COLUMNS)
  except FileExistsError:
    pass
  t_start = time.time()
  size = args.group or SETTINGS[args.setting]["group"]
  per_compile = args.repeats / size  # passes of the previous group per compilation
  # Appended a group at a time in one write (a group's rows are a few KB), so shards can share it.
  with open(path, "a", newline="") as f:
    w = csv.writer(f)

    def one_pass(group):
      for c in group:
        if c.passes < args.repeats:
          c.time_pass()

    def flush(group):
      while any(c.passes < args.repeats for c in group):
        time.sleep(0.3)  # no next group's compilation to spread over: spread over time instead
        one_pass(group)
      for c in group:
        w.writerow([c.key, c.arch, f"{1e3 * c.best:.5f}", f"{c.seconds:.2f}"])
      f.flush()

    previous, current, written = [], [], len(done)
    for key, n in todo:
      g = genotype_at(n, space)
      net = NB201Network(g, 1, 10, ndim=1, channels=proto["channels"],
                         cells_per_stage=proto["cells_per_stage"], space=space,
                         rngs=nnx.Rngs(0))
      current.append(_Timed(key, space.format(g), net, batch))
      due = int(len(current) * per_compile) - int((len(current) - 1) * per_compile)
      for _ in range(due):
        one_pass(previous)
      if len(current) == size:
        flush(previous)
        written += len(previous)
        previous, current = current, []
        print(f"{args.setting} r{args.repeat}: {written} cells, {time.time() - t_start:.0f} s "
              f"this run", flush=True)
    for group in (previous, current):
      flush(group)
      written += len(group)
    print(f"{args.setting} r{args.repeat}: {written} cells, {time.time() - t_start:.0f} s this run",
          flush=True)


class _Timed:
  """One cell's compiled forward pass, timed a pass at a time: the minimum CPU time of a call
  over ``number`` back-to-back calls per pass (about 10 ms of them) and over the passes."""

  def __init__(self, key: str, arch: str, net, batch: int):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    t0 = time.time()
    self.key, self.arch = key, arch
    graphdef, state = nnx.split(net)
    x = jnp.zeros((batch, 40, 1), jnp.float32)
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=False))
    self.fn, self.args = fwd.lower(state, x).compile(), (state, x)
    for _ in range(3):
      jax.block_until_ready(self.fn(*self.args))
    t = time.process_time()
    jax.block_until_ready(self.fn(*self.args))
    # Each pass: back-to-back calls for about 10 ms (at least 5), so that the caches are warm
    # again after whatever ran in between (a compilation): the minimum is a warm call's.
    self.number = max(5, min(200, int(1e-2 / max(time.process_time() - t, 1e-7))))
    self.best, self.passes = float("inf"), 0
    self.seconds = time.time() - t0

  def time_pass(self) -> None:
    import jax  # noqa: PLC0415

    t_start = time.time()
    for _ in range(self.number):
      t0 = time.process_time()
      jax.block_until_ready(self.fn(*self.args))
      self.best = min(self.best, time.process_time() - t0)
    self.passes += 1
    self.seconds += time.time() - t_start


def _read(path: Path) -> dict[str, float]:
  with open(path, newline="") as f:
    return {r["canonical"]: float(r["latency_ms"]) for r in csv.DictReader(f)}


def v1_accuracy() -> dict[str, tuple[str, float]]:
  """Each unique v1 cell's (arch string, test accuracy), keyed by its canonical form."""
  with open(TABLE_V1 / "table.csv", newline="") as f:
    acc: dict[str, tuple[str, float]] = {}
    for r in csv.DictReader(f):
      acc.setdefault(r["canonical"], (r["arch_str"], float(r["test_acc"])))
  return acc


def cmd_report(args) -> None:
  import numpy as np  # noqa: PLC0415
  from scipy.stats import spearmanr  # noqa: PLC0415

  from jnas.estimation.pareto import non_dominated_mask  # noqa: PLC0415

  out = Path(args.out)
  runs = {p.stem[len("latency-"):]: _read(p) for p in sorted(out.glob("latency-*-r*.csv"))}
  if not runs:
    raise SystemExit(f"nb201_latency_columns: error: no latency-SETTING-rN.csv in {out}; run "
                     f"'measure' first")
  acc = v1_accuracy()
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
      mask = non_dominated_mask(pts, [("test_acc", "max"), ("latency", "min")])
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
  parser.add_argument("--repeats", type=int, default=5,
                      help="measure: timed passes per cell (the minimum CPU time is kept)")
  parser.add_argument("--group", type=int, default=None,
                      help="measure: cells per group; a group's passes are spread over the "
                           "next group's compilation (25)")
  parser.add_argument("--core", type=int, default=None,
                      help="measure: the core to pin to (default: the last one allowed)")
  parser.add_argument("--limit", type=int, default=0, help="measure: at most this many new cells")
  parser.add_argument("--shard", type=shard_arg, default=(0, 1),
                      help="measure: I/N, this process's share of the cells left (run N "
                           "processes on N cores; they append to the same CSV)")
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args(argv)
  cmd_measure(args) if args.command == "measure" else cmd_report(args)
  return 0


if __name__ == "__main__":
  sys.exit(main())
