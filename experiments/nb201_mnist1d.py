"""SPOS in the NAS-Bench-201 cell space on MNIST-1D, sized for a 2-core CPU.

  jnas search --config experiments/nb201_mnist1d.py --workdir runs/nb201_mnist1d

The benchmark's skeleton (stem, three stages of N cells at widths C, 2C, 4C, residual reduction
blocks, 6 edges x 5 ops per cell) in 1-D. The search network (C=16, N=2) is trained for 30 epochs
with one uniformly drawn path per step on half of the training set; SPOS's evolution scores 200
cells on the other half with the shared weights; the best cell (printed in the benchmark's
string format) is retrained from scratch in the benchmark's own size (C=16, N=5) for 60 epochs.
``--config.search.strategy=gdas`` (or ``darts``, ``snas``) searches the same space by gradient.

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
  c.search.strategy = "spos"
  c.search.epochs = 30
  c.search.channels = 16
  c.search.cells_per_stage = 2
  del c.search["layers"]
  c.search.pool_size = 4096  # paths SPOS draws from (15,625 cells exist)
  c.search.w_lr = 0.05
  c.evolution = evolution_config()
  c.retrain.channels = 16
  c.retrain.cells_per_stage = 5
  del c.retrain["layers"]
  c.retrain.drop_path = 0.0
  return c
