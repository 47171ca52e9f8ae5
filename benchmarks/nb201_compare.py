"""Search strategies compared on the exhaustive NAS-Bench-201 MNIST-1D table, at equal search time.

  python benchmarks/nb201_compare.py run --budget 40 --seeds 5      # the searches (resumable)
  python benchmarks/nb201_compare.py report                         # bench every run: Markdown, JSON, PNG

  # issue 27 item 6: the v2 table's task, several budgets (one sub-directory each), one figure
  python benchmarks/nb201_compare.py run --table benchmarks/results/nb201_mnist1d_v2/table.csv \
      --budgets 75,150,300,600 --anytime --out runs/compare_v2
  python benchmarks/nb201_compare.py report --table ... --budgets 75,150,300,600 --out runs/compare_v2

``run`` searches the NAS-Bench-201 cell space on MNIST-1D with every
weight-sharing method (DARTS first and second order, GDAS, SNAS, SPOS, and
DARTS with each collapse mitigation) for ``--seeds`` seeds, each run in its own
work directory ``OUT/runs/METHOD/seed_I`` of ``experiments/nb201_table_search.py``
(so a killed comparison resumes: finished runs are kept). Equal search time:
a short calibration run per method (``OUT/calib/METHOD``, two epochs) measures
its steady epoch time (compilation excluded, checkpointing included) and SPOS's
evolution time, in process CPU seconds as the table charges its queries; each
method then gets ``round(budget / epoch time)`` epochs. Every method is
calibrated before the first search, and the searches run seed by seed (every
method's seed 0, then seed 1, ...), so a comparison stopped part way is whole
for its first seeds.

``rea_synflow`` and ``rea_params`` are REA on the table itself behind a zero-cost proxy
(``experiments/rea_table_mnist1d.py`` with ``search.prefilter``): only candidates in the proxy's
top half are queried, each query charged its cell's training time; the report also charges the
proxy's measured wall time (scoring 1,000 reference cells, then every candidate) and keeps the
best query that fits. They run per budget and need the complete table (``--table``) at run time.

``spos+top`` and ``spos_few_shot+top`` (report only, with ``--budgets``) reuse the single-path
runs made with half a budget ``B`` (``OUT/b{B/2}``): the evolution's candidates, best
shared-weight score first, are queried on the table with the other half (each charged its
training time), and the best queried cell by validation accuracy is the result, as Bender et
al. (2018) train the one-shot model's best candidates before choosing. Budgets ``75,150,300,600``
give them at 150, 300 and 600 s. ``spos+top(1/4)`` and ``spos_few_shot+top(1/4)`` split the
budget a quarter to three quarters instead (the ``b{B/4}`` runs: at 300 and 600 s).

``research`` (after ``run``; added in stop 45) searches each finished single-path run's trained
supernet again with SPOS's own evolution size (:data:`RESEARCH`: 1,000 candidates scored on 2,048
examples, against the v2 comparison's 100 on 512; ``experiments/nb201_table_search.py`` has had
1,000 on 1,984 since stop 46), nothing retrained, into ``runs/METHOD@e1000``. The report
judges those as methods of their own, charged the run's supernet seconds plus the new evolution's
CPU seconds, and adds their ``+top`` forms (the ``b{B/2}`` runs' candidates, as above):

  python benchmarks/nb201_compare.py research --budgets 75,150,300,600 --out runs/compare_v2

A table query (random search, REA, the proxy-filtered REA, ``+top``) reads one training run's
validation accuracy (seed 0, ``SIGNAL``) and is charged that run's CPU time; every found cell is
judged by its test accuracy averaged over the table's seeds.

``report`` scores every run with :func:`jnas.nb201_table.bench`
(the found cell's table accuracy, percentile, regret; the supernet's rank
correlation with the table on a fixed sample of cells) and adds random search
and regularised evolution replayed on the table itself with the same time
budget (each query costs the table's measured training time of that cell), for
the same seeds and for 500 runs. Writes ``OUT/compare.{json,md,png}``.

The searches run on the table's task: the dataset and skeleton of the ``protocol.json`` beside
``--table`` (v1's are the experiment's defaults). ``--budgets B1,B2,...`` runs and reports each
budget in ``OUT/bB`` and adds ``OUT/budgets.{json,md,png}``: the found cell's table accuracy
against the budget per method, mean and standard deviation over seeds, beside random search
and REA replayed at each budget.

``--anytime`` (with ``--budgets``) runs each gradient method once per seed, at the largest
budget, and judges it at every smaller budget by the cell it had derived after that budget's
calibrated number of epochs (the genotype in ``metrics.jsonl``), as NAS-Bench-201's figures follow
one search over its epochs. SPOS and its few-shot form (their cell comes from an evolution over
the trained supernet) still run once per budget. Cheaper by about the sum of the smaller budgets;
the difference from separate runs is the weights' cosine learning rate, which a truncated run has
not yet annealed. Those entries have no rank correlations (no supernet is saved per epoch).

The table must be complete for ``report`` (``benchmarks/nb201_mnist1d_table.py``).
Pinned to one core (``--cores``) so that timings match the table's costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

CONFIG = ROOT / "experiments" / "nb201_table_search.py"
TABLE = ROOT / "benchmarks" / "results" / "nb201_mnist1d" / "table.csv"
OUT = ROOT / "benchmarks" / "results" / "nb201_compare"

# Method name -> config overrides on experiments/nb201_table_search.py.
METHODS: dict[str, dict[str, object]] = {
    "darts1": {"search.strategy": "darts", "search.order": 1},
    "darts2": {"search.strategy": "darts", "search.order": 2},
    "gdas": {"search.strategy": "gdas"},
    "snas": {"search.strategy": "snas"},
    # SPOS at learning rate 0.1, not the experiment's 0.025 (DARTS's): on the v2 task, 400 epochs,
    # seeds 0 and 1, 0.1 gave Kendall tau 0.404 / 0.456 against 0.397 / 0.447 and found cells of
    # 91.6 / 91.9 % against 90.8 / 90.1 % (benchmarks/results/README.md, stop 43).
    "spos": {"search.strategy": "spos", "search.w_lr": 0.1},
    # Paths drawn per function a cell computes, not per encoding (de-isomorphic sampling, Ning et
    # al. 2021): added after the comparison started, from a later frozen copy (stop 44); on the v2
    # task at 400 epochs it ranked better than uniform sampling (benchmarks/results/README.md).
    "spos_unique": {"search.strategy": "spos", "search.w_lr": 0.1,
                    "search.pool_sampling": "unique"},
    # Few-shot (Zhao et al. 2021): split on the cell's edge 0 after half the steps.
    "spos_few_shot": {"search.strategy": "spos", "search.few_shot": "cell:0",
                      "search.few_shot_warmup": 0.5, "search.w_lr": 0.1},
    "fairdarts": {"search.mitigations": "fairdarts"},
    "drnas": {"search.mitigations": "drnas"},
    "darts_minus": {"search.mitigations": "darts_minus"},
    "beta_decay": {"search.mitigations": "beta_decay"},
    "sdarts_rs": {"search.mitigations": "sdarts_rs"},
    "pruning": {"search.mitigations": "pruning"},
    "darts_plus": {"search.early_stop_skips": 2},
    "pc_darts": {"search.partial_channels": 2},
}
TABLE_METHODS = ("random", "rea")
# REA on the table itself, behind a zero-cost proxy (Abdelfattah et al., ICLR 2021; issue 27 item
# 6): each measured query is charged its cell's training time, and the report charges the proxy's
# measured wall time on top. Run per budget with `jnas search` (no calibration, no supernet);
# they need the complete table at run time.
PROXY_REA: dict[str, str] = {"rea_synflow": "synflow", "rea_params": "params"}
# What a table query tells a search: one training run's validation accuracy (seed 0), as a user
# trains a candidate once, charged that run's time (``train_seconds``, per seed). The mean over
# the table's seeds would be a less noisy signal than a query's cost pays for. Found cells are
# judged by the mean test accuracy over all seeds.
SIGNAL = "val_acc_s0"
TABLE_CONFIG = ROOT / "experiments" / "rea_table_mnist1d.py"
ALL_METHODS = (*METHODS, *PROXY_REA)

log = logging.getLogger("nb201_compare")


def _pin(cores: int) -> None:
  if cores > 0 and hasattr(os, "sched_setaffinity"):
    allowed = sorted(os.sched_getaffinity(0))
    # The table build pins itself to the last cores; take the first ones.
    os.sched_setaffinity(0, allowed[:cores])


def task_overrides(table: Path | None) -> dict[str, object]:
  """The table's task (dataset and skeleton from the ``protocol.json`` beside it), as overrides."""
  proto_path = None if table is None else Path(table).parent / "protocol.json"
  if proto_path is None or not proto_path.exists():
    return {}
  proto = json.loads(proto_path.read_text())
  return {"data.name": proto["dataset"], "search.channels": proto["channels"],
          "search.cells_per_stage": proto["cells_per_stage"]}


