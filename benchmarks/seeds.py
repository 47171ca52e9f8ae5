"""N DARTS searches in one program (vmap over seeds) against N runs one after another.

  python benchmarks/seeds.py --seeds 4 --json

What it measures, on the search settings of ``experiments/darts_mnist1d.py``
(first-order DARTS, C=8, 3 cells, 4 nodes, batch 64, MNIST-1D):

* ``sequential_s``: wall seconds for ``--steps`` search steps (architecture
  step + weight step) of seed 1, then of seed 2, ..., seed N, with one
  compiled single-seed step (compiled once, reused by every seed);
* ``vmapped_s``: wall seconds for ``--steps`` steps of one compiled step that
  advances all N searches at once (``jax.vmap`` over a leading seed axis,
  split over ``--devices`` devices with ``jax.shard_map``; see below);
* ``ratio = vmapped_s / sequential_s`` (below 1: the vmapped program is
  cheaper than N runs);
* ``compile_sequential_s`` and ``compile_vmapped_s``: the two compilations,
  excluded from the times above.

Each seed has its own supernet weights, architecture parameters, optimizer
states and data order: the data plan of ``jnas search`` with ``seed=config.seed
+ i`` (train/val split, batch orders; see
:func:`jnas.parallel.seed_batch_indices`). The dataset lives on the device
and each step gathers its batches from index arrays, in both variants. Both
variants are timed in ``--rounds`` interleaved rounds, each from the same
initial states, and the fastest round of each is reported (the per-round
times are in the JSON); ``max_alpha_diff`` checks that both did the same
work. Timing is wall clock: on a shared machine other load inflates it.

Devices: the sequential runs use one device, as a single search does. The
vmapped program splits the seeds over ``--devices``
(:func:`jnas.parallel.seed_mesh`). On a CPU, ``auto`` asks JAX for one host
device per core (as many as divide N, :func:`jnas.parallel.host_devices_for`),
so each core runs its own share of the searches instead of every kernel
being split between the cores, and each device runs its seeds one after the
other (``--per-device map``: one search's working set at a time). The
sequential runs then take place in a child process with JAX's default single
CPU device and the whole thread pool, so the split cannot slow the baseline;
the rounds still alternate between the two. ``--devices 1`` is the plain
vmap on one device, all in one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=4, help="number of searches N")
  p.add_argument("--steps", type=int, default=20, help="search steps timed per seed")
  p.add_argument("--rounds", type=int, default=3,
                 help="interleaved timing rounds; the fastest of each variant is reported")
  p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "experiments"
                                         / "darts_mnist1d.py"))
  p.add_argument("--library-fusions", default=None, choices=["auto", "on", "off"],
                 help="XLA:CPU YNNPACK library fusions for both variants (jnas/utils/xla.py); "
                      "default: the config's model.cpu_library_fusions, as jnas search uses")
  p.add_argument("--devices", default="auto",
                 help="devices the vmapped searches are split over (a divisor of --seeds); "
                      "auto: one CPU host device per core, or every accelerator, as many as "
                      "divide --seeds; 1: plain vmap on one device")
  p.add_argument("--per-device", default="auto", choices=["auto", "vmap", "map"],
                 help="how each device advances its seeds (jnas.parallel.vmap_step): vmap "
                      "(larger kernels) or map (one after the other); auto: map on CPU host "
                      "devices when there are several, vmap otherwise")
  p.add_argument("--json", action="store_true")
  p.add_argument("--sequential-worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.seeds < 1 or args.steps < 1 or args.rounds < 1:
    p.error("--seeds, --steps and --rounds must be >= 1")
  if args.devices != "auto" and not (args.devices.isdigit() and int(args.devices) >= 1):
    p.error(f"--devices must be 'auto' or a positive integer, got {args.devices!r}")

  import os

  import jax

  from jnas.parallel import host_devices_for
  # Host devices must be asked for before JAX starts its CPU backend; an
  # explicit XLA_FLAGS device count wins.
  cpu_devices = 1
  if not args.sequential_worker and (
      "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")):
    cpu_devices = (host_devices_for(args.seeds) if args.devices == "auto"
                   else int(args.devices))
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  def say(msg: str) -> None:  # progress on stderr, so --json output stays one line
    print(msg, file=sys.stderr, flush=True)

  from jnas import parallel
  from jnas.config import load_config
  from jnas.data import load_dataset
  from jnas.ops.primitives import set_depthwise_impl
  from jnas.spaces.darts import DartsSpace
  from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
  from jnas.supernet import DartsSupernet, make_apply, split_model
  from jnas.search.common import config_compiler_options
  from jnas.utils.xla import compiler_options, library_fusions_label

  config = load_config(args.config)
  sc = config.search
  if sc.strategy != "darts" or config.space.name != "darts":
    p.error(f"{args.config}: this benchmark runs DARTS on the DARTS space")
  set_depthwise_impl(config.model.depthwise_impl)
  ds = load_dataset(config.data.name, seed=config.data.seed)
  n = len(ds.y_train)
  steps_per_epoch = (n - n // 2) // sc.batch_size
  total_steps = sc.epochs * steps_per_epoch
  space = DartsSpace(num_nodes=config.space.num_nodes)
  seeds = [config.seed + i for i in range(args.seeds)]
  ndim = len(ds.input_shape) - 1
  xla_options = (config_compiler_options(config, ndim) if args.library_fusions is None
                 else compiler_options(args.library_fusions, ndim=ndim, fusions_slower=True))

  def build(seed: int):
    """One seed's strategy, as ``jnas search`` builds it for ``config.seed = seed``."""
    net = DartsSupernet(space, ds.input_shape[-1], ds.num_classes,
                        ndim=len(ds.input_shape) - 1, channels=sc.channels, layers=sc.layers,
                        rngs=nnx.Rngs(seed))
    s = split_model(net)
    alpha = space.init_alpha(jax.random.fold_in(jax.random.key(seed), 1))
    return darts(make_apply(s.graphdef), s.params, s.state, alpha,
                 w_opt=weight_optimizer(sc.w_lr, sc.w_lr_min, sc.momentum, sc.weight_decay,
                                        sc.grad_clip, total_steps),
                 a_opt=arch_optimizer(sc.a_lr, sc.a_b1, sc.a_b2, sc.a_weight_decay),
                 order=sc.order)

  strategy = build(seeds[0])  # its step serves every seed (same network and optimizers)
  init_host = jax.device_get(parallel.init_seeds(
      lambda s: build(s).init(jax.random.key(s)), seeds))
  # Batch indices of as many epochs as the steps need, [N, steps, batch].
  idx_t, idx_v = zip(*(parallel.seed_batch_indices(n, sc.batch_size, seeds, epoch=e)
                       for e in range(-(-args.steps // steps_per_epoch))))
  idx_t = np.concatenate(idx_t, axis=1)[:, :args.steps]
  idx_v = np.concatenate(idx_v, axis=1)[:, :args.steps]
  data = (jnp.asarray(ds.x_train), jnp.asarray(ds.y_train))
  idx_t_dev, idx_v_dev = jnp.asarray(idx_t), jnp.asarray(idx_v)

  fresh = lambda: jax.tree.map(jnp.asarray, init_host)  # noqa: E731

  # ---- The sequential runs: one compiled single-seed step, seed after seed. ----
  def compile_single():
    t0 = time.perf_counter()
    step = jax.jit(parallel.gather_step(strategy.step), donate_argnums=0,
                   compiler_options=xla_options).lower(
        parallel.seed_slice(fresh(), 0), data, idx_t_dev[0, 0], idx_v_dev[0, 0]).compile()
    return step, time.perf_counter() - t0

  def run_sequential(step1):
    states = [parallel.seed_slice(fresh(), i) for i in range(args.seeds)]
    jax.block_until_ready(states)
    finals, t0 = [], time.perf_counter()
    for i, state in enumerate(states):
      for k in range(args.steps):
        state, metrics = step1(state, data, idx_t_dev[i, k], idx_v_dev[i, k])
      jax.block_until_ready((state, metrics))  # one run ends before the next starts
      finals.append(state)
    return time.perf_counter() - t0, parallel.stack_trees(finals)

  if args.sequential_worker:
    # Child protocol, one JSON line per answer: the compile time first, then
    # for each "run" line on stdin the round's seconds; "alpha PATH" saves the
    # last round's architecture parameters; end of input ends the worker.
    step1, compile_seq = compile_single()
    print(json.dumps({"compile_s": compile_seq}), flush=True)
    last = None
    for line in sys.stdin:
      cmd, _, arg = line.strip().partition(" ")
      if cmd == "run":
        t, last = run_sequential(step1)
        print(json.dumps({"t": t}), flush=True)
      elif cmd == "alpha":
        leaves = jax.tree.leaves(jax.device_get(strategy.arch_params(last)))
        np.savez(arg, *leaves)
        print(json.dumps({"saved": arg}), flush=True)
    return {}

  available = jax.device_count()
  if args.devices == "auto":  # as many devices as divide the seeds evenly
    n_dev = parallel.host_devices_for(args.seeds, cores=available)
  else:
    n_dev = int(args.devices)
    if n_dev > available or args.seeds % n_dev:
      p.error(f"--devices {n_dev}: JAX sees {available} devices and --seeds {args.seeds} must "
              f"be a multiple of it")
  per_device = args.per_device
  if per_device == "auto":
    per_device = "map" if jax.default_backend() == "cpu" and n_dev > 1 else "vmap"
  mesh = parallel.seed_mesh(n_dev)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  fresh_n = lambda: parallel.shard_seeds(jax.tree.map(jnp.asarray, init_host), mesh)  # noqa: E731
  data_n = jax.device_put(data, replicated)
  idx_t_n, idx_v_n = parallel.shard_seeds((idx_t_dev, idx_v_dev), mesh)

  # ---- Compile both variants (not timed as steps). ----
  worker = None
  if cpu_devices > 1 and jax.default_backend() == "cpu":  # where the split cannot touch it
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None
                                                          else sys.argv[1:]),
         "--sequential-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env)

    def ask(cmd: str | None) -> dict:
      if cmd is not None:
        worker.stdin.write(cmd + "\n")
        worker.stdin.flush()
      line = worker.stdout.readline()
      if not line:
        raise RuntimeError(f"the sequential worker stopped (exit code {worker.wait()})")
      return json.loads(line)

    compile_seq = ask(None)["compile_s"]
    say(f"compiled the single-seed step in {compile_seq:.1f} s (child process, 1 device)")
  else:
    step1, compile_seq = compile_single()
    say(f"compiled the single-seed step in {compile_seq:.1f} s")
  t0 = time.perf_counter()
  step_n = parallel.vmap_gather_step(strategy.step, compiler_options=xla_options,
                                     mesh=mesh, per_device=per_device).lower(
      fresh_n(), data_n, idx_t_n[:, 0], idx_v_n[:, 0]).compile()
  compile_vmap = time.perf_counter() - t0
  say(f"compiled the {args.seeds}-seed step ({n_dev} device(s), {per_device} on each) in "
      f"{compile_vmap:.1f} s")

  def run_vmapped():
    states = fresh_n()
    jax.block_until_ready(states)
    t0 = time.perf_counter()
    for k in range(args.steps):
      states, metrics = step_n(states, data_n, idx_t_n[:, k], idx_v_n[:, k])
    jax.block_until_ready((states, metrics))
    return time.perf_counter() - t0, states

  seq_times, vmap_times = [], []
  try:
    for r in range(args.rounds):
      if worker is not None:
        seq_times.append(ask("run")["t"])
      else:
        t, seq_states = run_sequential(step1)
        seq_times.append(t)
      t, vmap_states = run_vmapped()
      vmap_times.append(t)
      say(f"round {r + 1}: sequential {seq_times[-1]:.1f} s, vmapped {vmap_times[-1]:.1f} s")
    if worker is not None:
      with tempfile.TemporaryDirectory() as tmp:
        path = ask(f"alpha {os.path.join(tmp, 'alpha.npz')}")["saved"]
        with np.load(path) as z:
          seq_leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    else:
      seq_leaves = jax.tree.leaves(jax.device_get(strategy.arch_params(seq_states)))
  finally:
    if worker is not None:
      worker.stdin.close()
      worker.wait(timeout=60)

  alpha_vmap = jax.device_get(strategy.arch_params(vmap_states))
  max_diff = max(float(np.max(np.abs(a - b))) for a, b in
                 zip(seq_leaves, jax.tree.leaves(alpha_vmap)))
  genotypes = [space.genotype_dumps(space.encoding_to_genotype(a)).replace("\n", "")
               .replace(" ", "") for a in parallel.unstack_trees(alpha_vmap)]
  result = {
      "seeds": args.seeds,
      "steps": args.steps,
      "vmapped_s": min(vmap_times),
      "sequential_s": min(seq_times),
      "ratio": min(vmap_times) / min(seq_times),
      "vmapped_round_s": vmap_times,
      "sequential_round_s": seq_times,
      "compile_vmapped_s": compile_vmap,
      "compile_sequential_s": compile_seq,
      "step_ms_per_seed_vmapped": 1e3 * min(vmap_times) / (args.steps * args.seeds),
      "step_ms_per_seed_sequential": 1e3 * min(seq_times) / (args.steps * args.seeds),
      "max_alpha_diff": max_diff,
      "library_fusions": library_fusions_label(xla_options),
      "vmapped_devices": n_dev,
      "per_device": per_device,
      "sequential_devices": 1,
      "sequential_process": "child (JAX's default single CPU device)" if worker else "same",
      "cpu_host_devices": jax.device_count() if jax.default_backend() == "cpu" else None,
      "genotypes": genotypes,
      "config": str(args.config),
      "batch": sc.batch_size,
      "C": sc.channels,
      "layers": sc.layers,
      "device": str(jax.devices()[0].device_kind),
      "backend": jax.default_backend(),
      "jax": jax.__version__,
      "machine": platform.processor() or platform.machine(),
  }
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k:>28}: {v}")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
