"""Scores a population of DARTS-space architectures with shared supernet weights.

  python benchmarks/population_eval.py --json

On the CPU-sized MNIST-1D supernet (experiments/darts_mnist1d.py's search
network), every one of ``--num`` random architectures is scored as SPOS does:
batch-norm statistics recalibrated on ``--calib`` training batches, then
accuracy on ``--val`` validation batches. Two ways are timed after
compilation:

* ``population_s``: jnas's population evaluator, ``lax.map`` of the
  single-path evaluator over the stacked encodings inside one jitted call:
  only each architecture's chosen ops run, and nothing recompiles;
* ``loop_s``: a Python loop calling a jitted single-architecture evaluator
  of the full mixed op (every candidate runs, weighted by the one-hot
  encoding), in the faster of its two forms: validation batches one at a
  time (``loop_per_batch_s``) or merged into one pass (``loop_merged_s``).

The population evaluator runs BN recalibration and validation as one
forward pass (``fuse_calibration``, see
``jnas.ops.primitives.recalibrating_batch_norm``), unrolls the loops over
each cell's edges (``unroll=True``) and, with ``--prefix on`` (the default),
computes once for the whole population the part no architecture changes
(``DartsSupernet.shared_prefix``: the stem and every candidate on the edges
it feeds, 12 of the 42 edges); all give the same numbers as the plain form
(separate calibration passes, looped edges, everything per architecture).

With ``--devices auto`` (the default) the population is split over one CPU
host device per core (``make_population_evaluator(mesh=...)``), each device
mapping over its share on a core of its own, and the loop runs in a child
process with JAX's default single device (two host devices must not change
the baseline). ``--devices 1`` keeps everything in one process on one device.

``compilations`` counts the traces of the population evaluator (1 means
every architecture reused one compiled function); ``max_abs_diff`` compares
the two accuracies architecture by architecture.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num", type=int, default=256, help="architectures")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--calib", type=int, default=2, help="BN recalibration batches")
  p.add_argument("--val", type=int, default=4, help="validation batches")
  p.add_argument("--C", type=int, default=8)
  p.add_argument("--layers", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--library-fusions", default="auto", choices=["auto", "on", "off"],
                 help="XLA:CPU YNNPACK library fusions for both evaluators (jnas/utils/xla.py)")
  p.add_argument("--devices", default="auto",
                 help="CPU host devices the population is split over ('auto': one per core, "
                      "at most 2 here; 1: no split); the loop then runs in a child process "
                      "with JAX's default single device")
  p.add_argument("--prefix", default="on", choices=["on", "off"],
                 help="compute the architecture-independent prefix once per population")
  p.add_argument("--loop-only", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if args.devices != "auto" and not (args.devices.isdigit() and int(args.devices) >= 1):
    p.error(f"--devices must be 'auto' or a positive integer, got {args.devices!r}")
  devices = (max(1, len(os.sched_getaffinity(0))) if args.devices == "auto"
             else int(args.devices))
  if args.loop_only:
    devices = 1

  import jax
  if devices > 1:  # before JAX starts its CPU backend
    jax.config.update("jax_num_cpu_devices", devices)
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from jnas.data import load_dataset
  from jnas.spaces.darts import DartsSpace
  from jnas.strategies.spos import make_population_evaluator
  from jnas.supernet import DartsSupernet, make_apply, make_prefix, split_model

  ds = load_dataset("mnist1d")
  x, y = np.asarray(ds.x_train, np.float32), np.asarray(ds.y_train)
  need = (args.calib + args.val) * args.batch
  if need > len(x):
    raise SystemExit(f"population_eval: error: {need} examples needed, the dataset has {len(x)}")
  xb = x[:need].reshape((args.calib + args.val, args.batch) + x.shape[1:])
  yb = y[:need].reshape(args.calib + args.val, args.batch)
  calib_x = jnp.asarray(xb[:args.calib])
  val_x, val_y = jnp.asarray(xb[args.calib:]), jnp.asarray(yb[args.calib:])

  space = DartsSpace()
  net = DartsSupernet(space, x.shape[-1], ds.num_classes, ndim=x.ndim - 2, channels=args.C,
                      layers=args.layers, rngs=nnx.Rngs(args.seed))
  s = split_model(net)
  encs = space.sample_encodings(np.random.default_rng(args.seed), args.num)
  encs = {k: jnp.asarray(v, jnp.float32) for k, v in encs.items()}

  from jnas.utils.xla import compiler_options, library_fusions_label

  xla_options = compiler_options(args.library_fusions, ndim=x.ndim - 2)
  if args.loop_only:
    loop = _loop(args, s, encs, calib_x, val_x, val_y, xla_options)
    print(json.dumps(loop))
    return loop

  traces = []
  mesh = None
  if devices > 1:
    from jnas.parallel import seed_mesh
    mesh = seed_mesh(devices)
  population_fn = make_population_evaluator(
      make_apply(s.graphdef, single_path=True, unroll=True), mesh=mesh,
      prefix_fn=make_prefix(s.graphdef) if args.prefix == "on" else None)

  def population(params, stats, encodings, calib_x, val_x, val_y):
    traces.append(1)  # runs only while tracing
    return population_fn(params, stats, encodings, calib_x, val_x, val_y)

  pop = jax.jit(population, compiler_options=xla_options)
  t0 = time.perf_counter()
  pop_c = pop.lower(s.params, s.state, encs, calib_x, val_x, val_y).compile()
  pop_compile = time.perf_counter() - t0
  # Timed three times (two different populations), fastest reported: one call is
  # a few seconds, so another process's burst can double a single reading.
  encs2 = {k: jnp.asarray(v, jnp.float32) for k, v in space.sample_encodings(
      np.random.default_rng(args.seed + 1), args.num).items()}
  population_runs = []
  for e in (encs, encs2, encs):
    t0 = time.perf_counter()
    out = jax.block_until_ready(pop_c(s.params, s.state, e, calib_x, val_x, val_y))
    population_runs.append(time.perf_counter() - t0)
    if e is encs:
      pop_acc = out
  population_s = min(population_runs)
  # Through the jitted function too: a new population must not trace again.
  jax.block_until_ready(pop(s.params, s.state, encs2, calib_x, val_x, val_y))

  if devices > 1:  # the baseline on JAX's default single device, as a user's loop runs
    cmd = [sys.executable, __file__, "--loop-only", "--num", str(args.num), "--batch",
           str(args.batch), "--calib", str(args.calib), "--val", str(args.val), "--C",
           str(args.C), "--layers", str(args.layers), "--seed", str(args.seed),
           "--library-fusions", args.library_fusions]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise SystemExit(f"population_eval: the loop's child process failed: {proc.stderr[-2000:]}")
    loop = json.loads(proc.stdout.strip().splitlines()[-1])
  else:
    loop = _loop(args, s, encs, calib_x, val_x, val_y, xla_options)
  loop_s, loop_compile, loop_acc = loop["loop_s"], loop["loop_compile_s"], loop["accuracy"]

  diff = float(np.max(np.abs(np.asarray(pop_acc["accuracy"]) - np.asarray(loop_acc))))
  result = {
      "num_architectures": args.num, "batch": args.batch, "calib_batches": args.calib,
      "val_batches": args.val, "C": args.C, "layers": args.layers,
      "population_s": population_s, "population_runs_s": population_runs,
      "population_compile_s": pop_compile,
      "loop_s": loop_s, "loop_compile_s": loop_compile,
      "loop_per_batch_s": loop["loop_per_batch_s"], "loop_merged_s": loop["loop_merged_s"],
      "devices": devices, "prefix": args.prefix,
      "loop_process": "child (JAX's default single CPU device)" if devices > 1 else "same",
      "ratio": loop_s / population_s, "compilations": len(traces),
      "max_abs_diff": diff, "library_fusions": library_fusions_label(xla_options),
      "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}), {platform.machine()}",
      "command": "python benchmarks/population_eval.py --json",
  }
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k:22s} {v:.4g}" if isinstance(v, float) else f"{k:22s} {v}")
  return result


def _loop(args, s, encs, calib_x, val_x, val_y, xla_options) -> dict:
  """The baseline: a Python loop over the jitted full-mixed-op evaluator, the faster of its forms."""
  import jax

  from jnas.strategies.spos import make_recalibrated_evaluator
  from jnas.supernet import make_apply

  one = lambda i: {k: v[i] for k, v in encs.items()}  # noqa: E731
  runs = {}
  for merged in (False, True):
    full = jax.jit(make_recalibrated_evaluator(make_apply(s.graphdef), merge_val_batches=merged),
                   compiler_options=xla_options)
    t0 = time.perf_counter()
    jax.block_until_ready(full(s.params, s.state, one(0), calib_x, val_x, val_y))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = [float(full(s.params, s.state, one(i), calib_x, val_x, val_y)["accuracy"])
           for i in range(args.num)]
    runs[merged] = (time.perf_counter() - t0, compile_s, acc)
  best = min(runs, key=lambda m: runs[m][0])
  return {"loop_s": runs[best][0], "loop_compile_s": runs[best][1], "accuracy": runs[best][2],
          "loop_per_batch_s": runs[False][0], "loop_merged_s": runs[True][0]}


if __name__ == "__main__":
  main()
