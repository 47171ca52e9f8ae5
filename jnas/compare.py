"""Compare search strategies over several seeds on one config: Markdown, JSON and a plot.

``jnas compare --config experiments/darts_mnist1d.py --strategies darts,darts2,gdas,snas
--seeds 3 --workdir runs/compare`` runs ``jnas search`` (search, then retraining from
scratch) once per strategy and seed, each in its own work directory
``WORKDIR/STRATEGY/seed_I`` (so an interrupted comparison resumes: finished runs are
reused, an unfinished one resumes from its checkpoint), then measures each
derived architecture's size and cost and writes

* ``compare.json``: every run and, per strategy, the mean, standard deviation,
  minimum and maximum of each figure;
* ``compare.md``: the same as a Markdown table;
* ``compare.png``: test accuracy per strategy (each seed a point, the mean a bar)
  and accuracy against search time.

Figures per run: retrained test accuracy, parameters, multiply-adds (FLOPs / 2 as
XLA's cost analysis counts them, one example), latency (median forward time of
one example on this machine, milliseconds), search and retraining seconds.
Strategy names: ``darts`` (first order), ``darts2`` (second order), ``gdas``,
``snas`` and ``spos`` on DARTS- and NAS-Bench-201-space configs; ``fbnet`` and ``spos`` on
chain-space configs; and every sample-based strategy (``random``, ``rea``, ``topk``,
``nsga2``, ``reinforce``, ``pnas``, ``dpp_net``) as ``STRATEGY:ESTIMATOR`` (``rea:supernet``,
``reinforce:scratch``, ``rea:table``), or plain when the config names its
``search.estimator``. Each run's directory is ``WORKDIR/STRATEGY[_ESTIMATOR]/seed_I``.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger("jnas.compare")

FIGURES = ("test_accuracy", "num_params", "madds", "latency_ms", "search_seconds",
           "retrain_seconds")
_CELL_SPACE = ("darts", "darts2", "gdas", "snas", "spos")
# The sample-based strategies and estimators (jnas.search.ask_tell; a test keeps them equal).
_ASK_TELL = ("random", "rea", "topk", "nsga2", "reinforce", "pnas", "dpp_net")
_ESTIMATORS = ("table", "scratch", "supernet", "predictor")


def run_name(strategy: str) -> str:
  """The run directory's name of a strategy name (``rea:supernet`` -> ``rea_supernet``)."""
  return strategy.replace(":", "_")


def strategy_config(config, strategy: str, seed: int):
  """A copy of ``config`` that runs ``strategy`` with ``seed`` (``darts2``: DARTS, order 2;
  ``rea:supernet``: REA with ``search.estimator = "supernet"``).

  Example:
    >>> strategy_config(config, "darts2", 1).search.order  # doctest: +SKIP
    2
  """
  from jnas.run import is_chain

  name, _, estimator = strategy.partition(":")
  chain = is_chain(config)
  known = ("fbnet", "spos") if chain else _CELL_SPACE + _ASK_TELL
  if name not in known or (estimator and name not in _ASK_TELL):
    raise ValueError(f"strategy {strategy!r} does not run on the {config.space.name} space of "
                     f"this config (known here: {', '.join(known)}; sample-based ones as "
                     f"STRATEGY:ESTIMATOR)")
  if name in _ASK_TELL:
    estimator = estimator or str(config.search.get("estimator", "") or "")
    if estimator not in _ESTIMATORS:
      raise ValueError(f"strategy {strategy!r} needs an estimator: write {name}:ESTIMATOR "
                       f"(one of {', '.join(_ESTIMATORS)})")
  c = copy.deepcopy(config)
  c.seed = int(seed)
  if name == "darts2":
    c.search.strategy, c.search.order = "darts", 2
  else:
    c.search.strategy = name
    if name == "darts":
      c.search.order = 1
  if name in _ASK_TELL:
    with c.unlocked():
      c.search.estimator = estimator
  c.retrain.enabled = True
  return c


