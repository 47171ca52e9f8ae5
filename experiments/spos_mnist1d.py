"""SPOS (Guo et al., 2019) on MNIST-1D in the DARTS cell space, sized for a 2-core CPU.

  jnas search --config experiments/spos_mnist1d.py --workdir runs/spos_mnist1d

Two stages, as in the paper: the search network of experiments/darts_mnist1d.py (C=8, 3 cells)
is trained with one uniformly sampled path per step (only that path runs) on half of the
training set; then SPOS's top-k evolution (population 50, top 10, half crossovers, half
mutations) scores 200 architectures by their shared-weight validation accuracy on the other
half, each after recalibrating batch norm on 2 training batches. The best one is retrained
from scratch like the DARTS result (C=16, 5 cells, 60 epochs) and tested on the 1,000 test
sequences.

Measured (2-core CPU, jax 0.10.2, seed 0, the test suite running beside it): 98.7 % test
accuracy after retraining, 107,210 parameters; 165 s of search (79 s of supernet training, 86 s
of evolution: best shared-weight validation accuracy 0.523 against 0.408 for the first, random
generation's mean), 14 min 11 s in all, 2.5 GB peak memory. (DARTS on the same space: 98.6 %.)
"""

import ml_collections

import darts_mnist1d
from jnas.search.spos import evolution_config


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.search.strategy = "spos"
  c.search.pool_size = 4096  # uniform paths are drawn from this many sampled encodings
  c.search.w_lr = 0.05
  c.evolution = evolution_config()  # population 50, top 10, 200 architectures
  return c
