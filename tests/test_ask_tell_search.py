"""``jnas search`` with the sample-based strategies (jnas/search/ask_tell.py), at toy size.

Every strategy over the NB201 MNIST-1D table through the CLI, one strategy with the
scratch estimator, resume after a simulated kill ending bit-identical to an uninterrupted
run, and a pair that does not fit refused in one line before the work directory exists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jnas import cli
from jnas.checkpoint import Checkpoints
from jnas.search import ask_tell
from jnas.utils.metrics import read_metrics

REA = "experiments/rea_table_mnist1d.py"
SCRATCH = "experiments/reinforce_scratch_mnist1d.py"

# Small populations and beams, so that a dozen evaluations see every phase of a strategy.
TOY_SETTINGS = {
    "random": "",
    "rea": "population_size=4,sample_size=2",
    "topk": "population_size=4,top_k=2",
    "nsga2": "population_size=4",
    "reinforce": "",
    "pnas": "beam_size=3,predictor_steps=10,predictor_members=2",
    "dpp_net": "beam_size=3,predictor_steps=10,predictor_members=2",
}


def _search(wd, strategy: str, *extra: str, config: str = REA) -> int:
  return cli.main(["search", "--config", config, "--workdir", str(wd),
                   f"--config.search.strategy={strategy}",
                   f"--config.search.strategy_settings={TOY_SETTINGS[strategy]}", *extra])


def _table_run(wd, strategy: str, evals: int = 12, *extra: str) -> int:
  return _search(wd, strategy, f"--config.search.evals={evals}", "--config.search.budget_s=0",
                 *extra)


@pytest.mark.parametrize("strategy", ask_tell.ASK_TELL_STRATEGIES)
def test_every_strategy_searches_the_table_from_the_cli(tmp_path, strategy):
  wd = tmp_path / "run"
  assert _table_run(wd, strategy) == 0
  for name in ("config.json", "metrics.jsonl", "genotype.json", "summary.json",
               "evaluations.json"):
    assert (wd / name).is_file(), name
  ev = json.loads((wd / "evaluations.json").read_text())
  summary = json.loads((wd / "summary.json").read_text())
  assert 1 <= ev["num_evaluated"] <= 12 and len(ev["history"]) == ev["num_evaluated"]
  best = max(r["val_acc"] for r in ev["history"])
  assert summary["best_val_acc"] == best == ev["best"]["val_acc"]
  assert json.loads((wd / "genotype.json").read_text()) == ev["best"]["genotype"]
  # The spend is the sum of each query's training seconds, in order.
  assert np.allclose(np.cumsum([r["cost_s"] for r in ev["history"]]),
                     [r["spent"] for r in ev["history"]])
  search = [r for r in read_metrics(str(wd)) if r.get("phase") == "search"]
  assert len(search) == summary["rounds"] and search[-1]["evaluated"] == ev["num_evaluated"]
  # A finished run is not run again.
  assert _table_run(wd, strategy) == 0


def test_a_seconds_budget_charges_the_cost_column(tmp_path):
  wd = tmp_path / "run"
  assert _search(wd, "rea", "--config.search.budget_s=5") == 0
  ev = json.loads((wd / "evaluations.json").read_text())
  spent = [r["spent"] for r in ev["history"]]
  # The evaluation that crosses the budget is the last one.
  assert spent[-1] >= 5 and (len(spent) == 1 or spent[-2] < 5)


class Killed(Exception):
  """Stands in for SIGKILL: raised from the estimator in the middle of a search."""


def _final(wd) -> tuple[dict, list, dict]:
  with Checkpoints(wd / "checkpoints" / "search") as ck:
    _, arrays, meta = ck.latest_good()
  ev = json.loads((wd / "evaluations.json").read_text())
  return arrays, ev["history"], meta


@pytest.mark.parametrize("strategy", ["rea", "pnas", "reinforce"])
def test_a_killed_search_resumes_to_the_same_result(tmp_path, monkeypatch, strategy):
  every = "--config.search.checkpoint_every_s=0"
  ref = tmp_path / "ref"
  assert _table_run(ref, strategy, 10, every) == 0

  calls = {"n": 0}
  real = ask_tell.TableEstimator.estimate

  def dying(self, genotypes):
    calls["n"] += 1
    if calls["n"] == 3:
      raise Killed
    return real(self, genotypes)

  wd = tmp_path / "run"
  monkeypatch.setattr(ask_tell.TableEstimator, "estimate", dying)
  with pytest.raises(Killed):
    _table_run(wd, strategy, 10, every)
  assert not (wd / "summary.json").exists()
  monkeypatch.setattr(ask_tell.TableEstimator, "estimate", real)
  assert _table_run(wd, strategy, 10, every) == 0

  arrays_ref, hist_ref, meta_ref = _final(ref)
  arrays, hist, meta = _final(wd)
  assert hist == hist_ref
  assert meta["leaves"] == meta_ref["leaves"]
  assert sorted(arrays) == sorted(arrays_ref)
  for k in arrays_ref:
    assert arrays[k].dtype == arrays_ref[k].dtype
    assert arrays[k].tobytes() == arrays_ref[k].tobytes(), k
  for name in ("genotype.json",):
    assert (wd / name).read_text() == (ref / name).read_text()
  clock = ("time", "elapsed_s", "cpu_s")
  drop = lambda rs: [{k: v for k, v in r.items() if k not in clock} for r in rs]  # noqa: E731
  assert drop(read_metrics(str(wd))) == drop(read_metrics(str(ref)))


@pytest.mark.parametrize("extra, words", [
    (["--config.search.strategy=darts"], "search.estimator='table' does not fit"),
    (["--config.space.name=darts", "--config.space.num_nodes=2"], "scores nb201 cells"),
    (["--config.search.table=nope.csv"], "is not a file"),
    (["--config.search.table_columns=arch_str,acc,train_seconds"], "not a column"),
    (["--config.search.budget_s=0"], "needs search.evals >= 1 or search.budget_s > 0"),
    (["--config.search.evals=-1"], "search.evals=-1"),
    (["--config.search.estimator=oracle"], "search.estimator='oracle'"),
])
def test_a_pair_that_does_not_fit_is_refused_in_one_line(tmp_path, capsys, extra, words):
  wd = tmp_path / "run"
  rc = cli.main(["search", "--config", REA, "--workdir", str(wd), *extra])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2
  assert len(err) == 1 and err[0].startswith("jnas: error:") and words in err[0], err
  assert not wd.exists()


def test_validate_knows_the_same_strategies():
  from jnas import validate

  assert validate._ASK_TELL_STRATEGIES == ask_tell.ASK_TELL_STRATEGIES
  assert tuple(validate._ESTIMATOR_SPACES) == ask_tell.ESTIMATORS
  assert validate._SUPERNET_STRATEGIES == ask_tell.SUPERNET_STRATEGIES


def test_scratch_estimator_trains_each_new_cell_and_retrains_the_best(tmp_path):
  wd = tmp_path / "run"
  toy = ["--config.search.evals=3", "--config.search.scratch_epochs=1",
         "--config.search.channels=4", "--config.search.layers=2",
         "--config.search.batch_size=512", "--config.retrain.enabled=true",
         "--config.retrain.epochs=1", "--config.retrain.channels=4",
         "--config.retrain.layers=2", "--config.retrain.batch_size=512"]
  assert cli.main(["search", "--config", SCRATCH, "--workdir", str(wd), *toy]) == 0
  ev = json.loads((wd / "evaluations.json").read_text())
  summary = json.loads((wd / "summary.json").read_text())
  assert ev["num_evaluated"] == 3 and ev["estimator"] == "scratch"
  assert all(0.0 <= r["val_accuracy"] <= 1.0 and r["num_params"] > 0 for r in ev["history"])
  # A repeated cell is read from the cache: it is charged nothing.
  seen = set()
  for r in ev["history"]:
    key = json.dumps(r["genotype"], sort_keys=True)
    assert (r["cost_s"] == 0.0) == (key in seen)
    seen.add(key)
  assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in ev["history"])
  assert (wd / "report.json").is_file() and 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize("strategy", ["rea", "reinforce"])
def test_supernet_estimator_trains_the_supernet_then_runs_the_strategy(tmp_path, strategy):
  # search.estimator=supernet: SPOS's supernet training, then this strategy (not SPOS's top-k
  # evolution) scoring candidates by the shared weights; search.evals sets how many.
  wd = tmp_path / strategy
  toy = ["--config.search.strategy=" + strategy, "--config.search.estimator=supernet",
         "--config.search.evals=6", "--config.search.strategy_settings=",
         "--config.search.epochs=1", "--config.search.batch_size=256",
         "--config.search.channels=4", "--config.search.cells_per_stage=1",
         "--config.search.pool_size=16", "--config.evolution.population=4",
         "--config.evolution.calib_batches=1", "--config.evolution.val_batches=1",
         "--config.retrain.enabled=false"]
  assert cli.main(["search", "--config", "experiments/nb201_mnist1d.py", "--workdir", str(wd),
                   *toy]) == 0
  evolution = json.loads((wd / "evolution.json").read_text())
  summary = json.loads((wd / "summary.json").read_text())
  assert len(evolution["history"]) == 6 and summary["evaluated"] == 6
  assert (wd / "supernet.npz").is_file()
  best = max(e["val_accuracy"] for e in evolution["history"])
  assert summary["shared_val_accuracy"] == best
  assert json.loads((wd / "genotype.json").read_text())["arch"].startswith("|")


def test_supernet_estimator_refuses_a_two_objective_strategy(tmp_path, capsys):
  wd = tmp_path / "nsga2"
  assert cli.main(["search", "--config", "experiments/nb201_mnist1d.py", "--workdir", str(wd),
                   "--config.search.strategy=nsga2", "--config.search.estimator=supernet"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "needs a cost per candidate" in err[0] and not wd.exists()


def _table_rows(path="benchmarks/results/nb201_mnist1d/table.csv"):
  import csv

  with open(path, newline="") as f:
    return {r["arch_str"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("strategy", ["nsga2", "dpp_net"])
def test_a_table_column_is_the_second_objective(tmp_path, strategy):
  wd = tmp_path / "run"
  assert _table_run(wd, strategy, 12, "--config.search.objective=params") == 0
  ev = json.loads((wd / "evaluations.json").read_text())
  rows = _table_rows()
  # Each candidate carries the table's params column as its objective, not the cost column.
  for r in ev["history"]:
    arch = json.loads(json.dumps(r["genotype"]))["arch"]
    assert r["params"] == float(rows[arch]["params"])


def test_a_computed_objective_is_the_retraining_networks(tmp_path):
  # flops: XLA's count of the NB201 retraining network's multiply-adds, one compile per cell.
  wd = tmp_path / "run"
  assert _table_run(wd, "nsga2", 4, "--config.search.objective=flops",
                    "--config.retrain.channels=4", "--config.retrain.cells_per_stage=1") == 0
  ev = json.loads((wd / "evaluations.json").read_text())
  flops = [r["flops"] for r in ev["history"]]
  assert len(flops) == 4 and all(f > 0 for f in flops)
  by_arch = {r["genotype"]["arch"]: r["flops"] for r in ev["history"]}
  # A cell of more convolutions costs more than one of fewer (the same skeleton around both).
  convs = {a: a.count("conv_3x3") * 9 + a.count("conv_1x1") for a in by_arch}
  ordered = sorted(by_arch, key=lambda a: convs[a])
  if convs[ordered[0]] < convs[ordered[-1]]:
    assert by_arch[ordered[0]] < by_arch[ordered[-1]]


@pytest.mark.parametrize("extra, words", [
    (["--config.search.objective=latency"], "uses one (nsga2 and dpp_net use it)"),
    (["--config.search.strategy=nsga2", "--config.search.objective=nope"],
     "neither one of params, flops, latency nor a column"),
])
def test_a_misplaced_objective_is_refused_in_one_line(tmp_path, capsys, extra, words):
  wd = tmp_path / "run"
  assert cli.main(["search", "--config", REA, "--workdir", str(wd), *extra]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and words in err[0] and not wd.exists()


def _killed_then_rerun(wd, at_call: int, evals: int, extra: tuple[str, ...]):
  """An REA table search killed in its ``at_call``-th table lookup, then rerun to its end."""
  calls = {"n": 0}
  real = ask_tell.TableEstimator.estimate

  def dying(self, genotypes):
    calls["n"] += 1
    if calls["n"] == at_call:
      raise Killed
    return real(self, genotypes)

  mp = pytest.MonkeyPatch()
  mp.setattr(ask_tell.TableEstimator, "estimate", dying)
  try:
    with pytest.raises(Killed):
      _table_run(wd, "rea", evals, *extra)
  finally:
    mp.undo()
  assert _table_run(wd, "rea", evals, *extra) == 0
  return wd


def test_a_proxy_prefilter_measures_only_what_the_proxy_ranks_high(tmp_path):
  """search.prefilter=params: candidates below the threshold cost nothing and are told a floor;
  the cell found is the best measured one; a resumed run ends as an uninterrupted one."""
  every = ("--config.search.prefilter=params", "--config.search.prefilter_keep=0.2",
           "--config.search.prefilter_pool=200", "--config.search.checkpoint_every_s=0")
  ref = tmp_path / "ref"
  assert _table_run(ref, "rea", 16, *every) == 0
  ev = json.loads((ref / "evaluations.json").read_text())
  summary = json.loads((ref / "summary.json").read_text())
  hist = ev["history"]
  rejected = [r for r in hist if r["measured"] == 0.0]
  measured = [r for r in hist if r["measured"] == 1.0]
  assert rejected and measured and summary["measured"] == len(measured)
  # What the proxy cost in wall time is reported beside the budget, not charged to it.
  assert summary["prefilter_setup_s"] > 0 and summary["prefilter_s_per_candidate"] > 0
  assert all(r["cost_s"] == 0.0 for r in rejected)
  assert all(r["cost_s"] > 0.0 for r in measured)
  # Each reject scores below every measured candidate's proxy score of at least the threshold.
  assert max(r["params"] for r in rejected) < min(r["params"] for r in measured)
  # Rejects are told the lowest signal measured by then, never more than the best.
  assert ev["best"]["measured"] == 1.0
  assert ev["best"]["val_acc"] == max(r["val_acc"] for r in measured)

  wd = _killed_then_rerun(tmp_path / "run", 5, 16, every)
  clock = ("elapsed_s", "search_seconds", "workdir", "prefilter_setup_s",
           "prefilter_s_per_candidate")
  got = json.loads((wd / "summary.json").read_text())
  assert {k: v for k, v in got.items() if k not in clock} == {
      k: v for k, v in summary.items() if k not in clock}
  assert json.loads((wd / "evaluations.json").read_text())["history"] == hist


@pytest.mark.parametrize("extra, words", [
    (("--config.search.strategy=nsga2",), "one-objective"),
    (("--config.search.prefilter=zen",), "must be one of"),
    (("--config.search.prefilter_keep=0",), "prefilter_keep"),
])
def test_a_prefilter_that_does_not_fit_is_refused_in_one_line(tmp_path, capsys, extra, words):
  assert cli.main(["search", "--config", REA, "--workdir", str(tmp_path / "run"),
                   "--config.search.prefilter=synflow", *extra]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and words in err, err
  assert not (tmp_path / "run").exists()


def test_the_predictor_estimator_measures_what_it_finds_promising_and_resumes(tmp_path):
  """search.estimator=predictor over the table: a warm-up measured in full, then predictions
  told for free where the upper bound misses the best; a killed run resumes to the same end."""
  every = ("--config.search.estimator=predictor", "--config.search.predictor_warmup=6",
           "--config.search.checkpoint_every_s=0")
  ref = tmp_path / "ref"
  assert _table_run(ref, "rea", 40, *every) == 0
  ev = json.loads((ref / "evaluations.json").read_text())
  summary = json.loads((ref / "summary.json").read_text())
  hist = ev["history"]
  assert all(r["measured"] == 1.0 and np.isnan(r["predicted"]) for r in hist[:6])
  told = [r for r in hist if r["measured"] == 0.0]
  assert told and all(r["cost_s"] == 0.0 and r["val_acc"] == r["predicted"] for r in told)
  assert summary["measured"] == 40 - len(told)
  assert ev["best"]["measured"] == 1.0

  wd = _killed_then_rerun(tmp_path / "run", 9, 40, every)
  assert json.loads((wd / "evaluations.json").read_text())["history"] == hist


def test_a_filter_measures_after_patience_rejects_in_a_row():
  from jnas.estimation.candidates import Estimate, Estimator, ProxyFiltered
  from jnas.spaces.nb201 import NB201Space

  class Ones(Estimator):
    def estimate(self, genotypes):
      n = len(genotypes)
      return Estimate(np.ones(n), np.ones(n), np.ones(n), {})

  space = NB201Space()
  est = ProxyFiltered(Ones(), lambda gs: np.zeros(len(gs)), 1.0, "zero", space, patience=2)
  gs = [space.random_genotype(np.random.default_rng(i)) for i in range(7)]
  e = est.estimate(gs)
  assert e.extra["measured"].tolist() == [0, 0, 1, 0, 0, 1, 0]
  assert e.cost.tolist() == [0, 0, 1, 0, 0, 1, 0]
  # The streak carries over to the next call, and a restore rebuilds it from the archive.
  assert est.estimate(gs[:2]).extra["measured"].tolist() == [0, 1]
  est2 = ProxyFiltered(Ones(), lambda gs: np.zeros(len(gs)), 1.0, "zero", space, patience=2)
  est2.restore([{"genotype": space.genotype_to_json(g), "signal": 1.0, "measured": m}
                for g, m in zip(gs, [0, 0, 1, 0, 0, 1, 0])])
  assert est2.skipped == 1 and est2.floor == 1.0


@pytest.mark.parametrize("extra, words", [
    (("--config.search.strategy=nsga2",), "predicts one objective"),
    (("--config.search.predictor_base=supernet",), "must be one of"),
    (("--config.search.predictor_warmup=1",), "predictor_warmup"),
])
def test_a_predictor_that_does_not_fit_is_refused_in_one_line(tmp_path, capsys, extra, words):
  assert cli.main(["search", "--config", "experiments/rea_predictor_mnist1d.py", "--workdir",
                   str(tmp_path / "run"), *extra]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and words in err, err
  assert not (tmp_path / "run").exists()
