"""Where a search step (DARTS, GDAS or SPOS) spends its time: per-fusion and per-op-kind profile.

  python benchmarks/profile_step.py --layers 2 --batch 32 [--top 30]
  python benchmarks/profile_step.py --ndim 1 --layers 3 --C 8 --batch 64 [--seeds 4]
  python benchmarks/profile_step.py --strategy gdas --layers 8 --batch 32 --steps 6

Compiles the DARTS first-order step of the search supernet (C=16, 32x32x3;
``--strategy gdas|spos`` for the single-path steps),
runs it once under ``jax.profiler`` and prints the slowest XLA thunks (fused
kernels) with their output shape and the JAX operation they came from, then
totals by operation kind, split into forward (``fwd``) and backward
(``bwd``, JAX's ``transpose``). This is how the optimisation barrier on tap
inputs and the split-instead-of-slice change were found (see
benchmarks/results/README.md). ``--layers 2`` compiles in about a minute on 2 cores; the
8-cell network takes about three. ``--ndim 1`` profiles the MNIST-1D search step
(40x1 inputs) instead, and ``--seeds N`` the step ``benchmarks/seeds.py``
vmaps over N searches. Both use the library-fusion setting ``jnas search``
uses for the DARTS space (``jnas/utils/xla.py``).

Where the *compile* time goes is in XLA's own log: run with
``TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=cpu_compiler=1,hlo_pass_pipeline=1,thunk_emitter=1``
and read the ``Running HLO passes on [jit_step]`` line (HLO passes), count
the ``Running LLVM verifier`` lines after it (kernels compiled) and the
``Reusing kernel`` lines (identical fusions XLA:CPU compiles once). For the
2-cell step: 13 s of HLO passes, 867 kernels compiled, 536 reused; compile
time follows the number of distinct fusions.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--C", type=int, default=16)
  p.add_argument("--top", type=int, default=30)
  p.add_argument("--ndim", type=int, default=2, choices=(1, 2),
                 help="2: 32x32x3 images; 1: MNIST-1D-shaped 40x1 sequences")
  p.add_argument("--strategy", default="darts", choices=("darts", "gdas", "spos"),
                 help="darts: first order, every candidate runs; gdas: hard Gumbel samples, "
                      "single path; spos: one uniform path, weight step only")
  p.add_argument("--steps", type=int, default=3, help="timed steps before the profiled one")
  p.add_argument("--seeds", type=int, default=0,
                 help="profile the step vmapped over this many searches (0: one search)")
  args = p.parse_args(argv)

  work = tempfile.mkdtemp(prefix="jnas_profile_")
  dump = os.path.join(work, "hlo")
  # The HLO dump maps fusion names back to JAX operations; it must be set
  # before the backend starts.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_dump_to={dump} --xla_dump_hlo_as_text"
                             " --xla_dump_hlo_module_re=.*step.*")
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jnas.spaces.darts import DartsSpace
  from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
  from jnas.strategies.gumbel import gdas
  from jnas.strategies.spos import encoding_pool, spos
  from jnas import parallel
  from jnas.supernet import DartsSupernet, make_apply, split_model
  from jnas.utils.xla import compiler_options

  space = DartsSpace()
  in_shape = (32, 32, 3) if args.ndim == 2 else (40, 1)

  def build(seed: int):
    net = DartsSupernet(space, in_shape[-1], 10, ndim=args.ndim, channels=args.C,
                        layers=args.layers, rngs=nnx.Rngs(seed))
    s = split_model(net)
    w_opt, a_opt = weight_optimizer(total_steps=1000), arch_optimizer()
    alpha = space.init_alpha(jax.random.key(seed))
    if args.strategy == "gdas":
      return gdas(make_apply(s.graphdef, single_path=True), s.params, s.state, alpha,
                  w_opt=w_opt, a_opt=a_opt, total_steps=1000)
    if args.strategy == "spos":
      return spos(make_apply(s.graphdef, single_path=True), s.params, s.state,
                  encoding_pool(space, 1024), w_opt=w_opt)
    return darts(make_apply(s.graphdef), s.params, s.state, alpha, w_opt=w_opt, a_opt=a_opt)

  strat = build(0)
  options = compiler_options("auto", ndim=args.ndim, fusions_slower=True)
  batch = (jax.random.normal(jax.random.key(1), (args.batch,) + in_shape),
           jnp.arange(args.batch) % 10)
  if args.seeds:
    state = parallel.init_seeds(lambda k: build(k).init(jax.random.key(k)), range(args.seeds))
    batch = jax.tree.map(lambda a: jnp.stack([a] * args.seeds), batch)
    jitted = parallel.vmap_step(strat.step, donate=False, compiler_options=options)
  else:
    state = strat.init(jax.random.key(0))
    jitted = jax.jit(strat.step, compiler_options=options)
  t0 = time.perf_counter()
  step = jitted.lower(state, batch, batch).compile()
  print(f"compile: {time.perf_counter() - t0:.1f} s")
  jax.block_until_ready(step(state, batch, batch))
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    # The sampling strategies draw a new path each step: advance the state so
    # the figures average over paths instead of repeating one.
    state, _ = step(state, batch, batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  print(f"step: min {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
        f"of {len(times)}")

  trace_dir = os.path.join(work, "trace")
  with jax.profiler.trace(trace_dir):
    jax.block_until_ready(step(state, batch, batch))
  trace = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
  durations: collections.Counter = collections.Counter()
  for event in json.load(gzip.open(trace))["traceEvents"]:
    if event.get("ph") == "X":
      durations[event["name"]] += event["dur"]
  modules = sorted(glob.glob(f"{dump}/*jit_step*after_optimizations.txt"), key=os.path.getsize)
  hlo = open(modules[-1]).read() if modules else ""

  # One pass over the HLO text: a regex search per kernel name over the
  # whole module took more than 15 minutes for the 8-cell step.
  first: dict[str, tuple[str, str, str]] = {}  # name -> (shape, metadata line, operand list)
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = ([^\n]*)", hlo, re.MULTILINE):
    if m.group(1) not in first:
      head = re.match(r"(\(.*?\)|\S+) [\w\-]+\(([^)]*)\)", m.group(2))
      first[m.group(1)] = (head.group(1) if head else m.group(2).split(" ")[0], m.group(2),
                           head.group(2) if head else "")
  described: dict[str, tuple[str, str, int]] = {}
  for name, (shape, rest, operands) in first.items():
    op = re.search(r'op_name="([^"]*)"', rest)
    # Bytes a kernel must move at least: its operands and outputs.
    moved = _bytes(shape) + sum(_bytes(first[a][0]) for a in re.findall(r"%([\w.\-]+)", operands)
                                if a in first)
    described[name] = (rest.split(" ")[0][:40],
                       (op.group(1) if op else "?").replace("jit(step)/", ""), moved)

  kinds: collections.Counter = collections.Counter()
  rows = []
  for name, us in durations.most_common():
    d = described.get(name)
    if d is None:
      continue  # runtime bookkeeping, not a kernel
    shape, op, moved = d
    rows.append((us, name, shape, op, moved))
    # "scope/op": the primitive's named scope (jnas.ops.primitives) and the XLA op.
    kinds[("bwd " if "transpose" in op else "fwd ") + "/".join(op.split("/")[-2:])] += us
  # GB/s: operand + output bytes over kernel time. Low figures flag slow code,
  # but also fusions that compute their producers inline (no operand bytes),
  # which can be the efficient form: replacing the broadcast-gradient
  # reduce_sums (2-7 GB/s here) by dots made the 8-cell step slower.
  print(f"\nslowest {args.top} kernels (ms, GB/s, name, output, JAX op):")
  for us, name, shape, op, moved in rows[:args.top]:
    print(f"{us / 1e3:8.1f} {moved / us / 1e3:6.1f}  {name[:32]:32s} {shape:40s} {op[-60:]}")
  total_us = max(sum(r[0] for r in rows), 1)
  total_bytes = sum(r[4] for r in rows)
  print(f"\nall kernels: {total_us / 1e6:.2f} s of kernel time, at least "
        f"{total_bytes / 1e9:.1f} GB moved ({total_bytes / total_us / 1e3:.1f} GB/s per kernel-second)")
  print("\nby operation kind (ms; kernels overlap on several cores):")
  for kind, us in kinds.most_common(40):
    print(f"{us / 1e3:8.1f}  {kind}")


def _bytes(shape: str) -> int:
  """Bytes of an HLO shape string such as ``f32[2,3]{1,0}`` or a tuple of them."""
  sizes = {"f64": 8, "s64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2,
           "s8": 1, "u8": 1, "pred": 1}
  return sum(sizes.get(dtype, 4) * math.prod(int(d) for d in filter(None, dims.split(",")))
             for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape))


if __name__ == "__main__":
  main(sys.argv[1:])
