"""jnas compare: per-strategy, per-seed runs, aggregated into Markdown, JSON and a plot."""

import json
from pathlib import Path

import pytest

from jnas.compare import compare, markdown_table, strategy_config, summarize
from jnas.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _config():
  return load_config(str(ROOT / "experiments" / "darts_mnist1d.py"))


def test_strategy_config_sets_strategy_order_and_seed():
  c = _config()
  d2 = strategy_config(c, "darts2", 7)
  assert (d2.search.strategy, d2.search.order, d2.seed) == ("darts", 2, 7)
  assert strategy_config(c, "gdas", 1).search.strategy == "gdas"
  assert c.search.strategy == "darts" and c.seed == 0  # the input is not modified
  with pytest.raises(ValueError, match="fbnet.*does not run on the darts space"):
    strategy_config(c, "fbnet", 0)
  # SPOS runs on a config written for DARTS (jnas search adds SPOS's evolution defaults).
  assert strategy_config(c, "spos", 2).search.strategy == "spos"


def test_compare_aggregates_every_run_and_writes_three_files(tmp_path):
  calls = []

  def fake_search(cfg, run_dir):
    # Stands in for jnas.run.search: writes what a finished run leaves behind.
    calls.append((cfg.search.strategy, cfg.search.order, cfg.seed, run_dir))
    d = Path(run_dir)
    d.mkdir(parents=True)
    acc = 0.9 + 0.01 * cfg.seed + (0.05 if cfg.search.order == 2 else 0.0)
    (d / "report.json").write_text(json.dumps(
        {"test_accuracy": acc, "num_params": 1000 + cfg.seed, "retrain_seconds": 5.0}))
    (d / "genotype.json").write_text("{}")
    return {"genotype": {"normal": []}, "search_seconds": 10.0 * (cfg.seed + 1)}

  costs = lambda cfg, path: {"madds": 2e6, "latency_ms": 0.5}
  out = compare(_config(), tmp_path, ["darts", "darts2"], 2, search_fn=fake_search,
                cost_fn=costs)
  assert [(s, o, seed) for s, o, seed, _ in calls] == [
      ("darts", 1, 0), ("darts", 1, 1), ("darts", 2, 0), ("darts", 2, 1)]
  assert calls[2][3].endswith("darts2/seed_0")
  acc = out["summary"]["darts2"]["test_accuracy"]
  assert acc["mean"] == pytest.approx(0.955) and acc["n"] == 2
  assert acc["std"] == pytest.approx(0.01 / 2 ** 0.5)
  assert out["summary"]["darts"]["search_seconds"]["mean"] == pytest.approx(15.0)
  saved = json.loads((tmp_path / "compare.json").read_text())
  assert len(saved["runs"]) == 4 and saved["summary"]["darts"]["madds"]["mean"] == 2e6
  md = (tmp_path / "compare.md").read_text()
  assert "| darts2 | 2/2 | 95.50 +- 0.71 |" in md
  assert (tmp_path / "compare.png").stat().st_size > 1000


def test_markdown_table_marks_missing_figures():
  table = markdown_table(summarize([{"strategy": "snas", "test_accuracy": 0.5}]), 3)
  assert "| snas | 1/3 | 50.00 +- 0.00 | 50.00 | - |" in table


def test_compare_refuses_bad_input_before_running(tmp_path):
  never = lambda cfg, d: pytest.fail("no run should start")
  with pytest.raises(ValueError, match="seeds must be >= 1"):
    compare(_config(), tmp_path, ["darts"], 0, search_fn=never)
  with pytest.raises(ValueError, match="'enas' does not run"):
    compare(_config(), tmp_path, ["darts", "enas"], 1, search_fn=never)


def test_sample_based_strategies_compare_as_strategy_colon_estimator(tmp_path):
  from jnas import compare as compare_module
  from jnas.search import ask_tell

  assert compare_module._ASK_TELL == ask_tell.ASK_TELL_STRATEGIES
  assert compare_module._ESTIMATORS == ask_tell.ESTIMATORS
  c = _config()
  rea = strategy_config(c, "rea:supernet", 3)
  assert (rea.search.strategy, rea.search.estimator, rea.seed) == ("rea", "supernet", 3)
  with pytest.raises(ValueError, match="needs an estimator"):
    strategy_config(c, "reinforce", 0)  # the DARTS config names no estimator
  with pytest.raises(ValueError, match="does not run"):
    strategy_config(c, "gdas:scratch", 0)

  seen = []

  def fake_search(cfg, run_dir):
    seen.append((cfg.search.strategy, cfg.search.get("estimator"), run_dir))
    d = Path(run_dir)
    d.mkdir(parents=True)
    (d / "report.json").write_text(json.dumps({"test_accuracy": 0.9, "num_params": 10}))
    (d / "genotype.json").write_text("{}")
    return {"genotype": {}, "search_seconds": 1.0}

  out = compare(c, tmp_path, ["darts", "rea:supernet"], 1, search_fn=fake_search,
                cost_fn=lambda cfg, path: {"madds": 1.0, "latency_ms": 0.1})
  assert [(s, e) for s, e, _ in seen] == [("darts", None), ("rea", "supernet")]
  assert seen[1][2].endswith("rea_supernet/seed_0")
  assert set(out["summary"]) == {"darts", "rea:supernet"}
