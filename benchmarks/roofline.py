"""How far the paper-size search steps are from this machine's limits: a roofline (issue 31 item 3).

  python benchmarks/roofline.py --out benchmarks/results/roofline [--strategies darts,gdas,spos,fbnet]

First this machine's peaks, each the best of ``--repeats`` timed calls after a warm-up: float32
matrix multiply FLOP/s (``--matmul`` square matrices, ``2 n^3`` FLOPs a call) and memory bandwidth
(an elementwise scale of a ``--copy-mb`` float32 array: its bytes read plus written per second).
Then ``benchmarks/search_step.py`` per strategy at the paper's size (DARTS's CIFAR-10 search
network: C=16, 8 cells, 32x32x3, batch ``--batch``; FBNet's space on 32x32x3), in a child process
each, and from XLA's cost analysis of the compiled step (``flops``, ``bytes accessed``) over its
median step time: achieved FLOP/s and bytes/s, as fractions of the peaks, and the step's
arithmetic intensity (FLOPs per byte) beside the ridge point (peak FLOP/s over peak bytes/s): a
step left of the ridge is bound by memory, right of it by compute.

XLA's ``bytes accessed`` counts every operand read and written by every op, cache hits
included, while the bandwidth peak is main memory's: a step above 100 % of it reuses data from
cache. XLA counts only its own ops: the native CPU kernels (``--impl auto`` picks them for depthwise
convolutions, pools and batch norm) are custom calls it counts as nothing, so with them the
fractions are lower bounds. ``--impl xla`` puts every op in XLA's count (and runs slower).
Writes ``OUT/roofline.json`` and ``OUT/roofline.md``; reports the cores it ran on.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def peaks(matmul: int, copy_mb: int, repeats: int) -> dict[str, float]:
  """Best-of-``repeats`` float32 matmul FLOP/s and elementwise-scale bytes/s on this machine."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  def best(fn, *args) -> float:
    jax.block_until_ready(fn(*args))  # None for the NumPy copy: returned as it is
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t0)
    return min(times)

  a = jax.random.normal(jax.random.key(0), (matmul, matmul), jnp.float32)
  mm = best(jax.jit(lambda x: x @ x), a)
  x = jnp.ones((copy_mb * 2**20 // 4,), jnp.float32)
  scale = best(jax.jit(lambda v: v * 1.0001), x)
  # XLA:CPU runs a plain elementwise loop on one thread; NumPy copies on every core show
  # what the memory system gives several streams. The peak is the better of the two.
  src = np.ones(x.shape, np.float32)
  dst = np.empty_like(src)
  parts = np.array_split(np.arange(src.size), _cores())
  with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
    def copy_all():
      list(pool.map(lambda idx: np.copyto(dst[idx[0]:idx[-1] + 1], src[idx[0]:idx[-1] + 1]),
                    parts))
    threaded = best(copy_all)
  return {"matmul_flops_per_s": 2 * matmul**3 / mm,
          "copy_bytes_per_s": 2 * x.nbytes / min(scale, threaded),
          "xla_scale_bytes_per_s": 2 * x.nbytes / scale,
          "threaded_copy_bytes_per_s": 2 * x.nbytes / threaded,
          "matmul_n": matmul, "copy_mb": copy_mb}


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def step(strategy: str, batch: int, impl: str, steps: int) -> dict:
  """``search_step.py``'s JSON for one paper-size step, run in a child process."""
  cmd = [sys.executable, str(ROOT / "benchmarks" / "search_step.py"), "--strategy", strategy,
         "--batch", str(batch), "--impl", impl, "--steps", str(steps), "--json"]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--strategies", default="darts,gdas,spos,fbnet")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--impl", default="auto", choices=["auto", "taps", "native", "xla"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--matmul", type=int, default=2048)
  p.add_argument("--copy-mb", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "roofline")
  p.add_argument("--steps-from", type=Path, default=None, metavar="JSON",
                 help="take the steps' measurements from an earlier roofline.json (peaks only)")
  args = p.parse_args(argv)
  earlier = ({r["strategy"]: r for r in json.loads(args.steps_from.read_text())["steps"]}
             if args.steps_from else {})

  peak = peaks(args.matmul, args.copy_mb, args.repeats)
  ridge = peak["matmul_flops_per_s"] / peak["copy_bytes_per_s"]
  print(f"peaks: {peak['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (f32 matmul {args.matmul}), "
        f"{peak['copy_bytes_per_s'] / 1e9:.1f} GB/s (scale of {args.copy_mb} MB); ridge "
        f"{ridge:.1f} FLOP/byte", flush=True)
  rows = []
  for strategy in args.strategies.split(","):
    r = earlier.get(strategy) or step(strategy, args.batch, args.impl, args.steps)
    flops, nbytes, t = r.get("xla_flops"), r.get("xla_bytes"), r["median_s"]
    row = {"strategy": strategy, "median_s": t, "compile_s": r["compile_s"],
           "depthwise_impl": r["depthwise_impl"], "xla_flops": flops, "xla_bytes": nbytes}
    if flops and nbytes:
      row.update(flops_per_s=flops / t, bytes_per_s=nbytes / t,
                 flops_fraction=flops / t / peak["matmul_flops_per_s"],
                 bytes_fraction=nbytes / t / peak["copy_bytes_per_s"],
                 intensity=flops / nbytes)
      print(f"{strategy:>6}: {t:.2f} s/step, {flops / 1e9:.1f} GFLOP and {nbytes / 1e9:.1f} GB "
            f"per step (XLA's count) -> {row['flops_fraction']:.1%} of peak FLOP/s, "
            f"{row['bytes_fraction']:.1%} of peak bytes/s, intensity {row['intensity']:.1f} "
            f"FLOP/byte ({'memory' if row['intensity'] < ridge else 'compute'}-bound side)",
            flush=True)
    rows.append(row)

  import jax  # noqa: PLC0415

  cores = _cores()
  meta = {"command": "python benchmarks/roofline.py " + " ".join(argv or sys.argv[1:]),
          "batch": args.batch, "impl": args.impl, "cores": cores, "jax": jax.__version__,
          "device": str(jax.devices()[0].device_kind), "peaks": peak, "ridge_flop_per_byte": ridge}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "roofline.json").write_text(json.dumps({**meta, "steps": rows}, indent=1) + "\n")
  lines = [f"# Roofline of the paper-size search steps ({meta['device']}, {cores} cores, "
           f"jax {meta['jax']})", "", f"`{meta['command']}`", "",
           f"Peaks: {peak['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (f32 matmul), "
           f"{peak['copy_bytes_per_s'] / 1e9:.1f} GB/s (the better of XLA's elementwise scale, "
           f"{peak['xla_scale_bytes_per_s'] / 1e9:.1f}, and a NumPy copy on every core, "
           f"{peak['threaded_copy_bytes_per_s'] / 1e9:.1f}); ridge "
           f"{ridge:.1f} FLOP/byte. XLA's counts leave out the native kernels' custom calls "
           f"(impl {args.impl}), and its bytes include cache hits (over 100 % of the memory "
           f"peak: data reused from cache).", "",
           "| step | s/step | compile s | GFLOP/step | GB/step | % peak FLOP/s | % peak bytes/s "
           "| FLOP/byte |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r.get("intensity") is None:
      lines.append(f"| {r['strategy']} | {r['median_s']:.2f} | {r['compile_s']:.0f} | "
                   f"(no cost analysis) | | | | |")
      continue
    lines.append(f"| {r['strategy']} | {r['median_s']:.2f} | {r['compile_s']:.0f} | "
                 f"{r['xla_flops'] / 1e9:.1f} | {r['xla_bytes'] / 1e9:.1f} | "
                 f"{100 * r['flops_fraction']:.1f} | {100 * r['bytes_fraction']:.1f} | "
                 f"{r['intensity']:.1f} |")
  (args.out / "roofline.md").write_text("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
