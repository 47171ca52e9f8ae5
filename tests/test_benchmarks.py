"""Benchmark scripts run end to end (slow: they compile the MNIST-1D search step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two compilations of the MNIST-1D DARTS step; run with -m slow
def test_seeds_benchmark_reports_a_checked_ratio():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seeds.py"), "--seeds", "2",
                         "--steps", "2", "--rounds", "1", "--devices", "auto", "--json"],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(proc.stdout.strip().splitlines()[-1])
  assert r["ratio"] == pytest.approx(r["vmapped_s"] / r["sequential_s"])
  assert r["vmapped_s"] > 0 and r["sequential_s"] > 0
  assert r["max_alpha_diff"] < 1e-2  # both variants did the same two steps
  assert len(r["genotypes"]) == 2
  cores = len(os.sched_getaffinity(0))
  if cores >= 2:  # two seeds on two host devices; the baseline in its own process
    assert r["vmapped_devices"] == 2 and r["per_device"] == "map"
    assert r["sequential_process"].startswith("child")


@pytest.mark.slow  # compiles one network per cell and setting; run with -m slow
def test_latency_columns_measure_resume_and_report(tmp_path):
  script = str(ROOT / "benchmarks" / "nb201_latency_columns.py")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}

  def run(*args):
    proc = subprocess.run([sys.executable, script, *args, "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout

  # Two shards at once append to one CSV: the header once, every cell once.
  procs = [subprocess.Popen([sys.executable, script, "measure", "--setting", "server", "--limit",
                             "3", "--repeats", "3", "--shard", f"{i}/2", "--out", str(tmp_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
  rows = (tmp_path / "latency-server-r0.csv").read_text().splitlines()
  assert rows[0].startswith("canonical,") and len(rows) == 4
  assert len({r.split(",")[0] for r in rows[1:]}) == 3
  run("measure", "--setting", "edge", "--limit", "2", "--repeats", "3")
  run("measure", "--setting", "edge", "--limit", "1", "--repeats", "3")  # resumes: a third cell
  rows = (tmp_path / "latency-edge-r0.csv").read_text().splitlines()
  assert len(rows) == 1 + 3 and len({r.split(",")[0] for r in rows[1:]}) == 3
  out = run("report")
  assert "edge vs server" in out
  res = json.loads((tmp_path / "latency.json").read_text())
  assert res["cells"] == {"edge": 3, "server": 3} and res["between_settings"]["cells"] == 3
  assert all(r["latency_ms"] > 0 for f in res["fronts"].values() for r in f)


def test_latency_report_front_is_max_accuracy_min_latency(tmp_path):
  """The report's Pareto front keeps the cells no other cell beats on both accuracy (up) and
  latency (down): with latencies chosen by hand, the dominated cell is left out."""
  import csv

  lat = _script("nb201_latency_columns")
  acc = lat.v1_accuracy()
  ranked = sorted(acc, key=lambda k: acc[k][1])
  a1, a2, a3, a4 = ranked[0], ranked[len(ranked) // 3], ranked[2 * len(ranked) // 3], ranked[-1]
  ms = {a1: 0.5, a2: 2.0, a3: 1.0, a4: 4.0}  # a3 is faster and more accurate than a2
  for setting in ("edge", "server"):
    with open(tmp_path / f"latency-{setting}-r0.csv", "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(lat.COLUMNS)
      for k, v in ms.items():
        w.writerow([k, acc[k][0], v, 1.0])
  lat.main(["report", "--out", str(tmp_path)])
  res = json.loads((tmp_path / "latency.json").read_text())
  for setting in ("edge", "server"):
    assert {r["canonical"] for r in res["fronts"][setting]} == {a1, a3, a4}


def test_shard_argument(capsys):
  """``--shard I/N`` splits work between processes; every script that takes it parses it with
  one helper, and a bad value is one argparse line and exit 2."""
  import argparse

  from jnas.cli_support import shard_arg

  assert shard_arg("1/2") == (1, 2)
  for bad in ("2/2", "-1/2", "1/0", "half", "1/2/3"):
    with pytest.raises(argparse.ArgumentTypeError):
      shard_arg(bad)
  for name, command in (("nb201_latency_columns", "measure"), ("nb201_mnist1d_table", "build"),
                        ("nb201_table_v2_pilot", "run")):
    with pytest.raises(SystemExit) as e:
      _script(name).main([command, "--shard", "2/2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "need 0 <= I < N" in err, (name, err)


def test_every_jnas_name_the_scripts_import_exists():
  """Benchmarks import jnas inside functions, so a renamed API breaks them only when run:
  every ``from jnas... import name`` in benchmarks/ and experiments/ must resolve."""
  import ast
  import importlib

  missing = []
  for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "experiments").glob("*.py")]):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jnas":
        module = importlib.import_module(node.module)
        for alias in node.names:
          if not hasattr(module, alias.name):
            try:
              importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
              missing.append(f"{path.name}:{node.lineno} {node.module}.{alias.name}")
  assert not missing, missing


def _script(name: str):
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_latency_table_is_written_once_every_cell_has_both_columns(tmp_path):
  import csv

  lat = _script("nb201_latency_columns")
  with open(lat.TABLE_V1 / "table.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  cells = sorted({r["canonical"] for r in rows})
  edge = {c: 0.1 + i * 1e-4 for i, c in enumerate(cells)}
  server = {c: 2.0 for c in cells[1:]}
  assert lat._write_table(tmp_path, edge, server).startswith("not written: 1 unique cells")
  assert not (tmp_path / "table.csv").exists()
  server[cells[0]] = 3.0
  assert lat._write_table(tmp_path, edge, server) == str(tmp_path / "table.csv")
  with open(tmp_path / "table.csv", newline="") as f:
    got = list(csv.DictReader(f))
  assert len(got) == len(rows) and got[0]["arch_str"] == rows[0]["arch_str"]
  assert [float(r["latency_edge_ms"]) for r in got if r["canonical"] == cells[5]] == [
      pytest.approx(0.1005)] * sum(r["canonical"] == cells[5] for r in rows)
  assert float(next(r for r in got if r["canonical"] == cells[0])["latency_server_ms"]) == 3.0


def test_compare_budgets_task_and_figure(tmp_path):
  """nb201_compare.py --budgets (issue 27 item 6): parsing, the table's task, the combined table."""
  cmp = _script("nb201_compare")
  assert cmp.parse_budgets("600,150") == [150.0, 600.0]
  for bad in ("", "0,10", "10,10", "ten"):
    with pytest.raises(SystemExit):
      cmp.parse_budgets(bad)
  assert cmp.budget_dirs(tmp_path, [5.0]) == [(5.0, tmp_path)]
  assert cmp.budget_dirs(tmp_path, [5.0, 10.0])[1] == (10.0, tmp_path / "b10")
  (tmp_path / "protocol.json").write_text(json.dumps(
      {"dataset": "mnist1d_40k_noisy", "channels": 8, "cells_per_stage": 1}))
  assert cmp.task_overrides(tmp_path / "table.csv") == {
      "data.name": "mnist1d_40k_noisy", "search.channels": 8, "search.cells_per_stage": 1}
  assert cmp.task_overrides(tmp_path / "elsewhere" / "table.csv") == {}

  def one(b, acc):
    st = {"n": 2, "mean": acc, "std": 0.01, "min": acc - 0.01, "max": acc + 0.01}
    return {"summary": {"spos": {"test_acc": st}, f"random ({b:g} s)": {"test_acc": st},
                        "random (999 s)": {"test_acc": {"n": 2, "mean": 0.0, "std": 0.0}}},
            "replays": {f"random ({b:g} s)": {"runs_500": {"mean": acc + 0.02, "std": 0.02}},
                        "random (999 s)": {"runs_500": {"mean": 0.0, "std": 0.0}}},
            "table": "t.csv", "table_id": "x", "table_best_test_acc": 0.95,
            "table_median_test_acc": 0.9}

  top = one(600.0, 0.92)
  top["runs"] = [{"method": "spos", "test_acc": a} for a in (0.93, 0.95, 0.94)]
  res = cmp.combine_budgets({150.0: one(150.0, 0.90), 600.0: top})
  # random's 500 replays average 0.94 at 600 s: spos's mean 0.94 is a coin flip against it.
  (o,) = res["order"]
  assert (o["method"], o["n"], o["mean"]) == ("spos", 3, pytest.approx(0.94))
  assert 0.93 <= o["low"] < 0.94 < o["high"] <= 0.95 and 0.2 < o["p_above"] < 0.6
  assert "| spos | 3 | 94.00 |" in res["markdown"]
  assert res["budgets"] == [150.0, 600.0]
  assert res["methods"]["spos"]["600"]["mean"] == 0.92
  # Replays charged the nominal budget are kept; those at the runs' measured time are not.
  assert set(res["methods"]["random (replayed)"]) == {"150", "600"}
  assert res["methods"]["random (500 replays)"]["150"] == {"n": 500, "mean": 0.92, "std": 0.02}
  assert "| spos | 90.00 ± 1.00 (n=2) | 92.00 ± 1.00 (n=2) |" in res["markdown"]
  cmp.plot_budgets(res, tmp_path / "budgets.png")
  assert (tmp_path / "budgets.png").read_bytes()[:4] == b"\x89PNG"
  # Three panels: gradient, single-path (re-searched ones too), and those that query the table.
  assert [cmp._panel(m) for m in ("drnas", "spos", "spos_few_shot@e1000", "spos@e1000+top",
                                  "spos+top(1/4)", "rea_synflow")] == [0, 1, 1, 2, 2, 2]


