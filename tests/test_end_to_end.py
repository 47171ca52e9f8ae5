"""The whole `jnas search` pipeline on a tiny config (slow: compiles a supernet and a network)."""

import json
from pathlib import Path

import pytest

from jnas.cli import main
from jnas.utils.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_search_then_retrain_writes_everything(tmp_path, capsys):
  wd = tmp_path / "run"
  rc = main([
      "search", "--config", str(ROOT / "experiments/darts_mnist1d.py"), "--workdir", str(wd),
      "--config.space.num_nodes=2", "--config.search.epochs=1", "--config.search.channels=4",
      "--config.search.layers=1", "--config.retrain.epochs=1", "--config.retrain.channels=4",
      "--config.retrain.layers=1",
  ])
  assert rc == 0
  out = capsys.readouterr().out
  assert "test_accuracy" in out and str(wd) in out
  for name in ("config.json", "metrics.jsonl", "genotype.json", "arch_params.npz", "report.json"):
    assert (wd / name).exists(), name
  report = json.loads((wd / "report.json").read_text())
  assert 0.0 <= report["test_accuracy"] <= 1.0 and report["num_params"] > 0
  assert any("train_loss" in m for m in read_metrics(str(wd)))
