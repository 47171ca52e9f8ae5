"""Multi-objective replays on the MNIST-1D NB201 table: hypervolume ratios, fronts, limits, errors.

The table's ``params`` and ``train_seconds`` columns stand in for a latency
(both > 0, both known for every cell).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jnas.cli import main
from jnas.estimation.pareto import hypervolume_2d, non_dominated_mask
from jnas.estimation.tabular import load_table
from jnas.search.tabular_front import (MNASNET_W, _make, reference_point, replay_front,
                                           replay_front_many, true_front)

TABLE = Path(__file__).resolve().parents[1] / "benchmarks/results/nb201_mnist1d/table.csv"
COLS = dict(arch_column="arch_str", signal_column="val_acc", report_column="test_acc",
            cost_column="train_seconds")
CLI = ["tabular", "--table", str(TABLE), "--arch-column", "arch_str", "--signal-column",
       "val_acc", "--report-column", "test_acc", "--cost-column", "train_seconds"]
BUDGET = 40.0  # about 65 queries, the budget of benchmarks/results/nb201_compare


@pytest.fixture(scope="module")
def bench():
  return load_table(str(TABLE), objective_column="params", **COLS)


def test_hypervolume_matches_a_grid_count():
  rng = np.random.default_rng(0)
  pts = rng.random((25, 2))
  ref = (0.3, 0.8)  # first column maximised, second minimised
  g = (np.arange(800) + 0.5) / 800
  x, y = np.meshgrid(g, g, indexing="ij")
  covered = np.zeros_like(x, bool)
  for a, b in pts:
    covered |= (x > ref[0]) & (x <= a) & (y >= b) & (y < ref[1])
  hv = hypervolume_2d(pts, ref, ["a", ("b", "min")])
  assert hv == pytest.approx(covered.mean(), abs=3e-3)
  # Dominated points and points outside the reference corner add nothing.
  front = pts[non_dominated_mask(pts, ["a", ("b", "min")])]
  assert hypervolume_2d(front, ref, ["a", ("b", "min")]) == pytest.approx(hv)
  assert hypervolume_2d([[0.2, 0.1], [0.9, 0.9]], ref, ["a", ("b", "min")]) == 0.0


def test_reference_is_the_medians_and_the_whole_table_scores_one(bench):
  ref = reference_point(bench)
  assert ref == (float(np.median(bench.report)), float(np.median(bench.objective)))
  truth = true_front(bench)
  pts = np.stack([bench.report, bench.objective], 1)
  assert truth["hv"] == pytest.approx(hypervolume_2d(pts, ref, ["r", ("o", "min")]))
  front = pts[truth["rows"]]
  assert non_dominated_mask(front, ["r", ("o", "min")]).all()
  # A limit keeps the true front within it.
  limited = true_front(bench, max_objective=9_000)
  assert bench.objective[limited["rows"]].max() <= 9_000
  assert 0 < limited["hv"] < truth["hv"]


@pytest.mark.parametrize("name,runs", [("random", 6), ("rea", 6), ("nsga2", 6),
                                       ("reinforce", 3), ("dpp_net", 1)])
def test_every_strategy_gives_ratios_and_fronts_within_the_budget(bench, name, runs):
  r = replay_front_many(name, bench, budget=BUDGET, runs=runs, seed=0)
  assert r["runs"] == len(r["per_run"]) == runs
  ratios = np.asarray([p["hv_ratio"] for p in r["per_run"]])
  assert ((ratios >= 0) & (ratios <= 1 + 1e-9)).all()
  assert r["hv_ratio_mean"] == pytest.approx(ratios.mean())
  assert r["hv_ratio_std"] == pytest.approx(ratios.std())
  assert r["mean_queries"] > 20
  for p in r["per_run"]:
    assert p["time"] <= BUDGET
    pts = np.asarray([[q["report"], q["objective"]] for q in p["front"]])
    assert non_dominated_mask(pts, ["r", ("o", "min")]).all()
    for q in p["front"]:
      row = bench.arch.index(q["arch"])
      assert q["report"] == bench.report[row] and q["objective"] == bench.objective[row]
  assert r["reference"] == dict(zip(("report", "objective"), reference_point(bench)))
  json.dumps(r)  # JSON-ready


def test_seeing_the_objective_finds_a_better_front_than_random(bench):
  # NSGA-II, told (signal, -params), against random search on the same budget.
  nsga = replay_front_many("nsga2", bench, budget=BUDGET, runs=30, seed=1)
  rand = replay_front_many("random", bench, budget=BUDGET, runs=30, seed=1)
  assert nsga["hv_ratio_mean"] > rand["hv_ratio_mean"], (nsga["hv_ratio_mean"],
                                                         rand["hv_ratio_mean"])


def test_hard_limit_is_never_queried_and_soft_reward_is_mnasnets(bench):
  limit = 9_000.0
  for name in ("random", "rea", "nsga2"):
    r = replay_front_many(name, bench, budget=BUDGET, runs=2, seed=3, max_objective=limit)
    assert all(p["over_limit"] == 0 for p in r["per_run"])
    assert all(q["objective"] <= limit for p in r["per_run"] for q in p["front"])
  r = replay_front_many("reinforce", bench, budget=BUDGET, runs=2, seed=3, max_objective=limit)
  assert r["target"] == limit
  assert all(q["objective"] <= limit for p in r["per_run"] for q in p["front"])
  _, _, score, settings, target = _make("reinforce", bench, limit, None)
  assert settings["w"] == MNASNET_W == -0.07 and target == limit
  rows = np.arange(0, len(bench), 997)
  want = bench.signal[rows] * (bench.objective[rows] / limit) ** -0.07
  np.testing.assert_allclose(score(rows), want, rtol=1e-6)
  # Without a limit the target is the table's median objective.
  assert _make("reinforce", bench, None, None)[4] == float(np.median(bench.objective))


def test_runs_are_reproducible(bench):
  a = replay_front_many("rea", bench, budget=BUDGET, runs=2, seed=5)
  b = replay_front_many("rea", bench, budget=BUDGET, runs=2, seed=5)
  assert a["per_run"] == b["per_run"]
  s, _, score, _, _ = _make("nsga2", bench, None, None)
  key = jax.random.key(5)
  one = replay_front(s, score, bench, budget=BUDGET, key=key)
  two = replay_front(s, score, bench, budget=BUDGET, key=key)
  np.testing.assert_array_equal(one["rows"], two["rows"])
  assert one["time"] <= BUDGET


def _small_table(tmp_path, objective_values, name):
  lines = ["arch_str,val,test,sec,lat"]
  ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
  for k, v in enumerate(objective_values):
    a = ops[k % 5]
    arch = f"|{a}~0|+|none~0|none~1|+|none~0|none~1|{ops[k // 5]}~2|"
    lines.append(f"{arch},0.{k + 1},0.{k + 2},1.0,{v}")
  p = tmp_path / f"{name}.csv"  # one file per case: the cases are built before they run
  p.write_text("\n".join(lines) + "\n")
  return p


def _cli(capsys, args):
  code = main(args)
  err = capsys.readouterr().err.strip().splitlines()
  return code, err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
  base = ["--arch-column", "arch_str", "--signal-column", "val",
          "--report-column", "test", "--cost-column", "sec", "--runs", "2", "--budget", "5"]
  def small(values, name):
    return ["--table", str(_small_table(tmp_path, values, name))] + base + ["--objective", "lat"]

  cases = [
      (CLI + ["--objective", "latency_ms"], "no column 'latency_ms'"),
      (small(["1", "fast", "2"], "text"), "holds 'fast', not a number"),
      (small(["1", "nan", "2"], "nan"), "not a finite number"),
      (small(["1", "0", "2"], "zero"), "must be > 0"),
      (CLI + ["--objective", "params", "--max-objective", "100"], "no cell meets"),
      (CLI + ["--objective", "params", "--budget", "0"], "--budget 0"),
      (CLI + ["--objective", "params", "--budget", "-5"], "--budget -5"),
      (CLI + ["--max-objective", "100"], "needs --objective"),
      (CLI + ["--objective", "params", "--strategy", "topk"], "no multi-objective replay"),
  ]
  for args, message in cases:
    if args[0] == "--table":
      args = ["tabular"] + args
    code, err = _cli(capsys, args)
    assert code == 2, (args, err)
    assert len(err) == 1 and err[0].startswith("jnas: error:") and message in err[0], (args, err)
  with pytest.raises(ValueError, match="budget must be > 0"):
    replay_front_many("random", load_table(str(TABLE), objective_column="params", **COLS),
                      budget=0, runs=1)


def test_cli_writes_the_result_and_plot_draws_it(tmp_path, capsys):
  out = tmp_path / "nsga2.json"
  code = main(CLI + ["--objective", "train_seconds", "--strategy", "nsga2", "--runs", "3",
                     "--budget", str(BUDGET), "--out", str(out)])
  assert code == 0
  printed = capsys.readouterr().out
  assert "hypervolume ratio" in printed and "train_seconds" in printed
  data = json.loads(out.read_text())
  assert {"hv_ratio_mean", "hv_ratio_std", "per_run", "true_front"} <= set(data)
  assert all({"hv_ratio", "front"} <= set(p) for p in data["per_run"])
  assert main(["plot", str(out)]) == 0
  png = tmp_path / "nsga2_front.png"
  assert png.exists() and png.stat().st_size > 5000


def test_the_command_line_prints_no_backend_chatter():
  """The CLI logs at INFO for its own progress lines; JAX's INFO lines (e.g. "Unable to
  initialize backend 'tpu'") are not for the user and stay out of stderr."""
  import os
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # as a user runs it
  code = ("import logging, jax; from jnas import cli; cli._configure_logging(); jax.devices(); "
          "logging.getLogger('jnas.cli').info('own line')")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr.strip() == "own line", proc.stderr
