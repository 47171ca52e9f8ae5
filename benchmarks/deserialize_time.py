"""Times XLA:CPU loading each executable of a persistent compilation cache (issue 31 item 2).

  python benchmarks/search_step.py --strategy gdas --batch 32 --steps 2 --saved-step runs/g
  python benchmarks/deserialize_time.py runs/g/xla --json

A resumed search's "compile" is a persistent-cache hit: JAX reads the entry, decompresses it and
asks XLA to deserialize the executable. This script does only the last step for every entry in a
cache folder and reports each one's process CPU seconds (steadier than wall time on a shared
machine), its serialized size and the number of object files in it, largest cost first. Run it
under ``perf record -g`` to see where XLA spends the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("cache", help="a persistent compilation cache folder (SAVED_STEP/xla)")
  p.add_argument("--json", action="store_true", help="print one line of JSON only")
  args = p.parse_args(argv)

  import jax
  from jax._src import compilation_cache as cc
  from jax._src.lib import xla_client

  from jnas.ops import native

  native.available()  # the steps call the native kernels: their FFI targets must be registered
  backend = jax.devices()[0].client
  devices = xla_client.DeviceList(tuple(jax.devices()[:1]))
  rows = []
  for path in sorted(Path(args.cache).glob("*-cache")):
    exe, _ = cc.extract_executable_and_time(cc.decompress_executable(path.read_bytes()))
    t, c = time.perf_counter(), time.process_time()
    backend.deserialize_executable(exe, devices, xla_client.CompileOptions())
    rows.append({"entry": path.name.split("-")[0], "cpu_s": round(time.process_time() - c, 3),
                 "wall_s": round(time.perf_counter() - t, 3), "bytes": len(exe),
                 "object_files": exe.count(b"\x7fELF")})
  rows.sort(key=lambda r: -r["cpu_s"])
  out = {"cache": args.cache, "entries": len(rows),
         "total_cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
         "total_wall_s": round(sum(r["wall_s"] for r in rows), 2), "largest": rows[:5],
         "jax": jax.__version__}
  if not args.json:
    for r in rows[:5]:
      print(f"{r['cpu_s']:8.3f} CPU s {r['bytes'] / 1e6:7.1f} MB {r['object_files']:5d} objects  "
            f"{r['entry']}")
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
