"""Train-from-scratch scorer: a discrete DARTS-space network trained for a few epochs.

The oldest performance estimate in NAS (Zoph & Le 2017 trained every child
network): train the architecture briefly and read its validation accuracy.
The validation split is carved out of the **training** set (the test set is
never seen during search); :meth:`ScratchScorer.test_accuracy` reads the test
set only for the architecture a search finally returns.

Two scorers share the data split, the optimiser and the cache:

* :class:`ScratchScorer` builds each genotype's own
  :class:`~jnas.train.network.DiscreteNetwork` (the network ``jnas train``
  retrains) and jits its epoch (one ``lax.scan`` over batches): exact, but
  every architecture pays a compilation (about 10-15 s of a 15 s evaluation
  for the small MNIST-1D networks on a 2-core CPU).
* :class:`PathScratchScorer` trains each genotype as the single path it picks
  through the DARTS *search* network, from the same fresh initialisation every
  time. The encoding is an argument of one compiled epoch, so nothing
  recompiles per architecture and an evaluation costs only its training
  steps. The network differs from the discrete one in the search network's
  details (batch norms without affine parameters, and an edge a node does not
  keep runs op 0 scaled by zero), which is the usual low-fidelity proxy.

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
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jnas.data import epoch_batches, eval_batches, load_dataset, split_train_val
from jnas.data.augment import random_shift_1d
from jnas.spaces.darts import DartsSpace, Genotype  # noqa: F401 (DartsSpace: doctests)
from jnas.spaces.registry import space_kit
from jnas.supernet.functional import count_params, cross_entropy, make_apply, split_model
from jnas.train.network import DiscreteNetwork

__all__ = ["ScratchScorer", "PathScratchScorer"]


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
    self._weights: dict[str, tuple[Any, Any, Any, Any]] = {}
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
    params, state, encoding, correct = self._weights[k]
    return _accuracy(correct, params, state, encoding, self.ds.x_test, self.ds.y_test)

  def _train(self, genotype: Genotype, k: str) -> dict[str, Any]:
    t0 = time.time()
    net = DiscreteNetwork(genotype, self.ds.input_shape[-1], self.ds.num_classes, ndim=self.ndim,
                          channels=self.channels, layers=self.layers,
                          rngs=nnx.Rngs(self.seed))
    split = split_model(net)
    apply = make_apply(split.graphdef)
    epoch = jax.jit(_make_epoch(apply, self.tx, self.ndim, self.shift))
    params, state, loss = self._fit(epoch, split.params, split.state, None, k)
    train_s = time.time() - t0
    correct = jax.jit(_make_correct(apply))
    val_acc = _accuracy(correct, params, state, None, self.x_val, self.y_val)
    # The jitted accuracy is kept so that test_accuracy reuses its compilation.
    self._weights[k] = (params, state, None, correct)
    self.trained += 1
    return {"val_accuracy": val_acc, "num_params": count_params(params),
            "latency_ms": _latency_ms(split.graphdef, params, state,
                                      self.x_val[:self.latency_batch]),
            "train_seconds": round(train_s, 2), "final_loss": loss}

  def _fit(self, epoch, params, state, encoding, k: str) -> tuple[Any, Any, float]:
    """Runs ``self.epochs`` compiled epochs from ``(params, state)``; the same data order
    and augmentation keys for every architecture, so only the architecture differs."""
    opt_state = self.tx.init(params)
    key = jax.random.key(self.seed + 1)
    for e in range(self.epochs):
      xb, yb = epoch_batches(self.x_tr, self.y_tr, self.batch_size, seed=self.seed, epoch=e)
      params, state, opt_state, loss = epoch(params, state, opt_state, encoding, xb, yb,
                                             jax.random.fold_in(key, e))
    loss = float(loss)
    if not np.isfinite(loss):
      raise FloatingPointError(f"training diverged (loss {loss}) for {k}")
    return params, state, loss


class PathScratchScorer(ScratchScorer):
  """Scores a DARTS genotype by training its path through the search network from scratch.

  Each genotype is trained as the single path it selects in
  :class:`~jnas.supernet.darts.DartsSupernet` (``single_path=True``: only the
  chosen op of each edge runs), starting from the same fresh weights every
  time, with the optimiser, data order and augmentation of
  :class:`ScratchScorer`. The genotype's one-hot encoding is an argument of
  the compiled epoch, so the first evaluation compiles and every later one
  only trains: on the MNIST-1D network (C=8, 3 cells) an evaluation drops
  from about 15 s to a few seconds on a 2-core CPU, which is what lets an RL
  controller or a progressive search see enough architectures.

  ``num_params`` is the discrete network's parameter count (what
  ``jnas train`` would build); there is no ``latency_ms``, since the path's
  run time includes the supernet's switches (use :class:`ScratchScorer` to
  time the real network).

  Any other registered space trains the same way given its supernet
  (``supernet``, whose ``__call__`` takes ``single_path=True``) and a
  parameter counter (``count_params``); :mod:`jnas.search.ask_tell` builds
  both from the space's registration.

  Args:
    dataset: as :class:`ScratchScorer`.
    space: the space the genotypes come from (for DARTS, its nodes and ops shape
      the search network).
    supernet: the supernet whose single paths are trained (default: the DARTS
      search network of ``space`` at ``channels``/``layers``).
    count_params: ``genotype -> int``, the discrete network's parameter count
      (default: the DARTS :class:`~jnas.train.network.DiscreteNetwork`'s).
    **kwargs: the training settings of :class:`ScratchScorer` (``channels``,
      ``layers``, ``epochs``, ``batch_size``, ``learning_rate``, ...).

  Example:
    >>> space = DartsSpace(num_nodes=2, primitives=("skip_connect", "sep_conv_3x3"))
    >>> scorer = PathScratchScorer("mnist1d", space=space, epochs=2)  # doctest: +SKIP
    >>> scorer(space.random_genotype(np.random.default_rng(0)))  # doctest: +SKIP
    0.74
  """

  def __init__(self, dataset: Any = "mnist1d", *, space: Any, supernet: nnx.Module | None = None,
               count_params: Callable[[Any], int] | None = None, **kwargs: Any):
    if "latency_batch" in kwargs:
      raise TypeError("PathScratchScorer measures no latency (latency_batch); "
                      "ScratchScorer times the discrete network")
    super().__init__(dataset, **kwargs)
    self.space = space
    if supernet is None:
      supernet = self._registered_supernet(space)
    self._count_params = count_params or self._darts_params
    self._key = lambda g: json.dumps(space.genotype_to_json(g), sort_keys=True)
    self._init = split_model(supernet)
    apply = make_apply(self._init.graphdef, single_path=True)
    # Jitted once here; the encoding is traced, so every genotype reuses them.
    self._epoch = jax.jit(_make_epoch(apply, self.tx, self.ndim, self.shift))
    self._correct = jax.jit(_make_correct(apply))

  @property
  def compilations(self) -> int:
    """How many programs the training epoch compiled (1 once anything was scored)."""
    return self._epoch._cache_size()

  def _train(self, genotype: Genotype, k: str) -> dict[str, Any]:
    t0 = time.time()
    enc = {c: jnp.asarray(v) for c, v in self.space.genotype_to_encoding(genotype).items()}
    params, state, loss = self._fit(self._epoch, self._init.params, self._init.state, enc, k)
    train_s = time.time() - t0
    val_acc = _accuracy(self._correct, params, state, enc, self.x_val, self.y_val)
    self._weights[k] = (params, state, enc, self._correct)
    self.trained += 1
    return {"val_accuracy": val_acc, "num_params": int(self._count_params(genotype)),
            "train_seconds": round(train_s, 2), "final_loss": loss}

  def _registered_supernet(self, space: Any) -> nnx.Module:
    """The space's registered supernet, sized by ``channels`` and ``layers`` as DARTS's is."""
    config = ml_collections.ConfigDict({"seed": self.seed, "space": {"name": space.name},
                                        "search": {"channels": self.channels,
                                                   "layers": self.layers}})
    try:
      return space_kit(space.name).builder("supernet")(config, space, self.ds)
    except (AttributeError, KeyError, ValueError) as e:
      raise TypeError(f"PathScratchScorer sizes a default supernet by channels and layers, as "
                      f"DARTS's; the {space.name} space's needs more ({e}): pass supernet=") \
          from None

  def _darts_params(self, genotype: Genotype) -> int:
    shapes = nnx.eval_shape(lambda: DiscreteNetwork(
        genotype, self.ds.input_shape[-1], self.ds.num_classes, ndim=self.ndim,
        channels=self.channels, layers=self.layers, rngs=nnx.Rngs(0)))
    return count_params(nnx.state(shapes, nnx.Param))


def _make_epoch(apply, tx: optax.GradientTransformation, ndim: int, shift: int):
  """``epoch(params, state, opt_state, encoding, xs, ys, key)``: one ``lax.scan`` of SGD steps."""

  def loss_fn(params, state, encoding, x, y):
    logits, new_state = apply(params, state, encoding, x, True)
    return cross_entropy(logits, y), new_state

  def epoch(params, state, opt_state, encoding, xs, ys, key):
    def step(carry, batch):
      params, state, opt_state = carry
      x, y, i = batch
      if ndim == 1 and shift > 0:
        x = random_shift_1d(jax.random.fold_in(key, i), x, shift)
      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, state, encoding, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), state, opt_state), loss
    (params, state, opt_state), losses = jax.lax.scan(
        step, (params, state, opt_state), (xs, ys, jnp.arange(xs.shape[0])))
    return params, state, opt_state, jnp.mean(losses)

  return epoch


def _make_correct(apply):
  """``correct(params, state, encoding, xs, ys, mask)``: masked count of right answers."""

  def correct(params, state, encoding, xs, ys, ms):
    logits, _ = apply(params, state, encoding, xs, False)
    return jnp.sum((jnp.argmax(logits, -1) == ys) * ms)

  return correct


def _accuracy(correct, params, state, encoding, x, y, batch_size: int = 500) -> float:
  xb, yb, mask = eval_batches(x, y, batch_size)
  total = sum(float(correct(params, state, encoding, xb[i], yb[i], mask[i]))
              for i in range(len(xb)))
  return float(total / mask.sum())


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