def test_compare_anytime_runs_gradient_methods_once_and_judges_them_by_epoch(tmp_path,
                                                                              monkeypatch):
  """--anytime: a smaller budget's gradient entries point at the largest budget's runs, which are
  judged by the cell logged after that budget's epochs; SPOS still runs per budget."""
  import jnas.run
  from jnas.nb201_table import load_nb201_table

  cmp = _script("nb201_compare")
  assert cmp.anytime_capable("darts1") and cmp.anytime_capable("pruning")
  assert not cmp.anytime_capable("spos") and not cmp.anytime_capable("spos_few_shot")
  monkeypatch.setattr(cmp, "calibrate", lambda m, out, task=None: {
      "epoch_seconds": 2.0, "evolution_seconds": 4.0 if m == "spos" else 0.0})
  ran = []
  monkeypatch.setattr(jnas.run, "search", lambda config, wd: ran.append(
      (config.search.strategy, config.search.epochs, Path(wd).parts[-2])) or {
          "genotype": {"arch": "x"}, "search_seconds": 1.0})
  cmp.run_budget(tmp_path / "b10", 10.0, ["darts1", "spos"], 1, {}, calib_dir=tmp_path,
                 anytime_from="b20")
  assert ran == [("spos", 3, "spos")]
  plan = json.loads((tmp_path / "b10" / "plan.json").read_text())
  assert plan["methods"]["darts1"] == {"epoch_seconds": 2.0, "evolution_seconds": 0.0,
                                       "epochs": 5, "anytime_from": "b20"}
  assert "anytime_from" not in plan["methods"]["spos"]
  with pytest.raises(SystemExit, match="--anytime"):
    cmp.run_budget(tmp_path / "b10", 10.0, ["darts1"], 1, {}, calib_dir=tmp_path)

  table = load_nb201_table(ROOT / "benchmarks/results/nb201_mnist1d/table.csv")
  cells = [table.arch[i] for i in (0, 1, 2)]
  wd = tmp_path / "b20" / "runs" / "darts1" / "seed_0"
  wd.mkdir(parents=True)
  lines = [{"phase": "search", "epoch": e, "elapsed_s": 10.0 * e,
            "genotype": json.dumps({"space": "nb201", "arch": a})}
           for e, a in ((1, cells[0]), (2, cells[0]), (3, cells[1]))]
  lines.append({**lines[1], "genotype": json.dumps({"space": "nb201", "arch": cells[2]}),
                "elapsed_s": 21.0})  # epoch 2 again after a resume: the later line counts
  (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  r = cmp._anytime_run(wd, 2, table)
  assert (r["arch"], r["search_epochs"], r["search_seconds"]) == (cells[2], 2, 21.0)
  assert r["test_acc"] == pytest.approx(float(table.test_acc[2]))
  assert cmp._anytime_run(wd, 9, table)["arch"] == cells[1]  # stopped early: its last cell
  with pytest.raises(SystemExit, match="no search epoch"):
    cmp._anytime_run(wd, 0, table)


def test_compare_calibrates_a_changed_config_beside_the_old_one(tmp_path, monkeypatch):
  """A method whose config changed since its calibration (stop 45: SPOS's learning rate) is
  calibrated again in calib/METHOD@HASH, not refused by the old run's work directory; the old
  calibration is not reused for the new config."""
  import jnas.run

  cmp = _script("nb201_compare")
  calls = []

  def fake_search(config, wd):
    wd = Path(wd)
    lr = float(config.search.w_lr)
    old = wd / "lr.txt"
    if old.exists() and float(old.read_text()) != lr:
      raise ValueError(f"work directory {wd} holds a run of another config")
    wd.mkdir(parents=True, exist_ok=True)
    old.write_text(str(lr))
    calls.append(wd.name)
    rows = [{"phase": "search", "epoch": e, "cpu_s": lr * 10 * e} for e in (1, 2)]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"evolution_cpu_seconds": 0.0}

  monkeypatch.setattr(jnas.run, "search", fake_search)
  first = cmp.calibrate("spos", tmp_path)
  monkeypatch.setitem(cmp.METHODS, "spos", {**cmp.METHODS["spos"], "search.w_lr": 0.5})
  second = cmp.calibrate("spos", tmp_path)
  assert calls[0] == "spos" and calls[1].startswith("spos@") and len(calls) == 2
  assert second["epoch_seconds"] == 5.0 != first["epoch_seconds"]
  assert cmp.calibrate("spos", tmp_path) == second and len(calls) == 2  # kept, not rerun


