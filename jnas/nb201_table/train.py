"""One fixed low-cost training protocol, and a trainer that runs every NAS-Bench-201 cell through it.

Each cell is trained as its single path through the NAS-Bench-201 supernet
(:class:`~jnas.supernet.nb201.NB201Supernet` with ``single_path=True`` and
affine batch norms, so the path is the discrete network's function): every
edge's chosen op is picked by a switch on a traced index, so ONE compiled
training function serves all 15,625 cells. All cells of one seed start from
that seed's supernet initialisation and see the same batches, so within a seed
only the architecture differs.

Example:
  >>> trainer = CellTrainer(Protocol(epochs=1, channels=2))  # doctest: +SKIP
  >>> trainer.train([3, 0, 0, 3, 0, 0], seed=0)["test_acc"]  # doctest: +SKIP
  0.41
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jnas.data import epoch_batches, load_dataset, split_train_val
from jnas.spaces.nb201 import NB201Space
from jnas.supernet.functional import cross_entropy, make_apply, split_model
from jnas.supernet.nb201 import NB201Supernet

__all__ = ["Protocol", "CellTrainer"]


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How every cell of the table is trained; JSON-serialisable, identified by :meth:`short_hash`.

  SGD with Nesterov momentum, a cosine schedule from ``learning_rate`` to 0
  over all steps, coupled weight decay (as in PyTorch's SGD), no gradient
  clipping and no augmentation. The training set is split once
  (``split_seed``) into ``val_size`` validation examples and the rest for
  training; the test set is only ever evaluated.

  Args:
    dataset: a registered dataset name.
    channels, cells_per_stage: the skeleton's ``C`` and ``N``.
    epochs, batch_size, learning_rate, momentum, weight_decay: the optimiser.
    val_size: validation examples carved out of the training set.
    train_size, test_size: use only the first ``n`` (0 = all); for tests.
    split_seed: the train/validation split (the same for every seed).
    seeds: training seeds (weight initialisation and batch order); each
      cell is trained once per seed.
    vmap_seeds: train all seeds of a cell in one program, vmapped over the
      seeds (the cell's ops stay a real switch: the index is not batched).
      Several times cheaper per run on a CPU; the sums are the same but XLA
      may order them differently, so it is part of the recipe.

  Example:
    >>> p = Protocol(epochs=2)
    >>> Protocol.from_json(p.to_json()) == p, len(p.short_hash())
    (True, 10)
  """

  dataset: str = "mnist1d"
  channels: int = 8
  cells_per_stage: int = 1
  epochs: int = 4
  batch_size: int = 128
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  val_size: int = 1000
  train_size: int = 0
  test_size: int = 0
  split_seed: int = 0
  seeds: tuple[int, ...] = (0, 1)
  vmap_seeds: bool = False

  def __post_init__(self):
    object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
    if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
      raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds}")
    for name in ("channels", "epochs", "batch_size", "val_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

  def to_json(self) -> dict[str, Any]:
    """A plain dict (``seeds`` as a list) that :meth:`from_json` reads back."""
    d = dataclasses.asdict(self)
    d["seeds"] = list(self.seeds)
    return d

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "Protocol":
    """Reads :meth:`to_json`'s dict; ``ValueError`` names an unknown field."""
    known = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - known - {"hash"})
    if extra:
      raise ValueError(f"unknown protocol field(s): {', '.join(extra)}")
    return cls(**{k: (tuple(v) if k == "seeds" else v) for k, v in data.items() if k in known})

  def recipe(self) -> dict[str, Any]:
    """Everything that changes a result: all fields but ``seeds`` (which say which runs exist)."""
    d = self.to_json()
    del d["seeds"]
    # Fields added after a table was built enter the recipe only when set, so old hashes hold.
    for name, default in _LATER_FIELDS.items():
      if d[name] == default:
        del d[name]
    return d

  def short_hash(self) -> str:
    """10 hex digits of the SHA-256 of :meth:`recipe`."""
    text = json.dumps(self.recipe(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_LATER_FIELDS = {"vmap_seeds": False}


class CellTrainer:
  """Trains NAS-Bench-201 cells under one :class:`Protocol`, deterministically on CPU.

  Batches are a pure function of ``(seed, epoch)``, the initial weights of
  ``seed``; a cell's integer form is an argument of the compiled training
  function, so :attr:`compilations` stays 1 however many cells are trained.

  Args:
    protocol: the training protocol.
    space: the cell space (the benchmark's by default).
    dataset: an already loaded :class:`~jnas.data.Dataset` (default:
      ``load_dataset(protocol.dataset)``).

  Example:
    >>> trainer = CellTrainer(Protocol())  # doctest: +SKIP
    >>> r = trainer.train(NB201Space().encode_indices(g), seed=0)  # doctest: +SKIP
    >>> sorted(r)  # doctest: +SKIP
    ['cpu_seconds', 'test_acc', 'train_loss', 'val_acc', 'wall_seconds']
  """

  def __init__(self, protocol: Protocol, *, space: NB201Space | None = None, dataset: Any = None):
    p = self.protocol = protocol
    self.space = space or NB201Space()
    ds = dataset if dataset is not None else load_dataset(p.dataset)
    n = len(ds.x_train)
    if not 0 < p.val_size < n:
      raise ValueError(f"val_size={p.val_size} must leave training data ({n} examples)")
    (x_tr, y_tr), (x_val, y_val) = split_train_val(
        ds.x_train, ds.y_train, fraction=(n - p.val_size) / n, seed=p.split_seed)
    if p.train_size:
      x_tr, y_tr = x_tr[:p.train_size], y_tr[:p.train_size]
    x_te, y_te = ds.x_test, ds.y_test
    if p.test_size:
      x_te, y_te = x_te[:p.test_size], y_te[:p.test_size]
    self.steps_per_epoch = len(x_tr) // p.batch_size
    if self.steps_per_epoch < 1:
      raise ValueError(f"batch_size={p.batch_size} is larger than the {len(x_tr)} training "
                       f"examples")
    self._train_data = (x_tr, y_tr)
    # Validation and test go through one forward pass; the split is made on the host.
    self._eval_x = jnp.asarray(np.concatenate([x_val, x_te]))
    self._eval_y = jnp.asarray(np.concatenate([y_val, y_te]))
    self.num_val = len(x_val)
    self._in_channels, self._num_classes = ds.input_shape[-1], ds.num_classes
    self._ndim = len(ds.input_shape) - 1
    self._per_seed: dict[int, tuple[Any, Any, jax.Array, jax.Array]] = {}
    self._warm: set[Any] = set()
    graphdef = self._network(0).graphdef
    apply = make_apply(graphdef, single_path=True)
    total = p.epochs * self.steps_per_epoch
    tx = optax.chain(optax.add_decayed_weights(p.weight_decay),
                     optax.sgd(optax.cosine_decay_schedule(p.learning_rate, total),
                               momentum=p.momentum, nesterov=True))
    fit = _make_fit(apply, tx, len(self.space.ops), self.steps_per_epoch)
    correct = _make_correct(apply, len(self.space.ops))
    self._fit = jax.jit(fit)
    self._correct = jax.jit(correct)
    # Seeds stacked on a leading axis; the cell and the evaluation data are shared.
    self._fit_seeds = jax.jit(jax.vmap(fit, in_axes=(0, 0, None, 0, 0)))
    self._correct_seeds = jax.jit(_chunked(jax.vmap(correct, in_axes=(0, 0, None, None, None)),
                                           _EVAL_CHUNK))

  def _network(self, seed: int):
    p = self.protocol
    return split_model(NB201Supernet(
        self.space, self._in_channels, self._num_classes, ndim=self._ndim, channels=p.channels,
        cells_per_stage=p.cells_per_stage, affine=True, rngs=nnx.Rngs(seed)))

  def _seed_inputs(self, seed: int) -> tuple[Any, Any, jax.Array, jax.Array]:
    # Initial weights and every epoch's batches depend on the seed alone: built once per seed.
    if seed not in self._per_seed:
      init = self._network(seed)
      x, y = self._train_data
      batches = [epoch_batches(x, y, self.protocol.batch_size, seed=seed, epoch=e)
                 for e in range(self.protocol.epochs)]
      xs = jnp.asarray(np.concatenate([b[0] for b in batches]))
      ys = jnp.asarray(np.concatenate([b[1] for b in batches]))
      self._per_seed[seed] = (init.params, init.state, xs, ys)
    return self._per_seed[seed]

  @property
  def compilations(self) -> int:
    """Programs the training function has compiled (1 once anything was trained)."""
    return self._fit._cache_size() + self._fit_seeds._cache_size()

  def train_seeds(self, cell: Sequence[int] | np.ndarray,
                  seeds: Sequence[int]) -> list[dict[str, float]]:
    """Trains one cell for several seeds in one vmapped program; one dict per seed as :meth:`train`.

    The times are the whole program's divided by the number of seeds (what one
    run costs when runs are made this way).

    Example:
      >>> rs = CellTrainer(Protocol(vmap_seeds=True)).train_seeds([3] * 6, (0, 1))  # doctest: +SKIP
    """
    idx = jnp.asarray(np.asarray(cell, np.int32).reshape(self.space.num_edges))
    inputs = [self._seed_inputs(int(s)) for s in seeds]
    params, state, xs, ys = jax.tree.map(lambda *a: jnp.stack(a), *inputs)
    key = ("seeds", tuple(int(s) for s in seeds))
    if key not in self._warm:
      self._warm.add(key)
      jax.block_until_ready(self._correct_seeds(*self._fit_seeds(params, state, idx, xs, ys)[:2],
                                                idx, self._eval_x, self._eval_y))
    t, c = time.perf_counter(), time.process_time()
    params, state, loss = self._fit_seeds(params, state, idx, xs, ys)
    right = np.asarray(self._correct_seeds(params, state, idx, self._eval_x, self._eval_y))
    loss = np.asarray(loss)
    cpu = (time.process_time() - c) / len(seeds)
    wall = (time.perf_counter() - t) / len(seeds)
    return [{"val_acc": float(r[:self.num_val].mean()), "test_acc": float(r[self.num_val:].mean()),
             "train_loss": float(l) if np.isfinite(l) else float("nan"),
             "cpu_seconds": cpu, "wall_seconds": wall} for r, l in zip(right, loss)]

  def train(self, cell: Sequence[int] | np.ndarray, seed: int) -> dict[str, float]:
    """Trains one cell (its integer form) for one seed.

    Returns ``val_acc`` and ``test_acc`` (fractions), ``train_loss`` (mean
    over the last epoch; NaN if training diverged), ``cpu_seconds`` (process
    CPU time, steadier than wall time on a shared machine) and
    ``wall_seconds``, both over training and evaluation.
    """
    idx = jnp.asarray(np.asarray(cell, np.int32).reshape(self.space.num_edges))
    params, state, xs, ys = self._seed_inputs(int(seed))
    if not self.compilations:
      # A first, untimed run compiles both functions, so no cell's time includes compiling.
      jax.block_until_ready(self._correct(*self._fit(params, state, idx, xs, ys)[:2], idx,
                                          self._eval_x, self._eval_y))
    t, c = time.perf_counter(), time.process_time()
    params, state, loss = self._fit(params, state, idx, xs, ys)
    right = np.asarray(self._correct(params, state, idx, self._eval_x, self._eval_y))
    loss = float(loss)
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    return {"val_acc": float(right[:self.num_val].mean()),
            "test_acc": float(right[self.num_val:].mean()),
            "train_loss": loss if np.isfinite(loss) else float("nan"),
            "cpu_seconds": cpu, "wall_seconds": wall}


def _make_fit(apply, tx: optax.GradientTransformation, num_ops: int, steps_per_epoch: int):
  """``fit(params, state, cell, xs, ys)``: the whole training, one ``lax.scan`` over all steps."""

  def fit(params, state, cell, xs, ys):
    encoding = {"cell": jax.nn.one_hot(cell, num_ops)}

    def loss_fn(params, state, x, y):
      logits, new_state = apply(params, state, encoding, x, True)
      return cross_entropy(logits, y), new_state

    def step(carry, batch):
      params, state, opt_state = carry
      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, *batch)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), state, opt_state), loss

    (params, state, _), losses = jax.lax.scan(step, (params, state, tx.init(params)), (xs, ys))
    return params, state, jnp.mean(losses[-steps_per_epoch:])

  return fit


#: Evaluation examples per forward pass when many seeds are evaluated at once (bounds memory).
_EVAL_CHUNK = 5000


def _chunked(correct, chunk: int):
  """``correct`` over ``x`` in chunks of ``chunk`` examples (the last one padded), results joined."""

  def run(params, state, cell, x, y):
    n = x.shape[0]
    pad = -n % chunk
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(-1, chunk, *x.shape[1:])
    yp = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]).reshape(-1, chunk)
    out = jax.lax.map(lambda b: correct(params, state, cell, *b), (xp, yp))  # [chunks, seeds, chunk]
    return jnp.moveaxis(out, 0, 1).reshape(out.shape[1], -1)[:, :n]

  return run


def _make_correct(apply, num_ops: int):
  """``correct(params, state, cell, x, y)``: per-example right answers (batch-norm statistics frozen)."""

  def correct(params, state, cell, x, y):
    logits, _ = apply(params, state, {"cell": jax.nn.one_hot(cell, num_ops)}, x, False)
    return jnp.argmax(logits, -1) == y

  return correct
