"""DARTS collapse mitigations as composable hooks of the gradient strategies.

DARTS tends to collapse onto parameter-free ops (skip connections, pooling)
as the search goes on. Each published remedy changes one small piece of the
step, so each is a :class:`Mitigation`: a named tuple of optional hooks that
:func:`jnas.strategies.darts.darts` calls, combined with :func:`chain`:

* ``relax(alpha, step, key) -> encoding``: replaces the softmax; ``key`` is
  ``None`` where a deterministic encoding is wanted (logging, derivation), so
  a stochastic relaxation returns its mean then;
* ``regularizer(alpha, step) -> scalar``: added to the architecture loss;
* ``adjust(encoding, step) -> encoding``: applied in both steps after the
  relaxation (DARTS-'s auxiliary skip);
* ``perturb(encoding, step, key) -> encoding``: the weight step only
  (SDARTS-RS);
* ``prune_steps``: steps at which the weakest live op of every edge is masked
  (the mask lives in the strategy state, so the step stays one compiled
  function).

Example:
  >>> m = chain(fairdarts(), darts_minus(skip_index=3, total_steps=100))
  >>> m.relax is not None and m.adjust is not None
  True
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

RelaxFn = Callable[[Any, jax.Array, "jax.Array | None"], Any]
RegFn = Callable[[Any, jax.Array], jax.Array]
AdjustFn = Callable[[Any, jax.Array], Any]
PerturbFn = Callable[[Any, jax.Array, jax.Array], Any]

# A finite stand-in for -inf on pruned ops: exp() of it is exactly 0 in
# float32, yet it keeps gradients and JSON histories free of inf and NaN.
MASKED_LOGIT = -1e9


class Mitigation(NamedTuple):
  """Optional hooks of a DARTS-style step (``None``/empty: not used).

  Example:
    >>> Mitigation(regularizer=lambda a, s: 0.0).relax is None
    True
  """

  relax: RelaxFn | None = None
  regularizer: RegFn | None = None
  adjust: AdjustFn | None = None
  perturb: PerturbFn | None = None
  prune_steps: tuple[int, ...] = ()


def add_regularizer(regularizer: RegFn, alpha: Any, step: jax.Array, a_grad: Any
                    ) -> tuple[jax.Array, Any]:
  """``(reg, a_grad + d reg / d alpha)``: a regulariser of alpha alone just adds its gradient.

  Shared by DARTS (first and second order) and the Gumbel strategies.

  Example:
    >>> reg, g = add_regularizer(lambda a, s: jnp.sum(a["n"] ** 2), {"n": jnp.ones(2)},
    ...                          jnp.array(0), {"n": jnp.zeros(2)})
    >>> float(reg), g["n"].tolist()
    (2.0, [2.0, 2.0])
  """
  reg, reg_grad = jax.value_and_grad(regularizer)(alpha, step)
  return reg, jax.tree.map(jnp.add, a_grad, reg_grad)


def chain(*mitigations: Mitigation) -> Mitigation:
  """Combines mitigations: regularisers add, adjustments and perturbations compose in order.

  At most one may replace the relaxation; two raise ``ValueError``.

  Example:
    >>> m = chain(beta_decay(1.0, total_steps=10), fairdarts())
    >>> round(float(m.regularizer({"n": jnp.zeros((2, 3))}, jnp.array(10))), 4)  # log(3) + 0
    1.0986
  """
  relaxes = [m.relax for m in mitigations if m.relax is not None]
  if len(relaxes) > 1:
    raise ValueError("at most one mitigation may replace the relaxation (e.g. fairdarts or drnas)")
  regs = [m.regularizer for m in mitigations if m.regularizer is not None]
  adjusts = [m.adjust for m in mitigations if m.adjust is not None]
  perturbs = [m.perturb for m in mitigations if m.perturb is not None]

  def regularizer(alpha, step):
    return sum((r(alpha, step) for r in regs), jnp.zeros((), jnp.float32))

  def adjust(enc, step):
    for f in adjusts:
      enc = f(enc, step)
    return enc

  def perturb(enc, step, key):
    for i, f in enumerate(perturbs):
      enc = f(enc, step, jax.random.fold_in(key, i))
    return enc

  steps = tuple(sorted({s for m in mitigations for s in m.prune_steps}))
  return Mitigation(relax=relaxes[0] if relaxes else None,
                    regularizer=regularizer if regs else None,
                    adjust=adjust if adjusts else None,
                    perturb=perturb if perturbs else None,
                    prune_steps=steps)


def linear_ramp(start: float, end: float, total_steps: int) -> Callable[[jax.Array], jax.Array]:
  """``start`` at step 0 to ``end`` at ``total_steps`` (then held), as a traced function.

  Example:
    >>> float(linear_ramp(1.0, 0.0, 10)(jnp.array(5)))
    0.5
  """
  def schedule(step):
    frac = jnp.clip(step / max(int(total_steps), 1), 0.0, 1.0)
    return start + (end - start) * frac
  return schedule


def _rows(alpha: Any) -> jax.Array:
  """Every leaf's rows (edges) stacked: ``[sum of edges, num_ops]``."""
  leaves = jax.tree.leaves(alpha)
  return jnp.concatenate([a.reshape(-1, a.shape[-1]).astype(jnp.float32) for a in leaves])


