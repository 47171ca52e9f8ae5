"""`jnas plot` on a tiny real search: alpha over epochs, cells, learning curves, Pareto front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jnas.cli import main
from jnas.estimation.pareto import save_pareto_json
from jnas.plot import latest_genotype, plot_workdir
from tiny_search import reference_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
  from matplotlib.image import imread

  data = path.read_bytes()
  if not data.startswith(PNG_MAGIC) or len(data) < 2000:
    return False
  image = imread(path)
  # Not a blank canvas: a drawing has more than one colour.
  return image.shape[0] > 100 and image.shape[1] > 100 and float(np.ptp(image)) > 0.1


@pytest.fixture(scope="module")
def run() -> Path:
  """A real (tiny) three-epoch search, shared with test_resume.py; copied before changes."""
  return reference_run()


def test_alpha_history_is_written_per_epoch(run):
  with np.load(run / "alpha_history.npz") as h:
    assert h["epoch"].tolist() == [1, 2, 3]
    assert h["alpha_normal"].shape == (3, 5, 8) and h["alpha_reduce"].shape == (3, 5, 8)
    assert h["primitives"][0] == "none" and h["edges"].shape == (5, 2)
    with np.load(run / "arch_params.npz") as final:
      assert np.array_equal(h["alpha_normal"][-1], final["normal"])


def test_jnas_plot_makes_every_kind_of_picture(run, tmp_path, capsys):
  wd = tmp_path / "run"
  shutil.copytree(run, wd)
  genotype = json.loads((wd / "genotype.json").read_text())
  points = [{"genotype": genotype, "accuracy": a, "latency_ms": l}
            for a, l in [(0.9, 5.0), (0.8, 2.0), (0.7, 6.0), (0.85, 3.0)]]
  save_pareto_json(str(wd / "pareto.json"), points[:2] + points[3:],
                   ["accuracy", ("latency_ms", "min")], evaluated=points)
  capsys.readouterr()
  assert main(["plot", str(wd)]) == 0
  printed = capsys.readouterr().out.split()
  names = sorted(Path(p).name for p in printed)
  expected = ["alpha_normal.png", "alpha_reduce.png", "cell_normal.png", "cell_reduce.png",
              "learning_curves.png", "pareto.png"]
  assert [n for n in names if not n.endswith(".dot.png")] == expected
  for p in printed:
    assert Path(p).parent == wd / "plots" and _is_png(Path(p)), p


def test_running_search_without_results_is_plotted(run, tmp_path):
  """A search still running has no genotype.json: the cell comes from metrics.jsonl."""
  wd = tmp_path / "running"
  shutil.copytree(run, wd)
  (wd / "genotype.json").unlink()
  (wd / "arch_params.npz").unlink()
  (wd / "summary.json").unlink()
  assert latest_genotype(wd) == json.loads((run / "genotype.json").read_text())
  made, skipped = plot_workdir(wd, tmp_path / "out")
  assert {p.name for p in made} >= {"cell_normal.png", "alpha_normal.png",
                                    "learning_curves.png"}
  assert all(_is_png(p) for p in made)
  assert len(skipped) == 1 and "pareto.json" in skipped[0]


def test_empty_workdir_skips_everything_and_missing_dir_fails(tmp_path, capsys):
  made, skipped = plot_workdir(tmp_path)
  assert made == [] and len(skipped) == 4
  assert main(["plot", str(tmp_path / "nope")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_learning_curves_include_retraining(tmp_path):
  from jnas.plot import plot_learning_curves
  from jnas.utils.metrics import MetricWriter

  with MetricWriter(str(tmp_path)) as w:
    for e in (1, 2):
      w.write(7 * e, phase="search", epoch=e, train_loss=2.0 / e, val_loss=2.1 / e,
              train_acc=0.3 * e)
    for e in (1, 2, 3):
      w.write(e, phase="retrain", retrain_loss=1.0 / e, retrain_acc=0.5 + 0.1 * e)
  path = plot_learning_curves(tmp_path, tmp_path / "curves.png")
  assert path is not None and _is_png(path)
  assert plot_learning_curves(tmp_path / "empty", tmp_path / "none.png") is None