def test_compare_calibrates_in_cpu_seconds_then_runs_seed_by_seed(tmp_path, monkeypatch):
  """Calibration charges the process's CPU seconds (the table's currency) where the run logged
  them, wall seconds otherwise; every method is calibrated first, then seed 0 of each, seed 1..."""
  import jnas.run

  cmp = _script("nb201_compare")

  def fake_search(config, wd):
    wd = Path(wd)
    wd.mkdir(parents=True, exist_ok=True)
    wall = [{"phase": "search", "epoch": e, "elapsed_s": 30.0 * e} for e in (1, 2)]
    if config.search.strategy != "darts":  # SPOS logs both clocks
      wall = [{**r, "cpu_s": 7.0 + 2.0 * r["epoch"]} for r in wall]
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wall))
    return {"evolution_seconds": 50.0, "evolution_cpu_seconds": 5.0}

  monkeypatch.setattr(jnas.run, "search", fake_search)
  assert cmp.calibrate("spos", tmp_path / "a") == {
      "epoch_seconds": 2.0, "evolution_seconds": 5.0, "first_epoch_seconds": 9.0, "clock": "cpu_s"}
  assert cmp.calibrate("darts1", tmp_path / "b")["epoch_seconds"] == 30.0  # an older run's log
  # Kept for the next budget: the same config is not calibrated again.
  monkeypatch.setattr(jnas.run, "search", lambda *a: pytest.fail("calibrated twice"))
  assert cmp.calibrate("spos", tmp_path / "a")["epoch_seconds"] == 2.0

  order = []
  monkeypatch.setattr(cmp, "calibrate", lambda m, out, task=None: order.append(("calib", m)) or {
      "epoch_seconds": 1.0, "evolution_seconds": 0.0})
  monkeypatch.setattr(jnas.run, "search", lambda config, wd: order.append(
      (Path(wd).parts[-2], Path(wd).parts[-1])) or {"genotype": {"arch": "x"},
                                                     "search_seconds": 1.0})
  cmp.run_budget(tmp_path / "b5", 5.0, ["darts1", "spos"], 2, {}, calib_dir=tmp_path)
  assert order == [("calib", "darts1"), ("calib", "spos"), ("darts1", "seed_0"),
                   ("spos", "seed_0"), ("darts1", "seed_1"), ("spos", "seed_1")]