# ---- Relaxations ----


def fairdarts(w01: float = 10.0) -> Mitigation:
  """FairDARTS: independent sigmoids instead of a softmax, plus the zero-one loss.

  Chu et al., "Fair DARTS: Eliminating Unfair Advantages in Differentiable
  Architecture Search", ECCV 2020. The loss ``-w01 * mean((sigmoid(alpha) -
  0.5) ** 2)`` pushes every weight towards 0 or 1 (the paper uses
  ``w01 = 10``), so ops stop competing for a shared unit of weight.

  Example:
    >>> m = fairdarts()
    >>> m.relax({"n": jnp.zeros((1, 2))}, jnp.array(0), None)["n"].tolist()
    [[0.5, 0.5]]
  """
  def relax(alpha, step, key):
    del step, key
    return jax.tree.map(jax.nn.sigmoid, alpha)

  def zero_one(alpha, step):
    del step
    return -w01 * jnp.mean((jax.nn.sigmoid(_rows(alpha)) - 0.5) ** 2)

  return Mitigation(relax=relax, regularizer=zero_one)


def drnas_concentration(alpha: jax.Array) -> jax.Array:
  """DrNAS's positive Dirichlet concentration ``elu(alpha) + 1``.

  The floor keeps pruned ops (logit :data:`MASKED_LOGIT`) at a tiny positive
  concentration: a zero one makes the gamma sampler's gradient NaN.
  """
  return jnp.maximum(jax.nn.elu(alpha) + 1.0, 1e-6)


def drnas(anchor_weight: float = 1e-3) -> Mitigation:
  """DrNAS: the encoding is a reparameterised Dirichlet sample.

  Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021. The
  concentration is ``beta = elu(alpha) + 1`` (the paper's positive map); each
  edge's weights are a sample of ``Dirichlet(beta)`` whose pathwise gradient
  reaches ``alpha``. Without a key (logging, derivation) the encoding is the
  Dirichlet mean ``beta / sum(beta)``. The anchor regulariser
  ``anchor_weight * ||beta - 1||^2`` keeps the concentration near the uniform
  prior (``0`` turns it off).

  Example:
    >>> m = drnas()
    >>> m.relax({"n": jnp.zeros((1, 4))}, jnp.array(0), None)["n"].tolist()
    [[0.25, 0.25, 0.25, 0.25]]
  """
  def relax(alpha, step, key):
    del step
    if key is None:
      return jax.tree.map(lambda a: (lambda b: b / b.sum(-1, keepdims=True))(
          drnas_concentration(a)), alpha)
    leaves, treedef = jax.tree.flatten(alpha)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [
        jax.random.dirichlet(k, drnas_concentration(a).astype(jnp.float32)).astype(a.dtype)
        for k, a in zip(keys, leaves)])

  def anchor(alpha, step):
    del step
    return anchor_weight * jnp.sum((drnas_concentration(_rows(alpha)) - 1.0) ** 2)

  return Mitigation(relax=relax, regularizer=anchor if anchor_weight else None)


