"""A learned accuracy predictor: an ensemble of small Flax MLPs over the integer form.

Progressive search (PNAS, DPP-Net) ranks many candidate architectures and
measures only a few; this predictor learns from what has been measured so far.

Input: an architecture's integer form (``space.index_sizes()`` decisions,
``int [n, steps]``), where ``-1`` marks a decision that is **unknown** (a
partial architecture). Each step becomes a one-hot vector with one extra slot
for "unknown", so a partial and a complete architecture share one input size.
Output: the ensemble mean and standard deviation of the predicted score.

Each of the ``members`` MLPs starts from its own initialisation and trains on
its own bootstrap resample (Poisson(1) weights per example), so the spread
across members estimates the predictor's uncertainty (Lakshminarayanan et al.
2017). Training is full-batch Adam on standardised targets; data are padded
to a power-of-two size with a zero weight so that a growing training set
compiles only ``log2`` times.

Example:
  >>> sizes = (5,) * 6
  >>> x = np.random.default_rng(0).integers(0, 5, (64, 6))
  >>> y = (x == 3).sum(1).astype(np.float32)
  >>> params = fit_predictor(jax.random.key(0), sizes, x, y)
  >>> mean, std = predict(params, sizes, x[:4])
  >>> mean.shape
  (4,)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["MLP", "PredictorParams", "encode_decisions", "fit_predictor", "predict",
           "kendall_tau"]


class MLP(nnx.Module):
  """A small ReLU MLP with one output (one ensemble member).

  Example:
    >>> MLP(12, 16, rngs=nnx.Rngs(0))(jnp.ones((3, 12))).shape
    (3,)
  """

  def __init__(self, features: int, hidden: int = 64, depth: int = 2, *, rngs: nnx.Rngs):
    dims = [features] + [hidden] * depth
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.out = nnx.Linear(dims[-1], 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
    return self.out(x)[..., 0]


class PredictorParams(NamedTuple):
  """Stacked ensemble weights plus the target standardisation (a pytree)."""

  weights: Any
  y_mean: jax.Array
  y_std: jax.Array


def encode_decisions(sizes: Sequence[int], decisions: Any) -> jax.Array:
  """One-hot rows with an "unknown" slot: ``[n, steps * (max(sizes) + 1)]`` float32.

  ``-1`` (or any negative value) marks an unknown decision.

  Example:
    >>> encode_decisions((2, 3), [[1, -1]]).tolist()
    [[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
  """
  d = jnp.asarray(decisions, jnp.int32)
  width = max(int(s) for s in sizes) + 1
  slot = jnp.where(d < 0, width - 1, d)
  return jax.nn.one_hot(slot, width, dtype=jnp.float32).reshape(d.shape[0], -1)


def _graphdef(features: int, hidden: int, depth: int):
  return nnx.split(nnx.eval_shape(lambda: MLP(features, hidden, depth, rngs=nnx.Rngs(0))))[0]


def _apply(graphdef, weights, x):
  return jax.vmap(lambda w: nnx.merge(graphdef, w)(x))(weights)  # [members, n]


def _bucket(n: int) -> int:
  return max(16, 1 << (max(n, 1) - 1).bit_length())


def fit_predictor(key: jax.Array, sizes: Sequence[int], decisions: Any, scores: Any, *,
                  members: int = 5, hidden: int = 64, depth: int = 2, steps: int = 300,
                  learning_rate: float = 3e-3, weight_decay: float = 1e-4,
                  bootstrap: bool = True) -> PredictorParams:
  """Trains a fresh ensemble on ``(decisions, scores)``; deterministic given ``key``.

  Args:
    key: initialisation and bootstrap key.
    sizes: per-step candidate counts (``space.index_sizes()``).
    decisions: ``int [n, steps]`` integer forms (``-1`` = unknown).
    scores: ``[n]`` measured scores (higher is better; any scale).
    members: ensemble size.
    hidden, depth: MLP width and number of hidden layers.
    steps: full-batch Adam steps.
    learning_rate, weight_decay: AdamW settings.
    bootstrap: resample each member's data (Poisson(1) weights).

  Example:
    >>> params = fit_predictor(jax.random.key(0), (5,) * 6, x, y)  # doctest: +SKIP
  """
  x = np.asarray(decisions)
  y = np.asarray(scores, np.float32).reshape(-1)
  if x.ndim != 2 or x.shape[1] != len(sizes) or x.shape[0] != y.shape[0]:
    raise ValueError(f"decisions must be [n, {len(sizes)}] with one score each, got "
                     f"{x.shape} and {y.shape}")
  if x.shape[0] == 0:
    raise ValueError("the predictor needs at least one measured architecture")
  n, m = x.shape[0], _bucket(x.shape[0])
  xp = np.zeros((m, x.shape[1]), np.int32)
  xp[:n] = x
  yp = np.zeros((m,), np.float32)
  yp[:n] = y
  valid = np.zeros((m,), np.float32)
  valid[:n] = 1.0
  y_mean = float(y.mean())
  y_std = float(y.std()) if n > 1 and y.std() > 1e-8 else 1.0
  features = len(sizes) * (max(sizes) + 1)
  return _fit(key, xp, jnp.asarray((yp - y_mean) / y_std),
              jnp.asarray(valid), jnp.float32(y_mean), jnp.float32(y_std), features=features,
              members=members, hidden=hidden, depth=depth, steps=steps,
              learning_rate=learning_rate, weight_decay=weight_decay, bootstrap=bootstrap,
              sizes=tuple(int(v) for v in sizes))


def _fit_impl(key, x, y, valid, y_mean, y_std, *, features, members, hidden, depth, steps,
              learning_rate, weight_decay, bootstrap, sizes):
  x = encode_decisions(sizes, x)
  graphdef = _graphdef(features, hidden, depth)
  k_init, k_boot = jax.random.split(key)
  weights = jax.vmap(lambda k: nnx.state(MLP(features, hidden, depth, rngs=nnx.Rngs(params=k)),
                                         nnx.Param))(jax.random.split(k_init, members))
  w = jnp.broadcast_to(valid, (members,) + valid.shape)
  if bootstrap:
    w = w * jax.random.poisson(k_boot, 1.0, w.shape).astype(jnp.float32)
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)
  opt_state = tx.init(weights)

  def loss_fn(ws):
    pred = _apply(graphdef, ws, x)
    return jnp.sum(w * (pred - y) ** 2) / jnp.maximum(jnp.sum(w), 1.0)

  def step(carry, _):
    ws, os = carry
    grads = jax.grad(loss_fn)(ws)
    updates, os = tx.update(grads, os, ws)
    return (optax.apply_updates(ws, updates), os), None

  (weights, _), _ = jax.lax.scan(step, (weights, opt_state), None, length=steps)
  return PredictorParams(weights, y_mean, y_std)


_fit = jax.jit(_fit_impl, static_argnames=("features", "members", "hidden", "depth", "steps",
                                           "learning_rate", "weight_decay", "bootstrap",
                                           "sizes"))


def predict(params: PredictorParams, sizes: Sequence[int], decisions: Any
            ) -> tuple[np.ndarray, np.ndarray]:
  """Ensemble mean and std of the predicted score of each row of ``decisions``.

  Example:
    >>> mean, std = predict(params, (5,) * 6, [[0, 1, 2, 3, 4, -1]])  # doctest: +SKIP
  """
  x = np.asarray(decisions)
  if x.ndim != 2 or x.shape[1] != len(sizes):
    raise ValueError(f"decisions must be [n, {len(sizes)}], got {x.shape}")
  n = x.shape[0]
  if n == 0:
    return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
  m = _bucket(n)
  xp = np.zeros((m, x.shape[1]), np.int32)
  xp[:n] = x
  depth = sum(1 for k in params.weights["layers"])
  hidden = int(params.weights["out"]["kernel"].shape[-2])
  features = len(sizes) * (max(sizes) + 1)
  mean, std = _predict(params, xp, features=features, hidden=hidden, depth=depth,
                       sizes=tuple(int(v) for v in sizes))
  return np.asarray(mean)[:n], np.asarray(std)[:n]


def _predict_fn(params, x, *, features, hidden, depth, sizes):
  x = encode_decisions(sizes, x)
  pred = _apply(_graphdef(features, hidden, depth), params.weights, x)
  pred = pred * params.y_std + params.y_mean
  return jnp.mean(pred, axis=0), jnp.std(pred, axis=0)


_predict = jax.jit(_predict_fn, static_argnames=("features", "hidden", "depth", "sizes"))


def kendall_tau(a: Any, b: Any) -> float:
  """Kendall's tau-b rank correlation of two score vectors (ties counted as neither).

  Example:
    >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  da = np.sign(a[:, None] - a[None, :])
  db = np.sign(b[:, None] - b[None, :])
  iu = np.triu_indices(len(a), 1)
  s = float(np.sum(da[iu] * db[iu]))
  na, nb = float(np.sum(da[iu] != 0)), float(np.sum(db[iu] != 0))
  return s / np.sqrt(na * nb) if na > 0 and nb > 0 else 0.0