def architecture_costs(config, genotype_file: str | Path, repeats: int = 20) -> dict[str, float]:
  """Multiply-adds and batch-1 latency (ms, median) of the retraining network of a genotype.

  Weights are freshly initialised: neither figure depends on their values.

  Example:
    >>> architecture_costs(config, "runs/x/genotype.json")["madds"]  # doctest: +SKIP
  """
  from flax import nnx

  from jnas import run
  from jnas.estimation.objectives import network_costs

  if "input_shape" in config.data:
    shape, classes = tuple(config.data.input_shape), int(config.data.num_classes)
  else:
    from jnas.data import load_dataset

    ds = load_dataset(config.data.name, seed=config.data.seed)
    shape, classes = tuple(ds.input_shape), int(ds.num_classes)
  space, geno = run.resolve_architecture(config, str(genotype_file))
  net = run.build_discrete(config, geno, shape, classes, rngs=nnx.Rngs(0), space=space)
  costs = network_costs(net, shape, repeats=repeats)
  return {"madds": costs["madds"], "latency_ms": costs["latency_ms"]}


def _stats(values: Sequence[float]) -> dict[str, float]:
  v = [float(x) for x in values if x is not None and np.isfinite(x)]
  if not v:
    return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"),
            "n": 0}
  return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
          "min": min(v), "max": max(v), "n": len(v)}