def test_compare_proxy_rea_is_charged_the_proxy_time_and_needs_the_table(tmp_path, monkeypatch):
  """rea_<proxy> runs REA on the table behind the proxy; the report charges the proxy's wall
  time (setup, then per candidate) beside the training times and keeps the best query in budget."""
  import jnas.run
  from jnas.nb201_table import load_nb201_table

  cmp = _script("nb201_compare")
  assert not cmp.anytime_capable("rea_synflow")
  v1 = ROOT / "benchmarks/results/nb201_mnist1d/table.csv"
  cfg = cmp.table_search_config("rea_params", 3, 120.0, {"search.channels": 8}, v1)
  assert (cfg.search.prefilter, cfg.search.budget_s, cfg.seed, cfg.search.channels,
          cfg.search.estimator) == ("params", 120.0, 3, 8, "table")
  # A query tells one run's validation accuracy and is charged that run's time.
  assert cfg.search.table_columns == "arch_str,val_acc_s0,train_seconds,test_acc"
  ran = []
  monkeypatch.setattr(jnas.run, "search", lambda config, wd: ran.append(
      (config.search.prefilter, Path(wd).parts[-2:])) or {"arch": "x", "measured": 1})
  cmp.run_budget(tmp_path, 120.0, ["rea_synflow"], 2, {}, calib_dir=tmp_path, table=str(v1))
  assert ran == [("synflow", ("rea_synflow", "seed_0")), ("synflow", ("rea_synflow", "seed_1"))]
  assert json.loads((tmp_path / "plan.json").read_text())["methods"]["rea_synflow"] == {
      "table_search": True, "proxy": "synflow"}

  table = load_nb201_table(v1)
  best = int(table.val_acc.argmax())
  cells = [table.arch[i] for i in (0, 1, best, 2)]
  hist = [{"index": i, "genotype": {"space": "nb201", "arch": a}, cmp.SIGNAL: float(v),
           "measured": m, "spent": t}
          for i, (a, v, m, t) in enumerate(zip(cells, (0.5, 0.6, 0.99, 0.99), (1.0, 1.0, 1.0, 0.0),
                                               (10.0, 20.0, 27.0, 27.0)))]
  wd = tmp_path / "runs" / "rea_synflow" / "seed_0"
  (wd / "evaluations.json").parent.mkdir(parents=True, exist_ok=True)
  (wd / "evaluations.json").write_text(json.dumps({"history": hist}))
  (wd / "summary.json").write_text(json.dumps({"prefilter_setup_s": 5.0,
                                               "prefilter_s_per_candidate": 1.0}))
  # Charged: 16, 27, 35, 36 s. At 30 s the third query (the best) is out; the unmeasured fourth
  # never counts.
  r = cmp._table_search_run(wd, 30.0, table)
  assert (r["arch"], r["queries"], r["search_seconds"]) == (cells[1], 2, 27.0)
  assert r["proxy_seconds"] == 9.0
  assert cmp._table_search_run(wd, 40.0, table)["arch"] == cells[2]
  with pytest.raises(SystemExit, match="no query fits"):
    cmp._table_search_run(wd, 15.0, table)


