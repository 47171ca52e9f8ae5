"""The estimators of the sample-based search (:mod:`jnas.estimation.candidates`), built from a config.

:class:`jnas.search.ask_tell.AskTellPlan` builds its estimator here:
``search.estimator`` = ``table`` (:func:`table_estimator`) or ``scratch``
(:func:`scratch_estimator`), optionally behind a learned predictor or a
zero-cost proxy (:func:`proxy_filtered`), with ``search.objective`` as the
second objective (:func:`with_objective`).

Example:
  >>> table_columns("arch_str,val_acc,train_seconds")
  ('arch_str', 'val_acc', 'train_seconds', None)
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any, Callable

import numpy as np

from jnas.config import SEARCH_OPTIONAL_DEFAULTS
from jnas.estimation.candidates import (Estimator, ProxyFiltered, ScratchEstimator, TableEstimator,
                                        WithObjective)
from jnas.estimation.objectives import OBJECTIVES, objective_fn
from jnas.search.common import build_supernet, space_kit_of
from jnas.search.retrain import build_discrete
from jnas.spaces.base import SearchSpace

log = logging.getLogger(__name__)


def search_option(sc: Any, name: str) -> Any:
  """``sc.name`` (a config's ``search`` section), or its default when the config does not list it.

  Example:
    >>> search_option(ml_collections.ConfigDict({"evals": 5}), "budget_s")  # doctest: +SKIP
    0.0
  """
  return sc.get(name, SEARCH_OPTIONAL_DEFAULTS[name])


def table_columns(text: str) -> tuple[str, str, str, str | None]:
  """``"ARCH,SIGNAL,COST[,REPORT]"`` -> ``(arch, signal, cost, report or None)``.

  Example:
    >>> table_columns("arch_str,val_acc,train_seconds,test_acc")
    ('arch_str', 'val_acc', 'train_seconds', 'test_acc')
  """
  names = [c.strip() for c in str(text).split(",")]
  if len(names) not in (3, 4) or not all(names):
    raise ValueError(f"search.table_columns={text!r} must name ARCH,SIGNAL,COST[,REPORT] "
                     f"columns (e.g. arch_str,val_acc,train_seconds)")
  return names[0], names[1], names[2], names[3] if len(names) == 4 else None


def table_estimator(config, space: SearchSpace) -> TableEstimator:
  """Example: ``table_estimator(load_config("experiments/rea_table_mnist1d.py"), space)``.

  The NB201 table ``search.table`` with the columns ``search.table_columns`` (and
  ``search.objective``'s, when the table has a column of that name: what the table measured
  under its own protocol comes before computing it)."""
  import csv  # noqa: PLC0415

  from jnas.estimation.tabular import load_table  # noqa: PLC0415 (only table runs read CSVs)

  sc = config.search
  arch, signal, cost, report = table_columns(search_option(sc, "table_columns"))
  objective, path = str(search_option(sc, "objective") or ""), str(search_option(sc, "table"))
  with open(path, newline="") as f:
    header = [h.strip() for h in next(csv.reader(f), [])]
  bench = load_table(path, arch_column=arch, signal_column=signal,
                     report_column=report or signal, cost_column=cost, space=space,
                     objective_column=objective if objective in header else None)
  return TableEstimator(bench, space, report_name=report)


def with_objective(config, space: SearchSpace, estimator: Estimator) -> Estimator:
  """``estimator`` whose second objective is the retraining network's ``search.objective``
  (params, flops or latency on this machine); unchanged when that is unset or a column."""
  name = str(search_option(config.search, "objective") or "")
  if name not in OBJECTIVES or getattr(getattr(estimator, "bench", None), "objective",
                                       None) is not None:
    return estimator  # unset, or a column the table estimator reads
  from flax import nnx  # noqa: PLC0415

  from jnas.data import load_dataset  # noqa: PLC0415

  if "input_shape" in config.data:
    shape, classes = tuple(config.data.input_shape), int(config.data.num_classes)
  else:
    ds = load_dataset(config.data.name, seed=config.data.seed)
    shape, classes = tuple(ds.input_shape), int(ds.num_classes)
  cost = objective_fn(
      name, lambda g: build_discrete(config, g, shape, classes, rngs=nnx.Rngs(0), space=space),
      shape, key=lambda g: json.dumps(space.genotype_to_json(g), sort_keys=True))
  return WithObjective(estimator, name, cost, space)


def param_counter(config, space: SearchSpace, ds) -> Callable[[Any], int]:
  """``genotype -> parameters`` of its discrete network at the search's size (no weights made)."""
  from flax import nnx  # noqa: PLC0415

  from jnas.supernet.functional import count_params  # noqa: PLC0415

  sized = copy.deepcopy(config)
  for k in ("channels", *space_kit_of(config).depth):
    if k in config.search:
      sized.retrain[k] = config.search[k]

  def count(genotype: Any) -> int:
    net = nnx.eval_shape(lambda: build_discrete(sized, genotype, ds.input_shape, ds.num_classes,
                                                space=space))
    return count_params(nnx.state(net, nnx.Param))
  return count


def scratch_estimator(config, space: SearchSpace) -> ScratchEstimator:
  """Single paths of the space's supernet trained for ``search.scratch_epochs`` epochs."""
  from jnas.data import load_dataset  # noqa: PLC0415
  from jnas.estimation.scratch import PathScratchScorer  # noqa: PLC0415

  sc = config.search
  ds = load_dataset(config.data.name, seed=config.data.seed)
  scorer = PathScratchScorer(
      ds, space=space, supernet=build_supernet(config, space, ds),
      count_params=param_counter(config, space, ds),
      channels=int(sc.channels), layers=int(sc.get("layers", 3)),
      epochs=int(search_option(sc, "scratch_epochs")), batch_size=int(sc.batch_size),
      learning_rate=float(sc.w_lr), momentum=float(sc.momentum),
      weight_decay=float(sc.weight_decay), grad_clip=float(sc.grad_clip), seed=int(config.seed))
  return ScratchEstimator(scorer, space)


def proxy_filtered(config, space: SearchSpace, estimator: Estimator) -> ProxyFiltered:
  """``estimator`` behind ``search.prefilter``'s proxy: the threshold is the proxy's
  ``1 - search.prefilter_keep`` quantile over ``search.prefilter_pool`` random cells, all
  scored at the search's supernet size with weights from the config's seed."""
  from jnas.data import load_dataset  # noqa: PLC0415
  from jnas.estimation.zero_cost import (DATA_PROXIES, NB201Skeleton, ZeroCost,  # noqa: PLC0415
                                         default_batch)

  sc = config.search
  name, keep, pool = str(sc.prefilter), float(search_option(sc, "prefilter_keep")), int(
      search_option(sc, "prefilter_pool"))
  ds = load_dataset(config.data.name, seed=config.data.seed)
  zc = ZeroCost(NB201Skeleton(tuple(ds.input_shape), int(ds.num_classes),
                              channels=int(sc.channels), cells_per_stage=int(sc.cells_per_stage)),
                space=space, seed=int(config.seed))
  x = y = None
  if name in DATA_PROXIES:
    rng = np.random.default_rng(int(config.seed))
    pick = rng.choice(len(ds.x_train), size=default_batch(name), replace=False)
    x, y = ds.x_train[pick], ds.y_train[pick]
  rng = np.random.default_rng(int(config.seed) + 17)
  t = time.perf_counter()
  reference = zc.score(name, [space.random_genotype(rng) for _ in range(pool)], x, y)
  setup_seconds = time.perf_counter() - t
  threshold = float(np.quantile(reference, 1.0 - keep))
  log.info("prefilter: %s >= %.4g (the top %.0f%% of %d random cells) is measured", name,
           threshold, 100 * keep, pool)
  return ProxyFiltered(estimator, lambda genotypes: zc.score(name, genotypes, x, y), threshold,
                       name, space, setup_seconds=setup_seconds)