def method_config(method: str, seed: int, epochs: int, task: dict | None = None):
  """The config of one run: the experiment, the table's task, the method's overrides, seed and
  epochs."""
  from jnas.config import apply_overrides, load_config

  over = {**(task or {}), **METHODS[method], "seed": seed, "search.epochs": epochs}
  return apply_overrides(load_config(str(CONFIG)), [f"{k}={v}" for k, v in over.items()])


def table_search_config(method: str, seed: int, budget: float, task: dict, table: Path):
  """The config of one proxy-filtered REA run on ``table``: REA charged each query's training
  time until ``budget`` seconds, candidates below the proxy's median of 1,000 random cells not
  queried (``search.prefilter_keep=0.5``)."""
  from jnas.config import apply_overrides, load_config

  over = {**task, "search.table": str(table), "search.prefilter": PROXY_REA[method],
          "search.table_columns": f"arch_str,{SIGNAL},train_seconds,test_acc",
          "search.budget_s": budget, "seed": seed}
  return apply_overrides(load_config(str(TABLE_CONFIG)), [f"{k}={v}" for k, v in over.items()])


def anytime_capable(method: str) -> bool:
  """Whether a run's cell after fewer epochs is its cell at a smaller budget (gradient methods:
  the derived genotype is logged every epoch; SPOS's comes from an evolution at the end)."""
  return method in METHODS and METHODS[method].get("search.strategy") != "spos"


def budget_dirs(out: Path, budgets: list[float]) -> list[tuple[float, Path]]:
  """``(budget, directory)``: ``out`` itself for one budget, ``out/bB`` for several."""
  if len(budgets) == 1:
    return [(budgets[0], out)]
  return [(b, out / f"b{b:g}") for b in budgets]


def parse_budgets(text: str) -> list[float]:
  """``"150,300"`` -> ``[150.0, 300.0]``; positive and distinct, or ``SystemExit``."""
  try:
    budgets = [float(b) for b in text.split(",") if b.strip()]
  except ValueError:
    raise SystemExit(f"--budgets wants comma-separated seconds, got {text!r}") from None
  if not budgets or min(budgets) <= 0 or len(set(budgets)) != len(budgets):
    raise SystemExit(f"--budgets must be distinct positive seconds, got {text!r}")
  return sorted(budgets)


