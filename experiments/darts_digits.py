"""DARTS (first order) on scikit-learn's 8x8 digits: a 2-D image search on CPU.

Run:
  jnas search --config experiments/darts_digits.py --workdir runs/darts_digits
"""

import ml_collections

import darts_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.data.name = "digits"
  c.data.seed = 0
  c.retrain.augment.shift = 0
  c.retrain.augment.crop_padding = 1
  return c
