"""search.supernet_from: a finished SPOS run's supernet searched again, nothing trained."""

import json
from pathlib import Path

import numpy as np
import pytest

from test_spos_finalists import TINY_SPOS, _spos


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
  wd = tmp_path_factory.mktemp("spos") / "run"
  assert _spos(wd) == 0
  return wd


def _epochs(wd: Path) -> int:
  return sum(1 for line in (wd / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("phase") == "search")


def test_a_larger_evolution_on_the_same_supernet(source, tmp_path):
  wd = tmp_path / "again"
  assert _spos(wd, f"--config.search.supernet_from={source}",
               "--config.evolution.evals=20", "--config.evolution.val_batches=2") == 0
  ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (wd, source))
  assert ours["evaluated"] == 20 and theirs["evaluated"] == 12
  assert _epochs(source) == 2 and _epochs(wd) == 0  # nothing was trained
  # The supernet's training is charged as the source measured it, beside this evolution.
  assert ours["supernet_from"] == str(source)
  assert ours["supernet_seconds"] == theirs["supernet_seconds"]
  assert ours["search_seconds"] == pytest.approx(
      ours["supernet_seconds"] + ours["evolution_seconds"], abs=0.11)
  with np.load(wd / "supernet.npz") as a, np.load(source / "supernet.npz") as b:
    assert sorted(a.files) == sorted(b.files)
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_the_same_settings_find_the_same_cell(source, tmp_path):
  """Evolution is a pure function of the weights and the seed: the source's own settings
  repeat its search exactly."""
  wd = tmp_path / "same"
  assert _spos(wd, f"--config.search.supernet_from={source}") == 0
  ours, theirs = (json.loads((d / "evolution.json").read_text())["history"]
                  for d in (wd, source))
  assert [e["genotype"] for e in ours] == [e["genotype"] for e in theirs]
  assert [e["val_accuracy"] for e in ours] == [e["val_accuracy"] for e in theirs]


def test_another_strategy_searches_the_same_supernet(source, tmp_path):
  """Train once, search many: random search over the shared weights (search.estimator=supernet)
  reads the SPOS run's supernet, charged its training time."""
  wd = tmp_path / "random"
  assert _spos(wd, f"--config.search.supernet_from={source}", "--config.search.strategy=random",
               "--config.search.estimator=supernet", "--config.search.evals=10") == 0
  ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (wd, source))
  assert ours["evaluated"] == 10 and _epochs(wd) == 0
  assert ours["supernet_seconds"] == theirs["supernet_seconds"]


@pytest.mark.parametrize("extra, words", [
    (("--config.search.channels=8",), "trained with search.channels=4, this config has 8"),
    (("--config.seed=3",), "trained with seed=0, this config has 3"),
])
def test_a_supernet_of_another_config_is_refused(source, tmp_path, capsys, extra, words):
  assert _spos(tmp_path / "run", f"--config.search.supernet_from={source}", *extra) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and words in err, err
  assert not (tmp_path / "run").exists()


def test_a_directory_without_a_supernet_is_refused(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  assert _spos(tmp_path / "run", f"--config.search.supernet_from={tmp_path / 'empty'}") == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "config.json does not exist" in err, err


def test_a_gradient_search_is_not_a_source(source, tmp_path, capsys):
  fake = tmp_path / "darts_run"
  fake.mkdir()
  config = json.loads((source / "config.json").read_text())
  config["search"]["strategy"] = "darts"
  (fake / "config.json").write_text(json.dumps(config))
  for name in ("supernet.npz", "summary.json"):
    (fake / name).write_bytes((source / name).read_bytes())
  assert _spos(tmp_path / "run", f"--config.search.supernet_from={fake}") == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "that run is a 'darts' search" in err, err


def test_supernet_from_is_spos_only(source, tmp_path, capsys):
  from jnas import cli
  from test_spos_finalists import ROOT

  assert cli.main(["search", "--config", str(ROOT / "experiments" / "nb201_mnist1d.py"),
                   "--workdir", str(tmp_path / "run"), "--config.search.strategy=gdas",
                   f"--config.search.supernet_from={source}"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "needs search.strategy=spos or search.estimator=supernet, not 'gdas'" in err, err


assert "--config.evolution.evals=12" in TINY_SPOS  # the source's evolution, which the tests read
