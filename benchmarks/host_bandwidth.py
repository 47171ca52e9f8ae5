"""Memory bandwidth of this host with one thread and with several at once.

  python benchmarks/host_bandwidth.py --json

Context for ``benchmarks/seeds.py``: N searches split over the cores only go
faster if the cores can stream memory at the same time. Each thread runs
``b = a * 1.0001 + b`` (numpy, in place, which releases the GIL) over its
own arrays of ``--mb`` MB each, ``--repeats`` times; the figure is bytes read
and written per second (five array passes per repeat), the best of
``--trials``. Sizes below the L2 or L3 cache
measure the caches; the default, 64 MB, measures main memory. On a shared
machine other load lowers the figures: compare runs back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np


def stream(threads: int, mb: float, repeats: int) -> list[float]:
  """GB/s of each of ``threads`` threads running the update loop at the same time.

  Example:
    >>> len(stream(2, 1.0, 2))
    2
  """
  n = max(1, int(mb * 2**20 / 4))
  arrays = [(np.full(n, 1.0, np.float32), np.zeros(n, np.float32)) for _ in range(threads)]
  rates = [0.0] * threads
  start = threading.Barrier(threads)

  def work(i: int) -> None:
    a, b = arrays[i]
    np.multiply(a, 1.0001, out=b)  # touch every page before timing
    start.wait()
    t0 = time.perf_counter()
    for _ in range(repeats):
      np.multiply(a, np.float32(1.0001), out=a)
      np.add(a, b, out=b)
    rates[i] = repeats * 5 * a.nbytes / (time.perf_counter() - t0) / 1e9

  pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
  for t in pool:
    t.start()
  for t in pool:
    t.join()
  return rates


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mb", type=float, default=64.0, help="MB per array (two arrays per thread)")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--threads", type=int, default=None, help="default: the cores this process may use")
  p.add_argument("--trials", type=int, default=3, help="the best of this many is reported")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = args.threads or cores or 1
  if args.mb <= 0 or args.repeats < 1 or threads < 1 or args.trials < 1:
    p.error("--mb, --repeats, --threads and --trials must be positive")
  # Best of --trials for each: a first pass also pays for page faults and clock ramp-up.
  one = max((stream(1, args.mb, args.repeats) for _ in range(args.trials)), key=sum)
  many = max((stream(threads, args.mb, args.repeats) for _ in range(args.trials)), key=sum)
  result = {"mb_per_array": args.mb, "threads": threads, "one_thread_gb_s": one[0],
            "each_of_many_gb_s": many, "many_total_gb_s": sum(many),
            "scaling": sum(many) / one[0], "cores": cores}
  if args.json:
    print(json.dumps(result))
  else:
    print(f"1 thread: {one[0]:.1f} GB/s; {threads} threads at once: "
          + ", ".join(f"{r:.1f}" for r in many) + f" GB/s ({sum(many):.1f} in all, "
          f"{sum(many) / one[0]:.2f}x one thread)")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
