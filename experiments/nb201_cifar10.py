"""Search in the NAS-Bench-201 space on CIFAR-10 (Dong & Yang, ICLR 2020), two ways.

1. Weight sharing on real data: GDAS in the benchmark's skeleton (C=16, N=5), then the found
   cell retrained with the benchmark's protocol (needs CIFAR-10 prepared through TFDS, see
   README):
     jnas search --config experiments/nb201_cifar10.py --workdir runs/nb201_cifar10
   The derived cell is printed in the benchmark's string format, so its published accuracy
   can be looked up. Paper's result for GDAS in this space: 93.61 +- 0.09 % CIFAR-10 test
   accuracy (the best cell scores 94.37 %). Search settings as we read the paper (50 epochs,
   batch 64, SGD 0.025 -> 0.001 cosine, weight decay 5e-4; Adam 3e-4 for alpha); retraining:
   200 epochs, batch 256, SGD Nesterov 0.1 cosine, weight decay 5e-4, crop + flip.
     jnas info --config experiments/nb201_cifar10.py --genotype \
       '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
   gives 1,531,546 parameters (the benchmark's largest cell: 1.53M).
2. The benchmark's own protocol on its table (every query costs its simulated training time,
   12,000 s per run, 500 runs), with the CSV exported from the benchmark's API:
     jnas tabular --table nb201_cifar10.csv --arch-column arch_str --signal-column valid_acc \
       --report-column test_acc --cost-column train_time --strategy rea --budget 12000 \
       --runs 500 --seed 0 --out runs/nb201_rea.json
   Paper's results: random 93.70 +- 0.36, REINFORCE 93.85 +- 0.37, REA 93.92 +- 0.30.
"""

import ml_collections

import nb201_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = nb201_mnist1d.get_config()
  c.search.strategy = "gdas"
  c.search.w_lr = 0.025
  c.data.name = "cifar10"
  c.data.input_shape = (32, 32, 3)
  c.data.num_classes = 10
  c.search.epochs = 50
  c.search.batch_size = 64
  c.search.channels = 16
  c.search.cells_per_stage = 5
  c.search.weight_decay = 5e-4
  # One step per call (not the MNIST-1D base's whole epoch): a stop waits for the call in flight.
  c.search.steps_per_call = 1
  c.retrain.epochs = 200
  c.retrain.batch_size = 256
  c.retrain.channels = 16
  c.retrain.cells_per_stage = 5
  c.retrain.lr = 0.1
  c.retrain.lr_min = 0.0
  c.retrain.nesterov = True
  c.retrain.weight_decay = 5e-4
  c.retrain.augment.shift = 0
  c.retrain.augment.crop_padding = 4
  c.retrain.augment.flip = True
  c.retrain.augment.cutout = 0
  c.retrain.steps_per_call = 1  # an epoch's batches are not stacked on the device at once
  return c
