"""Non-transferable optimality, measured: FBNet searched for two settings of this machine.

  python benchmarks/fbnet_devices.py [--json] [--epochs 6] [--b 3.0]

Builds two latency tables for one chain space on MNIST-1D, for two settings
that really differ here (default: batch 256 in float32 vs batch 256 in
bfloat16 on XLA:CPU), runs the same FBNet search (same seed, same data) once
per table, and derives architecture A (for setting 1) and B (for setting 2).
Then it MEASURES the end-to-end latency of A and B in both settings
(``measure_latencies``: whole compiled networks, interleaved timing rounds)
and reports whether A is faster than B on setting 1 and B faster than A on
setting 2, with each architecture's validation accuracy under the
supernet's shared weights.

The default space gives every block two candidates that trade places between
the settings: ``k3_e3`` (a 3x expansion with dense 1x1 convolutions) and
``k5_e1_g2`` (no expansion, a two-group 1x1 projection). On XLA:CPU a grouped
1x1 convolution in bfloat16 is several times slower than in float32, so the
table for bfloat16 ranks ``k3_e3`` first and the float32 table ``k5_e1_g2``
(the script prints both tables; /work/notes/helper_fbnet.md quotes a run).

Shared-weight accuracy is reported as measured, with batch norm re-estimated
for each architecture; with this short, high-temperature search it is far
below the supernet's accuracy under the soft encoding (the blocks co-adapt to
the mixture), so it does not rank A and B.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse_setting(text: str) -> tuple[str, int]:
  """``"float32@256"`` -> ``("float32", 256)``; ``ValueError`` naming the problem otherwise.

  Example:
    >>> parse_setting("bfloat16@1")
    ('bfloat16', 1)
  """
  dtype, _, batch = text.partition("@")
  if not batch.isdigit() or int(batch) < 1 or not dtype:
    raise ValueError(f"setting {text!r} must be DTYPE@BATCH, e.g. float32@256")
  return dtype, int(batch)


def demo_space(candidates: tuple[str, ...]):
  """The MNIST-1D chain space of the demonstration (small enough for a 2-core CPU).

  Example:
    >>> demo_space(("k3_e3", "k5_e1_g2")).num_blocks
    5
  """
  from jnas.spaces.chain import FBNetSpace

  return FBNetSpace((40, 1), 10, stem_channels=16, stem_stride=1,
                    stages=((16, 1, 1), (32, 2, 2), (48, 2, 2)), head_channels=64,
                    candidates=candidates)


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--settings", default="float32@256,bfloat16@256",
                 help="two settings DTYPE@BATCH, comma-separated")
  p.add_argument("--candidates", default="k3_e3,k5_e1_g2", help="candidates of every block")
  p.add_argument("--epochs", type=int, default=5, help="search epochs (first is warm-up)")
  p.add_argument("--warmup", type=int, default=1, help="weight-only epochs")
  p.add_argument("--batch-size", type=int, default=100, help="search batch size")
  p.add_argument("--a", type=float, default=0.2, help="FBNet's a in CE * a * log(LAT)^b")
  p.add_argument("--b", type=float, default=3.0, help="FBNet's b (the paper: 0.6)")
  p.add_argument("--a-lr", type=float, default=0.03, help="Adam learning rate of alpha")
  p.add_argument("--repeats", type=int, default=10, help="timing rounds (tables, measurement)")
  p.add_argument("--cpu-threads", type=int, default=1,
                 help="XLA:CPU threads per op (1: single-threaded, steadier on a busy machine)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print the result as JSON")
  args = p.parse_args(argv)
  settings = [parse_setting(s) for s in args.settings.split(",")]
  if len(settings) != 2 or settings[0] == settings[1]:
    raise ValueError(f"--settings needs two different settings, got {args.settings!r}")

  from jnas.estimation.latency import set_cpu_threads
  set_cpu_threads(args.cpu_threads)  # before JAX starts its backend

  import numpy as np

  from jnas.data import load_dataset, split_train_val
  from jnas.estimation.latency import build_latency_table, measure_latencies, predicted_latency
  from jnas.search.fbnet import search_fbnet

  t0 = time.perf_counter()
  say = (lambda line: print(line, file=sys.stderr, flush=True))
  space = demo_space(tuple(args.candidates.split(",")))
  names = [f"{d}@{b}" for d, b in settings]

  # --- latency tables, one per setting ---------------------------------------
  tables = []
  for (dtype, batch), name in zip(settings, names):
    t = time.perf_counter()
    tables.append(build_latency_table(space, batch, dtype, args.repeats, seed=args.seed,
                                      stat="min"))
    say(f"table {name}: {time.perf_counter() - t:.1f} s, per-op ms "
        f"{np.round(tables[-1].ops_ms, 3).tolist()}")

  # --- one FBNet search per table, same seed and data --------------------------
  ds = load_dataset("mnist1d")
  data = split_train_val(ds.x_train, ds.y_train, seed=args.seed)
  results = []
  for table, name in zip(tables, names):
    say(f"search for {name}")
    results.append(search_fbnet(space, table, data, epochs=args.epochs, seed=args.seed,
                                batch_size=args.batch_size, warmup_epochs=args.warmup,
                                a=args.a, b=args.b, a_lr=args.a_lr,
                                log=lambda line: say("  " + line)))
  genos = [r.genotype for r in results]

  # --- measure both architectures in both settings ---------------------------
  measured = []
  for dtype, batch in settings:
    measured.append(measure_latencies(space, genos, batch, dtype, args.repeats,
                                      seed=args.seed, stat="min"))
  a_wins = measured[0][0] < measured[0][1]
  b_wins = measured[1][1] < measured[1][0]
  out = {
      "space": space.config(), "settings": names, "seed": args.seed, "epochs": args.epochs,
      "a": args.a, "b": args.b,
      "tables_ms": {n: np.round(t.ops_ms, 4).tolist() for n, t in zip(names, tables)},
      "architectures": {
          label: {"searched_for": names[i], "blocks": list(genos[i].blocks),
                  "val_acc_shared_weights": results[i].val_acc,
                  "search_seconds": round(results[i].seconds, 1),
                  "predicted_ms": {n: predicted_latency(t, genos[i])
                                   for n, t in zip(names, tables)},
                  "measured_ms": {n: measured[s][i] for s, n in enumerate(names)}}
          for i, label in enumerate("AB")},
      "different_architectures": genos[0] != genos[1],
      "A_faster_on_setting_1": bool(a_wins), "B_faster_on_setting_2": bool(b_wins),
      "non_transferable": bool(a_wins and b_wins and genos[0] != genos[1]),
      "seconds": round(time.perf_counter() - t0, 1),
  }
  if args.json:
    print(json.dumps(out, indent=2))
  else:
    for i, label in enumerate("AB"):
      r = out["architectures"][label]
      print(f"{label} (searched for {r['searched_for']}): {' '.join(r['blocks'])}  "
            f"val acc (shared weights) {r['val_acc_shared_weights']:.3f}")
    print(f"{'ms (measured / table)':<24}{'A':>18}{'B':>18}   faster")
    for s, n in enumerate(names):
      ma, mb = measured[s]
      pa, pb = (out["architectures"][lab]["predicted_ms"][n] for lab in "AB")
      print(f"{n:<24}{ma:>9.3f} /{pa:>7.3f}{mb:>9.3f} /{pb:>7.3f}   {'A' if ma < mb else 'B'}")
    print(f"A faster on {names[0]}: {a_wins}; B faster on {names[1]}: {b_wins}; "
          f"non-transferable optimality shown: {out['non_transferable']} "
          f"({out['seconds']} s)")
  return out


if __name__ == "__main__":
  main()
