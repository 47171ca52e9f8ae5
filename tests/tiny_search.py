"""One tiny real `jnas search`, run once per test session and shared by the test modules.

Compiling even a 1-cell supernet takes seconds, so test_resume.py and
test_plot.py read the same finished run instead of searching twice. Callers
must not modify the directory (copy it first).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments/darts_mnist1d.py")
# 7 steps per epoch on a 1-cell, 2-node, 4-channel supernet: a whole search is seconds.
TINY = ["--config.space.num_nodes=2", "--config.search.epochs=3", "--config.search.channels=4",
        "--config.search.layers=1", "--config.search.batch_size=256",
        "--config.retrain.enabled=false",
        # One step per call, so tests can stop a search between any two steps.
        "--config.search.steps_per_call=1"]


def search(workdir: Path, *extra: str) -> int:
  """``jnas search`` of the tiny config in ``workdir``; returns the exit code."""
  from jnas.cli import main

  return main(["search", "--config", CONFIG, "--workdir", str(workdir), *TINY, *extra])


@functools.lru_cache(maxsize=None)
def reference_run() -> Path:
  """The work directory of an uninterrupted tiny search (made on first use)."""
  root = Path(tempfile.mkdtemp(prefix="jnas-tiny-search-"))
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  wd = root / "run"
  rc = search(wd)
  if rc != 0:
    raise RuntimeError(f"the tiny reference search failed (exit code {rc})")
  return wd


def sigterm_after_steps(real_progress, steps: int, seen: list):
  """A stand-in for ``jnas.search.loop.progress``: SIGTERM to this process after ``steps`` steps.

  Counts the steps of step-unit bars' updates in ``seen`` (a call of several
  steps counts each); the search's signal handler then lets the call in
  flight finish, checkpoints and stops.
  """
  import os
  import signal

  def progress_that_signals(*args, **kwargs):
    bar = real_progress(*args, **kwargs)
    real_update = bar.update

    def update(n=1):
      real_update(n)
      if kwargs.get("unit") == "step" and n > 0 and len(seen) < steps:
        seen.extend([1] * n)
        if len(seen) >= steps:
          os.kill(os.getpid(), signal.SIGTERM)

    bar.update = update
    return bar

  return progress_that_signals
