"""N DARTS searches in one program (vmap over seeds) against N runs one after another.

  python benchmarks/seeds.py --seeds 4 --json

What it measures, on the search settings of ``experiments/darts_mnist1d.py``
(first-order DARTS, C=8, 3 cells, 4 nodes, batch 64, MNIST-1D):

* ``sequential_s``: wall seconds for ``--steps`` search steps (architecture
  step + weight step) of seed 1, then of seed 2, ..., seed N, with one
  compiled single-seed step (compiled once, reused by every seed);
* ``vmapped_s``: wall seconds for ``--steps`` steps of one compiled step that
  advances all N searches at once (``jax.vmap`` over a leading seed axis);
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
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=4, help="number of searches N")
  p.add_argument("--steps", type=int, default=20, help="search steps timed per seed")
  p.add_argument("--rounds", type=int, default=2,
                 help="interleaved timing rounds; the fastest of each variant is reported")
  p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "experiments"
                                         / "darts_mnist1d.py"))
  p.add_argument("--library-fusions", default=None, choices=["auto", "on", "off"],
                 help="XLA:CPU YNNPACK library fusions for both variants (jnas/utils/xla.py); "
                      "default: the config's model.cpu_library_fusions, as jnas search uses")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  if args.seeds < 1 or args.steps < 1 or args.rounds < 1:
    p.error("--seeds, --steps and --rounds must be >= 1")

  import jax
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
  from jnas.utils.xla import compiler_options, config_compiler_options, library_fusions_label

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
                 else compiler_options(args.library_fusions, ndim=ndim, space="darts"))

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

  # ---- Compile both variants (not timed as steps). ----
  one = parallel.seed_slice(fresh(), 0)
  t0 = time.perf_counter()
  step1 = jax.jit(parallel.gather_step(strategy.step), donate_argnums=0,
                  compiler_options=xla_options).lower(
      one, data, idx_t_dev[0, 0], idx_v_dev[0, 0]).compile()
  compile_seq = time.perf_counter() - t0
  say(f"compiled the single-seed step in {compile_seq:.1f} s")
  t0 = time.perf_counter()
  step_n = parallel.vmap_gather_step(strategy.step, compiler_options=xla_options).lower(
      fresh(), data, idx_t_dev[:, 0], idx_v_dev[:, 0]).compile()
  compile_vmap = time.perf_counter() - t0
  say(f"compiled the {args.seeds}-seed step in {compile_vmap:.1f} s")

  def run_sequential():
    states = [parallel.seed_slice(fresh(), i) for i in range(args.seeds)]
    jax.block_until_ready(states)
    finals, t0 = [], time.perf_counter()
    for i, state in enumerate(states):
      for k in range(args.steps):
        state, metrics = step1(state, data, idx_t_dev[i, k], idx_v_dev[i, k])
      jax.block_until_ready((state, metrics))  # one run ends before the next starts
      finals.append(state)
    return time.perf_counter() - t0, parallel.stack_trees(finals)

  def run_vmapped():
    states = fresh()
    jax.block_until_ready(states)
    t0 = time.perf_counter()
    for k in range(args.steps):
      states, metrics = step_n(states, data, idx_t_dev[:, k], idx_v_dev[:, k])
    jax.block_until_ready((states, metrics))
    return time.perf_counter() - t0, states

  seq_times, vmap_times = [], []
  for r in range(args.rounds):
    t, seq_states = run_sequential()
    seq_times.append(t)
    t, vmap_states = run_vmapped()
    vmap_times.append(t)
    say(f"round {r + 1}: sequential {seq_times[-1]:.1f} s, vmapped {vmap_times[-1]:.1f} s")

  alpha_seq = jax.device_get(strategy.arch_params(seq_states))
  alpha_vmap = jax.device_get(strategy.arch_params(vmap_states))
  max_diff = max(float(np.max(np.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(alpha_seq), jax.tree.leaves(alpha_vmap)))
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
