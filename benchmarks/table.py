"""The benchmark table: every search strategy's step, compile time, memory and throughput.

  python benchmarks/table.py --preset cpu --out runs/bench/cpu.json
  python benchmarks/table.py --preset paper --out runs/bench/paper.json
  python benchmarks/table.py --preset cpu --extras --out runs/bench/cpu.json  # + population, seeds

Runs ``benchmarks/search_step.py`` once per (strategy, network size) in its own
process, so that each row's peak memory is its own, then prints a Markdown
table that names the device and writes every row's JSON to ``--out`` as it
goes (a crash keeps the rows already measured). Presets:

* ``cpu``: the CPU-sized configs: the DARTS supernet of
  ``experiments/darts_mnist1d.py`` (1-D, 40 positions, C=8, 3 cells, batch
  64) for DARTS 1st/2nd order, GDAS, SNAS and SPOS, and FBNet's chain
  supernet of ``experiments/fbnet_mnist1d.py`` (batch 64);
* ``paper``: the papers' search networks: DARTS's supernet (C=16, 8 cells,
  32x32x3) at batch 32 (the size compared with the official code in the
  README) and 64 (DARTS's own search batch), and FBNet's ImageNet
  macro-architecture at 224x224x3, batch 32 (FBNet searched at that
  resolution with batch 192 over 8 GPUs, i.e. 24 per GPU);
* ``quick``: a tiny smoke run (seconds) that checks the harness itself.

``--resume-check`` runs every row twice as a search would compile it
(``search_step.py --saved-step``: the traced step saved, the persistent
compilation cache on, in a fresh directory per row): the first run is cold,
the second is a resumed search's start; the table then gives both compile
times and the seconds from the imports to a finished first step.

``--strategies`` restricts the rows; ``--extras`` also runs
``benchmarks/population_eval.py`` and ``benchmarks/seeds.py``. A row that
fails or passes ``--timeout`` is reported as such and the table goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STRATEGIES = ("darts", "darts2", "gdas", "snas", "spos", "fbnet")
_MNIST1D = ["--ndim", "1", "--size", "40", "--C", "8", "--layers", "3", "--batch", "64"]
PRESETS: dict[str, list[tuple[str, list[str]]]] = {
    "cpu": [(s, _MNIST1D) for s in STRATEGIES],
    "paper": ([(s, ["--batch", "32"]) for s in STRATEGIES if s != "fbnet"]
              + [("fbnet", ["--size", "224", "--batch", "32"])]
              + [(s, ["--batch", "64"]) for s in STRATEGIES if s != "fbnet"]),
    "quick": [(s, ["--ndim", "1", "--size", "16", "--C", "4", "--layers", "2", "--batch", "8",
                   "--nodes", "2", "--steps", "2"]) for s in STRATEGIES],
}


def _run_json(cmd: list[str], timeout: float) -> dict:
  """Runs a benchmark script that prints one JSON object last; returns it or an error row."""
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  if proc.returncode != 0:
    # XLA's fatal errors end with a stack trace of bare addresses: keep the lines that say why.
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.strip() and not ln.lstrip().startswith("@")]
    why = [ln for ln in lines if "Check failed" in ln or "Error" in ln] or lines[-1:]
    return {"error": f"exit {proc.returncode}: {why[-1] if why else '(no output)'}",
            "stderr_tail": lines[-15:]}
  lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
  if not lines:
    return {"error": "no JSON in the output"}
  row = json.loads(lines[-1])
  row["wall_s"] = time.perf_counter() - t0
  return row


def _gb(mb: float | None) -> str:
  return "-" if mb is None else f"{mb / 1024:.2f} GB"


def markdown(rows: list[dict]) -> str:
  """The rows as a Markdown table (one line per strategy and size)."""
  out = ["| strategy | input | C x cells | batch | step (median) | images/s | compile | "
         "peak RSS | device peak |",
         "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      out.append(f"| {r['strategy']} | {' '.join(r['args'])} | | | {r['error']} | | | | |")
      continue
    side = r["size"]
    shape = f"{side}x{side}x3" if r.get("ndim", 2) == 2 else f"{side}x1"
    net = "FBNet chain" if r["strategy"] == "fbnet" else f"{r['C']} x {r['layers']}"
    out.append(f"| {r['strategy']} | {shape} | {net} | {r['batch']} | {r['median_s']:.3f} s | "
               f"{r['images_per_s']:.0f} | {r['compile_s']:.0f} s | "
               f"{_gb(r['peak_rss_mb'])} | {_gb(r.get('device_peak_mb'))} |")
  if any("resumed_compile_s" in r for r in rows):
    out += ["", "| strategy | batch | cold: compile | cold: start to first step | "
                "resumed: compile | resumed: start to first step |", "|---|---|---|---|---|---|"]
    out += [f"| {r['strategy']} | {r['batch']} | {r['compile_s']:.1f} s | {r['startup_s']:.1f} s | "
            f"{r['resumed_compile_s']:.1f} s | {r['resumed_startup_s']:.1f} s |"
            for r in rows if "resumed_compile_s" in r]
  return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
  p.add_argument("--strategies", default=",".join(STRATEGIES),
                 help="comma-separated subset of " + ",".join(STRATEGIES))
  p.add_argument("--steps", type=int, default=None, help="timed steps per row (default: 5)")
  p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
  p.add_argument("--extras", action="store_true",
                 help="also run population_eval.py and seeds.py (their default settings)")
  p.add_argument("--resume-check", action="store_true",
                 help="each row cold, then resumed (saved step + persistent compilation cache)")
  p.add_argument("--out", default=None, help="JSON file for every row (written as rows finish)")
  args = p.parse_args(argv)
  wanted = [s for s in args.strategies.split(",") if s]
  unknown = sorted(set(wanted) - set(STRATEGIES))
  if unknown:
    p.error(f"unknown strategies {', '.join(unknown)} (known: {', '.join(STRATEGIES)})")

  rows: list[dict] = []
  result = {"preset": args.preset, "rows": rows,
            "command": "python benchmarks/table.py " + " ".join(argv or sys.argv[1:])}

  def save() -> None:
    if args.out:
      Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      Path(args.out).write_text(json.dumps(result, indent=2))

  for strategy, extra in PRESETS[args.preset]:
    if strategy not in wanted:
      continue
    cmd = [sys.executable, str(HERE / "search_step.py"), "--strategy", strategy, *extra, "--json"]
    if args.steps is not None:
      cmd += ["--steps", str(args.steps)]
    print(f"[table] {strategy} {' '.join(extra)} ...", file=sys.stderr, flush=True)
    if args.resume_check:
      with tempfile.TemporaryDirectory(prefix="jnas-resume-check-") as tmp:
        row = _run_json(cmd + ["--saved-step", tmp], args.timeout)
        again = _run_json(cmd + ["--saved-step", tmp], args.timeout) if "error" not in row else {}
      if "error" in again:
        row = {**row, "error": "resumed: " + again["error"]}
      elif again:
        row.update({"resumed_compile_s": again["compile_s"],
                    "resumed_startup_s": again["startup_s"]})
    else:
      row = _run_json(cmd, args.timeout)
    row.setdefault("strategy", strategy)
    row["args"] = extra
    rows.append(row)
    print(f"[table]   -> {row.get('median_s', row.get('error'))}", file=sys.stderr, flush=True)
    save()
  if args.extras:
    for name in ("population_eval", "seeds"):
      print(f"[table] {name} ...", file=sys.stderr, flush=True)
      result[name] = _run_json([sys.executable, str(HERE / f"{name}.py"), "--json"],
                               args.timeout)
      save()

  device = next((f"{r['device']} ({r['backend']}, jax {r['jax']}, {r['machine']})"
                 for r in rows if "device" in r), "unknown")
  result["device"] = device
  save()
  print(f"Device: {device}; {os.cpu_count()} host CPU cores\n")
  print(markdown(rows))
  for name in ("population_eval", "seeds"):
    if name in result:
      r = result[name]
      keys = ("population_s", "loop_s", "ratio", "compilations") if name == "population_eval" \
          else ("vmapped_s", "sequential_s", "ratio", "vmapped_devices", "per_device")
      print(f"\n{name}: " + (r["error"] if "error" in r else
                               ", ".join(f"{k} {r.get(k)}" for k in keys)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
