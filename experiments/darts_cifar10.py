"""DARTS on CIFAR-10 with the paper's settings (Liu et al., ICLR 2019).

Parameter count of the published cell (no training):
  jnas info --config experiments/darts_cifar10.py --genotype DARTS_V2
Expected: 3,349,342 parameters (the paper's "3.3M"; test error 2.76 +- 0.09%
after 600 epochs with cutout, drop path 0.2 and the auxiliary head).

Search (needs CIFAR-10 prepared through TFDS, see README):
  jnas search --config experiments/darts_cifar10.py --workdir runs/darts_cifar10
Search network: C=16, 8 cells, 50 epochs, batch 64; retraining: C=36, 20 cells,
600 epochs, batch 96, lr 0.025, cutout 16, drop path 0.2.
"""

import ml_collections

import darts_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.data.name = "cifar10"
  c.data.input_shape = (32, 32, 3)
  c.data.num_classes = 10
  c.search.epochs = 50
  c.search.batch_size = 64
  c.search.channels = 16
  c.search.layers = 8
  # One step per call (not the MNIST-1D base's whole epoch): an epoch here takes minutes, and a
  # stop request waits for the call in flight.
  c.search.steps_per_call = 1
  c.retrain.epochs = 600
  c.retrain.batch_size = 96
  c.retrain.channels = 36
  c.retrain.layers = 20
  c.retrain.lr = 0.025
  c.retrain.lr_min = 0.0
  c.retrain.nesterov = False
  c.retrain.drop_path = 0.2
  c.retrain.augment.shift = 0
  c.retrain.augment.crop_padding = 4
  c.retrain.augment.flip = True
  c.retrain.augment.cutout = 16
  c.retrain.steps_per_call = 1  # an epoch's batches are not stacked on the device at once
  return c
