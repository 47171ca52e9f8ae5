"""The example notebook runs top to bottom (its code cells, in order, in one namespace)."""

import json
import os
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "quickstart.ipynb"


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  matplotlib.use("Agg")
  monkeypatch.setenv("JNAS_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("JNAS_EXPERIMENTS", str(ROOT / "experiments"))
  nb = json.loads(NOTEBOOK.read_text())
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert len(code) >= 4
  namespace: dict = {"__name__": "__main__"}
  for i, cell in enumerate(code):
    exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
  report = json.loads((tmp_path / "run" / "report.json").read_text())
  assert 0.0 <= report["test_accuracy"] <= 1.0 and report["num_params"] > 0
  names = {p.name for p in namespace["made"]}
  assert "learning_curves.png" in names and any(n.startswith("cell_") for n in names), names
  # The custom space reached the search: only its four ops appear in the genotype.
  ops = {op for cell in ("normal", "reduce") for op, _ in namespace["summary"]["genotype"][cell]}
  assert ops <= {"max_pool_3x3", "skip_connect", "sep_conv_3x3"}, ops
  assert os.path.exists(tmp_path / "run" / "alpha_history.npz")