def _records(wd: Path) -> list[dict]:
  path = wd / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calibrate(method: str, out: Path, task: dict | None = None) -> dict[str, float]:
  """Seconds per steady epoch (and SPOS's evolution seconds) from a two-epoch run.

  The process's CPU seconds where the run recorded them (``cpu_s``): the table charges its
  queries CPU time, and a pinned run's CPU time does not grow when other work shares the core,
  so a calibration made while the machine is busy gives the method the same epochs.

  One calibration per method and config, shared by every budget: the result is kept in
  ``calib/METHOD/calibration.json`` with the config's hash. A method whose config changed since
  (stop 45: SPOS's learning rate) is calibrated again in ``calib/METHOD@HASH`` instead of being
  refused by the old run's work directory."""
  from jnas.config import config_hash
  from jnas.run import search
  from jnas.utils.metrics import write_json_atomic

  config = method_config(method, seed=100, epochs=2, task=task)
  chash = config_hash(config)
  wd = out / "calib" / method
  for d in (wd, wd.with_name(f"{method}@{chash}")):
    kept = json.loads((d / "calibration.json").read_text()) if (
        d / "calibration.json").exists() else None
    if kept is not None and kept.pop("config_hash", None) == chash:
      return kept
  try:
    summary = search(config, str(wd))
  except ValueError:  # calib/METHOD holds the run of an earlier config (search's refusal)
    wd = wd.with_name(f"{method}@{chash}")
    summary = search(config, str(wd))
  lines = [r for r in _records(wd) if r.get("phase") == "search"]
  clock = "cpu_s" if all("cpu_s" in r for r in lines) else "elapsed_s"
  spent = [r[clock] for r in lines]
  epoch_s = spent[1] - spent[0] if len(spent) >= 2 else spent[0]
  evolution = summary.get("evolution_cpu_seconds" if clock == "cpu_s" else "evolution_seconds",
                          0.0)
  cal = {"epoch_seconds": round(epoch_s, 3), "evolution_seconds": float(evolution),
         "first_epoch_seconds": round(spent[0], 3), "clock": clock}
  write_json_atomic(str(wd / "calibration.json"), {**cal, "config_hash": chash})
  return cal


def cmd_run(args) -> None:
  methods = [m for m in args.methods.split(",") if m]
  for m in methods:
    if m not in ALL_METHODS:
      raise SystemExit(f"unknown method {m!r} (known: {', '.join(ALL_METHODS)})")
  if any(m in PROXY_REA for m in methods) and not args.table:
    raise SystemExit("the proxy-filtered REA methods search the table itself: give --table")
  budgets = parse_budgets(args.budgets) if args.budgets else [args.budget]
  if args.anytime and len(budgets) < 2:
    raise SystemExit("--anytime needs --budgets with two or more budgets")
  task = task_overrides(Path(args.table) if args.table else None)
  out = Path(args.out)
  dirs = budget_dirs(out, budgets)
  if not args.anytime:
    # Calibration is per method, shared by the budgets; the smallest budget's runs come first so
    # that a comparison stopped early has every budget below the one it stopped in.
    for budget, bdir in dirs:
      run_budget(bdir, budget, methods, args.seeds, task, calib_dir=out, table=args.table)
    return
  # The largest budget first: each of its gradient runs also answers every smaller budget.
  top = dirs[-1][1].name
  for budget, bdir in [dirs[-1]] + dirs[:-1]:
    run_budget(bdir, budget, methods, args.seeds, task, calib_dir=out,
               anytime_from=None if bdir.name == top else top, table=args.table)