# ---- Regularisers, adjustments and perturbations ----


def beta_decay(weight_max: float = 50.0, total_steps: int = 1) -> Mitigation:
  """beta-DARTS: the Beta-Decay regulariser ``lambda(step) * mean_edges logsumexp(alpha)``.

  Ye et al., "beta-DARTS: Beta-Decay Regularization for Differentiable
  Architecture Search", CVPR 2022. ``lambda`` rises linearly from 0 to
  ``weight_max`` over the search; the authors' code reaches 50 after 100
  epochs (0.5 per epoch), so scale ``weight_max`` with the search's length.

  Example:
    >>> m = beta_decay(2.0, total_steps=10)
    >>> float(m.regularizer({"n": jnp.zeros((3, 2))}, jnp.array(10)))  # 2 * log(2)
    1.3862943649291992
  """
  weight = linear_ramp(0.0, weight_max, total_steps)

  def reg(alpha, step):
    return weight(step) * jnp.mean(jax.nn.logsumexp(_rows(alpha), axis=-1))

  return Mitigation(regularizer=reg)


def darts_minus(skip_index: int, total_steps: int, beta0: float = 1.0) -> Mitigation:
  """DARTS-: an auxiliary skip connection whose weight falls linearly from ``beta0`` to 0.

  Chu et al., "DARTS-: Robustly Stepping out of Performance Collapse Without
  Indicators", ICLR 2021. The auxiliary skip carries the gradient that would
  otherwise favour the candidate skip op, and vanishes by the end of the
  search. In the DARTS supernet the ``skip_connect`` candidate is exactly that
  identity (a factorised reduction on reduction edges), so the auxiliary term
  is ``encoding[..., skip_index] += beta(step)``.

  Example:
    >>> m = darts_minus(skip_index=1, total_steps=10)
    >>> m.adjust({"n": jnp.zeros((1, 3))}, jnp.array(5))["n"].tolist()
    [[0.0, 0.5, 0.0]]
  """
  beta = linear_ramp(beta0, 0.0, total_steps)

  def adjust(enc, step):
    b = beta(step)
    return jax.tree.map(lambda e: e.at[..., skip_index].add(b.astype(e.dtype)), enc)

  return Mitigation(adjust=adjust)


def sdarts_rs(eps_min: float = 0.03, eps_max: float = 0.3, total_steps: int = 1) -> Mitigation:
  """SDARTS-RS: uniform noise on the architecture weights during the weight step.

  Chen & Hsieh, "Stabilizing Differentiable Architecture Search via
  Perturbation-based Regularization", ICML 2020. The relaxed weights get
  ``U[-eps, eps]`` noise, clipped to ``[0, 1]``, before the weights' forward
  pass, so the weights learn to do well in a neighbourhood of the
  architecture (an implicit penalty on the Hessian's norm). The authors'
  code ramps ``eps`` linearly from 0.03 to 0.3 over the search.

  Example:
    >>> m = sdarts_rs(0.1, 0.1)
    >>> e = m.perturb({"n": jnp.full((2, 3), 0.5)}, jnp.array(0), jax.random.key(0))["n"]
    >>> bool(jnp.all(jnp.abs(e - 0.5) <= 0.1))
    True
  """
  eps = linear_ramp(eps_min, eps_max, total_steps)

  def perturb(enc, step, key):
    leaves, treedef = jax.tree.flatten(enc)
    keys = jax.random.split(key, len(leaves))
    e = eps(step)
    return jax.tree.unflatten(treedef, [
        jnp.clip(x + jax.random.uniform(k, x.shape, x.dtype, -1.0, 1.0) * e.astype(x.dtype),
                 0.0, 1.0) for k, x in zip(keys, leaves)])

  return Mitigation(perturb=perturb)


