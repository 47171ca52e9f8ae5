"""Every config in experiments/ loads and says, at its top, how to run it."""

import ast
from pathlib import Path

import pytest

from jnas.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_its_docstring_gives_the_command(path):
  config = load_config(str(path))
  assert config.space.name in ("darts", "nb201", "fbnet", "kernel_chain")
  assert "epochs" in config.search and "enabled" in config.retrain
  doc = ast.get_docstring(ast.parse(path.read_text())) or ""
  assert "jnas " in doc or "python " in doc, f"{path.name}: no command in the docstring"