def _save_plan_entry(plan_path: Path, plan: dict, method: str, entry: dict) -> dict:
  """Adds ``method``'s entry to ``plan_path`` under a lock, merged with what other processes
  wrote there since (two processes with disjoint ``--methods`` may share one ``--out``, one per
  core); returns the merged plan."""
  import fcntl

  from jnas.utils.metrics import write_json_atomic

  plan_path.parent.mkdir(parents=True, exist_ok=True)
  with open(plan_path.with_name(".plan.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    on_disk = json.loads(plan_path.read_text()) if plan_path.exists() else {}
    merged = {**plan, "methods": {**on_disk.get("methods", {}), **plan["methods"],
                                  method: entry}}
    write_json_atomic(str(plan_path), merged)
  return merged


def run_budget(out: Path, budget: float, methods: list[str], seeds: int, task: dict,
               calib_dir: Path, anytime_from: str | None = None,
               table: str | None = None) -> None:
  """Runs (or resumes) every method's searches at one budget in ``out``.

  ``anytime_from``: the sibling directory of a larger budget whose gradient runs stand in for
  this budget's (``--anytime``); only the other methods run here. ``table``: what the
  proxy-filtered REA methods search.
  """
  from jnas.run import search

  plan_path = out / "plan.json"
  plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
  if plan and plan.get("budget") != budget:
    raise SystemExit(f"{plan_path} was made for a budget of {plan['budget']} s, not "
                     f"{budget}; use another --out")
  if plan and plan.get("task", {}) != task:
    raise SystemExit(f"{plan_path} was made for the task {plan.get('task', {})}, not {task}; "
                     f"use another --out")
  plan["budget"], plan["task"] = budget, task
  plan.setdefault("methods", {})
  for m in methods:
    source = anytime_from if anytime_from and anytime_capable(m) else None
    if m in plan["methods"] and plan["methods"][m].get("anytime_from") != source:
      raise SystemExit(f"{plan_path} has {m} {'with' if source is None else 'without'} "
                       f"--anytime; use the same flags or another --out")
    if m in PROXY_REA:
      if m not in plan["methods"]:
        plan = _save_plan_entry(plan_path, plan, m, {"table_search": True,
                                                     "proxy": PROXY_REA[m]})
      continue
    if m not in plan["methods"]:
      cal = calibrate(m, calib_dir, task)
      spare = budget - cal["evolution_seconds"]
      cal["epochs"] = max(2, round(spare / cal["epoch_seconds"]))
      if source:
        cal["anytime_from"] = source
      plan = _save_plan_entry(plan_path, plan, m, cal)
      log.info("%s: %.2f s per epoch -> %d epochs%s", m, cal["epoch_seconds"], cal["epochs"],
               f" (judged in {source}'s runs)" if source else "")
  # Seed-major: a comparison stopped part way has every method at its first seeds.
  for seed in range(seeds):
    for m in methods:
      source = anytime_from if anytime_from and anytime_capable(m) else None
      if source:
        continue
      wd = out / "runs" / m / f"seed_{seed}"
      if m in PROXY_REA:
        s = search(table_search_config(m, seed, budget, task, Path(table)), str(wd))
        log.info("%s seed %d: %s, %d queries", m, seed, s["arch"], s["measured"])
        continue
      t = time.time()
      s = search(method_config(m, seed, plan["methods"][m]["epochs"], task), str(wd))
      log.info("%s seed %d: %s in %.0f s (search %.1f s)", m, seed, s["genotype"]["arch"],
               time.time() - t, s["search_seconds"])


def _bench_run(wd: Path, table, table_id: str, sample: int) -> dict:
  """:func:`bench_workdir` of one run, cached in ``wd/bench.json`` for this table and sample."""
  from jnas.nb201_table import bench_workdir
  from jnas.utils.metrics import write_json_atomic

  cache = wd / "bench.json"
  if cache.exists():
    old = json.loads(cache.read_text())
    if old.get("table_id") == table_id and old.get("sample") == sample:
      return old
  r = {**bench_workdir(wd, table, sample=sample), "table_id": table_id, "sample": sample}
  write_json_atomic(str(cache), r)
  return r


def _benched(method: str, r: dict) -> dict:
  """One run's entry in a report from its :func:`_bench_run` result ``r``."""
  corr = r["correlation"]
  return {"method": method, **{k: r[k] for k in (
      "seed", "arch", "test_acc", "val_acc", "rank", "percentile", "regret", "search_seconds",
      "search_epochs")},
      "tau_shared": corr.get("shared_weights", {}).get("kendall_tau"),
      "rho_shared": corr.get("shared_weights", {}).get("spearman_rho"),
      "tau_alpha": corr.get("alpha", {}).get("kendall_tau")}


def _found(table, arch: str) -> dict:
  """What a comparison keeps of a found cell's :func:`cell_figures`."""
  from jnas.nb201_table import cell_figures

  fig = cell_figures(table, arch)
  return {k: fig[k] for k in ("arch", "test_acc", "val_acc", "rank", "percentile", "regret")}


def _anytime_run(wd: Path, epochs: int, table) -> dict:
  """The cell run ``wd`` had derived after ``epochs`` epochs (or at its early stop), judged on
  ``table``."""
  from jnas.spaces.nb201 import NB201Space

  by_epoch = {r["epoch"]: r for r in _records(wd) if r.get("phase") == "search"
              and "genotype" in r and r["epoch"] <= epochs}  # a resumed run's later line wins
  if not by_epoch:
    raise SystemExit(f"{wd}/metrics.jsonl has no search epoch up to {epochs}")
  rec = by_epoch[max(by_epoch)]
  space = NB201Space()
  return {**_found(table, space.format(space.genotype_loads(rec["genotype"]))),
          "search_seconds": rec["elapsed_s"], "search_epochs": rec["epoch"]}


def _table_search_run(wd: Path, budget: float, table) -> dict:
  """A proxy-filtered REA run judged at ``budget`` seconds: the proxy's measured wall time
  (scoring the reference cells, then every candidate) is charged beside the table's training
  times, and the cell found is the best measured one (by validation accuracy) charged within it."""
  from jnas.spaces.nb201 import NB201Space

  summary = json.loads((wd / "summary.json").read_text())
  hist = json.loads((wd / "evaluations.json").read_text())["history"]
  per = float(summary["prefilter_s_per_candidate"])
  charged = [float(summary["prefilter_setup_s"]) + r["spent"] + per * (i + 1)
             for i, r in enumerate(hist)]
  within = [(r, t) for r, t in zip(hist, charged) if t <= budget and r.get("measured") == 1.0]
  if not within:
    raise SystemExit(f"{wd}: no query fits {budget:g} s once the proxy's time is charged")
  best, t = max(within, key=lambda rt: (rt[0][SIGNAL], -rt[0]["index"]))
  space = NB201Space()
  return {**_found(table, space.format(space.genotype_from_json(best["genotype"]))),
          "search_seconds": max(t for _, t in within), "queries": len(within),
          "proxy_seconds": float(summary["prefilter_setup_s"]) + per * len(hist)}


def _trained_top_run(wd: Path, budget: float, table, signal: dict[str, float],
                     share: float = 0.5) -> dict:
  """SPOS's shared-weight ranking as a filter (Bender et al. 2018 train the one-shot model's best
  from scratch): the run ``wd``, made with ``share`` of ``budget`` (half by default), has its
  evolution's candidates queried on the table best shared-weight score first (isomorphic cells
  once), each charged its training time, until the rest is spent; the cell found is the best
  queried by what a query tells (``signal``: arch string -> :data:`SIGNAL`)."""
  from jnas.spaces.nb201 import NB201Space

  space = NB201Space()
  hist = json.loads((wd / "evolution.json").read_text())["history"]
  ranked = sorted(hist, key=lambda r: (-r["val_accuracy"], r["index"]))
  spent, seen, queried = budget * share + _research_seconds(wd), set(), []
  for r in ranked:
    i = table.row[space.format(space.genotype_from_json(r["genotype"]))]
    if table.canonical[i] in seen:
      continue
    if spent + float(table.train_seconds[i]) > budget:
      break
    seen.add(table.canonical[i])
    spent += float(table.train_seconds[i])
    queried.append(i)
  if not queried:
    raise SystemExit(f"{wd}: no query fits the rest of {budget:g} s")
  best = max(queried, key=lambda i: (signal[table.arch[i]], -queried.index(i)))
  return {**_found(table, table.arch[best]),
          "search_seconds": spent, "queries": len(queried)}


#: The single-path methods: their cell comes from an evolution over the trained supernet.
SINGLE_PATH = ("spos", "spos_few_shot", "spos_unique")

#: ``research`` (added in stop 45, after the runs): each single-path run's trained supernet
#: searched again (``search.supernet_from``; nothing is retrained) with SPOS's own evolution size,
#: 1,000 candidates (Guo et al. 2019), each scored on 2,048 validation examples, instead of the
#: comparison's 100 on 512. Variant -> overrides; its runs are ``METHOD@VARIANT``.
#: ``e1000`` is what the pipeline runs; the others were measured on the 600 s SPOS runs (stop 45,
#: ``benchmarks/results/README.md``): the evolution's size and scoring examples one at a time.
RESEARCH: dict[str, dict[str, object]] = {
    "e1000": {"evolution.evals": 1000, "evolution.val_batches": 32},
    "e1000v8": {"evolution.evals": 1000, "evolution.val_batches": 8},
    "e4660": {"evolution.evals": 4660, "evolution.val_batches": 16}}
RESEARCHED = tuple(f"{m}@{v}" for m in SINGLE_PATH for v in RESEARCH)

#: Method -> (the single-path method whose runs it reuses, the share of the budget those runs
#: had; see _trained_top_run). The quarter splits are read from the same runs as the halves (the
#: 600 s quarter is the 150 s run): how the budget is best split is reported, not chosen.
TRAINED_TOP = {f"{m}+top{part}": (m, share) for part, share in (("", 0.5), ("(1/4)", 0.25))
               for m in SINGLE_PATH + RESEARCHED}


def _research_seconds(wd: Path) -> float:
  """What a ``research`` run adds to its source's time: its evolution's CPU seconds (its wall
  time is not comparable: it ran beside other work on the same core). 0 for other runs."""
  path = wd / "summary.json"
  summary = json.loads(path.read_text()) if path.exists() else {}
  return float(summary["evolution_cpu_seconds"]) if summary.get("supernet_from") else 0.0


def research_config(source: Path, overrides: dict[str, object]):
  """The config of ``source``'s run, searching its trained supernet with ``overrides``."""
  import ml_collections

  config = ml_collections.ConfigDict(json.loads((source / "config.json").read_text()))
  with config.unlocked():
    config.search.supernet_from = str(source)
    for key, value in overrides.items():
      section, name = key.split(".")
      config[section][name] = value
  return config


def cmd_research(args) -> None:
  """Searches every finished single-path run's supernet again with each :data:`RESEARCH`
  variant, into ``runs/METHOD@VARIANT/seed_S`` beside it (resumable: finished ones are kept)."""
  from jnas.run import search

  budgets = parse_budgets(args.budgets) if args.budgets else None
  dirs = budget_dirs(Path(args.out), budgets) if budgets else [(None, Path(args.out))]
  variants = [v for v in args.variants.split(",") if v]
  for v in variants:
    if v not in RESEARCH:
      raise SystemExit(f"unknown variant {v!r} (known: {', '.join(RESEARCH)})")
  methods = [m for m in args.methods.split(",") if m]
  for m in methods:
    if m not in SINGLE_PATH:
      raise SystemExit(f"{m!r} is not a single-path method (those: {', '.join(SINGLE_PATH)})")
  for _, bdir in dirs:
    for seed in range(args.seeds):
      for m in methods:
        source = bdir / "runs" / m / f"seed_{seed}"
        if not (source / "summary.json").exists():
          continue
        for variant in variants:
          overrides = RESEARCH[variant]
          wd = bdir / "runs" / f"{m}@{variant}" / f"seed_{seed}"
          s = search(research_config(source, overrides), str(wd))
          log.info("%s@%s seed %d: %s (evolution %.1f CPU s)", m, variant, seed,
                   s["genotype"]["arch"], s["evolution_cpu_seconds"])


def _stats(values) -> dict[str, float]:
  import numpy as np

  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {"n": 0}
  return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1
          else 0.0, "min": float(v.min()), "max": float(v.max())}


def _file_id(path: Path) -> str:
  import hashlib

  return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def query_table(table_path: Path):
  """The table as its queries see it (:data:`SIGNAL` for one training run's cost), and the
  signal by arch string: what random search, REA and ``+top`` read."""
  from jnas.search.tabular import load_table

  bench = load_table(str(table_path), arch_column="arch_str", signal_column=SIGNAL,
                     report_column="test_acc", cost_column="train_seconds")
  return bench, dict(zip(bench.arch, bench.signal.tolist()))


def bootstrap_means(values, rng, resamples: int):
  """``resamples`` means of ``values`` resampled with replacement."""
  import numpy as np

  v = np.asarray(values, np.float64)
  return v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)


