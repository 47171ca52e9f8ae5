"""Combining candidate operations: weighted sums and one chosen branch.

:func:`mix` sums the candidates' outputs with per-edge weights (DARTS);
:func:`switch_recompute` runs only the chosen one (GDAS, SPOS). Part of the
primitives; import them from :mod:`jnas.ops.primitives`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jnas.ops._impl import _CUSTOM_VJPS
from jnas.ops._impl import sum_many

def mix(ys: Sequence[jax.Array], w: jax.Array) -> jax.Array:
  """Weighted sum of candidate outputs: ``sum_k w[:, k] * ys[k]`` per edge.

  Args:
    ys: ``K`` arrays ``[E, B, ...]`` (one per candidate).
    w: ``[E, K]`` mixing weights.

  Its backward pass computes all ``K`` weight gradients in one pass over
  memory (see :func:`sum_many`), which matters for the architecture step.

  Example:
    >>> mix([jnp.ones((2, 3)), jnp.ones((2, 3))], jnp.array([[1., 2.], [3., 4.]])).tolist()
    [[3.0, 3.0, 3.0], [7.0, 7.0, 7.0]]
  """
  ys = tuple(ys)
  if w.shape != (ys[0].shape[0], len(ys)):
    raise ValueError(f"mixing weights have shape {w.shape}, expected {(ys[0].shape[0], len(ys))}")
  if _CUSTOM_VJPS[0]:
    return _mix(ys, w)
  return _mix_fwd_only(ys, w)


def _mix_fwd_only(ys, w):
  bshape = (-1,) + (1,) * (ys[0].ndim - 1)
  out = None
  with jax.named_scope("mix"):
    for k, y in enumerate(ys):
      term = w[:, k].reshape(bshape).astype(y.dtype) * y
      out = term if out is None else out + term
  return out


@jax.custom_vjp
def _mix(ys, w):
  return _mix_fwd_only(ys, w)


def _mix_vjp_fwd(ys, w):
  return _mix_fwd_only(ys, w), (ys, w)


def _mix_vjp_bwd(res, g):
  ys, w = res
  bshape = (-1,) + (1,) * (g.ndim - 1)
  with jax.named_scope("mix_dy"):
    dys = tuple((w[:, k].reshape(bshape).astype(g.dtype) * g).astype(y.dtype)
                for k, y in enumerate(ys))
  with jax.named_scope("mix_dw"):
    axes = tuple(range(1, g.ndim))
    gf = g.astype(jnp.float32)
    dw = jnp.stack(sum_many([gf * y.astype(jnp.float32) for y in ys], axes), axis=1)
  return dys, dw.astype(w.dtype)


_mix.defvjp(_mix_vjp_fwd, _mix_vjp_bwd)


def switch_recompute(branches: Sequence[Callable], index: jax.Array, x: jax.Array, params: Any,
                     stats: Any) -> tuple[jax.Array, Any]:
  """``lax.switch`` over ``branch(x, params, stats) -> (y, new_stats)``, cheap to differentiate.

  Only the chosen branch runs, forward and backward. Autodiff of a plain
  ``lax.switch`` makes every branch return the residuals of *all* branches
  (zero-filled), which on XLA:CPU costs more than running every branch; here
  the backward pass instead recomputes the chosen branch's forward inside its
  own VJP, so the residuals are just the inputs. Gradients flow to ``x`` and
  ``params``; ``stats`` (e.g. batch-norm running statistics) are carried
  through without gradient.

  Example:
    >>> branches = [lambda x, p, s: (x * p, s), lambda x, p, s: (x + p, s)]
    >>> y, _ = switch_recompute(branches, jnp.array(1), jnp.ones(2), jnp.float32(2.0), ())
    >>> y.tolist()
    [3.0, 3.0]
  """
  if not _CUSTOM_VJPS[0]:
    return lax.switch(index, list(branches), x, params, stats)
  return _switch_recompute(tuple(branches), index, x, params, stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _switch_recompute(branches, index, x, params, stats):
  return lax.switch(index, list(branches), x, params, stats)


def _perturbed(tree) -> bool:
  return any(leaf.perturbed for leaf in jax.tree.leaves(tree))


def _primal_values(tree):
  return jax.tree.map(lambda leaf: leaf.value, tree)


def _switch_recompute_fwd(branches, index, x, params, stats):
  # Which inputs need a gradient is known when tracing (symbolic zeros): a GDAS
  # architecture step differentiates with respect to the activations only, and
  # the first cell's inputs do not depend on alpha at all. Computing the other
  # cotangents anyway would put every weight gradient of the supernet into the
  # architecture step (XLA cannot drop unused outputs of a conditional).
  # The flags travel as the residual's structure: None leaves are static.
  wants = {"dx": None} if _perturbed(x) else {}
  if _perturbed(params):
    wants["dparams"] = None
  index, x, params, stats = _primal_values((index, x, params, stats))
  return lax.switch(index, list(branches), x, params, stats), (index, x, params, stats, wants)


def _switch_recompute_bwd(branches, res, cts):
  index, x, params, stats, wants = res
  gy = cts[0]
  if isinstance(gy, SymbolicZero):
    gy = jnp.zeros(gy.aval.shape, gy.aval.dtype)
  argnums = tuple(k for k, name in enumerate(("dx", "dparams")) if name in wants)
  if not argnums:
    return (None, None, None, None)

  def backward_of(branch):
    def run(x, params, stats, gy):
      _, vjp = jax.vjp(lambda *a: branch(*a, stats)[0], x, params)
      grads = vjp(gy)
      return tuple(grads[k] for k in argnums)
    return run

  grads = lax.switch(index, [backward_of(b) for b in branches], x, params, stats, gy)
  out = [None, None]
  for k, g in zip(argnums, grads):
    out[k] = g
  return (None, out[0], out[1], None)


_switch_recompute.defvjp(_switch_recompute_fwd, _switch_recompute_bwd, symbolic_zeros=True)
