"""FBNet (latency-aware Gumbel-softmax search) on MNIST-1D, sized for a 2-core CPU.

Latency table for this machine, then its check against measured networks:
  python benchmarks/latency_table.py --config experiments/fbnet_mnist1d.py --batch 1 \
      --out runs/fbnet_mnist1d/latency_b1.json --validate 20
Measured on the shared 2-core CPU (load average ~13): the table (6 blocks x 9
candidates, stem, head) built in 55 s; over 20 random architectures predicted
vs measured end-to-end latency gave Spearman 0.80, Pearson 0.84, Kendall tau
0.63, mean absolute percentage error 9% (one run; runs under other loads gave
Spearman 0.69-0.85).

Search (measures a latency table on this machine first unless latency.table names one):
  jnas search --config experiments/fbnet_mnist1d.py --workdir runs/fbnet_mnist1d \
      --config.latency.table=runs/fbnet_mnist1d/latency_b1.json

The space: a 1-D stem (32 channels, stride 1) and 6 searchable FBNet blocks
over 40 -> 20 -> 10 -> 5 positions (32, 64, 64, 96, 96, 128 channels), each
picking one of FBNet's 9 candidates; a 1x1 head to 128 channels, global
pooling, 10 classes.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist1d"
  c.data.seed = 42  # mnist1d's own default: the standard 4,000/1,000 split
  c.data.input_shape = (40, 1)
  c.data.num_classes = 10

  c.space = ml_collections.ConfigDict()
  c.space.name = "fbnet"
  c.space.macro = ""  # "", or a preset (fbnet, fbnet_a, mobilenet_v2) the fields below override
  c.space.stem_channels = 32
  c.space.stem_kernel = 3
  c.space.stem_stride = 1
  c.space.stages = ((32, 1, 1), (64, 2, 2), (96, 2, 2), (128, 1, 2))  # (channels, depth, stride)
  c.space.head_channels = 128
  c.space.activation = "relu"

  c.model = ml_collections.ConfigDict()
  c.model.depthwise_impl = "auto"  # native C++ kernels on CPU (taps without a compiler), XLA grouped conv on GPU/TPU
  # XLA:CPU's YNNPACK library fusions: "auto" turns them off for the DARTS space on 1-D inputs,
  # where they slow jnas's small kernels (jnas/utils/xla.py has the measurements).
  c.model.cpu_library_fusions = "auto"

  c.search = ml_collections.ConfigDict()
  c.search.strategy = "fbnet"
  c.search.epochs = 10
  c.search.batch_size = 64
  c.search.warmup_epochs = 2  # weights only, before the architecture starts to move
  # Weight optimizer (SGD with momentum, cosine decay).
  c.search.w_lr = 0.1
  c.search.w_lr_min = 0.0
  c.search.momentum = 0.9
  c.search.weight_decay = 1e-4
  c.search.grad_clip = 5.0
  # Architecture optimizer (Adam).
  c.search.a_lr = 0.01
  c.search.a_weight_decay = 5e-4

  # FBNet's loss: CE * alpha * log(LAT)^beta, Gumbel temperature annealed per epoch.
  c.fbnet = ml_collections.ConfigDict()
  c.fbnet.alpha = 0.2
  c.fbnet.beta = 0.6
  c.fbnet.temperature = 5.0
  c.fbnet.temperature_decay = 0.956
  c.fbnet.target_ms = 0.0  # > 0: the latency the derived architecture must meet

  c.latency = ml_collections.ConfigDict()
  c.latency.table = ""  # JSON from benchmarks/latency_table.py
  c.latency.batch_size = 1
  c.latency.dtype = "float32"
  c.latency.repeats = 20
  c.latency.statistic = "median"  # over all timed calls; "min" is the other choice
  # How to measure on a shared CPU: one XLA:CPU thread per op (these ops are
  # far too small to gain from threads) and the process's CPU time, which does
  # not count the time other processes hold the cores. On an accelerator, or
  # for wall-clock latency, use clock = "wall" and cpu_threads = 0.
  c.latency.clock = "cpu"
  c.latency.cpu_threads = 1

  c.retrain = ml_collections.ConfigDict()
  c.retrain.enabled = True
  c.retrain.epochs = 40
  c.retrain.batch_size = 128
  c.retrain.lr = 0.05
  c.retrain.lr_min = 0.0
  c.retrain.momentum = 0.9
  c.retrain.nesterov = True
  c.retrain.weight_decay = 1e-4
  c.retrain.grad_clip = 5.0
  c.retrain.label_smoothing = 0.0
  c.retrain.augment = ml_collections.ConfigDict()
  c.retrain.augment.shift = 3
  c.retrain.augment.crop_padding = 0
  c.retrain.augment.flip = False
  c.retrain.augment.cutout = 0
  return c
