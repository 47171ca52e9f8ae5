"""Gumbel-softmax search: GDAS, SNAS and FBNet.

All three relax the architecture encoding with Gumbel-softmax samples of the
logits ``alpha`` instead of DARTS's deterministic softmax, and share DARTS's
step shape (architecture step on a validation batch, then weight step on a
training batch, each with its own Optax optimizer). They differ in the sample
and the loss:

* **GDAS** (Dong & Yang, CVPR 2019): a *hard* sample per edge with a
  straight-through gradient; pair it with the supernet's single-path apply
  (``make_apply(graphdef, single_path=True)``) so that only the sampled op of
  each edge runs. Temperature falls linearly from 10 to 0.1.
* **SNAS** (Xie et al., ICLR 2019): a *soft* sample (every op runs, weighted),
  optionally with a resource penalty ``lambda * cost(sample)``.
* **FBNet** (Wu et al., CVPR 2019): soft samples over a chain space, loss
  ``CE * a * log(LAT)^b`` with ``LAT`` the expected latency of the sample
  under a latency table measured on the target device (``a=0.2, b=0.6``);
  temperature 5.0, times 0.956 per epoch.

Sampling uses the explicit key in the state, so a run is reproducible.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnas.strategies.base import Batch, GradientStrategy
from jnas.strategies.darts import softmax_encoding
from jnas.strategies.mitigations import add_regularizer
from jnas.supernet.functional import cross_entropy

Schedule = Callable[[jax.Array], jax.Array]


class GumbelState(NamedTuple):
  """Everything a Gumbel-softmax search carries from step to step (a pytree)."""

  params: Any
  batch_stats: Any
  alpha: Any
  w_opt_state: optax.OptState
  a_opt_state: optax.OptState
  step: jax.Array
  key: jax.Array


def gumbel_softmax(key: jax.Array, logits: jax.Array, tau: jax.Array | float, *,
                   hard: bool = False) -> jax.Array:
  """A Gumbel-softmax sample over the last axis.

  ``softmax((logits + g) / tau)`` with ``g`` standard Gumbel noise. With
  ``hard=True`` the value is the one-hot of its argmax, and the gradient is
  the soft sample's (straight-through estimator).

  Example:
    >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros((2, 3)), 1.0, hard=True)
    >>> y.sum(-1).tolist()
    [1.0, 1.0]
  """
  g = jax.random.gumbel(key, logits.shape, jnp.float32)
  soft = jax.nn.softmax((logits.astype(jnp.float32) + g) / tau, axis=-1)
  if not hard:
    return soft.astype(logits.dtype)
  one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
  return (one_hot - jax.lax.stop_gradient(soft) + soft).astype(logits.dtype)


def sample_encoding(key: jax.Array, alpha: Any, tau: jax.Array | float, *, hard: bool) -> Any:
  """Independent Gumbel-softmax samples for every leaf of the ``alpha`` pytree.

  Example:
    >>> enc = sample_encoding(jax.random.key(0), {"normal": jnp.zeros((14, 8))}, 1.0, hard=True)
    >>> enc["normal"].shape
    (14, 8)
  """
  leaves, treedef = jax.tree.flatten(alpha)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      treedef, [gumbel_softmax(k, a, tau, hard=hard) for k, a in zip(keys, leaves)])


def linear_tau(tau_max: float = 10.0, tau_min: float = 0.1, total_steps: int = 1) -> Schedule:
  """GDAS's temperature: linear from ``tau_max`` to ``tau_min`` over the search.

  Example:
    >>> float(linear_tau(10.0, 0.1, 100)(jnp.array(100)))
    0.1
  """
  def schedule(step):
    frac = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return tau_max - (tau_max - tau_min) * frac
  return schedule


def exponential_tau(tau0: float = 5.0, decay: float = 0.956, steps_per_epoch: int = 1
                    ) -> Schedule:
  """FBNet's temperature: ``tau0 * decay ** epoch`` (epochs counted from steps).

  Example:
    >>> round(float(exponential_tau(5.0, 0.956, 10)(jnp.array(20))), 4)
    4.5697
  """
  def schedule(step):
    return tau0 * decay ** (step // max(steps_per_epoch, 1))
  return schedule


def fbnet_loss(ce: jax.Array, latency: jax.Array, *, a: float = 0.2, b: float = 0.6
               ) -> jax.Array:
  """FBNet's objective ``CE * a * log(LAT) ** b`` (latency in the table's unit).

  ``log(LAT)`` must be positive: give the latency in a unit where networks
  take more than ``e`` (FBNet used milliseconds on a phone; :func:`fbnet`
  scales jnas's milliseconds to microseconds). Values below ``e`` are
  clipped so the power stays defined, which also makes the latency term
  constant there: a wrong unit shows up as ``cost`` below ~2.7 in the metrics.

  Example:
    >>> float(fbnet_loss(jnp.float32(2.0), jnp.float32(jnp.e)))
    0.4000000059604645
  """
  log_lat = jnp.log(jnp.maximum(latency, jnp.e))
  return ce * a * log_lat**b


def gumbel(
    apply_fn: Callable[..., tuple[jax.Array, Any]],
    params: Any,
    batch_stats: Any,
    alpha: Any,
    *,
    w_opt: optax.GradientTransformation,
    a_opt: optax.GradientTransformation,
    tau: Schedule,
    hard: bool,
    cost_fn: Callable[[Any], jax.Array] | None = None,
    objective: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    regularizer: Callable[[Any, jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
) -> GradientStrategy:
  """A Gumbel-softmax search strategy (the shared engine of GDAS, SNAS, FBNet).

  Args:
    apply_fn: ``apply(params, batch_stats, encoding, x, train)``; for hard
      samples use the supernet's single-path apply so only sampled ops run.
    params, batch_stats, alpha: initial weights, BN statistics, logits.
    w_opt, a_opt: Optax optimizers for weights and for ``alpha``.
    tau: temperature schedule, a function of the step counter.
    hard: hard (straight-through) samples, else soft ones.
    cost_fn: differentiable cost of an encoding (expected latency, FLOPs or
      params of the sample); logged as ``cost`` and passed to ``objective``.
    objective: ``objective(ce, cost) -> loss`` for the architecture step
      (default: ``ce``); the weight step always minimises ``ce``.
    regularizer: ``regularizer(alpha, step) -> scalar`` added to the
      architecture objective (a collapse mitigation that acts on alpha alone,
      e.g. :func:`jnas.strategies.mitigations.beta_decay`); logged as ``arch_reg``.
    key: PRNG key of the samples; :func:`init`'s key is used when ``None``.

  Returns:
    A :class:`GradientStrategy` whose ``encoding`` is ``softmax(alpha)``.

  Example:
    >>> strat = gdas(single_path_apply, params, stats, alpha, total_steps=1000)  # doctest: +SKIP
    >>> state = strat.init(jax.random.key(0))  # doctest: +SKIP
  """
  objective = objective or (lambda ce, cost: ce)

  def loss(p, stats, enc, batch):
    x, y = batch
    logits, new_stats = apply_fn(p, stats, enc, x, True)
    return cross_entropy(logits, y), (new_stats, logits)

  def init(init_key: jax.Array) -> GumbelState:
    k = init_key if key is None else key
    return GumbelState(params, batch_stats, alpha, w_opt.init(params), a_opt.init(alpha),
                       jnp.zeros((), jnp.int32), k)

  def arch_loss(a, p, stats, k, t, batch):
    enc = sample_encoding(k, a, t, hard=hard)
    ce, (new_stats, _) = loss(p, stats, enc, batch)
    cost = cost_fn(enc) if cost_fn is not None else jnp.zeros(())
    return objective(ce, cost), (new_stats, ce, cost)

  def step(state: GumbelState, batch_train: Batch, batch_val: Batch):
    key_next, k_arch, k_weight = jax.random.split(state.key, 3)
    t = tau(state.step)
    (val_obj, (stats, val_ce, cost)), a_grad = jax.value_and_grad(arch_loss, has_aux=True)(
        state.alpha, state.params, state.batch_stats, k_arch, t, batch_val)
    extra = {}
    if regularizer is not None:
      extra["arch_reg"], a_grad = add_regularizer(regularizer, state.alpha, state.step, a_grad)
      val_obj = val_obj + extra["arch_reg"]
    a_updates, a_opt_state = a_opt.update(a_grad, state.a_opt_state, state.alpha)
    alpha = optax.apply_updates(state.alpha, a_updates)
    enc = jax.lax.stop_gradient(sample_encoding(k_weight, alpha, t, hard=hard))
    (train_loss, (stats, logits)), w_grad = jax.value_and_grad(loss, has_aux=True)(
        state.params, stats, enc, batch_train)
    w_updates, w_opt_state = w_opt.update(w_grad, state.w_opt_state, state.params)
    new_params = optax.apply_updates(state.params, w_updates)
    metrics = {"train_loss": train_loss,
               "train_acc": jnp.mean(jnp.argmax(logits, -1) == batch_train[1]),
               "val_loss": val_ce, "arch_objective": val_obj, "cost": cost, "tau": t,
               "grad_norm": optax.tree.norm(w_grad), **extra}
    new_state = GumbelState(new_params, stats, alpha, w_opt_state, a_opt_state, state.step + 1,
                            key_next)
    return new_state, metrics

  return GradientStrategy(init=init, step=step, encoding=lambda s: softmax_encoding(s.alpha),
                          arch_params=lambda s: s.alpha)


def gdas(apply_fn, params, batch_stats, alpha, *, w_opt, a_opt, total_steps: int,
         tau_max: float = 10.0, tau_min: float = 0.1, regularizer=None,
         key: jax.Array | None = None) -> GradientStrategy:
  """GDAS: hard Gumbel samples, temperature linear from 10 to 0.1.

  Pass the supernet's single-path apply (``make_apply(graphdef,
  single_path=True)``): each step then runs one op per edge.

  Example:
    >>> strat = gdas(apply, params, stats, alpha, w_opt=weight_optimizer(),
    ...              a_opt=arch_optimizer(), total_steps=1000)  # doctest: +SKIP
  """
  return gumbel(apply_fn, params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
                tau=linear_tau(tau_max, tau_min, total_steps), hard=True,
                regularizer=regularizer, key=key)


def snas(apply_fn, params, batch_stats, alpha, *, w_opt, a_opt, steps_per_epoch: int,
         tau0: float = 1.0, decay: float = 0.97, cost_fn: Callable[[Any], jax.Array] | None = None,
         resource_weight: float = 0.0, regularizer=None,
         key: jax.Array | None = None) -> GradientStrategy:
  """SNAS: soft Gumbel samples; optional resource penalty ``resource_weight * cost``.

  ``cost_fn`` maps a sample to a differentiable cost (e.g. the expected
  parameters or FLOPs of its ops, or latency from a table).

  Example:
    >>> strat = snas(apply, params, stats, alpha, w_opt=weight_optimizer(),
    ...              a_opt=arch_optimizer(), steps_per_epoch=100)  # doctest: +SKIP
  """
  return gumbel(apply_fn, params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
                tau=exponential_tau(tau0, decay, steps_per_epoch), hard=False, cost_fn=cost_fn,
                objective=lambda ce, cost: ce + resource_weight * cost, regularizer=regularizer,
                key=key)


def fbnet(apply_fn, params, batch_stats, alpha, *, w_opt, a_opt, steps_per_epoch: int,
          latency_fn: Callable[[Any], jax.Array], a: float = 0.2, b: float = 0.6,
          latency_scale: float = 1000.0, tau0: float = 5.0, decay: float = 0.956,
          key: jax.Array | None = None) -> GradientStrategy:
  """FBNet: soft Gumbel samples and the loss ``CE * a * log(LAT(sample)) ** b``.

  ``latency_fn(encoding)`` is the expected latency of a sample under a
  latency table measured on the target device (see
  ``jnas.estimation.latency.expected_latency``, in milliseconds).
  ``LAT = latency_scale * latency_fn(...)``: the default turns jnas's
  milliseconds into microseconds, because ``log(LAT)`` must stay above 1 for
  the latency term to have a gradient (small CPU networks take about 1 ms;
  FBNet's phones took tens of ms).

  Example:
    >>> strat = fbnet(apply, params, stats, alpha, w_opt=weight_optimizer(),
    ...               a_opt=arch_optimizer(), steps_per_epoch=100,
    ...               latency_fn=lambda enc: expected_latency(table, enc))  # doctest: +SKIP
  """
  return gumbel(apply_fn, params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
                tau=exponential_tau(tau0, decay, steps_per_epoch), hard=False,
                cost_fn=lambda enc: latency_scale * latency_fn(enc),
                objective=lambda ce, lat: fbnet_loss(ce, lat, a=a, b=b),
                key=key)