def test_compare_plan_entries_of_two_processes_merge(tmp_path):
  """Two compare processes (disjoint --methods, one --out) each add their entries to plan.json
  from a plan read before the other's write; neither loses the other's."""
  cmp = _script("nb201_compare")
  path = tmp_path / "plan.json"
  a = {"budget": 10.0, "task": {}, "methods": {}}
  b = {"budget": 10.0, "task": {}, "methods": {}}  # read before a's first write
  a = cmp._save_plan_entry(path, a, "darts1", {"epochs": 3})
  b = cmp._save_plan_entry(path, b, "spos", {"epochs": 2})
  a = cmp._save_plan_entry(path, a, "gdas", {"epochs": 4})
  assert json.loads(path.read_text())["methods"] == {
      "darts1": {"epochs": 3}, "spos": {"epochs": 2}, "gdas": {"epochs": 4}}


def test_tau_curve_reads_a_comparisons_single_path_runs(tmp_path):
  """spos_tau_curve.py report --compare: every budget's spos/spos_few_shot runs, labelled by
  their supernet training time (epochs x seconds per epoch)."""
  curve = _script("spos_tau_curve")
  for b, epochs in (("b75", 30), ("b600", 240)):
    (tmp_path / b / "runs" / "spos" / "seed_0").mkdir(parents=True)
    (tmp_path / b / "plan.json").write_text(json.dumps({"methods": {
        "spos": {"epochs": epochs, "epoch_seconds": 2.0},
        "darts1": {"epochs": 9, "epoch_seconds": 1.0}}}))
  got = curve._runs(tmp_path / "unused", str(tmp_path))
  assert [(v, m, wd.relative_to(tmp_path).parts[0]) for v, m, wd in got] == [
      ("one_shot", "8min", "b600"), ("one_shot", "1min", "b75")]


