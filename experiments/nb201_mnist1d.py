"""GDAS in the NAS-Bench-201 cell space on MNIST-1D, sized for a 2-core CPU.

  jnas search --config experiments/nb201_mnist1d.py --workdir runs/nb201_mnist1d

The benchmark's skeleton (stem, three stages of N cells at widths C, 2C, 4C, residual reduction
blocks, 6 edges x 5 ops per cell) in 1-D: the search network has C=8, N=1; GDAS samples one op
per edge (hard Gumbel-softmax, temperature 10 -> 0.1) for 10 epochs on half of the training
set, the other half trains alpha. The derived cell (printed in the benchmark's string format)
is retrained from scratch in the benchmark's own size (C=16, N=5) for 60 epochs.
``--config.search.strategy=darts`` or ``=spos`` (with the ``evolution`` section) search the same
space.

Measured: see MEASURED below (2-core CPU, jax 0.10.2, seed 0).
"""

import ml_collections

import darts_mnist1d
from jnas.spos_search import evolution_config

MEASURED = "not measured yet"


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.space = ml_collections.ConfigDict()
  c.space.name = "nb201"
  c.space.num_nodes = 4
  c.search.strategy = "gdas"
  c.search.channels = 8
  c.search.cells_per_stage = 1
  del c.search["layers"]
  c.search.pool_size = 4096  # search.strategy=spos only
  c.evolution = evolution_config()
  c.retrain.channels = 16
  c.retrain.cells_per_stage = 5
  del c.retrain["layers"]
  c.retrain.drop_path = 0.0
  return c
