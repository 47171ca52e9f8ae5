"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019).

Architecture parameters ``alpha`` and network weights are separate pytrees,
each with its own Optax optimizer. A step is two updates:

1. the architecture step on a validation batch (Adam on ``alpha``), using
   either the first-order gradient ``dL_val/dalpha`` at the current weights, or
   the second-order (unrolled) gradient through one virtual weight step
   ``w' = w - xi * (momentum * m + dL_train/dw + wd * w)``:
   ``dL_val(w', a)/da - xi * d2L_train(w, a)/da dw . dL_val(w', a)/dw'``,
   whose mixed second derivative is computed exactly as a gradient of a
   gradient (``jax.vjp`` of ``jax.grad``, which also gives the training
   gradient that the virtual step needs), not by finite differences;
2. the weight step on a training batch (SGD with momentum, cosine schedule,
   gradient clipping and weight decay), with the encoding ``softmax(alpha)``.

Collapse mitigations (FairDARTS, DrNAS, DARTS-, beta-DARTS, SDARTS-RS,
progressive pruning) plug into this step as hooks; see
:mod:`jnas.strategies.mitigations`.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnas.ops.primitives import forward_mode_compatible
from jnas.ops.primitives import twice_differentiable
import jnas.strategies.mitigations as mit
from jnas.strategies.base import Batch, GradientStrategy
from jnas.supernet.functional import cross_entropy


HvpMode = Literal["reverse_over_reverse", "forward_over_reverse", "reverse_over_forward"]
_HVP_MODES = ("reverse_over_reverse", "forward_over_reverse", "reverse_over_forward")


def _check_hvp_mode(mode: str, what: str) -> None:
  if mode not in _HVP_MODES:
    raise ValueError(f"{what} must be one of {', '.join(map(repr, _HVP_MODES))}, got {mode!r}")


class DartsState(NamedTuple):
  """Everything a DARTS search carries from step to step (a pytree)."""

  params: Any
  batch_stats: Any
  alpha: Any
  w_opt_state: optax.OptState
  a_opt_state: optax.OptState
  step: jax.Array


class MitigatedDartsState(NamedTuple):
  """:class:`DartsState` plus what collapse mitigations carry (a pytree).

  A separate type rather than optional fields of :class:`DartsState`: orbax
  stores named tuples by field name, so new fields there would make the
  checkpoints of plain DARTS searches unreadable.
  """

  params: Any
  batch_stats: Any
  alpha: Any
  w_opt_state: optax.OptState
  a_opt_state: optax.OptState
  step: jax.Array
  mask: Any  # the pruning mask, a boolean pytree like alpha
  key: jax.Array  # fold_in(key, step) drives stochastic relaxations and perturbations


def weight_optimizer(lr: float = 0.025, lr_min: float = 0.001, momentum: float = 0.9,
                     weight_decay: float = 3e-4, grad_clip: float = 5.0,
                     total_steps: int = 1) -> optax.GradientTransformation:
  """DARTS's weight optimizer: clip, L2 decay, SGD with momentum on a cosine schedule.

  The order follows PyTorch's DARTS code: gradients are clipped to a global
  norm, then ``weight_decay * w`` is added (SGD's L2 term), then momentum.

  Example:
    >>> tx = weight_optimizer(total_steps=1000)
  """
  schedule = optax.cosine_decay_schedule(lr, max(int(total_steps), 1), alpha=lr_min / lr)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.add_decayed_weights(weight_decay),
      optax.sgd(schedule, momentum=momentum),
  )


def arch_optimizer(lr: float = 3e-4, b1: float = 0.5, b2: float = 0.999,
                   weight_decay: float = 1e-3) -> optax.GradientTransformation:
  """DARTS's architecture optimizer: Adam with L2 decay (PyTorch ``weight_decay``).

  Example:
    >>> tx = arch_optimizer()
  """
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr, b1=b1, b2=b2))


def softmax_encoding(alpha: Any) -> Any:
  """The DARTS relaxation: a softmax over candidate ops on every edge."""
  return jax.tree.map(lambda a: jax.nn.softmax(a, axis=-1), alpha)