def test_v2_pipeline_runs_jobs_after_their_dependencies_and_resumes(tmp_path):
  """benchmarks/nb201_v2_pipeline.py: a job runs once its dependencies exited 0; a failed job is
  not marked done (nor what waits for it), and a rerun runs only what is not done."""
  import os
  import sys

  pipe = _script("nb201_v2_pipeline")
  order = tmp_path / "order.txt"

  def step(name, code=0):
    return [sys.executable, "-c", f"open({str(order)!r}, 'a').write({name!r} + ' '); "
                                  f"raise SystemExit({code})"]

  jobs = [pipe.Job("late", [step("late")], after=("a", "b")), pipe.Job("a", [step("a")]),
          pipe.Job("b", [step("b1"), step("b2")]), pipe.Job("bad", [step("bad", 3)]),
          pipe.Job("never", [step("never")], after=("bad",))]
  core = min(os.sched_getaffinity(0))
  state = tmp_path / "state"
  assert pipe.Pipeline(state, jobs, [core], poll_s=0.05).run() == 1
  # In list order once ready: "late" comes first but waits for a and b.
  assert order.read_text().split() == ["a", "b1", "b2", "late", "bad"]
  assert sorted(p.name for p in (state / "done").iterdir()) == ["a", "b", "late"]
  assert "exit 3" in (state / "logs" / "bad.log").read_text()
  text = pipe.status(state, jobs)
  assert "late            done" in text and "never           not started" in text
  jobs[3] = pipe.Job("bad", [step("fixed")])
  assert pipe.Pipeline(state, jobs, [core], poll_s=0.05).run() == 0
  assert order.read_text().split()[5:] == ["fixed", "never"]
  # While a job of one pipeline still runs (even if that pipeline died), a second one refuses.
  import fcntl
  import subprocess as sp

  held = sp.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                  pass_fds=(lock := os.open(state / "pipeline.lock", os.O_RDWR),))
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(lock)  # the child's inherited descriptor keeps the lock
    with pytest.raises(SystemExit, match="holds"):
      pipe.Pipeline(state, jobs, [core], poll_s=0.05).run()
  finally:
    held.kill()
    held.wait()
  assert pipe.Pipeline(state, jobs, [core], poll_s=0.05).run() == 0  # free again
  names = [j.name for j in pipe.jobs("python")]
  assert names[:2] == ["build-0of2", "build-1of16"] and names[-1] == "publish"


