"""Recomputation that XLA:CPU keeps: a block's internals are rebuilt in both backward passes.

DARTS's exact second-order step differentiates a gradient (reverse over
reverse). Done plainly, it keeps every internal value of the forward pass and
of the first backward pass alive until the second backward pass reaches it:
3.3x the memory of a first-order step on the paper's network. Recomputing
each cell instead should bound it by the cells' boundaries plus one cell's
internals, but ``jax.checkpoint`` and ``nnx.remat`` did not help on XLA:CPU
(benchmarks/results/README.md, stop 36): XLA:CPU drops their optimisation
barriers and common-subexpression elimination then merges the recomputation
back into the original pass (on a toy chain, 76 of 292 convolutions merged
and every barrier gone).

:func:`recompute_twice` replaces the barriers with a false data dependency:
each recomputation reads its inputs plus zero times one element of each
leaf of its incoming cotangent. Floating-point ``0 * g`` is not folded (it
is NaN when ``g`` is), so XLA can neither merge the recomputation with the original nor
run it before the cotangent exists. It has two levels of custom VJPs: the
block's backward pass recomputes the block, and the backward pass of that
backward pass recomputes both, so a gradient of a gradient stores only each
block's inputs and incoming cotangents.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["recompute_twice"]


def _after(tree: Any, signal: Any) -> Any:
  """``tree`` (its float leaves) plus zero times one element of every float leaf of
  ``signal``: the same values, but computed after all of ``signal`` exists and never merged
  with an earlier use of ``tree``. Every leaf, not one: a cotangent that is known early (the
  Hessian-vector product's direction) must not let the recomputation start early."""
  firsts = [x.reshape(-1)[0] for x in jax.tree.leaves(signal)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.size]
  if not firsts:
    return tree
  zero = 0.0 * sum(firsts)
  return jax.tree.map(
      lambda t: t + zero.astype(t.dtype) if jnp.issubdtype(t.dtype, jnp.floating) else t, tree)


def recompute_twice(f: Callable[..., Any]) -> Callable[..., Any]:
  """``f`` with nothing of its internals stored for the first or the second backward pass.

  The returned function computes ``f(*args)``. Differentiated once, its
  backward pass recomputes ``f`` from ``args``; differentiated twice (a
  gradient of a gradient, reverse over reverse), the second backward pass
  recomputes ``f`` and its backward pass from ``args`` and the cotangent.
  The derivatives are exactly those of ``f``. ``args`` are pytrees of arrays;
  integer leaves get ``float0`` cotangents as under :func:`jax.vjp`.

  Example:
    >>> f = recompute_twice(lambda w, x: jnp.sum(jnp.tanh(w * x)))
    >>> w, x = jnp.array(0.5), jnp.arange(3.0)
    >>> g = jax.grad(lambda x_: jax.grad(f)(w, x_).sum())(x)
    >>> bool(jnp.allclose(g, jax.grad(lambda x_: jax.grad(
    ...     lambda w_, x__: jnp.sum(jnp.tanh(w_ * x__)))(w, x_).sum())(x)))
    True
  """
  def backward(args: tuple, g: Any) -> tuple:
    _, vjp = jax.vjp(f, *_after(args, g))
    return vjp(g)

  @jax.custom_vjp
  def backward_recomputed(args: tuple, g: Any) -> tuple:
    return backward(args, g)

  def backward_fwd(args, g):
    return backward(args, g), (args, g)

  def backward_bwd(saved, ct):
    _, vjp = jax.vjp(backward, *_after(saved, ct))
    return vjp(ct)

  backward_recomputed.defvjp(backward_fwd, backward_bwd)

  @jax.custom_vjp
  def run(*args):
    return f(*args)

  def run_fwd(*args):
    # ``run`` again, not ``f``: a gradient of this gradient differentiates this forward pass
    # too, and would otherwise store all of ``f``'s internals for it.
    return run(*args), args

  def run_bwd(args, g):
    return backward_recomputed(args, g)

  run.defvjp(run_fwd, run_bwd)
  return run
