"""GDAS on CIFAR-10 (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours",
CVPR 2019): hard Gumbel-softmax samples in the DARTS cell space, only the sampled op of each
edge runs, temperature annealed linearly from 10 to 0.1.

Search (needs CIFAR-10 prepared through TFDS, see README):
  jnas search --config experiments/gdas_cifar10.py --workdir runs/gdas_cifar10
Paper's result: 2.82 % test error with 2.5M parameters, one search in four GPU hours (the
abstract's figures, for GDAS with its hand-designed reduction cell; jnas searches both cells,
the paper's plain-GDAS variant).

Settings: the DARTS CIFAR-10 search and retraining protocol of experiments/darts_cifar10.py
(C=16, 8 cells, SGD 0.025 -> 0.001 cosine, weight decay 3e-4; Adam 3e-4 for the architecture;
retraining C=36, 20 cells, 600 epochs, cutout, drop path), with GDAS's sampler. The epoch
count and batch size below follow the GDAS paper as we read it (240 epochs, batch 128);
check them against the paper before quoting a comparison.
"""

import ml_collections

import darts_cifar10


def get_config() -> ml_collections.ConfigDict:
  c = darts_cifar10.get_config()
  c.search.strategy = "gdas"
  c.search.tau_max = 10.0
  c.search.tau_min = 0.1
  c.search.epochs = 240
  c.search.batch_size = 128
  return c
