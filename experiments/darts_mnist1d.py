"""DARTS (first order) on MNIST-1D, sized for a 2-core CPU: the README's main job.

Run:
  jnas search --config experiments/darts_mnist1d.py --workdir runs/darts_mnist1d

Searches a small DARTS supernet on half of the 4,000 training sequences (the
other half trains alpha), derives the cell with the DARTS rule, retrains it
from scratch on all 4,000 and reports accuracy on the 1,000 test sequences.
Expected: see the note in README.md (measured on this machine).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist1d"
  c.data.seed = 42  # mnist1d's own default: the standard 4,000/1,000 split

  c.space = ml_collections.ConfigDict()
  c.space.name = "darts"
  c.space.num_nodes = 4

  c.model = ml_collections.ConfigDict()
  c.model.depthwise_impl = "auto"  # native C++ kernels on CPU (taps without a compiler), XLA grouped conv on GPU/TPU
  # XLA:CPU's YNNPACK library fusions: "auto" turns them off for the DARTS space on 1-D inputs,
  # where they slow jnas's small kernels (jnas/utils/xla.py has the measurements).
  c.model.cpu_library_fusions = "auto"

  c.search = ml_collections.ConfigDict()
  c.search.strategy = "darts"  # or "gdas", "snas" (jnas/strategies/registry.py)
  c.search.order = 1
  c.search.epochs = 10
  c.search.batch_size = 64
  c.search.channels = 8
  c.search.layers = 3
  # 0: one device; n: split every batch over n devices (jax.jit + NamedSharding); -1: all devices.
  c.search.data_parallel = 0
  # A whole epoch per compiled call (one lax.scan): the same search up to float rounding, its
  # epochs 1.4-2.8x faster here; a stop request waits for the epoch in flight (about a second).
  # 1: one step per call.
  c.search.steps_per_call = 0
  # Weight optimizer (DARTS paper values).
  c.search.w_lr = 0.025
  c.search.w_lr_min = 0.001
  c.search.momentum = 0.9
  c.search.weight_decay = 3e-4
  c.search.grad_clip = 5.0
  # Architecture optimizer (DARTS paper values).
  c.search.a_lr = 3e-4
  c.search.a_b1 = 0.5
  c.search.a_b2 = 0.999
  c.search.a_weight_decay = 1e-3
  # GDAS (search.strategy='gdas'): temperature linear from tau_max to tau_min.
  c.search.tau_max = 10.0
  c.search.tau_min = 0.1
  # SNAS (search.strategy='snas'): temperature tau0 * tau_decay ** epoch.
  c.search.tau0 = 1.0
  c.search.tau_decay = 0.97

  c.retrain = ml_collections.ConfigDict()
  c.retrain.enabled = True
  c.retrain.epochs = 60
  c.retrain.batch_size = 128
  c.retrain.channels = 16
  c.retrain.layers = 5
  c.retrain.lr = 0.05
  c.retrain.lr_min = 0.0
  c.retrain.momentum = 0.9
  c.retrain.nesterov = True
  c.retrain.weight_decay = 3e-4
  c.retrain.grad_clip = 5.0
  c.retrain.drop_path = 0.0
  c.retrain.label_smoothing = 0.0
  # An epoch per compiled call here too: 1.7x less CPU per epoch than one step per call. Float
  # rounding differs (the first steps amplify it: 98.6 against 98.1 % test accuracy after 6
  # epochs of DARTS_V2); a stop takes effect at the epoch's end, as with 1.
  c.retrain.steps_per_call = 0
  c.retrain.augment = ml_collections.ConfigDict()
  c.retrain.augment.shift = 3
  c.retrain.augment.crop_padding = 0
  c.retrain.augment.flip = False
  c.retrain.augment.cutout = 0
  return c