# ---- Progressive pruning and early stopping ----


def progressive_pruning(prune_steps: Sequence[int]) -> Mitigation:
  """P-DARTS-style pruning: at each of ``prune_steps`` every edge loses its weakest live op.

  Chen et al., "Progressive Differentiable Architecture Search: Bridging the
  Depth Gap between Search and Evaluation", ICCV 2019 (ops are dropped by
  their architecture weight between stages). The mask is part of the
  strategy state; pruned ops get the logit :data:`MASKED_LOGIT` and weight 0.
  An edge's last live op is never pruned.

  Example:
    >>> progressive_pruning([100, 200]).prune_steps
    (100, 200)
  """
  return Mitigation(prune_steps=tuple(sorted({int(s) for s in prune_steps})))


def init_mask(alpha: Any) -> Any:
  """Every op live: a boolean pytree shaped like ``alpha``."""
  return jax.tree.map(lambda a: jnp.ones(a.shape, bool), alpha)


def apply_mask(alpha: Any, mask: Any) -> Any:
  """``alpha`` with pruned ops at :data:`MASKED_LOGIT`."""
  return jax.tree.map(lambda a, m: jnp.where(m, a, jnp.asarray(MASKED_LOGIT, a.dtype)), alpha, mask)


def prune_weakest(mask: Any, alpha: Any, step: jax.Array, prune_steps: tuple[int, ...]) -> Any:
  """The mask after this step's pruning: unchanged unless ``step`` is in ``prune_steps``.

  Example:
    >>> m = prune_weakest({"n": jnp.ones((1, 3), bool)}, {"n": jnp.array([[0.0, -1.0, 1.0]])},
    ...                   jnp.array(5), (5,))
    >>> m["n"].tolist()
    [[True, False, True]]
  """
  if not prune_steps:
    return mask
  hit = jnp.any(step == jnp.asarray(prune_steps))

  def one(m, a):
    weakest = jnp.argmin(jnp.where(m, a, jnp.inf), axis=-1)
    drop = jax.nn.one_hot(weakest, a.shape[-1], dtype=bool)
    drop = drop & (jnp.sum(m, axis=-1, keepdims=True) > 1) & hit
    return m & ~drop

  return jax.tree.map(one, mask, alpha)


def skip_connect_stop(space: Any, max_skips: int = 2, cell: str = "normal"
                      ) -> Callable[[Any], bool]:
  """DARTS+'s early stop: ``True`` once the derived ``cell`` has ``max_skips`` skip connections.

  Liang et al., "DARTS+: Improved Differentiable Architecture Search with
  Early Stopping", 2019 (criterion: two or more skip connections in the
  normal cell). The predicate takes host-side architecture parameters
  (``jax.device_get(strategy.arch_params(state))``) and derives the cell
  with ``space.encoding_to_genotype``; call it once per epoch. On the
  NAS-Bench-201 space (one cell, no ``normal``) it counts the cell's edges.

  Example:
    >>> stop = skip_connect_stop(DartsSpace())  # doctest: +SKIP
    >>> stop(jax.device_get(strategy.arch_params(state)))  # doctest: +SKIP
    False
  """
  def should_stop(arch_params: Any) -> bool:
    genotype = space.encoding_to_genotype(arch_params)
    # A DARTS genotype lists (op, input) pairs per cell; a NAS-Bench-201 one has one op per edge.
    ops = [op for op, _ in getattr(genotype, cell)] if hasattr(genotype, cell) else genotype.ops
    return sum(1 for op in ops if op == "skip_connect") >= max_skips
  return should_stop
