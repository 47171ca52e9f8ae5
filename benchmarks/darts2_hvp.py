"""Compiles and times DARTS's second-order Hessian-vector product alone, in either exact mode.

  python benchmarks/darts2_hvp.py --mode forward_over_reverse --layers 5 --batch 8
  python benchmarks/darts2_hvp.py --mode reverse_over_reverse --layers 5 --batch 8

The product is ``jnas.strategies.darts.mixed_hvp`` of the cross-entropy of the DARTS search
supernet (C=16, ``--layers`` cells, 32x32x3 random input) with respect to (weights, alpha),
along a random weight direction: the part of the second-order step that the first-order step
does not have. Prints one JSON line: trace and compile seconds, XLA's scratch memory
(``temp_mb``, deterministic, unlike the process's peak), the fastest of ``--repeats`` calls,
and the HLO size (``hlo_lines``), which drives XLA:CPU's compile time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mode", default="forward_over_reverse",
                 choices=["forward_over_reverse", "reverse_over_reverse"])
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)

  import jax
  from flax import nnx

  from jnas.spaces.darts import DartsSpace
  from jnas.strategies.darts import mixed_hvp
  from jnas.supernet import DartsSupernet, make_apply, split_model
  from jnas.supernet.functional import cross_entropy

  space = DartsSpace()
  s = split_model(DartsSupernet(space, 3, 10, ndim=2, channels=16, layers=args.layers,
                                rngs=nnx.Rngs(0)))
  apply = make_apply(s.graphdef)
  alpha = space.init_alpha(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (args.batch, 32, 32, 3))
  y = jax.numpy.arange(args.batch) % 10

  def loss(params, a):
    logits, _ = apply(params, s.state, jax.tree.map(lambda t: jax.nn.softmax(t, -1), a), x, True)
    return cross_entropy(logits, y)

  v = jax.tree.map(lambda t: 1e-2 * jax.random.normal(jax.random.key(2), t.shape, t.dtype),
                   s.params)
  fn = jax.jit(lambda params, a, v: mixed_hvp(loss, params, a, v, mode=args.mode))
  t0 = time.perf_counter()
  lowered = fn.lower(s.params, alpha, v)
  trace_s = time.perf_counter() - t0
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(s.params, alpha, v))
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(s.params, alpha, v))
    times.append(time.perf_counter() - t0)
  result = {"mode": args.mode, "layers": args.layers, "batch": args.batch,
            "trace_s": round(trace_s, 1), "compile_s": round(compile_s, 1),
            "temp_mb": round(compiled.memory_analysis().temp_size_in_bytes / 2**20),
            "run_s": round(min(times), 3), "hlo_lines": lowered.as_text().count("\n"),
            "jax": jax.__version__}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
