"""Epoch time with one step per compiled call against a whole epoch per call (issue 27 item 2).

  python benchmarks/steps_per_call.py --json                 # spos, darts, gdas; 10 epochs each
  python benchmarks/steps_per_call.py --strategies spos --epochs 6
  python benchmarks/steps_per_call.py --strategies retrain --epochs 6 --out ..../retrain.json

Runs ``jnas search`` on the NB201 MNIST-1D table task (``experiments/nb201_table_search.py`` on
the v2 table's dataset, learning rate 0.1, 20 architectures evolved for SPOS) once with
``search.steps_per_call=1`` and once with ``0`` (one ``lax.scan`` per epoch), back to back, pinned
to one core (``--core``). From each run's ``metrics.jsonl`` it takes the median epoch time after
the first epoch (which compiles) in process CPU seconds (``cpu_s``, steady on a shared machine)
and in wall seconds, and says whether the two runs' weights and architecture parameters are bit
for bit the same. ``retrain`` (a strategy name here) times ``jnas train`` of DARTS_V2 with the
README main job's config (``experiments/darts_mnist1d.py``) and ``retrain.steps_per_call``; its
runs are compared by their test accuracy. Writes ``--out`` (JSON) with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(strategy: str, per_call: int, epochs: int, core: int, wd: Path) -> dict:
  """One search; its median steady epoch time (CPU and wall seconds) and last training loss."""
  import numpy as np

  shutil.rmtree(wd, ignore_errors=True)
  phase = "retrain" if strategy == "retrain" else "search"
  if phase == "retrain":
    cmd = [sys.executable, "-m", "jnas", "train", "--config",
           str(ROOT / "experiments" / "darts_mnist1d.py"), "--workdir", str(wd), "--genotype",
           "DARTS_V2", f"--config.retrain.epochs={epochs}",
           f"--config.retrain.steps_per_call={per_call}"]
  else:
    cmd = [sys.executable, "-m", "jnas", "search", "--config",
           str(ROOT / "experiments" / "nb201_table_search.py"), "--workdir", str(wd),
           f"--config.search.strategy={strategy}", f"--config.search.epochs={epochs}",
           "--config.evolution.evals=20", "--config.data.name=mnist1d_40k_noisy",
           "--config.search.w_lr=0.1", f"--config.search.steps_per_call={per_call}"]
  if core >= 0:
    cmd = ["taskset", "-c", str(core), *cmd]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise SystemExit(f"{strategy} steps_per_call={per_call} failed: {tail}")
  lines = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
  lines = [r for r in lines if r.get("phase") == phase]
  cpu = np.diff([r["cpu_s"] for r in lines])
  wall = np.diff([r["elapsed_s"] for r in lines])
  return {"epoch_cpu_s": round(float(np.median(cpu)), 4),
          "epoch_wall_s": round(float(np.median(wall)), 4),
          "first_epoch_cpu_s": round(float(lines[0]["cpu_s"]), 2),
          "train_loss": lines[-1][f"{'retrain' if phase == 'retrain' else 'train'}_loss"],
          **({"test_accuracy": json.loads((wd / "report.json").read_text())["test_accuracy"]}
             if phase == "retrain" else {})}


def same_files(a: Path, b: Path) -> bool:
  import numpy as np

  for name in ("supernet.npz", "arch_params.npz"):
    if not (a / name).exists():
      continue
    with np.load(a / name) as pa, np.load(b / name) as pb:
      if sorted(pa) != sorted(pb) or not all(np.array_equal(pa[k], pb[k]) for k in pa):
        return False
  return True


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--strategies", default="spos,darts,gdas")
  p.add_argument("--epochs", type=int, default=10)
  p.add_argument("--core", type=int, default=0, help="pin to this core (-1: no pinning)")
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "steps_per_call" /
                                      "nb201_mnist1d_v2.json"))
  p.add_argument("--json", action="store_true", help="print one line of JSON only")
  args = p.parse_args(argv)
  if args.epochs < 3:
    raise SystemExit("--epochs must be >= 3 (the first epoch compiles)")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for s in args.strategies.split(","):
      one = run(s, 1, args.epochs, args.core, Path(tmp) / f"{s}_1")
      whole = run(s, 0, args.epochs, args.core, Path(tmp) / f"{s}_0")
      row = {"strategy": s, "one_step": one, "whole_epoch": whole,
             "speedup_cpu": round(one["epoch_cpu_s"] / whole["epoch_cpu_s"], 2),
             "bit_identical": (one.get("test_accuracy") == whole.get("test_accuracy")
                               and same_files(Path(tmp) / f"{s}_1", Path(tmp) / f"{s}_0"))}
      rows.append(row)
      if not args.json:
        print(f"{s:6s} epoch {one['epoch_cpu_s']:.3f} -> {whole['epoch_cpu_s']:.3f} CPU s "
              f"({row['speedup_cpu']:.2f}x), bit-identical: {row['bit_identical']}", flush=True)
  out = {"rows": rows, "epochs": args.epochs, "core": args.core, "cpus": os.cpu_count(),
         "command": "python benchmarks/steps_per_call.py " + " ".join(argv or sys.argv[1:])}
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
