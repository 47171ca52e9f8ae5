"""``jnas search``: claims the work directory and hands the run to its search family.

SPOS (:mod:`jnas.search.spos`) for ``search.strategy = "spos"`` on any space
(and for a sample-based strategy with ``search.estimator = "supernet"``: SPOS's
training, then that strategy on the shared weights), the sample-based
strategies (:mod:`jnas.search.ask_tell`) with a table or scratch estimator,
FBNet (:mod:`jnas.search.chain`) on chain spaces, and the gradient strategies
(:mod:`jnas.search.gradient`) on cell spaces. The families never import this
module, so the imports stay one-way.

Example:
  >>> from jnas.search.dispatch import search
  >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from jnas.config import config_to_dict
from jnas.ops.primitives import set_depthwise_impl
from jnas.search.ask_tell import (ASK_TELL_STRATEGIES, check_supernet_plan, search_ask_tell,
                                  uses_supernet)
from jnas.search.chain import search_chain
from jnas.search.common import enable_compilation_cache, is_chain
from jnas.search.gradient import search_gradient
from jnas.search.spos import add_spos_defaults, search_spos
from jnas.search.workdir import (SUMMARY_FILE, checkpoint_every_s, claim_workdir, finished,
                                 lock_workdir)
from jnas.strategies.registry import GRADIENT_STRATEGIES
from jnas.utils.metrics import write_json_atomic

log = logging.getLogger(__name__)


def search(config, workdir: str) -> dict[str, Any]:
  """Runs an architecture search, writes its results to ``workdir``, optionally retrains.

  Writes ``config.json``, ``metrics.jsonl`` (one line per epoch) and TensorBoard
  events under ``tb/search``, ``alpha_history.npz`` (alpha after every epoch),
  checkpoints under ``checkpoints/search`` (after the first and the last
  epoch, after others once ``search.checkpoint_every_s`` seconds passed since
  the last save, and when stopped by SIGINT/SIGTERM; the newest two are kept), and at the end
  ``genotype.json``, ``arch_params.npz``, ``supernet.npz`` (the trained supernet weights, for
  ``jnas bench``), ``summary.json`` and, when
  ``config.retrain.enabled``, ``report.json``.

  Calling it again on the same work directory with the same config resumes
  from the newest readable checkpoint and ends with the same result as an
  uninterrupted run; on a finished run it changes nothing and returns the
  stored summary with ``status: finished``. Another config in the same
  directory is refused (ValueError), and so is a second process while this
  one runs in it (:func:`jnas.search.workdir.lock_workdir`).

  Example:
    >>> search(load_config("experiments/darts_mnist1d.py"), "runs/x")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  if config.search.strategy == "darts2":
    # Second-order DARTS by name: config.json records what runs (darts, order 2).
    config = copy.deepcopy(config)
    config.search.strategy, config.search.order = "darts", 2
  if config.search.strategy == "spos" or uses_supernet(config):
    if uses_supernet(config):
      check_supernet_plan(config)
    # A config written for another strategy gets SPOS's pool and evolution settings, before
    # the config is hashed and saved, so config.json says what ran.
    config = copy.deepcopy(config)
    add_spos_defaults(config)
  wd = Path(workdir)
  with lock_workdir(wd):
    return _search_locked(config, wd)


def _search_locked(config, wd: Path) -> dict[str, Any]:
  checkpoint_every_s(config.search)  # refused before config.json records a bad value
  config_dict = config_to_dict(config)
  chash = claim_workdir(wd, config_dict)
  done = finished(wd, SUMMARY_FILE)
  if done is not None:
    log.info("the run in %s is finished; nothing to do (use a new --workdir to search again)",
             wd)
    return {**done, "status": "finished"}
  write_json_atomic(str(wd / "config.json"), config_dict)
  sc = config.search
  if sc.strategy == "spos" or uses_supernet(config):
    return search_spos(config, wd, chash)
  if sc.strategy in ASK_TELL_STRATEGIES:
    return search_ask_tell(config, wd, chash)
  if is_chain(config):
    return search_chain(config, wd, chash)
  if sc.strategy not in GRADIENT_STRATEGIES:
    known = GRADIENT_STRATEGIES + ("spos",) + ASK_TELL_STRATEGIES
    raise ValueError(f"unknown search strategy {sc.strategy!r} "
                     f"(known: {', '.join(known)}; 'fbnet' on chain spaces)")
  return search_gradient(config, wd, chash)
