"""``jnas train`` and ``jnas info``: the discrete network of a genotype, retrained or sized.

:class:`RetrainPlan` is the retraining as a plan of the one loop
(:func:`jnas.search.loop.train` runs it, and every search does when
``config.retrain.enabled``); :mod:`jnas.run` re-exports :func:`info`,
:func:`build_discrete` and the loop's ``train``.

Example:
  >>> from jnas.search.retrain import info
  >>> info(load_config("experiments/darts_mnist1d.py"), "DARTS_V2")["num_params"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jnas.data import epoch_batches, eval_batches, load_dataset
from jnas.data.augment import cutout, random_crop_2d, random_flip_2d, random_shift_1d
from jnas.search.common import (build_space, config_compiler_options, data_ndim,
                                resolve_architecture, space_kit_of)
from jnas.search.plan import Plan, UnitEnd
from jnas.search.workdir import RETRAIN_CKPT_DIR, steps_per_call
from jnas.spaces.base import SearchSpace
from jnas.supernet.functional import count_params, split_model

log = logging.getLogger(__name__)


def _augment_fn(config, ndim: int):
  """The retraining augmentation a config asks for, as ``fn(key, x) -> x``."""
  a = config.retrain.augment

  def fn(key, x):
    k1, k2, k3 = jax.random.split(key, 3)
    if ndim == 1 and a.shift > 0:
      x = random_shift_1d(k1, x, a.shift)
    if ndim == 2:
      if a.crop_padding > 0:
        x = random_crop_2d(k1, x, a.crop_padding)
      if a.flip:
        x = random_flip_2d(k2, x)
      if a.cutout > 0:
        x = cutout(k3, x, a.cutout)
    return x

  return fn


def _evaluate(apply_fn, params, state, encoding, x, y, batch_size: int) -> float:
  """Accuracy over every example (padded last batch masked out)."""
  xb, yb, mask = eval_batches(x, y, batch_size)

  @jax.jit
  def correct(p, s, enc, xs, ys, ms):
    logits, _ = apply_fn(p, s, enc, xs, False)
    return jnp.sum((jnp.argmax(logits, -1) == ys) * ms)

  total = sum(float(correct(params, state, encoding, xb[i], yb[i], mask[i]))
              for i in range(len(xb)))
  return total / float(mask.sum())


def build_discrete(config, genotype, input_shape, num_classes: int,
                   rngs: nnx.Rngs | None = None, space: SearchSpace | None = None) -> nnx.Module:
  """The retraining network a config describes for ``genotype``, built by its space's kit.

  Example:
    >>> net = build_discrete(cfg, space.genotype_by_name("DARTS_V2"), (40, 1), 10)  # doctest: +SKIP
  """
  space = build_space(config) if space is None else space
  return space_kit_of(config).builder("network")(
      config, space, genotype, tuple(input_shape), int(num_classes),
      rngs or nnx.Rngs(config.seed))


class RetrainPlan(Plan):
  """Retraining the discrete network of a genotype from scratch, as the loop's plan.

  A unit is an epoch of SGD with momentum (cosine decay, optional Nesterov,
  label smoothing, the config's augmentation); a checkpoint is saved after
  every epoch. :meth:`finish` measures the test accuracy. ``jnas train`` and
  every search with ``retrain.enabled`` run it
  (:func:`jnas.search.loop.train`).

  Example:
    >>> plan = RetrainPlan(cfg, space, space.genotype_by_name("DARTS_V2"))  # doctest: +SKIP
  """

  phase = "retrain"
  what = "retraining"
  ckpt_dir = RETRAIN_CKPT_DIR
  id_key = "retrain_id"
  stop_within_unit = False  # an epoch is short; its end is the checkpoint
  unit_bar = "epoch"

  def __init__(self, config, space: SearchSpace, genotype: Any) -> None:
    rc = self.rc = config.retrain
    self.config = config
    ds = self.ds = load_dataset(config.data.name, seed=config.data.seed)
    net = build_discrete(config, genotype, ds.input_shape, ds.num_classes, space=space)
    split = self.split = split_model(net)
    graphdef = split.graphdef
    self.num_params = count_params(split.params)
    self.steps_per_epoch = len(ds.x_train) // rc.batch_size
    total = rc.epochs * self.steps_per_epoch
    schedule = optax.cosine_decay_schedule(rc.lr, max(total, 1), alpha=rc.lr_min / rc.lr)
    tx = self.tx = optax.chain(optax.clip_by_global_norm(rc.grad_clip),
                               optax.add_decayed_weights(rc.weight_decay),
                               optax.sgd(schedule, momentum=rc.momentum, nesterov=rc.nesterov))
    augment = _augment_fn(config, data_ndim(ds))

    def apply_fn(params, state, encoding, x, train_mode, key=None):
      del encoding
      params, state = jax.tree.map(lambda a: a, (params, state))
      model = nnx.merge(graphdef, params, state)
      logits = model(x, train=train_mode, key=key)
      return logits, nnx.state(model, nnx.BatchStat)

    self.apply_fn = apply_fn

    def train_step(carry, x, y, key):
      params, state, opt_state = carry["params"], carry["state"], carry["opt_state"]
      ka, kd = jax.random.split(key)
      x = augment(ka, x)

      def loss_fn(p):
        logits, new_state = apply_fn(p, state, None, x, True, kd)
        labels = optax.smooth_labels(jax.nn.one_hot(y, ds.num_classes), rc.label_smoothing)
        return jnp.mean(optax.softmax_cross_entropy(logits, labels)), (new_state, logits)

      (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      carry = {"params": optax.apply_updates(params, updates), "state": new_state,
               "opt_state": opt_state, "key": carry["key"]}
      return carry, {"train_loss": loss, "train_acc": jnp.mean(jnp.argmax(logits, -1) == y)}

    xla_options = config_compiler_options(config, data_ndim(ds))
    self.step = jax.jit(train_step, compiler_options=xla_options)
    self.use_scan(steps_per_call(rc, "retrain"), train_step, compiler_options=xla_options)
    log.info("retrain: %d parameters, %d epochs of %d steps", self.num_params, rc.epochs,
             self.steps_per_epoch)

  def init(self) -> Any:
    return {"params": self.split.params, "state": self.split.state,
            "opt_state": self.tx.init(self.split.params),
            "key": jax.random.key(self.config.seed + 1000)}

  def target(self, carry: Any) -> Any:
    return carry

  def to_tree(self, carry: Any) -> tuple[Any, dict]:
    return carry, {}

  def from_tree(self, tree: Any, meta: dict, fresh: Any) -> Any:
    return tree

  def checkpoint_step(self, ticks: int, unit: int) -> int:
    return unit  # one checkpoint per epoch, named by it

  def foreign(self, where: Any, theirs: Any, ours: str) -> str:
    return (f"{Path(where).parent} holds the retraining of another genotype or config; use a "
            f"new --workdir")

  def done(self, unit: int) -> bool:
    return unit >= self.rc.epochs

  def total_units(self) -> int:
    return int(self.rc.epochs)

  def steps(self, unit: int) -> int:
    return self.steps_per_epoch

  def label(self, unit: int) -> str:
    return f"retrain epoch {unit + 1}/{self.rc.epochs}"

  def batches(self, unit: int) -> Callable[[int], tuple]:
    ds = self.ds
    xb, yb = epoch_batches(ds.x_train, ds.y_train, self.rc.batch_size, seed=self.config.seed,
                           epoch=10_000 + unit)
    key = jax.random.key(self.config.seed + 1000)

    def batch_at(i: int | slice) -> tuple:
      if isinstance(i, slice):  # steps i.start..i.stop-1 stacked, for multi_step
        keys = jax.vmap(lambda d: jax.random.fold_in(key, d))(
            unit * 100_003 + jnp.arange(i.start, i.stop))
        return xb[i], yb[i], keys
      return xb[i], yb[i], jax.random.fold_in(key, unit * 100_003 + i)

    return batch_at

  def end_unit(self, carry: Any, unit: int, means: dict[str, float]) -> UnitEnd:
    return UnitEnd({"retrain_loss": means["train_loss"], "retrain_acc": means["train_acc"]},
                   unit + 1)

  def finish(self, carry: Any, seconds: float) -> dict[str, Any]:
    """The report's entries: test accuracy (every test example), parameters, epochs, time."""
    ds = self.ds
    test_acc = _evaluate(self.apply_fn, carry["params"], carry["state"], None, ds.x_test,
                         ds.y_test, 256)
    log.info("retrain: test accuracy %.4f (%d test examples)", test_acc, len(ds.x_test))
    return {"dataset": ds.name, "test_accuracy": test_acc, "num_params": self.num_params,
            "retrain_epochs": self.rc.epochs, "retrain_seconds": round(seconds, 1)}


def info(config, genotype: str) -> dict[str, Any]:
  """Parameter count of the retraining network for ``genotype``, without training.

  Shapes come from ``nnx.eval_shape``, so no weights are allocated.

  Example:
    >>> info(load_config("experiments/darts_cifar10.py"), "DARTS_V2")["num_params"]  # doctest: +SKIP
    3349342
  """
  kit = space_kit_of(config)
  if kit.info is not None:
    return kit.builder("info")(config, genotype)
  space, geno = resolve_architecture(config, genotype)
  shape = tuple(config.data.input_shape) if "input_shape" in config.data else None
  if shape is None:
    ds = load_dataset(config.data.name, seed=config.data.seed)
    shape, num_classes = ds.input_shape, ds.num_classes
  else:
    num_classes = config.data.num_classes
  net = nnx.eval_shape(lambda: build_discrete(config, geno, shape, num_classes, space=space))
  depth = {k: config.retrain[k] for k in kit.depth}
  return {"genotype": genotype, "num_params": count_params(nnx.state(net, nnx.Param)),
          "channels": config.retrain.channels, **depth,
          "input_shape": list(shape), "num_classes": num_classes}