def test_v2_pipeline_jobs_run_a_frozen_copy_of_the_code(tmp_path):
  """The jobs import jnas from the copy exported at the pipeline's first start, not the working
  tree, and run the copy's scripts; a second start keeps the copy."""
  import sys

  pipe = _script("nb201_v2_pipeline")
  src = pipe.freeze(tmp_path / "state")
  commit = (src / "COMMIT").read_text().strip()
  assert len(commit) == 40 and (src / "jnas" / "__init__.py").exists()
  assert (src / "benchmarks" / "nb201_compare.py").exists()
  (src / "marker").write_text("kept")
  assert pipe.freeze(tmp_path / "state") == src and (src / "marker").exists()
  assert pipe.jobs("python", src)[0].commands[0][1] == str(src / "benchmarks" /
                                                           "nb201_mnist1d_table.py")
  where, script = tmp_path / "where.txt", tmp_path / "where.py"  # run as the jobs' scripts are
  script.write_text(f"import jnas\nopen({str(where)!r}, 'w').write(jnas.__file__)\n")
  job = pipe.Job("where", [[sys.executable, str(script)]])
  core = min(os.sched_getaffinity(0))
  assert pipe.Pipeline(tmp_path / "state", [job], [core], poll_s=0.05, src=src).run() == 0
  assert where.read_text() == str(src / "jnas" / "__init__.py")
  # The reports run the working tree's scripts and package.
  reports = [j for j in pipe.jobs("python", src) if j.live]
  assert [j.name for j in reports] == ["pilot-report", "compare-report", "publish-compare",
                                       "compare-report-2", "tau-report", "publish"]
  assert all(str(src) not in " ".join(c) for j in reports for c in j.commands)
  live = pipe.Job("where", [[sys.executable, str(script)]], live=True)
  (tmp_path / "state" / "done" / "where").unlink()
  assert pipe.Pipeline(tmp_path / "state", [live], [core], poll_s=0.05, src=src).run() == 0
  assert where.read_text() == str(ROOT / "jnas" / "__init__.py")
  # A job added later runs the second copy, frozen apart; the others keep the first.
  src2 = pipe.freeze(tmp_path / "state", name="src2")
  assert src2 != src and (src2 / "COMMIT").exists()
  (tmp_path / "state" / "done" / "where").unlink()
  later = pipe.Job("where", [[sys.executable, str(script)]], src=src2)
  assert pipe.Pipeline(tmp_path / "state", [later], [core], poll_s=0.05, src=src).run() == 0
  assert where.read_text() == str(src2 / "jnas" / "__init__.py")
  unique = [j for j in pipe.jobs("python", src, src2) if j.name == "compare-unique"]
  assert unique[0].src == src2 and str(src2) in unique[0].commands[0][1]
  src3 = tmp_path / "state" / "src3"
  by_name = {j.name: j for j in pipe.jobs("python", src, src2, src3)}
  assert by_name["compare-research"].src == src3 == by_name["compare-research-2"].src
  assert "compare-research-2" in by_name["compare-report-2"].after
  # The SPOS and few-shot supernets are searched again before compare-unique runs.
  order = [j.name for j in pipe.jobs("python", src, src2, src3)]
  assert order.index("compare-research") < order.index("compare-unique")
  assert set(by_name["compare-research-2"].after) == {"compare-research", "compare-unique"}


def test_v2_pipeline_publishes_reports_and_small_run_files(tmp_path):
  """--publish copies the reports, plans and each run's small files, not checkpoints or weights."""
  pipe = _script("nb201_v2_pipeline")
  cmp, dest = tmp_path / "compare", tmp_path / "published"
  run = cmp / "b600" / "runs" / "spos" / "seed_0"
  for rel in ("budgets.md", "plan.json", "b600/compare.json", "b600/plan.json", "calib/x/y.json",
              "b600/runs/spos/seed_0/supernet.npz", "b600/runs/spos/seed_0/checkpoints/1/a",
              *(f"b600/runs/spos/seed_0/{f}" for f in pipe.RUN_FILES)):
    (cmp / rel).parent.mkdir(parents=True, exist_ok=True)
    (cmp / rel).write_text(rel)
  assert pipe.publish(cmp, dest) == 4 + len(pipe.RUN_FILES)
  assert (dest / "b600" / "compare.json").read_text() == "b600/compare.json"
  assert sorted(p.name for p in (dest / run.relative_to(cmp)).iterdir()) == sorted(pipe.RUN_FILES)
  assert not (dest / "calib").exists()