def report(out: Path, table_path: Path, *, seeds: int, sample: int, replay_runs: int = 500
           ) -> dict:
  """Benches every finished run and replays random search and REA; writes compare.{json,md,png}."""
  import numpy as np

  from jnas.nb201_table import load_nb201_table
  from jnas.search.tabular import replay_many
  from jnas.search.common import enable_compilation_cache
  from jnas.utils.metrics import write_json_atomic

  enable_compilation_cache()  # every run's evaluator is the same program
  plan = json.loads((out / "plan.json").read_text())
  budget = float(plan["budget"])
  table = load_nb201_table(table_path)
  table_id = _file_id(table_path)
  runs: list[dict] = []
  for m, entry in plan["methods"].items():
    source = entry.get("anytime_from")
    for seed in range(seeds):
      wd = (out.parent / source if source else out) / "runs" / m / f"seed_{seed}"
      if not (wd / "summary.json").exists():
        log.warning("%s seed %d has not finished; left out", m, seed)
        continue
      if entry.get("table_search"):
        runs.append({"method": m, "seed": seed, **_table_search_run(wd, budget, table),
                     "tau_shared": None, "rho_shared": None, "tau_alpha": None})
        continue
      if source:
        runs.append({"method": m, "seed": seed, **_anytime_run(wd, int(entry["epochs"]), table),
                     "tau_shared": None, "rho_shared": None, "tau_alpha": None})
        continue
      runs.append(_benched(m, _bench_run(wd, table, table_id, sample)))
      log.info("%s seed %d: %.4f (%s)", m, seed, runs[-1]["test_acc"], runs[-1]["arch"])
  for m in RESEARCHED:
    for seed in range(seeds):
      wd = out / "runs" / m / f"seed_{seed}"
      if (wd / "summary.json").exists():
        summary = json.loads((wd / "summary.json").read_text())
        runs.append({**_benched(m, _bench_run(wd, table, table_id, sample)),
                     "search_seconds": summary["supernet_seconds"] + _research_seconds(wd)})
  bench, signal = query_table(table_path)
  for m, (source, share) in TRAINED_TOP.items():
    part_dir = out.parent / f"b{budget * share:g}"
    part = json.loads((part_dir / "plan.json").read_text()) if (
        part_dir / "plan.json").exists() else {"methods": {}}
    for seed in range(seeds if source.split("@")[0] in part["methods"] else 0):
      wd = part_dir / "runs" / source / f"seed_{seed}"
      if (wd / "summary.json").exists():
        runs.append({"method": m, "seed": seed,
                     **_trained_top_run(wd, budget, table, signal, share),
                     "tau_shared": None, "rho_shared": None, "tau_alpha": None})
  measured = float(np.median([r["search_seconds"] for r in runs])) if runs else budget
  test_sorted = np.sort(table.test_acc)
  replays: dict[str, dict] = {}
  for name in TABLE_METHODS:
    # The nominal budget, and the runs' median measured time unless it reads the same.
    labels = {f"{name} ({budget:g} s)": budget}
    labels.setdefault(f"{name} ({measured:.0f} s)", measured)
    for label, b in labels.items():
      few = replay_many(name, bench, budget=b, runs=seeds, seed=0)
      many = replay_many(name, bench, budget=b, runs=replay_runs, seed=1)
      replays[label] = {"budget": b, "mean_queries": few["mean_queries"],
                        "runs_500": {"mean": many["mean"], "std": many["std"],
                                     "mean_queries": many["mean_queries"]}}
      for i, (acc, arch) in enumerate(zip(few["best_report"], few["best_arch"])):
        pct = 100.0 * np.searchsorted(test_sorted, acc, side="left") / len(test_sorted)
        runs.append({"method": label, "seed": i, "arch": arch, "test_acc": acc,
                     "percentile": pct, "regret": float(table.test_acc.max() - acc),
                     "search_seconds": b, "queries": few["queries"][i]})
  methods = list(dict.fromkeys(r["method"] for r in runs))
  summary = {m: {k: _stats([r.get(k) for r in runs if r["method"] == m])
                 for k in ("test_acc", "percentile", "regret", "tau_shared", "rho_shared",
                           "tau_alpha", "search_seconds", "search_epochs")} for m in methods}
  result = {"budget_seconds": budget, "median_measured_search_seconds": measured,
            "table": str(table_path), "table_id": table_id, "seeds": seeds, "sample": sample,
            "table_best_test_acc": float(table.test_acc.max()),
            "table_median_test_acc": float(np.median(table.test_acc)),
            "plan": plan, "summary": summary, "replays": replays, "runs": runs,
            "command": "python benchmarks/nb201_compare.py run && "
                       "python benchmarks/nb201_compare.py report"}
  result["markdown"] = markdown(result)
  write_json_atomic(str(out / "compare.json"), result)
  (out / "compare.md").write_text(result["markdown"] + "\n")
  plot(result, out / "compare.png")
  return result