def _momentum_of(opt_state: Any, params: Any) -> Any:
  """The SGD momentum buffer inside a weight-optimizer state (zeros if none)."""
  for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.TraceState)):
    if isinstance(s, optax.TraceState):
      return s.trace
  return jax.tree.map(jnp.zeros_like, params)


def darts(
    apply_fn: Callable[..., tuple[jax.Array, Any]],
    params: Any,
    batch_stats: Any,
    alpha: Any,
    *,
    w_opt: optax.GradientTransformation,
    a_opt: optax.GradientTransformation,
    order: int = 1,
    unrolled_lr: float | None = None,
    unrolled_momentum: float = 0.9,
    unrolled_weight_decay: float = 3e-4,
    relax: Callable[[Any], Any] = softmax_encoding,
    mitigation: mit.Mitigation | None = None,
    hvp_mode: HvpMode = "reverse_over_reverse",
) -> GradientStrategy:
  """Builds a DARTS strategy over a supernet's pure ``apply_fn``.

  Args:
    apply_fn: ``apply(params, batch_stats, encoding, x, train) -> (logits,
      new_batch_stats)`` (see :func:`jnas.supernet.functional.make_apply`).
    params, batch_stats: initial supernet weights and BN statistics.
    alpha: initial architecture parameters (pytree matching the encoding).
    w_opt, a_opt: Optax optimizers for weights and for ``alpha``.
    order: 1 (first order) or 2 (unrolled second order).
    unrolled_lr: ``xi``, the virtual step size of second order (DARTS uses the
      weight learning rate; defaults to 0.025).
    unrolled_momentum, unrolled_weight_decay: the weight optimizer's momentum
      and L2 decay, used in the virtual step as DARTS does.
    relax: maps ``alpha`` to the encoding passed to the supernet.
    mitigation: collapse mitigations (see :mod:`jnas.strategies.mitigations`):
      its ``relax`` replaces ``relax``, its regulariser joins the
      architecture loss, its adjustment and perturbation change the
      encodings, and its ``prune_steps`` mask ops in the state. ``None``
      (default) is plain DARTS.
    hvp_mode: how second order takes its exact Hessian-vector product (see
      :func:`grad_and_mixed_hvp`).

  Returns:
    A :class:`GradientStrategy`. Its ``step`` is pure; wrap it in ``jax.jit``.

  Example:
    >>> strat = darts(apply, params, stats, alpha, w_opt=weight_optimizer(),
    ...               a_opt=arch_optimizer())  # doctest: +SKIP
    >>> state = strat.init(jax.random.key(0))  # doctest: +SKIP
    >>> state, metrics = jax.jit(strat.step)(state, (x_t, y_t), (x_v, y_v))  # doctest: +SKIP
  """
  if order not in (1, 2):
    raise ValueError(f"DARTS order must be 1 or 2, got {order}")
  _check_hvp_mode(hvp_mode, "hvp_mode")
  xi = 0.025 if unrolled_lr is None else unrolled_lr

  m = mitigation

  def loss(p, stats, a, batch, enc=relax):
    x, y = batch
    logits, new_stats = apply_fn(p, stats, enc(a), x, True)
    return cross_entropy(logits, y), (new_stats, logits)

  def encoder(state: MitigatedDartsState, *, weight_step: bool, key: jax.Array | None) -> Callable:
    """``alpha -> encoding`` under the mitigation's hooks, at ``state``'s mask and step."""
    if m is None:
      return relax
    base = m.relax or (lambda a, step, k: relax(a))

    def enc(a):
      e = base(mit.apply_mask(a, state.mask), state.step, key)
      # Zeroed again after the relaxation: a sigmoid or Dirichlet of the
      # masked logit is tiny but not always exactly 0.
      e = jax.tree.map(lambda x, mk: jnp.where(mk, x, jnp.zeros((), x.dtype)), e, state.mask)
      if m.adjust is not None and key is not None:
        e = m.adjust(e, state.step)
      if weight_step and m.perturb is not None:
        e = m.perturb(e, state.step, jax.random.fold_in(key, 1))
      return e
    return enc

  def init(key: jax.Array) -> DartsState | MitigatedDartsState:
    if m is None:
      del key  # initial weights and alpha are given; the key is for API symmetry
      return DartsState(params, batch_stats, alpha, w_opt.init(params), a_opt.init(alpha),
                        jnp.zeros((), jnp.int32))
    return MitigatedDartsState(params, batch_stats, alpha, w_opt.init(params),
                               a_opt.init(alpha), jnp.zeros((), jnp.int32),
                               mit.init_mask(alpha), key)

  def first_order_alpha_grad(state, batch_val, enc=relax):
    (l, (stats, _)), g = jax.value_and_grad(loss, argnums=2, has_aux=True)(
        state.params, state.batch_stats, state.alpha, batch_val, enc)
    return l, stats, g

  def second_order_alpha_grad(state, batch_train, batch_val, enc=relax):
    p, stats, a = state.params, state.batch_stats, state.alpha
    buf = _momentum_of(state.w_opt_state, p)
    lf = lambda p_, s_, a_, b_: loss(p_, s_, a_, b_, enc)
    # The training gradient at (w, alpha) is the inner gradient of the Hessian product too.
    g_train, hvp_along = grad_and_mixed_hvp(lambda p_, a_: lf(p_, stats, a_, batch_train)[0],
                                            p, a, mode=hvp_mode)
    p_virtual = jax.tree.map(
        lambda w, m, g: w - xi * (unrolled_momentum * m + g + unrolled_weight_decay * w),
        p, buf, g_train)
    (l, (new_stats, _)), (g_wv, g_av) = jax.value_and_grad(lf, argnums=(0, 2), has_aux=True)(
        p_virtual, stats, a, batch_val)
    hvp = hvp_along(g_wv)
    g = jax.tree.map(lambda ga, h: ga - xi * h, g_av, hvp)
    return l, new_stats, g

  def step(state: DartsState, batch_train: Batch, batch_val: Batch):
    extra = {}
    if m is not None:
      # Pruning first, so this step already trains without the dropped ops.
      state = state._replace(mask=mit.prune_weakest(state.mask, state.alpha, state.step,
                                                    m.prune_steps))
      k_arch, k_weight = jax.random.split(jax.random.fold_in(state.key, state.step))
    # Architecture step on the validation batch.
    enc_a = relax if m is None else encoder(state, weight_step=False, key=k_arch)
    if order == 1:
      val_loss, stats, a_grad = first_order_alpha_grad(state, batch_val, enc_a)
    else:
      val_loss, stats, a_grad = second_order_alpha_grad(state, batch_train, batch_val, enc_a)
    if m is not None and m.regularizer is not None:
      # The regulariser depends on alpha alone, so its gradient simply adds,
      # in first and second order alike.
      extra["arch_reg"], a_grad = mit.add_regularizer(m.regularizer, state.alpha, state.step,
                                                      a_grad)
    a_updates, a_opt_state = a_opt.update(a_grad, state.a_opt_state, state.alpha)
    alpha = optax.apply_updates(state.alpha, a_updates)
    # Weight step on the training batch, with the updated architecture.
    enc_w = relax if m is None else encoder(state, weight_step=True, key=k_weight)
    (train_loss, (stats, logits)), w_grad = jax.value_and_grad(loss, has_aux=True)(
        state.params, stats, alpha, batch_train, enc_w)
    w_updates, w_opt_state = w_opt.update(w_grad, state.w_opt_state, state.params)
    params = optax.apply_updates(state.params, w_updates)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch_train[1])
    metrics = {"train_loss": train_loss, "train_acc": acc, "val_loss": val_loss,
               "grad_norm": optax.tree.norm(w_grad), **extra}
    new_state = state._replace(params=params, batch_stats=stats, alpha=alpha,
                               w_opt_state=w_opt_state, a_opt_state=a_opt_state,
                               step=state.step + 1)
    return new_state, metrics

  def encoding(state: DartsState) -> Any:
    return relax(state.alpha) if m is None else encoder(state, weight_step=False, key=None)(
        state.alpha)

  def arch_params(state: DartsState) -> Any:
    return state.alpha if m is None else mit.apply_mask(state.alpha, state.mask)

  return GradientStrategy(init=init, step=step, encoding=encoding, arch_params=arch_params)


