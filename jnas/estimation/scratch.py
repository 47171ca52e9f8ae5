"""Train-from-scratch scorer: a discrete DARTS-space network trained for a few epochs.

The oldest performance estimate in NAS (Zoph & Le 2017 trained every child
network): train the architecture briefly and read its validation accuracy.
The validation split is carved out of the **training** set (the test set is
never seen during search); :meth:`ScratchScorer.test_accuracy` reads the test
set only for the architecture a search finally returns.

One architecture at a time: each genotype builds its own
:class:`~jnas.train.network.DiscreteNetwork` and its train step is jitted once
(an epoch is one ``lax.scan`` over batches, so one dispatch per epoch). Training
several architectures at once (``vmap`` over weights, with a ``lax.switch``
per edge) would amortise compilation; that is left as a later optimisation.
Results are cached by genotype, so a strategy that proposes an architecture
twice pays once; training is deterministic given ``seed``.

Example:
  >>> from jnas.spaces.darts import DartsSpace
  >>> scorer = ScratchScorer("mnist1d", epochs=2)  # doctest: +SKIP
  >>> g = DartsSpace(num_nodes=2).random_genotype(np.random.default_rng(0))  # doctest: +SKIP
  >>> scorer(g)  # validation accuracy in [0, 1]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.data import epoch_batches, eval_batches, load_dataset, split_train_val
from jnas.data.augment import random_shift_1d
from jnas.spaces.darts import Genotype
from jnas.supernet.functional import count_params, split_model
from jnas.train.network import DiscreteNetwork

__all__ = ["ScratchScorer"]


class ScratchScorer:
  """Scores a DARTS genotype by training it from scratch for ``epochs`` epochs.

  Args:
    dataset: a dataset name (``mnist1d``, ``digits``) or a
      :class:`~jnas.data.Dataset`.
    channels, layers: the network (DARTS's ``C`` and number of cells).
    epochs, batch_size, learning_rate, momentum, weight_decay: SGD with
      Nesterov momentum and a cosine schedule (as ``jnas train``).
    val_fraction: share of the training set held out for validation.
    shift: random shift augmentation for 1-D data (0 = none).
    seed: weight init, data order and the train/val split.
    latency_batch: batch size at which :meth:`evaluate` times inference.

  Example:
    >>> scorer = ScratchScorer("digits", epochs=1, channels=4, layers=3)  # doctest: +SKIP
    >>> scorer.evaluate(g)["val_accuracy"]  # doctest: +SKIP
  """

  def __init__(self, dataset: Any = "mnist1d", *, channels: int = 8, layers: int = 3,
               epochs: int = 4, batch_size: int = 128, learning_rate: float = 0.05,
               momentum: float = 0.9, weight_decay: float = 3e-4, grad_clip: float = 5.0,
               val_fraction: float = 0.2, shift: int = 3, seed: int = 0,
               latency_batch: int = 1):
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {epochs}")
    self.ds = ds
    (self.x_tr, self.y_tr), (self.x_val, self.y_val) = split_train_val(
        ds.x_train, ds.y_train, fraction=1.0 - val_fraction, seed=seed)
    self.steps_per_epoch = len(self.x_tr) // batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"batch_size={batch_size} is larger than the training split "
                       f"({len(self.x_tr)} examples)")
    self.channels, self.layers, self.epochs = channels, layers, epochs
    self.batch_size, self.seed, self.shift = batch_size, seed, shift
    self.latency_batch = latency_batch
    total = epochs * self.steps_per_epoch
    self.tx = optax.chain(optax.clip_by_global_norm(grad_clip),
                          optax.add_decayed_weights(weight_decay),
                          optax.sgd(optax.cosine_decay_schedule(learning_rate, total),
                                    momentum=momentum, nesterov=True))
    self.ndim = len(ds.input_shape) - 1
    self._cache: dict[str, dict[str, Any]] = {}
    self._weights: dict[str, tuple[Any, Any, Any]] = {}
    self.trained = 0

  @staticmethod
  def _key(genotype: Genotype) -> str:
    return json.dumps([genotype.normal, genotype.normal_concat, genotype.reduce,
                       genotype.reduce_concat])

  def __call__(self, genotype: Genotype) -> float:
    """Validation accuracy after training ``genotype`` from scratch."""
    return self.evaluate(genotype)["val_accuracy"]

  def evaluate(self, genotype: Genotype) -> dict[str, Any]:
    """``val_accuracy``, ``num_params``, ``latency_ms`` (median inference time at
    ``latency_batch`` on this backend) and ``train_seconds``; cached by genotype.
    """
    k = self._key(genotype)
    if k not in self._cache:
      self._cache[k] = self._train(genotype, k)
    return dict(self._cache[k])

  def test_accuracy(self, genotype: Genotype) -> float:
    """Test accuracy of the weights :meth:`evaluate` trained (trains first if needed)."""
    k = self._key(genotype)
    if k not in self._weights:
      self.evaluate(genotype)
    graphdef, params, state = self._weights[k]
    return _accuracy(graphdef, params, state, self.ds.x_test, self.ds.y_test)

  def _train(self, genotype: Genotype, k: str) -> dict[str, Any]:
    t0 = time.time()
    net = DiscreteNetwork(genotype, self.ds.input_shape[-1], self.ds.num_classes, ndim=self.ndim,
                          channels=self.channels, layers=self.layers,
                          rngs=nnx.Rngs(self.seed))
    split = split_model(net)
    graphdef, tx, shift, num_classes = split.graphdef, self.tx, self.shift, self.ds.num_classes
    ndim = self.ndim

    def loss_fn(params, state, x, y):
      model = nnx.merge(graphdef, *jax.tree.map(lambda a: a, (params, state)))
      logits = model(x, train=True)
      loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
      return loss, nnx.state(model, nnx.BatchStat)

    @jax.jit
    def epoch(params, state, opt_state, xs, ys, key):
      def step(carry, batch):
        params, state, opt_state = carry
        x, y, i = batch
        if ndim == 1 and shift > 0:
          x = random_shift_1d(jax.random.fold_in(key, i), x, shift)
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), loss
      (params, state, opt_state), losses = jax.lax.scan(
          step, (params, state, opt_state), (xs, ys, jnp.arange(xs.shape[0])))
      return params, state, opt_state, jnp.mean(losses)

    params, state, opt_state = split.params, split.state, tx.init(split.params)
    key = jax.random.key(self.seed + 1)
    for e in range(self.epochs):
      xb, yb = epoch_batches(self.x_tr, self.y_tr, self.batch_size, seed=self.seed, epoch=e)
      params, state, opt_state, loss = epoch(params, state, opt_state, xb, yb,
                                             jax.random.fold_in(key, e))
    loss = float(loss)
    if not np.isfinite(loss):
      raise FloatingPointError(f"training diverged (loss {loss}) for {k}")
    train_s = time.time() - t0
    val_acc = _accuracy(graphdef, params, state, self.x_val, self.y_val)
    self._weights[k] = (graphdef, params, state)
    self.trained += 1
    return {"val_accuracy": val_acc, "num_params": count_params(params),
            "latency_ms": _latency_ms(graphdef, params, state, self.x_val[:self.latency_batch]),
            "train_seconds": round(train_s, 2), "final_loss": loss}


def _accuracy(graphdef, params, state, x, y, batch_size: int = 500) -> float:
  xb, yb, mask = eval_batches(x, y, batch_size)

  @jax.jit
  def correct(xs, ys, ms):
    logits = nnx.merge(graphdef, params, state)(xs, train=False)
    return jnp.sum((jnp.argmax(logits, -1) == ys) * ms)

  return float(sum(float(correct(xb[i], yb[i], mask[i])) for i in range(len(xb)))
               / mask.sum())


def _latency_ms(graphdef, params, state, x, repeats: int = 20) -> float:
  """Median wall time of one compiled inference call on this backend, in ms."""
  fwd = jax.jit(lambda xs: nnx.merge(graphdef, params, state)(xs, train=False))
  x = jnp.asarray(x)
  fwd(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fwd(x).block_until_ready()
    times.append(time.perf_counter() - t)
  return float(np.median(times) * 1e3)
