"""REA on a trained weight-sharing supernet (the NAS-Bench-201 cell, MNIST-1D): one estimator for every sample-based strategy.

  jnas search --config experiments/rea_supernet_mnist1d.py --workdir runs/rea_supernet

``search.estimator = "supernet"``: the single-path supernet is trained as SPOS trains it
(``experiments/nb201_mnist1d.py``: C=16, N=2, 30 epochs, one uniformly drawn path per step on
half of the training set), then regularized evolution (NAS-Bench-201's settings: population 10,
tournament 3) scores ``search.evals`` cells with the shared weights on the other half, and
the best cell is retrained from scratch. ``--config.search.strategy=`` switches to ``random``,
``topk``, ``reinforce`` or ``pnas`` on the same trained supernet (``nsga2`` and ``dpp_net``
need a cost per candidate and are refused). A killed run resumes: the supernet's training
from its checkpoint, the strategy from the start (it is a pure function of the trained
weights and the seed).

What it should reach: the supernet's training is SPOS's, so its figures are
``experiments/nb201_mnist1d.py``'s (a shared-weight validation accuracy near 0.5 for the best
of 200 cells; a retrained cell near 98.5 %). Whether REA ranks better than SPOS's top-k
evolution on these weights is measured by ``jnas compare --strategies spos,rea:supernet``;
the shared-weight ranking itself (Kendall tau against the table) by ``jnas bench``.
"""

import ml_collections

import nb201_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = nb201_mnist1d.get_config()
  c.search.strategy = "rea"
  c.search.estimator = "supernet"
  c.search.evals = 200
  c.search.strategy_settings = "population_size=10,sample_size=3"
  return c
