"""GDAS (Dong & Yang, CVPR 2019) on MNIST-1D, sized for a 2-core CPU: the DARTS MNIST-1D config
with hard Gumbel-softmax samples, one op per edge per step, temperature 10 -> 0.1.

  jnas search --config experiments/gdas_mnist1d.py --workdir runs/gdas_mnist1d

Search network and retraining are those of experiments/darts_mnist1d.py (C=8, 3 cells,
10 search epochs; C=16, 5 cells, 60 retraining epochs).

Measured (2-core CPU, jax 0.10.2, seed 0, with two other jobs on the machine): 98.7 % test
accuracy after retraining, 148,906 parameters, 292 s of search, 17 min 44 s in all, 2.8 GB
peak memory. (DARTS first order on the same config: 98.6 %, see the README.)
"""

import ml_collections

import darts_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.search.strategy = "gdas"
  c.search.tau_max = 10.0
  c.search.tau_min = 0.1
  return c
