"""search.finalists: SPOS's K best candidates by shared weights measured, the best measured kept."""

import json
from pathlib import Path

import pytest

from jnas import cli

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "results" / "nb201_mnist1d" / "table.csv"
TINY_SPOS = ["--config.search.epochs=2", "--config.search.batch_size=256",
             "--config.search.channels=4", "--config.search.cells_per_stage=1",
             "--config.search.pool_size=16", "--config.evolution.population=4",
             "--config.evolution.top_k=2", "--config.evolution.evals=12",
             "--config.evolution.calib_batches=1", "--config.evolution.val_batches=1",
             "--config.retrain.enabled=false"]


def _spos(wd: Path, *extra: str) -> int:
  return cli.main(["search", "--config", str(ROOT / "experiments" / "nb201_mnist1d.py"),
                   "--workdir", str(wd), *TINY_SPOS, *extra])


def test_the_best_measured_finalist_is_the_result(tmp_path):
  from jnas.nb201_table import load_nb201_table
  from jnas.spaces.nb201 import NB201Space

  wd = tmp_path / "run"
  assert _spos(wd, "--config.search.finalists=4", f"--config.search.table={TABLE}",
               "--config.search.table_columns=arch_str,val_acc,train_seconds,test_acc") == 0
  fin = json.loads((wd / "finalists.json").read_text())
  evo = json.loads((wd / "evolution.json").read_text())["history"]
  recs = fin["finalists"]
  assert fin["estimator"] == "table" and len(recs) == 4
  # The finalists are the best distinct candidates by shared-weight score, in that order.
  shared = [r["shared_val_accuracy"] for r in recs]
  assert shared == sorted(shared, reverse=True)
  keys = {json.dumps(r["genotype"], sort_keys=True) for r in recs}
  assert len(keys) == 4
  assert all(e["val_accuracy"] <= shared[-1] for e in evo
             if json.dumps(e["genotype"], sort_keys=True) not in keys)
  # Each was measured on the table, and the best measured one is the search's result.
  table, space = load_nb201_table(TABLE), NB201Space()
  vals = [float(table.val_acc[table.row[space.format(space.genotype_from_json(r["genotype"]))]])
          for r in recs]
  assert [r["val_acc"] for r in recs] == pytest.approx(vals)
  assert fin["chosen"] == vals.index(max(vals))
  genotype = json.loads((wd / "genotype.json").read_text())
  assert genotype["arch"] == recs[fin["chosen"]]["genotype"]["arch"]
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["finalists"] == 4 and summary["finalist_rank"] == fin["chosen"] + 1
  assert summary["finalists_charged_s"] == pytest.approx(sum(r["cost_s"] for r in recs), rel=1e-4)


@pytest.mark.parametrize("extra, words", [
    (("--config.search.finalists=3",), "search.finalists with search.finalist_estimator='table' "
                                       "needs search.table"),
    (("--config.search.finalists=-1",), "search.finalists"),
    (("--config.search.finalists=2", "--config.search.finalist_estimator=oracle"), "must be one of"),
])
def test_bad_finalist_settings_are_refused_in_one_line(tmp_path, capsys, extra, words):
  assert _spos(tmp_path / "run", *extra) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and words in err, err
  assert not (tmp_path / "run").exists()


def test_finalists_are_spos_only(tmp_path, capsys):
  assert cli.main(["search", "--config", str(ROOT / "experiments" / "darts_mnist1d.py"),
                   "--workdir", str(tmp_path / "run"), "--config.search.finalists=3"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "measures SPOS's best candidates" in err, err


def test_scratch_finalists_are_trained_and_charged_their_time(tmp_path):
  wd = tmp_path / "run"
  assert _spos(wd, "--config.search.finalists=2", "--config.search.finalist_estimator=scratch",
               "--config.search.scratch_epochs=1") == 0
  fin = json.loads((wd / "finalists.json").read_text())
  assert fin["estimator"] == "scratch" and len(fin["finalists"]) == 2
  assert all(r["cost_s"] > 0 and 0.0 <= r[fin["signal"]] <= 1.0 for r in fin["finalists"])
  chosen = fin["finalists"][fin["chosen"]]
  assert chosen[fin["signal"]] == max(r[fin["signal"]] for r in fin["finalists"])
