"""SPOS on ImageNet (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
Sampling", ECCV 2020) in FBNet's search space, one of the spaces the paper searches.

Search (needs ImageNet prepared through TFDS, see README):
  jnas search --config experiments/spos_imagenet.py --workdir runs/spos_imagenet
Paper's result in this space (its comparison with FBNet-C at FBNet-C's latency): 75.1 % top-1
at 375M FLOPs. Its main result, 74.7 % top-1 at 328M FLOPs, is in a ShuffleNetV2 block +
channel space that jnas does not have.

Stage 1 trains the supernet of experiments/fbnet_imagenet.py's space (22 blocks, 9 candidates)
with one uniformly drawn path per step: 120 epochs, batch 1024, SGD momentum 0.9, lr 0.5,
weight decay 4e-5 (the paper's settings; jnas decays the lr by a cosine, the paper linearly).
Stage 2 is the paper's evolution: population 50, top 10, 20 generations (1,000 architectures),
half crossovers and half mutations, each scored on held-out training images after batch-norm
recalibration. The paper also searched under a FLOPs/latency limit, which this config leaves
off. Retraining uses experiments/fbnet_imagenet.py's schedule.
"""

import ml_collections

import fbnet_imagenet
from jnas.search.spos import evolution_config


def get_config() -> ml_collections.ConfigDict:
  c = fbnet_imagenet.get_config()
  c.search.strategy = "spos"
  c.search.epochs = 120
  c.search.batch_size = 1024
  c.search.w_lr = 0.5
  c.search.w_lr_min = 0.0
  c.search.weight_decay = 4e-5
  c.search.pool_size = 100_000
  c.evolution = evolution_config(population=50, top_k=10, evals=1000,
                                              val_batches=10)
  c.evolution.merge_val_batches = False  # 10 x 1024 images in one pass is too much memory
  return c