def _fmt(st: dict, scale: float = 1.0, digits: int = 1) -> str:
  if not st.get("n"):
    return "-"
  return (f"{scale * st['mean']:.{digits}f} ± {scale * st['std']:.{digits}f} "
          f"({scale * st['min']:.{digits}f} to {scale * st['max']:.{digits}f})")


def markdown(res: dict) -> str:
  lines = [f"Search budget {res['budget_seconds']:g} s per run (epochs calibrated per method; "
           f"median measured search time {res['median_measured_search_seconds']:.0f} s with "
           f"compilation), {res['seeds']} seeds. Table: best {100 * res['table_best_test_acc']:.1f} %, "
           f"median {100 * res['table_median_test_acc']:.1f} % test accuracy.", "",
           "| method | table test acc % (mean ± sd (min to max)) | percentile | regret (points) | "
           "Kendall tau, shared weights | Kendall tau, alpha | search s | epochs |",
           "|---|---|---|---|---|---|---|---|"]
  for m, st in res["summary"].items():
    lines.append(f"| {m} | {_fmt(st['test_acc'], 100)} | {_fmt(st['percentile'])} | "
                 f"{_fmt(st['regret'], 100)} | {_fmt(st['tau_shared'], 1, 2)} | "
                 f"{_fmt(st['tau_alpha'], 1, 2)} | {_fmt(st['search_seconds'], 1, 0)} | "
                 f"{_fmt(st['search_epochs'], 1, 0)} |")
  lines += ["", "Random search and REA over 500 replays (mean ± sd of the table test accuracy):", ""]
  for label, r in res["replays"].items():
    lines.append(f"- {label}: {100 * r['runs_500']['mean']:.2f} ± {100 * r['runs_500']['std']:.2f} %, "
                 f"{r['runs_500']['mean_queries']:.0f} queries per run")
  return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  methods = list(res["summary"])
  fig = Figure(figsize=(max(8, 0.7 * len(methods)), 4.5), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for i, m in enumerate(methods):
    accs = [100 * r["test_acc"] for r in res["runs"] if r["method"] == m]
    ax.scatter([i] * len(accs), accs, s=14, color="tab:blue", alpha=0.7)
    ax.scatter([i], [sum(accs) / len(accs)], marker="_", s=400, color="black")
  ax.axhline(100 * res["table_best_test_acc"], color="tab:green", ls="--", lw=1, label="table best")
  ax.axhline(100 * res["table_median_test_acc"], color="tab:gray", ls=":", lw=1,
             label="table median")
  ax.set_xticks(range(len(methods)))
  ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
  ax.set_ylabel("table test accuracy of the found cell (%)")
  ax.set_title(f"NAS-Bench-201 space on MNIST-1D, {res['budget_seconds']:g} s per search, "
               f"{res['seeds']} seeds")
  ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = path.with_name(f".{path.stem}.tmp.png")
  fig.savefig(tmp)
  os.replace(tmp, path)


def cmd_report(args) -> None:
  budgets = parse_budgets(args.budgets) if args.budgets else None
  if budgets is None or len(budgets) == 1:
    res = report(Path(args.out), Path(args.table), seeds=args.seeds, sample=args.sample)
    print(res["markdown"])
    return
  per_budget = {b: report(d, Path(args.table), seeds=args.seeds, sample=args.sample)
                for b, d in budget_dirs(Path(args.out), budgets)}
  res = combine_budgets(per_budget)
  from jnas.utils.metrics import write_json_atomic

  out = Path(args.out)
  write_json_atomic(str(out / "budgets.json"), res)
  (out / "budgets.md").write_text(res["markdown"] + "\n")
  plot_budgets(res, out / "budgets.png")
  print(res["markdown"])


def _family(label: str) -> str:
  """A replay's label without its budget: ``"rea (300 s)"`` -> ``"rea (replayed)"``."""
  return label.split(" (")[0] + " (replayed)" if label.split(" (")[0] in TABLE_METHODS else label


def order_with_uncertainty(per_seed: dict[str, list[float]], reference: float, *,
                           resamples: int = 10_000, seed: int = 0) -> list[dict]:
  """Methods by mean, each with a 90 % bootstrap interval of its mean over seeds and the share
  of resampled means above ``reference`` (random search's mean over 500 replays, whose own
  error is small beside five seeds'). Methods with fewer than two seeds are left out."""
  import numpy as np

  rng = np.random.default_rng(seed)
  out = []
  for m, vals in per_seed.items():
    v = np.asarray(vals, np.float64)
    if len(v) < 2:
      continue
    means = bootstrap_means(v, rng, resamples)
    out.append({"method": m, "n": int(len(v)), "mean": float(v.mean()),
                "low": float(np.quantile(means, 0.05)), "high": float(np.quantile(means, 0.95)),
                "p_above": float(np.mean(means > reference))})
  return sorted(out, key=lambda o: -o["mean"])


def combine_budgets(per_budget: dict[float, dict]) -> dict:
  """Per method and budget: the found cell's table test accuracy over seeds (mean, sd, n), and
  for the replays over 500 runs. The replays charged the nominal budget are kept."""
  methods: dict[str, dict[str, dict]] = {}
  for b, res in sorted(per_budget.items()):
    for m, st in res["summary"].items():
      if m.split(" (")[0] in TABLE_METHODS and not m.endswith(f"({b:g} s)"):
        continue  # the replay at the runs' median measured time, not the nominal budget
      methods.setdefault(_family(m), {})[f"{b:g}"] = st["test_acc"]
    for label, r in res["replays"].items():
      if label.endswith(f"({b:g} s)"):
        methods.setdefault(label.split(" (")[0] + " (500 replays)", {})[f"{b:g}"] = {
            "n": 500, "mean": r["runs_500"]["mean"], "std": r["runs_500"]["std"]}
  budgets = sorted(per_budget)
  lines = ["Found cell's table test accuracy (%) by search budget: mean ± sd over seeds "
           "(replays: over 500 runs).", "",
           "| method | " + " | ".join(f"{b:g} s" for b in budgets) + " |",
           "|---|" + "---|" * len(budgets)]
  for m, by in methods.items():
    cells = []
    for b in budgets:
      st = by.get(f"{b:g}", {})
      cells.append(f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f} (n={st['n']})"
                   if st.get("n") else "-")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  top = per_budget[budgets[-1]]
  per_seed = {m: [r["test_acc"] for r in top.get("runs", []) if r["method"] == m
                  and r.get("test_acc") is not None]
              for m in top["summary"] if m.split(" (")[0] not in TABLE_METHODS}
  random_label = f"random ({budgets[-1]:g} s)"
  reference = top["replays"].get(random_label, {}).get("runs_500", {}).get("mean")
  order = order_with_uncertainty(per_seed, reference) if reference is not None else []
  if order:
    lines += ["", f"At {budgets[-1]:g} s, methods by mean found accuracy, with a 90 % bootstrap "
              f"interval over seeds and how often a resampled mean beats random search's "
              f"({100 * reference:.2f} %, 500 replays):", "",
              "| method | seeds | mean % | 90 % interval | P(mean > random) |", "|---|---|---|---|---|"]
    lines += [f"| {o['method']} | {o['n']} | {100 * o['mean']:.2f} | {100 * o['low']:.2f} to "
              f"{100 * o['high']:.2f} | {o['p_above']:.2f} |" for o in order]
  first = per_budget[budgets[0]]
  return {"budgets": budgets, "methods": methods, "order": order, "table": first["table"],
          "table_id": first["table_id"], "table_best_test_acc": first["table_best_test_acc"],
          "table_median_test_acc": first["table_median_test_acc"],
          "markdown": "\n".join(lines),
          "command": "python benchmarks/nb201_compare.py report --budgets "
                     + ",".join(f"{b:g}" for b in budgets)}


