"""Builds a latency lookup table for a chain space on this machine, and checks it.

  python benchmarks/latency_table.py --config experiments/fbnet_mnist1d.py --batch 1 \\
      --out table.json
  python benchmarks/latency_table.py --config experiments/fbnet_mnist1d.py --batch 1 \\
      --validate 20 [--table table.json] [--json]

The first times every candidate op at every block (its real input shape) as
compiled code on the current JAX backend and saves the table as JSON. With
``--validate N`` it also (or, given ``--table``, only) compares the predicted
latency of N random architectures with their measured end-to-end latency and
prints Pearson r, Spearman rho, Kendall tau and the mean absolute percentage
error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="experiment config with a chain space")
  p.add_argument("--batch", type=int, default=None, help="batch size (default: config's "
                 "latency.batch_size)")
  p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: config)")
  p.add_argument("--repeats", type=int, default=None, help="timed repeats per op (median kept)")
  p.add_argument("--out", default=None, help="where to write the table (JSON)")
  p.add_argument("--table", default=None, help="validate this existing table instead of "
                 "building one")
  p.add_argument("--validate", type=int, default=0, metavar="N",
                 help="compare predicted and measured latency of N random architectures")
  p.add_argument("--stat", default=None, choices=["median", "min"],
                 help="statistic over timed calls (median, or min: robust on a loaded machine)")
  p.add_argument("--clock", default=None, choices=["wall", "cpu"],
                 help="wall: elapsed time; cpu: process CPU time (CPU backend, one thread per "
                 "op; insensitive to other processes); default: the config's latency.clock")
  p.add_argument("--cpu-threads", type=int, default=None,
                 help="threads per op on XLA:CPU (1: single-threaded; 0: XLA's default); "
                 "default: the config's latency.cpu_threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="print the result as JSON")
  p.add_argument("--verbose", action="store_true", help="print every op's time")
  args = p.parse_args(argv)

  from jnas.config import load_config

  config = load_config(args.config)
  # Importing jnas.estimation.latency does not start JAX's backend, so the
  # thread setting below still applies (XLA reads its flags at backend start).
  from jnas.estimation.latency import latency_settings, set_cpu_threads
  lat = latency_settings(config)
  threads = args.cpu_threads if args.cpu_threads is not None else lat["cpu_threads"]
  set_cpu_threads(threads)

  import jax

  from jnas.estimation.latency import build_latency_table, load_latency_table, validate_table
  from jnas.ops.primitives import set_depthwise_impl
  from jnas.spaces.chain import space_from_config

  if "model" in config and "depthwise_impl" in config.model:
    set_depthwise_impl(config.model.depthwise_impl)
  space = space_from_config(config)
  batch = args.batch or lat["batch_size"]
  dtype = args.dtype or lat["dtype"]
  repeats = args.repeats or lat["repeats"]
  stat = args.stat or lat["statistic"]
  clock = args.clock or lat["clock"]

  result: dict = {"config": args.config, "space": space.name,
                  "space_fingerprint": space.fingerprint(), "num_blocks": space.num_blocks,
                  "num_candidates": len(space.candidates), "batch_size": batch, "dtype": dtype,
                  "statistic": stat, "clock": clock, "cpu_threads": threads,
                  "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind)}
  if args.table:
    table = load_latency_table(args.table, space=space, batch_size=batch, dtype=dtype)
    result["table"] = args.table
  else:
    t0 = time.perf_counter()
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    table = build_latency_table(space, batch, dtype, repeats, seed=args.seed, stat=stat,
                                clock=clock, progress=log)
    result["build_seconds"] = round(time.perf_counter() - t0, 2)
    if args.out:
      table.save(args.out)
      result["table"] = args.out
  result.update(stem_ms=table.stem_ms, head_ms=table.head_ms, overhead_ms=table.overhead_ms,
                min_predicted_ms=table.fixed_ms + float(table.ops_ms.min(axis=1).sum()),
                max_predicted_ms=table.fixed_ms + float(table.ops_ms.max(axis=1).sum()))
  if args.validate:
    t0 = time.perf_counter()
    v = validate_table(space, table, args.validate, seed=args.seed, repeats=repeats)
    result["validate"] = {k: v[k] for k in ("pearson", "spearman", "kendall_tau", "mape",
                                            "mean_relative_error")}
    result["validate"]["num_archs"] = args.validate
    result["validate"]["seconds"] = round(time.perf_counter() - t0, 2)
    result["validate"]["architectures"] = v["architectures"]

  if args.json:
    print(json.dumps(result, indent=2))
  else:
    for k, v in result.items():
      if k == "validate":
        for kk, vv in v.items():
          if kk == "architectures":
            for a in vv:
              print(f"  predicted {a['predicted_ms']:.4f} ms  measured {a['measured_ms']:.4f} ms"
                    f"  {' '.join(a['blocks'])}")
          else:
            print(f"validate.{kk}: {vv:.4f}" if isinstance(vv, float) else
                  f"validate.{kk}: {vv}")
      else:
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
  return result


if __name__ == "__main__":
  main()
