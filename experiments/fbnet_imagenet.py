"""FBNet on ImageNet with the paper's search space and settings (Wu et al., CVPR 2019).

Size and multiply-adds of published architectures in this space (no training):
  jnas info --config experiments/fbnet_imagenet.py --genotype mobilenet_v2 --json
Expected: num_params 3504872 and madds 300774272 (MobileNetV2 1.0: the paper's
3.4M and 300M; torchvision counts 3,504,872). --genotype fbnet_a / fbnet_b /
fbnet_c give 4.30M/4.80M/5.57M parameters and 244M/291M/378M multiply-adds
(the FBNet paper reports 4.3M/4.5M/5.5M and 249M/295M/375M).

Search (needs ImageNet prepared through TFDS and the fbnet strategy):
  python benchmarks/latency_table.py --config experiments/fbnet_imagenet.py --batch 1 \
      --out runs/fbnet_imagenet/latency_b1.json
  jnas search --config experiments/fbnet_imagenet.py --workdir runs/fbnet_imagenet \
      --config.latency.table=runs/fbnet_imagenet/latency_b1.json
The space is FBNet's Table 1: a 3x3 stride-2 stem to 16 channels, 22 searchable
blocks in 7 stages (16, 24, 32, 64, 112, 184, 352 channels), a 1x1 head to 1984,
224x224 input, 1000 classes; 9 candidates per block (Table 2). Loss
CE * 0.2 * log(LAT)^0.6; Gumbel temperature 5.0, x0.956 per epoch; 90 epochs.
"""

import ml_collections

import fbnet_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = fbnet_mnist1d.get_config()
  c.data.name = "imagenet"
  c.data.input_shape = (224, 224, 3)
  c.data.num_classes = 1000
  c.space.macro = "fbnet"
  c.space.stem_channels = 16
  c.space.stem_kernel = 3
  c.space.stem_stride = 2
  c.space.stages = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2),
                    (352, 1, 1))
  c.space.head_channels = 1984
  c.space.activation = "relu"
  c.search.epochs = 90
  c.search.batch_size = 192
  c.search.warmup_epochs = 10  # assumed, not checked against the paper
  c.search.w_lr = 0.1
  c.search.weight_decay = 1e-4
  c.search.a_lr = 0.01
  c.search.a_weight_decay = 5e-4
  c.fbnet.alpha = 0.2
  c.fbnet.beta = 0.6
  c.fbnet.temperature = 5.0
  c.fbnet.temperature_decay = 0.956
  c.latency.cpu_threads = 0  # XLA's default threading for 224x224 ops
  c.latency.clock = "wall"
  # Retraining: a MobileNetV2-style schedule, not checked against the FBNet paper.
  c.retrain.epochs = 360
  c.retrain.batch_size = 256
  c.retrain.lr = 0.1
  c.retrain.weight_decay = 4e-5
  c.retrain.augment.shift = 0
  c.retrain.augment.crop_padding = 0
  c.retrain.augment.flip = True
  return c