#: The panels of ``budgets.png`` (title, which methods): about forty lines do not read on one.
BUDGET_PANELS = (
    ("gradient supernets (cell from the alphas)", lambda m: True),
    ("single-path supernets (cell from an evolution)", lambda m: m.split("@")[0] in SINGLE_PATH),
    ("with table queries (+top: trained candidates; proxy-filtered REA)",
     lambda m: "+top" in m or m in PROXY_REA))


def _panel(method: str) -> int:
  """Which of :data:`BUDGET_PANELS` draws ``method`` (the last whose test it passes)."""
  return max(i for i, (_, test) in enumerate(BUDGET_PANELS) if test(method))


def plot_budgets(res: dict, path: Path) -> None:
  """The found cell's table accuracy against the budget, one line per method with the sd as
  error bars, in three panels (:data:`BUDGET_PANELS`), each with random search and REA (500
  replays) and the table's best cell as yardsticks."""
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(15, 7.5), dpi=110)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(BUDGET_PANELS), sharey=True)
  colors = [matplotlib.colormaps["tab20"](j) for j in range(20)]
  # The y range where the methods differ: a collapsed method (fairdarts at 40 %) would squash
  # every other line into one; points below it are drawn on the axis as downward triangles.
  low = 100 * res["table_median_test_acc"] - 1.0
  high = 100 * res["table_best_test_acc"] + 0.4
  yardsticks = {m: by for m, by in res["methods"].items() if m.endswith("(500 replays)")}
  for k, (title, _) in enumerate(BUDGET_PANELS):
    ax = axes[k]
    lines = {m: by for m, by in res["methods"].items()
             if "replay" not in m and _panel(m) == k}
    for i, (m, by) in enumerate({**lines, **yardsticks}.items()):
      pts = [(float(b), st) for b, st in by.items() if st.get("n")]
      if not pts:
        continue
      xs = [b * (1 + 0.012 * (i - len(lines) / 2)) for b, _ in pts]  # dodge the error bars
      ys = [100 * st["mean"] for _, st in pts]
      below = [y < low for y in ys]
      line = ax.errorbar(xs, [max(y, low + 0.05) for y in ys],
                         yerr=[0.0 if b else 100 * st["std"] for b, (_, st) in zip(below, pts)],
                         marker="o", ms=3, capsize=2, lw=1.6 if m in yardsticks else 1,
                         label=m + (" (v: below the axis)" if any(below) else ""),
                         ls="--" if m in yardsticks else "-",
                         color="black" if m.startswith("random") else
                         "dimgray" if m in yardsticks else colors[i % 20])
      ax.scatter([x for x, b in zip(xs, below) if b], [low + 0.05] * sum(below), marker="v",
                 s=40, color=line[0].get_color(), zorder=3)
    ax.axhline(100 * res["table_best_test_acc"], color="tab:green", ls=":", lw=1,
               label="table best")
    ax.set_ylim(low, high)
    ax.set_xscale("log")
    ax.set_xticks(res["budgets"], [f"{b:g}" for b in res["budgets"]])
    ax.minorticks_off()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("search budget (CPU s; table queries charged their training time)")
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
  axes[0].set_ylabel("table test accuracy of the found cell (%)")
  fig.tight_layout()
  tmp = path.with_name(f".{path.stem}.tmp.png")
  fig.savefig(tmp)
  os.replace(tmp, path)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  r = sub.add_parser("run", help="run (or resume) the searches")
  r.add_argument("--budget", type=float, default=40.0, help="search seconds per run (40)")
  r.add_argument("--methods", default=",".join(ALL_METHODS))
  r.add_argument("--anytime", action="store_true",
                 help="gradient methods run once, at the largest budget, and are judged at the "
                      "smaller ones by their cell after those budgets' epochs")
  rs = sub.add_parser("research", help="search the single-path runs' supernets again with "
                                        "SPOS's own evolution size (RESEARCH)")
  rp = sub.add_parser("report", help="bench every finished run against the table")
  for q in (r, rp):
    q.add_argument("--table", default=None if q is r else str(TABLE),
                   help="the table whose task the searches run on (its protocol.json) and "
                        "that judges them")
    q.add_argument("--budgets", default=None,
                   help="comma-separated seconds: one comparison per budget in OUT/bB")
  rp.add_argument("--sample", type=int, default=200,
                  help="cells scored with the shared weights for the rank correlation (200)")
  rs.add_argument("--budgets", default=None, help="as for run")
  rs.add_argument("--variants", default="e1000", help="RESEARCH variants (e1000)")
  rs.add_argument("--methods", default=",".join(SINGLE_PATH))
  for q in (r, rp, rs):
    q.add_argument("--out", default=str(OUT))
    q.add_argument("--seeds", type=int, default=5)
    q.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pinning)")
  args = p.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("absl").setLevel(logging.WARNING)
  _pin(args.cores)
  {"run": cmd_run, "research": cmd_research, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
  main()
