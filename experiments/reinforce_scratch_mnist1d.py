"""REINFORCE in the DARTS cell space on MNIST-1D, each candidate trained from scratch.

  jnas search --config experiments/reinforce_scratch_mnist1d.py --workdir runs/reinforce_scratch

The oldest NAS recipe (Zoph & Le 2017) at a size a 2-core CPU runs: a policy
(Zoph & Le's LSTM controller, Adam 0.05, 2 samples per update) proposes DARTS
cells of 2 nodes over 4 ops; each is trained from scratch for ``search.scratch_epochs``
= 2 epochs as its path through the search network (C=8, 3 cells, one compilation for the
whole search) on 80 % of the training set and scored by its accuracy on the other 20 %; 30
candidates in all. ``--config.retrain.enabled=true`` retrains the best cell at the
``retrain`` size afterwards; ``--config.search.strategy=rea`` (or ``random``, ``topk``,
``nsga2``, ``pnas``) swaps the strategy over the same estimator.
"""

import ml_collections

import darts_mnist1d


def get_config() -> ml_collections.ConfigDict:
  c = darts_mnist1d.get_config()
  c.space.num_nodes = 2
  c.space.primitives = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")
  c.search.strategy = "reinforce"
  c.search.estimator = "scratch"
  c.search.scratch_epochs = 2
  c.search.evals = 30
  # The LSTM controller of Zoph & Le: the per-edge logits policy cannot keep a DARTS node's
  # two inputs distinct.
  c.search.strategy_settings = "controller=lstm"
  c.search.batch_size = 128
  c.search.w_lr = 0.05
  c.search.checkpoint_every_s = 30.0
  c.retrain.enabled = False
  return c
