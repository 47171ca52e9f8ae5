"""``jnas train`` and ``jnas info``: the discrete network of a genotype, retrained or sized.

Every search family ends here when ``config.retrain.enabled``; :mod:`jnas.run`
re-exports :func:`train`, :func:`info` and :func:`build_discrete`.

Example:
  >>> from jnas.search.retrain import train
  >>> train(load_config("experiments/darts_mnist1d.py"), "runs/x", "DARTS_V2")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.checkpoint import Checkpoints
from jnas.config import config_to_dict
from jnas.data import epoch_batches, eval_batches, load_dataset
from jnas.data.augment import cutout, random_crop_2d, random_flip_2d, random_shift_1d
from jnas.ops.primitives import set_depthwise_impl
from jnas.search.common import (build_space, data_ndim, enable_compilation_cache,
                                resolve_architecture, space_kit_of)
from jnas.search.workdir import (RETRAIN_CKPT_DIR, StopOnSignal, dict_hash, finished,
                                 lock_workdir)
from jnas.spaces.base import SearchSpace
from jnas.supernet.functional import count_params, split_model
from jnas.utils.metrics import MetricWriter, replace_phase, write_json_atomic
from jnas.utils.progress import progress
from jnas.utils.xla import config_compiler_options

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


def train(config, workdir: str, genotype: str | None = None) -> dict[str, Any]:
  """Trains the discrete network of ``genotype`` from scratch; reports test accuracy.

  The genotype is a published name (``DARTS_V2``), a JSON file, or, if
  ``None``, ``WORKDIR/genotype.json``. Writes ``WORKDIR/report.json``, metrics
  (``phase: retrain``, TensorBoard under ``tb/retrain``) and a checkpoint after
  every epoch under ``checkpoints/retrain``, so calling it again with the same
  config and genotype resumes; when ``report.json`` of that same retraining
  exists, nothing is done and the report is returned. A second process on the
  same work directory is refused while this one runs
  (:func:`jnas.search.workdir.lock_workdir`; re-entrant, so a search may call it).

  Example:
    >>> train(load_config("experiments/darts_mnist1d.py"), "runs/x", "DARTS_V2")  # doctest: +SKIP
  """
  enable_compilation_cache()
  set_depthwise_impl(config.model.depthwise_impl)
  with lock_workdir(workdir):
    return _train_locked(config, workdir, genotype)


def _train_locked(config, workdir: str, genotype: str | None) -> dict[str, Any]:
  wd = Path(workdir)
  space, geno = resolve_architecture(config, genotype, workdir)
  geno_json = space.genotype_to_json(geno)
  retrain_id = dict_hash({"config": config_to_dict(config), "genotype": geno_json})
  done = finished(wd, "report.json")
  if done is not None and done.get("retrain_id") == retrain_id:
    log.info("the retraining in %s is finished; nothing to do", wd)
    return {"test_accuracy": done["test_accuracy"], "num_params": done["num_params"],
            "report": str(wd / "report.json")}
  rc = config.retrain
  ds = load_dataset(config.data.name, seed=config.data.seed)
  net = build_discrete(config, geno, ds.input_shape, ds.num_classes, space=space)
  split = split_model(net)
  graphdef = split.graphdef
  num_params = count_params(split.params)
  steps_per_epoch = len(ds.x_train) // rc.batch_size
  total = rc.epochs * steps_per_epoch
  schedule = optax.cosine_decay_schedule(rc.lr, max(total, 1), alpha=rc.lr_min / rc.lr)
  tx = optax.chain(optax.clip_by_global_norm(rc.grad_clip),
                   optax.add_decayed_weights(rc.weight_decay),
                   optax.sgd(schedule, momentum=rc.momentum, nesterov=rc.nesterov))
  augment = _augment_fn(config, data_ndim(ds))

  def apply_fn(params, state, encoding, x, train_mode, key=None):
    del encoding
    params, state = jax.tree.map(lambda a: a, (params, state))
    model = nnx.merge(graphdef, params, state)
    logits = model(x, train=train_mode, key=key)
    return logits, nnx.state(model, nnx.BatchStat)

  @functools.partial(jax.jit, compiler_options=config_compiler_options(config, data_ndim(ds)))
  def train_step(params, state, opt_state, x, y, key):
    ka, kd = jax.random.split(key)
    x = augment(ka, x)

    def loss_fn(p):
      logits, new_state = apply_fn(p, state, None, x, True, kd)
      labels = optax.smooth_labels(jax.nn.one_hot(y, ds.num_classes), rc.label_smoothing)
      return jnp.mean(optax.softmax_cross_entropy(logits, labels)), (new_state, logits)

    (loss, (new_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, new_state, opt_state, loss, jnp.mean(jnp.argmax(logits, -1) == y)

  params, state, opt_state = split.params, split.state, tx.init(split.params)
  key = jax.random.key(config.seed + 1000)

  # ---- Resume from the newest readable retraining checkpoint. ----
  ckpt = Checkpoints(wd / RETRAIN_CKPT_DIR, max_to_keep=2)
  start_epoch, elapsed0, records = 0, 0.0, []
  restored = ckpt.latest_good({"params": params, "state": state, "opt_state": opt_state,
                               "key": key})
  if restored is not None:
    ck_step, tree, meta = restored
    if meta.get("retrain_id") != retrain_id:
      raise ValueError(f"{ckpt.directory} holds the retraining of another genotype or config; "
                       f"use a new --workdir")
    params, state, opt_state, key = tree["params"], tree["state"], tree["opt_state"], tree["key"]
    start_epoch, elapsed0, records = int(meta["epoch"]), float(meta["elapsed_s"]), meta["metrics"]
    log.info("resuming the retraining after epoch %d of %d", start_epoch, rc.epochs)
  replace_phase(str(wd), "retrain", records)

  log.info("retrain: %d parameters, %d epochs of %d steps", num_params, rc.epochs,
           steps_per_epoch)
  t0 = time.time()
  with ckpt, MetricWriter(str(wd), tensorboard="retrain") as writer, \
      progress(total=rc.epochs, desc="retrain", unit="epoch") as bar, StopOnSignal() as stop:
    bar.update(start_epoch)
    for epoch in range(start_epoch, rc.epochs):
      xb, yb = epoch_batches(ds.x_train, ds.y_train, rc.batch_size, seed=config.seed,
                             epoch=10_000 + epoch)
      loss_sum = acc_sum = 0.0
      for i in range(steps_per_epoch):
        params, state, opt_state, loss, acc = train_step(
            params, state, opt_state, xb[i], yb[i], jax.random.fold_in(key, epoch * 100_003 + i))
        loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
      loss_m, acc_m = float(loss_sum) / steps_per_epoch, float(acc_sum) / steps_per_epoch
      if not np.isfinite(loss_m):
        raise FloatingPointError(f"retraining diverged at epoch {epoch}: loss is NaN/inf")
      records.append(writer.write(epoch + 1, phase="retrain", retrain_loss=loss_m,
                                  retrain_acc=acc_m))
      ckpt.save(epoch + 1, {"params": params, "state": state, "opt_state": opt_state,
                            "key": key},
                {"phase": "retrain", "retrain_id": retrain_id, "epoch": epoch + 1,
                 "elapsed_s": elapsed0 + time.time() - t0, "metrics": records})
      bar.set_postfix(loss=loss_m, acc=acc_m)
      bar.update(1)
      if stop.requested and epoch + 1 < rc.epochs:
        log.warning("retraining stopped by %s after epoch %d; rerun the same command to "
                    "resume", stop.requested, epoch + 1)
        raise KeyboardInterrupt
  train_s = elapsed0 + time.time() - t0
  test_acc = _evaluate(apply_fn, params, state, None, ds.x_test, ds.y_test, 256)
  report = {
      "genotype": geno_json,
      "dataset": ds.name,
      "test_accuracy": test_acc,
      "num_params": num_params,
      "retrain_epochs": rc.epochs,
      "retrain_seconds": round(train_s, 1),
      "retrain_id": retrain_id,
  }
  write_json_atomic(str(wd / "report.json"), report)
  log.info("retrain: test accuracy %.4f (%d test examples)", test_acc, len(ds.x_test))
  return {"test_accuracy": test_acc, "num_params": num_params,
          "report": str(wd / "report.json")}


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