def grad_and_mixed_hvp(f: Callable[[Any, Any], jax.Array], w: Any, a: Any, *,
                       mode: HvpMode = "reverse_over_reverse"
                       ) -> tuple[Any, Callable[[Any], Any]]:
  """``(grad_w f(w, a), v -> d/da (grad_w f(w, a) . v))``: a gradient and its mixed Hessian.

  DARTS's second-order step needs both at the same point: the training
  gradient for the virtual weight step, and later the product of the mixed
  Hessian with a vector that depends on that step. ``mode`` picks how the
  product is taken; both are exact:

  * ``"reverse_over_reverse"`` (default): ``jax.vjp`` of ``a -> grad_w f(w,
    a)``, traced under :func:`~jnas.ops.primitives.twice_differentiable`. The
    gradient is the VJP's primal output, so it is computed once for both
    uses, and every op stays on its hand-written or native CPU kernels,
    whose backward passes have VJPs of their own. On the paper's search
    network cut to 5 cells (batch 8, one CPU core) the product alone
    compiled in 30 s against 113 s and ran in 1.06 s against 1.57 s, with
    643 MB of XLA scratch memory against 803 MB
    (benchmarks/results/README.md).
  * ``"forward_over_reverse"``: the JVP along ``v`` of the gradient with
    respect to ``a``, traced in the ops' plain-autodiff forms (JAX cannot take
    a JVP through custom VJPs); the gradient is computed separately.
  * ``"reverse_over_forward"``: the gradient with respect to ``a`` of the
    directional derivative ``jvp(f(., a), w, v)``, in the same plain forms.

  Example:
    >>> f = lambda w, a: jnp.sum(w * a) ** 2
    >>> g, hvp = grad_and_mixed_hvp(f, jnp.ones(2), jnp.ones(2))
    >>> g, hvp(jnp.array([1.0, 0.0]))
    (Array([4., 4.], dtype=float32), Array([6., 2.], dtype=float32))
  """
  _check_hvp_mode(mode, "mixed_hvp mode")
  if mode == "reverse_over_reverse":
    with twice_differentiable():
      g, vjp = jax.vjp(lambda a_: jax.grad(f, argnums=0)(w, a_), a)

    def hvp(v: Any) -> Any:
      # The transposition traces the backward passes' own VJPs: same context as the forward.
      with twice_differentiable():
        return vjp(v)[0]
    return g, hvp

  def hvp_forward(v: Any) -> Any:
    with forward_mode_compatible():
      if mode == "reverse_over_forward":
        return jax.grad(lambda a_: jax.jvp(lambda w_: f(w_, a_), (w,), (v,))[1])(a)
      _, out = jax.jvp(lambda w_: jax.grad(f, argnums=1)(w_, a), (w,), (v,))
    return out
  return jax.grad(f, argnums=0)(w, a), hvp_forward


def mixed_hvp(f: Callable[[Any, Any], jax.Array], w: Any, a: Any, v: Any, *,
              mode: HvpMode = "reverse_over_reverse") -> Any:
  """Exact ``d/da (d f(w, a)/dw . v)``: the mixed Hessian times ``v``.

  The product half of :func:`grad_and_mixed_hvp` (see there for ``mode``).

  Example:
    >>> f = lambda w, a: jnp.sum(w * a) ** 2
    >>> mixed_hvp(f, jnp.ones(2), jnp.ones(2), jnp.array([1.0, 0.0]))
    Array([6., 2.], dtype=float32)
  """
  return grad_and_mixed_hvp(f, w, a, mode=mode)[1](v)