def test_compare_spos_then_top_queries_spend_the_second_half(tmp_path):
  """spos+top: a half-budget SPOS run's candidates are queried best shared score first, each
  isomorphism class once, until the budget's second half is spent; the best queried wins."""
  from jnas.nb201_table import load_nb201_table

  cmp = _script("nb201_compare")
  table = load_nb201_table(ROOT / "benchmarks/results/nb201_mnist1d/table.csv")
  first = {}
  for i, c in enumerate(table.canonical):
    first.setdefault(c, i)
  rows = sorted(first.values())[1:5]  # four cells of distinct classes
  twin = next(j for j in range(len(table.arch))
              if j != rows[1] and table.canonical[j] == table.canonical[rows[1]])
  shared = {rows[0]: 0.9, rows[1]: 0.8, twin: 0.75, rows[2]: 0.7, rows[3]: 0.1}
  hist = [{"index": k, "genotype": {"space": "nb201", "arch": table.arch[i]}, "val_accuracy": v}
          for k, (i, v) in enumerate(shared.items())]
  (tmp_path / "evolution.json").write_text(json.dumps({"history": hist}))
  cost = [float(table.train_seconds[i]) for i in rows]
  budget = 2 * (cost[0] + cost[1] + cost[2]) + 1e-6  # the second half fits three queries
  signal = {table.arch[i]: 0.5 + 0.1 * k for k, i in enumerate(rows)}  # the third queried best
  r = cmp._trained_top_run(tmp_path, budget, table, signal)
  assert r["queries"] == 3  # the first three rows; the twin of the second is not queried
  best = rows[2]
  assert r["arch"] == table.arch[best]
  assert r["search_seconds"] == pytest.approx(budget / 2 + sum(cost[:3]))
  with pytest.raises(SystemExit, match="no query fits"):
    cmp._trained_top_run(tmp_path, cost[0], table, signal)
  # A quarter's run leaves three quarters for queries: all four fit, and the fourth is best.
  r = cmp._trained_top_run(tmp_path, 4 / 3 * sum(cost) + 1e-6, table, signal, share=0.25)
  assert (r["queries"], r["arch"]) == (4, table.arch[rows[3]])
  assert all(cmp.TRAINED_TOP[m][1] in (0.5, 0.25) for m in cmp.TRAINED_TOP)
  # A run that searched another run's supernet again starts with its evolution's CPU time spent.
  (tmp_path / "summary.json").write_text(json.dumps({"supernet_from": "elsewhere",
                                                     "evolution_cpu_seconds": 2.5}))
  r = cmp._trained_top_run(tmp_path, budget + 5, table, signal)  # the second half less 2.5 s
  assert r["queries"] == 3
  assert r["search_seconds"] == pytest.approx((budget + 5) / 2 + 2.5 + sum(cost[:3]))
  assert "spos@e1000+top" in cmp.TRAINED_TOP and cmp.TRAINED_TOP["spos@e1000+top"][0] == "spos@e1000"


def test_compare_research_config_searches_the_source_supernet(tmp_path):
  cmp = _script("nb201_compare")
  src = tmp_path / "b600" / "runs" / "spos" / "seed_0"
  src.mkdir(parents=True)
  (src / "config.json").write_text(json.dumps({
      "seed": 0, "search": {"strategy": "spos", "epochs": 9},
      "evolution": {"evals": 100, "val_batches": 8}}))
  c = cmp.research_config(src, cmp.RESEARCH["e1000"])
  assert c.search.supernet_from == str(src) and c.search.epochs == 9
  assert (c.evolution.evals, c.evolution.val_batches) == (1000, 32)


def test_search_step_compile_only_reports_without_stepping():
  # A tiny 1-D network: the point is the flag's contract (no step timed, compile figures given).
  import importlib.util

  spec = importlib.util.spec_from_file_location("search_step", ROOT / "benchmarks" /
                                                "search_step.py")
  search_step = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(search_step)
  r = search_step.main(["--strategy", "darts", "--ndim", "1", "--size", "8", "--C", "2",
                        "--layers", "1", "--nodes", "1", "--batch", "2", "--compile-only",
                        "--json"])
  assert r["compile_only"] and "median_s" not in r
  assert r["compile_s"] >= r["trace_s"] > 0 and r["xla_temp_mb"] > 0
  with pytest.raises(SystemExit):
    search_step.main(["--compile-only", "--saved-step", "/tmp/x"])


def test_holdout_compares_held_out_seeds_with_random_search(tmp_path):
  """nb201_holdout.py: the difference from random search's mean with a bootstrap interval, how
  often one run beats one random run, and one-line refusals of bad seeds and unknown methods."""
  hold = _script("nb201_holdout")
  r = hold.compare_with_random([0.95, 0.96, 0.97], [0.90, 0.91, 0.92, 0.93])
  assert r["diff"] == pytest.approx(0.96 - 0.915)
  assert 0 < r["diff_low"] <= r["diff"] <= r["diff_high"] and r["p_diff_above_0"] == 1.0
  assert r["p_run_beats_random"] == 1.0
  tie = hold.compare_with_random([0.9, 0.9], [0.9, 0.9, 0.9])
  assert tie["p_run_beats_random"] == 0.5 and tie["diff"] == 0.0
  assert hold.parse_seeds("5-7") == [5, 6, 7] and hold.parse_seeds("1,3") == [1, 3]
  for bad in ("x", "7-", ""):
    with pytest.raises(SystemExit, match="seeds"):
      hold.parse_seeds(bad)
  with pytest.raises(SystemExit, match="unknown method 'drnas'"):
    hold.found(tmp_path, 600.0, "drnas", [0], None, {})