def summarize(runs: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
  """Per strategy, per figure: mean, std (sample), min, max and count over seeds.

  Example:
    >>> summarize([{"strategy": "darts", "test_accuracy": 0.9}])["darts"]["test_accuracy"]["mean"]
    0.9
  """
  out: dict[str, dict[str, dict[str, float]]] = {}
  for name in dict.fromkeys(r["strategy"] for r in runs):
    mine = [r for r in runs if r["strategy"] == name]
    out[name] = {f: _stats([r.get(f) for r in mine]) for f in FIGURES}
  return out


def markdown_table(summary: dict, seeds: int) -> str:
  """The summary as a Markdown table (mean +- std over seeds).

  Example:
    >>> print(markdown_table(summarize([{"strategy": "gdas", "test_accuracy": 0.9}]), 1))
    ... # doctest: +ELLIPSIS
    | strategy | seeds | test accuracy (%) | ...
  """
  def cell(s, scale=1.0, fmt=".2f"):
    if not s["n"]:
      return "-"
    return f"{s['mean'] * scale:{fmt}} +- {s['std'] * scale:{fmt}}"

  lines = ["| strategy | seeds | test accuracy (%) | best (%) | params | M multiply-adds | "
           "latency (ms, batch 1) | search (s) | retrain (s) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, s in summary.items():
    acc = s["test_accuracy"]
    lines.append(
        f"| {name} | {acc['n']}/{seeds} | {cell(acc, 100)} | "
        f"{'-' if not acc['n'] else format(acc['max'] * 100, '.2f')} | "
        f"{cell(s['num_params'], 1, ',.0f')} | {cell(s['madds'], 1e-6, '.2f')} | "
        f"{cell(s['latency_ms'], 1, '.3f')} | {cell(s['search_seconds'], 1, '.0f')} | "
        f"{cell(s['retrain_seconds'], 1, '.0f')} |")
  return "\n".join(lines)


def plot_comparison(runs: Sequence[dict], out_png: str | Path) -> Path:
  """Test accuracy per strategy (points per seed, bar = mean) and accuracy vs search time.

  Example:
    >>> plot_comparison(result["runs"], "compare.png")  # doctest: +SKIP
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(dict.fromkeys(r["strategy"] for r in runs))
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for i, name in enumerate(names):
    acc = [100 * r["test_accuracy"] for r in runs if r["strategy"] == name]
    secs = [r["search_seconds"] for r in runs if r["strategy"] == name]
    ax1.bar(i, np.mean(acc), color=f"C{i}", alpha=0.35)
    ax1.scatter([i] * len(acc), acc, color=f"C{i}", zorder=3)
    ax2.scatter(secs, acc, color=f"C{i}", label=name)
  ax1.set_xticks(range(len(names)), names)
  ax1.set_ylabel("retrained test accuracy (%)")
  ax1.set_title("per seed (points) and mean (bars)")
  lo = min(100 * r["test_accuracy"] for r in runs)
  ax1.set_ylim(max(0.0, lo - 2.0), None)
  ax2.set_xlabel("search seconds")
  ax2.set_ylabel("retrained test accuracy (%)")
  ax2.legend()
  fig.tight_layout()
  out = Path(out_png)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def compare(config, workdir: str | Path, strategies: Sequence[str], seeds: int, *,
            search_fn: Callable[[Any, str], dict] | None = None,
            cost_fn: Callable[[Any, Path], dict] | None = None) -> dict[str, Any]:
  """Runs every strategy with seeds ``config.seed, config.seed + 1, ...``; writes the comparison.

  Args:
    config: an experiment config (its ``search.strategy`` is replaced per run).
    workdir: where the runs and ``compare.{json,md,png}`` go.
    strategies: names (see the module docstring).
    seeds: runs per strategy.
    search_fn: ``search_fn(config, run_dir) -> summary`` (default
      :func:`jnas.run.search`); a test hook.
    cost_fn: ``cost_fn(config, genotype_file) -> {"madds", "latency_ms"}``
      (default :func:`architecture_costs`).

  Returns:
    ``{"runs": [...], "summary": {...}, "files": {...}}``.

  Example:
    >>> compare(load_config("experiments/darts_mnist1d.py"), "runs/cmp",
    ...         ["darts", "gdas"], seeds=3)  # doctest: +SKIP
  """
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  if not strategies:
    raise ValueError("no strategies to compare")
  if search_fn is None:
    from jnas.run import search as search_fn
  cost_fn = cost_fn or architecture_costs
  # Check every name before the first (long) run starts.
  plans = [(s, i, strategy_config(config, s, int(config.seed) + i))
           for s in strategies for i in range(seeds)]
  wd = Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  runs: list[dict] = []
  for n, (name, i, cfg) in enumerate(plans):
    run_dir = wd / run_name(name) / f"seed_{i}"
    log.info("compare: run %d/%d: %s, seed %d -> %s", n + 1, len(plans), name, cfg.seed, run_dir)
    t0 = time.time()
    summary = search_fn(cfg, str(run_dir))
    report = json.loads((run_dir / "report.json").read_text())
    costs = cost_fn(cfg, run_dir / "genotype.json")
    runs.append({"strategy": name, "seed": int(cfg.seed), "workdir": str(run_dir),
                 "genotype": summary.get("genotype"),
                 "test_accuracy": float(report["test_accuracy"]),
                 "num_params": int(report["num_params"]),
                 "madds": float(costs["madds"]), "latency_ms": float(costs["latency_ms"]),
                 "search_seconds": float(summary.get("search_seconds", float("nan"))),
                 "retrain_seconds": float(report.get("retrain_seconds", float("nan"))),
                 "wall_seconds": round(time.time() - t0, 1)})
  summary = summarize(runs)
  files = {"json": str(wd / "compare.json"), "markdown": str(wd / "compare.md"),
           "plot": str(wd / "compare.png")}
  table = markdown_table(summary, seeds)
  from jnas.utils.metrics import write_json_atomic

  write_json_atomic(files["json"], {"strategies": list(strategies), "seeds": seeds,
                                    "dataset": config.data.name, "runs": runs,
                                    "summary": summary})
  Path(files["markdown"]).write_text(table + "\n")
  plot_comparison(runs, files["plot"])
  return {"runs": runs, "summary": summary, "files": files, "table": table}
