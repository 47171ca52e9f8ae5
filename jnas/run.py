"""Library entry points behind the CLI: ``search``, ``train`` and ``info``.

Each takes a config (see ``experiments/``) and returns a small summary dict,
so that a notebook can call them as well as ``jnas`` on the command line.

The code lives in :mod:`jnas.search`, one module per search family; this
module is the stable place to import it from, and nothing in
:mod:`jnas.search` imports it back. Patch a name where it is looked up: the
loop's progress bar is :data:`jnas.search.loop.progress`, not an attribute of
this module.

Example:
  >>> from jnas.config import load_config
  >>> from jnas import run
  >>> cfg = load_config("experiments/darts_mnist1d.py")  # doctest: +SKIP
  >>> run.search(cfg, "/tmp/jnas-run")  # doctest: +SKIP
"""

from __future__ import annotations

from jnas.search.common import (build_space, build_supernet, enable_compilation_cache, is_chain,
                                resolve_architecture, resolve_genotype)
from jnas.search.loop import run_unit, search, train
from jnas.search.retrain import build_discrete, info
from jnas.search.workdir import (ALPHA_HISTORY_FILE, RETRAIN_CKPT_DIR, SEARCH_CKPT_DIR,
                                 SUMMARY_FILE)

__all__ = [
    "ALPHA_HISTORY_FILE",
    "RETRAIN_CKPT_DIR",
    "SEARCH_CKPT_DIR",
    "SUMMARY_FILE",
    "build_discrete",
    "build_space",
    "build_supernet",
    "enable_compilation_cache",
    "info",
    "is_chain",
    "resolve_architecture",
    "resolve_genotype",
    "run_unit",
    "search",
    "train",
]
