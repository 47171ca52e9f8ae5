"""Times one search step of a strategy on the DARTS search network (or FBNet's chain supernet).

  python benchmarks/search_step.py --strategy darts --batch 32 --json
  python benchmarks/search_step.py --strategy fbnet --batch 32 --size 32 --json

Builds the paper's search supernet (C=16, 8 cells, 4 nodes, 32x32x3 input,
10 classes by default), compiles one step (architecture step + weight step),
then runs it ``--steps`` times on random data and reports the median seconds
per step, images per second, the compile time, the process's peak resident
memory, XLA's scratch memory for one step (``xla_temp_mb``: the working set
beyond the inputs) and, on an accelerator, the device's peak memory.
``--compile-only`` stops after compiling (trace and compile seconds, XLA's
scratch memory): a batch size that would not fit in memory can be sized first.

``--strategy fbnet`` times FBNet's step on its chain supernet instead: FBNet's
ImageNet macro-architecture (22 blocks of 9 candidates) at ``--size`` x
``--size`` x 3 input and 10 classes (``--size 224`` is the paper's), or with
``--ndim 1`` the space of ``experiments/fbnet_mnist1d.py``. Its cost
term is the expected multiply-add count under the sample (a per-choice table,
the same computation as a latency lookup table; a measured table needs a
build step that would dominate this benchmark).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--strategy", default="darts", choices=["darts", "darts2", "gdas", "snas", "spos", "fbnet"],
                 help="darts: first order; darts2: second order; gdas: hard Gumbel samples, "
                      "one op per edge; snas: soft Gumbel samples; spos: one uniform path; "
                      "fbnet: soft Gumbel samples on FBNet's chain supernet")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--C", type=int, default=16)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--nodes", type=int, default=4)
  p.add_argument("--size", type=int, default=32, help="image side (sequence length if --ndim 1)")
  p.add_argument("--ndim", type=int, default=2, choices=[1, 2],
                 help="2: size x size x 3 images; 1: sequences of length size, 1 channel "
                      "(the MNIST-1D config: --ndim 1 --size 40 --C 8 --layers 3 --batch 64)")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--hvp-mode", default="reverse_over_reverse",
                 choices=["reverse_over_reverse", "forward_over_reverse",
                          "reverse_over_forward"],
                 help="darts2: how the exact Hessian-vector product is taken")
  p.add_argument("--recompute-cells", action="store_true",
                 help="DARTS: rebuild each cell in the backward passes (DartsSupernet(recompute=True))")
  p.add_argument("--impl", default="auto", choices=["auto", "taps", "native", "xla"])
  p.add_argument("--library-fusions", default="auto", choices=["auto", "on", "off"],
                 help="XLA:CPU YNNPACK library fusions (jnas/utils/xla.py); auto: off for 1-D")
  p.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE",
                 help="extra XLA compile option, e.g. xla_cpu_prefer_vector_width=512 (repeatable)")
  p.add_argument("--saved-step", metavar="DIR", default=None,
                 help="compile as a search does (jnas.utils.step_cache.cached_jit): the traced "
                      "step saved in DIR, the persistent compilation cache in DIR/xla; run twice "
                      "with the same DIR to time a resumed search's start (compile_s: the first "
                      "call less one step)")
  p.add_argument("--compile-only", action="store_true",
                 help="stop after compiling: report trace and compile seconds and XLA's scratch "
                      "memory, run no step (a batch size that may not fit runs no risk)")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if args.compile_only and args.saved_step:
    p.error("--compile-only times a cold compilation; it cannot be combined with --saved-step")
  extra_options = {}
  for item in args.xla_option:
    key, sep, value = item.partition("=")
    if not sep or not key:
      p.error(f"--xla-option wants KEY=VALUE, got {item!r}")
    # XLA wants booleans and integers typed: "true" as a string is refused for a bool flag.
    extra_options[key] = ({"true": True, "false": False}.get(value.lower(), value)
                          if not value.lstrip("-").isdigit() else int(value))

  t_start = time.perf_counter()
  import jax
  import jax.numpy as jnp
  from flax import nnx

  if args.saved_step:  # as jnas search does, before anything compiles
    from jnas.search.common import enable_compilation_cache
    enable_compilation_cache(str(Path(args.saved_step) / "xla"))

  from jnas.ops.primitives import resolve_depthwise_impl, set_depthwise_impl
  from jnas.spaces.darts import DartsSpace
  from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
  from jnas.strategies.gumbel import gdas, snas
  from jnas.strategies.spos import encoding_pool, spos
  from jnas.supernet import DartsSupernet, count_params, make_apply, split_model

  set_depthwise_impl(args.impl)
  w_opt, a_opt = weight_optimizer(total_steps=1000), arch_optimizer()
  if args.strategy == "fbnet":
    from jnas.estimation.flops import cost_table, expected_cost
    from jnas.spaces.chain import FBNetSpace
    from jnas.strategies.gumbel import fbnet
    from jnas.supernet.chain import ChainSupernet, make_supernet_apply

    if args.ndim == 2:
      space = FBNetSpace((args.size, args.size, 3), 10)
    else:  # ImageNet's macro-architecture would pool 40 positions away: use the MNIST-1D config's
      from jnas.config import load_config
      from jnas.spaces.chain import space_from_config
      config = load_config(str(Path(__file__).resolve().parents[1] / "experiments" /
                               "fbnet_mnist1d.py"))
      config.data.input_shape = (args.size, 1)
      space = space_from_config(config)
    s = split_model(ChainSupernet(space, rngs=nnx.Rngs(0)))
    alpha = {"blocks": jnp.zeros((space.num_blocks, len(space.candidates)), jnp.float32)}
    table = cost_table(space)
    # Mega multiply-adds stand in for milliseconds: same shape of computation as a latency table.
    strat = fbnet(make_supernet_apply(s.graphdef), s.params, s.state, alpha, w_opt=w_opt,
                  a_opt=a_opt, steps_per_epoch=100,
                  latency_fn=lambda enc: expected_cost(table, enc)["madds"] / 1e6)
  else:
    space = DartsSpace(num_nodes=args.nodes)
    net = DartsSupernet(space, 3 if args.ndim == 2 else 1, 10, ndim=args.ndim, channels=args.C,
                        layers=args.layers, recompute=args.recompute_cells, rngs=nnx.Rngs(0))
    s = split_model(net)
    alpha = space.init_alpha(jax.random.key(0))
  if args.strategy in ("darts", "darts2"):
    strat = darts(make_apply(s.graphdef), s.params, s.state, alpha, w_opt=w_opt, a_opt=a_opt,
                  order=2 if args.strategy == "darts2" else 1, hvp_mode=args.hvp_mode)
  elif args.strategy == "gdas":
    strat = gdas(make_apply(s.graphdef, single_path=True), s.params, s.state, alpha,
                 w_opt=w_opt, a_opt=a_opt, total_steps=1000)
  elif args.strategy == "snas":
    strat = snas(make_apply(s.graphdef), s.params, s.state, alpha, w_opt=w_opt, a_opt=a_opt,
                 steps_per_epoch=100)
  elif args.strategy == "spos":
    strat = spos(make_apply(s.graphdef, single_path=True), s.params, s.state,
                 encoding_pool(space, 1024), w_opt=w_opt)
  state = strat.init(jax.random.key(0))
  shape = (args.batch, args.size, args.size, 3) if args.ndim == 2 else (args.batch, args.size, 1)
  batches = [(jax.random.normal(jax.random.key(i), shape), jnp.arange(args.batch) % 10)
             for i in range(2)]

  t0 = time.perf_counter()
  from jnas.utils.xla import compiler_options, library_fusions_label

  xla_options = compiler_options(args.library_fusions, ndim=args.ndim,
                                 fusions_slower=args.strategy != "fbnet")
  if extra_options:
    xla_options = {**(xla_options or {}), **extra_options}
  saved = None
  if args.saved_step:
    from jnas.utils.step_cache import cached_jit

    saved = Path(args.saved_step) / f"{args.strategy}.jaxexport"
    resumed = saved.exists()
    step = cached_jit(strat.step, saved, tag=json.dumps(vars(args), sort_keys=True),
                      donate_argnums=(0,), compiler_options=xla_options)
    state, m = step(state, batches[0], batches[1])
    jax.block_until_ready(m)
    first_s, compile_t0 = time.perf_counter(), t0
    trace_s = temp_mb = xla_flops = xla_bytes = None
  else:
    lowered = jax.jit(strat.step, donate_argnums=0, compiler_options=xla_options).lower(
        state, batches[0], batches[1])
    trace_s = time.perf_counter() - t0
    step = lowered.compile()
    compile_s = time.perf_counter() - t0
    try:  # XLA's scratch memory for one step: the step's working set, beyond its inputs
      temp_mb = step.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # not every backend reports it
      temp_mb = None
    try:  # XLA's count of the step's work (custom calls, i.e. the native kernels, count nothing)
      cost = step.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      xla_flops, xla_bytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    except Exception:  # not every backend reports it
      xla_flops = xla_bytes = None
    if args.compile_only:
      result = {"strategy": args.strategy, "batch": args.batch, "C": args.C,
                "layers": args.layers, "compile_only": True, "compile_s": compile_s,
                "trace_s": trace_s, "xla_temp_mb": temp_mb, "xla_flops": xla_flops,
                "xla_bytes": xla_bytes, "jax": jax.__version__}
      print(json.dumps(result) if args.json else
            f"{args.strategy}: traced in {trace_s:.1f} s, compiled in {compile_s:.1f} s, "
            f"XLA scratch {temp_mb or 0:.0f} MB")
      return result
  state, m = step(state, batches[0], batches[1])
  jax.block_until_ready(m)
  # From the imports to a finished first step: what a user waits for before a search moves.
  startup_s = (first_s if saved is not None else time.perf_counter()) - t_start
  times = []
  cpu0, wall0 = time.process_time(), time.perf_counter()
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step(state, batches[0], batches[1])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  # CPU seconds per wall second while stepping: how many cores the step keeps busy.
  busy_cores = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
  try:
    device_peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
  except Exception:  # CPU backends may not report memory statistics
    device_peak = None
  median = statistics.median(times)
  if saved is not None:  # the first call compiled (or loaded) and ran one step
    compile_s = first_s - compile_t0 - median
  result = {
      "strategy": args.strategy,
      "batch": args.batch,
      "C": args.C,
      "layers": args.layers,
      "size": args.size,
      "ndim": args.ndim,
      "median_s": median,
      "images_per_s": args.batch / median,
      "min_s": min(times),
      "compile_s": compile_s,
      "trace_s": trace_s,
      "startup_s": startup_s,
      "saved_step": None if saved is None else ("resumed" if resumed else "cold"),
      "busy_cores": busy_cores,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "device_peak_mb": None if device_peak is None else device_peak / 2**20,
      "xla_temp_mb": temp_mb,
      "xla_flops": xla_flops,
      "xla_bytes": xla_bytes,
      "supernet_params": count_params(s.params),
      "depthwise_impl": resolve_depthwise_impl(args.impl),
      "library_fusions": library_fusions_label(xla_options),
      "xla_options": extra_options,
      "device": str(jax.devices()[0].device_kind),
      "backend": jax.default_backend(),
      "jax": jax.__version__,
      "machine": platform.processor() or platform.machine(),
  }
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k:>16}: {v}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
