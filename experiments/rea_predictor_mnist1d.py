"""REA filtered by a learned predictor over the NAS-Bench-201 MNIST-1D table.

  jnas search --config experiments/rea_predictor_mnist1d.py --workdir runs/rea_predictor

``experiments/rea_table_mnist1d.py`` (REA, population 10, tournament 3, a 120 s budget of the
table's training seconds) with ``search.estimator = "predictor"``: the first 20 candidates are
looked up (and charged); from then on an ensemble of five MLPs over the cell's integer form,
fitted on what was looked up so far, predicts each candidate, and only those whose mean plus
one spread reach the best so far are looked up. The others cost nothing and REA is told the
prediction (see :class:`jnas.estimation.candidates.PredictorEstimator`). The cell found is the
best one looked up.

What it should reach: measured with ``python benchmarks/proxy_prefilter.py --budgets 60,240
--seeds 5`` (``benchmarks/results/proxy_prefilter/v1/prefilter.md``); seed 0 here looks up
178 of 5,521 candidates and finds a cell of table test accuracy 0.870 (REA alone: 0.862).
"""

import ml_collections

import rea_table_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = rea_table_mnist1d.get_config()
  c.search.estimator = "predictor"
  c.search.predictor_base = "table"  # what the predictor learns from, and what measures
  c.search.predictor_warmup = 20
  c.search.predictor_kappa = 1.0
  return c
