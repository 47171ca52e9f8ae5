"""A mixed op over arbitrary candidate modules, with a single-path (chosen-op-only) mode.

The DARTS supernet stacks its candidates for speed (:class:`jnas.supernet.darts_edges.MixedEdges`);
spaces whose candidates are whole blocks (FBNet/MobileNetV2 chains) or plain
dense convolutions (NAS-Bench-201) use this simpler form: one module per
candidate, mixed by the encoding's weights, or only the arg-max candidate run
through :func:`jnas.ops.primitives.switch_recompute`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.ops import primitives as P


class MixedCandidates(nnx.Module):
  """Every candidate of one choice point; the output is ``sum_k w[k] * candidate_k(x)``.

  Args:
    candidates: one module per candidate, each called as ``m(x, train=...)``
      and all giving outputs of one shape.
    zero: per candidate, whether it is the ``none`` op (always zero). Zero
      candidates are left out of the mixed sum, which they cannot change.

  Example:
    >>> from jnas.train.nb201_network import build_nb201_op
    >>> ops = ("none", "skip_connect", "nor_conv_3x3")
    >>> m = MixedCandidates([build_nb201_op(o, 4, ndim=1, affine=False, rngs=nnx.Rngs(0))
    ...                      for o in ops], zero=[o == "none" for o in ops])
    >>> m(jnp.ones((2, 10, 4)), jnp.array([0.0, 1.0, 0.0]), train=False).shape
    (2, 10, 4)
  """

  def __init__(self, candidates: Sequence[nnx.Module], zero: Sequence[bool] = ()):
    if not candidates:
      raise ValueError("a mixed op needs at least one candidate")
    zero = tuple(bool(z) for z in zero) or (False,) * len(candidates)
    if len(zero) != len(candidates):
      raise ValueError(f"zero has {len(zero)} entries for {len(candidates)} candidates")
    self.candidates = nnx.List(list(candidates))
    self.zero = zero

  def __call__(self, x: jax.Array, weights: jax.Array, *, train: bool,
               single_path: bool = False) -> jax.Array:
    if single_path:
      return self.single_path(x, weights, train=train)
    out = None
    for k, cand in enumerate(self.candidates):
      if self.zero[k]:
        continue
      y = cand(x, train=train) * weights[k].astype(x.dtype)
      out = y if out is None else out + y
    if out is None:  # only zero candidates
      out = self.candidates[0](x, train=train)
    return out

  def single_path(self, x: jax.Array, weights: jax.Array, *, train: bool) -> jax.Array:
    """Runs only candidate ``argmax(weights)``, scaled by its weight.

    The candidates' weights and batch statistics go through
    :func:`jnas.ops.primitives.switch_recompute` as one tuple; branch ``k``
    uses (and updates the statistics of) entry ``k`` only, so only the chosen
    candidate runs, forward and backward. For a one-hot (or hard
    straight-through) ``weights`` the output equals :meth:`__call__`'s, and
    the gradient reaches ``weights[chosen]``.
    """
    idx = jnp.argmax(weights)
    parts = [nnx.split(c, nnx.Param, nnx.BatchStat) for c in self.candidates]
    graphdefs = [g for g, _, _ in parts]
    params = tuple(p for _, p, _ in parts)
    stats = tuple(s for _, _, s in parts)

    def branch(k: int, x, params, stats):
      y, s_k = _run_module(graphdefs[k], train, P.trace_settings(), x, params[k], stats[k])
      new = list(stats)
      new[k] = s_k
      return y, tuple(new)

    branches = [functools.partial(branch, k) for k in range(len(parts))]
    y, new_stats = P.switch_recompute(branches, idx, x, params, stats)
    if train:
      for cand, s in zip(self.candidates, new_stats):
        nnx.update(cand, s)
    return y * weights[idx].astype(y.dtype)


# Jitted with static arguments so that a candidate's trace (and those of its JVP and transpose)
# is reused by every choice point with the same module structure and shapes: FBNet's 22 blocks
# repeat a few. `settings` (P.trace_settings()) keeps traces made under other primitive settings
# apart. Merging inside the jitted function also gives the branch fresh Variables in its trace
# (the backward pass re-runs it under jax.vjp, where NNX refuses to update Variables made
# outside).
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_module(graphdef: Any, train: bool, settings: tuple, x: jax.Array, params: Any,
                stats: Any) -> tuple[jax.Array, Any]:
  del settings
  mod = nnx.merge(graphdef, params, stats)
  y = mod(x, train=train)
  return y, nnx.state(mod, nnx.BatchStat)
