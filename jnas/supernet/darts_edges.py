"""The DARTS supernet's mixed ops: the candidates of a group of edges, stacked or single path.

:class:`MixedEdges` computes a group of edges that share an input (see
:mod:`jnas.supernet.darts`) in two ways: every candidate at once, stacked so
that their 1x1 convolutions and batch norms run as one computation (DARTS,
SNAS), or only each edge's chosen candidate through a switch (GDAS, SPOS,
scoring a population), whose single-candidate traces are cached per shape.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from flax import nnx

from jnas.ops import primitives as P
from jnas.ops.modules import (DepthwiseConv, EdgeBatchNorm, FactorizedReduce, PointwiseConv,
                              factorized_reduce, make_op)


# (kernel, dilation, number of ReLU-depthwise-1x1-BN stages) of the conv candidates.
CONV_SPECS: dict[str, tuple[int, int, int]] = {
    "sep_conv_3x3": (3, 1, 2),
    "sep_conv_5x5": (5, 1, 2),
    "dil_conv_3x3": (3, 2, 1),
    "dil_conv_5x5": (5, 2, 1),
}
POOL_KINDS: dict[str, str] = {"max_pool_3x3": "max", "avg_pool_3x3": "avg"}


def _stack(ys: list[jax.Array]) -> jax.Array:
  return ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=0)


def _unstack(y: jax.Array, parts: int, *, squeeze: bool = False) -> list[jax.Array]:
  """Splits the leading axis into ``parts`` equal pieces.

  ``jnp.split`` rather than one slice per piece: the transpose of a slice is a
  zero pad to the full size, so k slices cost k full-size writes in the
  backward pass; a split transposes to one concatenate.
  """
  pieces = jnp.split(y, parts, axis=0) if parts > 1 else [y]
  return [q[0] for q in pieces] if squeeze else pieces


def _depthwise_group(dws, x: jax.Array, *, shared: bool, stride: int, repeat: int = 1,
                     impl: P.DepthwiseImpl | None) -> jax.Array:
  """ReLU then the :class:`DepthwiseConv` modules ``dws`` as one :func:`P.depthwise_multi`."""
  return P.depthwise_multi(x, [dw.w.get_value().astype(x.dtype) for dw in dws],
                           kernels=[dw.kernel for dw in dws], dilations=[dw.dilation for dw in dws],
                           stride=stride, shared=shared, relu=True, repeat=repeat, impl=impl)


class _CandidateSpec(NamedTuple):
  """What one single-path candidate's computation depends on besides its arrays (hashable)."""

  stride: int
  conv_ops: tuple[str, ...]
  sep_ops: tuple[str, ...]
  pool_ops: tuple[str, ...]
  impl: str | None
  skip_reduces: bool
  bns: tuple[tuple[str, float, float], ...]  # (name, momentum, eps) of each stacked BN


# Jitted with static arguments so that its trace (and the traces of its JVP and transpose) is
# cached: the GDAS and SPOS steps run a candidate in every edge's switch, and the 8-cell network's
# edges repeat a few shapes. Without the cache, tracing the GDAS step (batch 32) took 24 s.
# `settings` (P.trace_settings()) keeps traces made under other primitive settings apart.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _run_candidate(spec: _CandidateSpec, name: str, train: bool, settings: tuple,
                   x: jax.Array, p: dict, s: dict) -> tuple[jax.Array, dict]:
  del settings
  bn_config = {k: (momentum, eps) for k, momentum, eps in spec.bns}

  def bn(key, k, h):
    momentum, eps = bn_config[key]
    mean, var = s[key]
    y, (m, v) = P.batch_norm(h, mean[k][None], var[k][None], train=train, momentum=momentum,
                             eps=eps)
    return y, {**s, key: (mean.at[k].set(m[0]), var.at[k].set(v[0]))}

  if name == "none":
    strided = (slice(None), slice(None)) + (slice(None, None, spec.stride),) * P.spatial_ndim(x)
    return jnp.zeros_like(x[strided]), s
  if name == "skip_connect":
    if not spec.skip_reduces:
      return x, s
    h = factorized_reduce(x, p["fr"][0][None], p["fr"][1][None])
    return bn("skip_bn", 0, h)
  if name in POOL_KINDS:
    k = spec.pool_ops.index(name)
    return bn("pool_bn", k, P.pool(x, POOL_KINDS[name], stride=spec.stride))
  kernel, dilation, stages = CONV_SPECS[name]
  k = spec.conv_ops.index(name)
  h = P.depthwise_conv(jax.nn.relu(x), p["dw1"][k][None].astype(x.dtype), kernel=kernel,
                       dilation=dilation, stride=spec.stride, impl=spec.impl)
  h, s = bn("bn1", k, P.pointwise_conv(h, p["pw1"][k][None].astype(x.dtype)))
  if stages == 2:
    k = spec.sep_ops.index(name)
    h = P.depthwise_conv(jax.nn.relu(h), p["dw2"][k][None].astype(x.dtype), kernel=kernel,
                         dilation=dilation, impl=spec.impl)
    h, s = bn("bn2", k, P.pointwise_conv(h, p["pw2"][k][None].astype(x.dtype)))
  return h, s


class MixedEdges(nnx.Module):
  """A group of ``num_edges`` mixed ops: each edge's output is ``sum_o w[o] * op_o(x)``.

  The candidates are computed *stacked*: the depthwise convolutions of the
  conv candidates run separately (their kernels differ), but their 1x1
  convolutions and batch norms run as one batched computation over
  ``(op, edge)``, and so do the BNs after the pools. This cuts the number of
  kernels XLA compiles and launches several-fold compared to one module per
  op, with no extra arithmetic.

  Example:
    >>> m = MixedEdges(("none", "skip_connect", "sep_conv_3x3"), 3, 8, stride=1, ndim=1,
    ...                rngs=nnx.Rngs(0))
    >>> m(jnp.ones((3, 2, 10, 8)), jnp.ones((3, 3)) / 3, train=True).shape
    (3, 2, 10, 8)
  """

  def __init__(self, primitives: tuple[str, ...], num_edges: int, channels: int, *, stride: int,
               ndim: int, affine: bool = False, impl: P.DepthwiseImpl | None = None,
               rngs: nnx.Rngs):
    self.primitives = tuple(primitives)
    unknown = [p for p in self.primitives
               if p not in CONV_SPECS and p not in POOL_KINDS and p not in ("none", "skip_connect")]
    if unknown:
      raise ValueError(f"the DARTS supernet has no stacked form for op {unknown[0]!r}")
    self.stride, self.num_edges, self.impl = stride, num_edges, impl
    e = num_edges
    self.conv_ops = tuple(p for p in self.primitives if p in CONV_SPECS)
    self.sep_ops = tuple(p for p in self.conv_ops if CONV_SPECS[p][2] == 2)
    self.pool_ops = tuple(p for p in self.primitives if p in POOL_KINDS)
    nc, ns, npool = len(self.conv_ops), len(self.sep_ops), len(self.pool_ops)
    self.dw1 = nnx.List([DepthwiseConv(e, channels, CONV_SPECS[p][0], ndim=ndim, stride=stride,
                                       dilation=CONV_SPECS[p][1], impl=impl, rngs=rngs)
                         for p in self.conv_ops])
    self.pw1 = PointwiseConv(nc * e, channels, channels, rngs=rngs) if nc else None
    self.bn1 = EdgeBatchNorm(nc * e, channels, affine=affine) if nc else None
    self.dw2 = nnx.List([DepthwiseConv(e, channels, CONV_SPECS[p][0], ndim=ndim, impl=impl,
                                       rngs=rngs) for p in self.sep_ops])
    self.pw2 = PointwiseConv(ns * e, channels, channels, rngs=rngs) if ns else None
    self.bn2 = EdgeBatchNorm(ns * e, channels, affine=affine) if ns else None
    self.pool_bn = EdgeBatchNorm(npool * e, channels, affine=False) if npool else None
    self.skip = (make_op("skip_connect", e, channels, stride=stride, ndim=ndim, affine=affine,
                         rngs=rngs) if "skip_connect" in self.primitives else None)

  def candidate_outputs(self, x: jax.Array, *, train: bool, repeat: int = 1
                        ) -> dict[str, jax.Array]:
    """Every non-``none`` candidate's output ``[E, B, *S_out, C]``, by op name.

    ``x`` holds ``E / repeat`` rows, edge ``e`` reading row ``e // repeat``
    (see :meth:`__call__`).
    """
    outs: dict[str, jax.Array] = {}
    if self.conv_ops:
      h = _depthwise_group(self.dw1, x, shared=True, stride=self.stride, repeat=repeat,
                           impl=self.impl)
      h = self.bn1(self.pw1(h), train=train)
      outs.update(zip(self.conv_ops, _unstack(h, len(self.conv_ops))))
      if self.sep_ops:
        h2 = _depthwise_group(self.dw2, _stack([outs[name] for name in self.sep_ops]),
                              shared=False, stride=1, impl=self.impl)
        h2 = self.bn2(self.pw2(h2), train=train)
        outs.update(zip(self.sep_ops, _unstack(h2, len(self.sep_ops))))
    if self.pool_ops:
      h = P.pool_multi(x, [POOL_KINDS[p] for p in self.pool_ops], stride=self.stride,
                       repeat=repeat, impl=self.impl)
      h = self.pool_bn(h, train=train)
      outs.update(zip(self.pool_ops, _unstack(h, len(self.pool_ops))))
    if self.skip is not None:
      outs["skip_connect"] = self.skip(P.repeat_rows(x, repeat), train=train)
    return outs

  # Single path ---------------------------------------------------------------
  # GDAS, SPOS and population evaluation pick one op per edge; running the
  # other candidates would waste most of the step. Each edge then runs only its
  # chosen op through a switch (see P.switch_recompute), with that edge's slice
  # of the stacked weights and statistics.

  def _bns(self) -> dict[str, EdgeBatchNorm]:
    bns = {"bn1": self.bn1, "bn2": self.bn2, "pool_bn": self.pool_bn}
    if isinstance(self.skip, FactorizedReduce):
      bns["skip_bn"] = self.skip.bn
    return {k: v for k, v in bns.items() if v is not None}

  def _per_edge(self, a: jax.Array) -> jax.Array:
    """``[K * E, ...]`` (op-major stacking) -> ``[E, K, ...]``."""
    e = self.num_edges
    return jnp.swapaxes(a.reshape((a.shape[0] // e, e) + a.shape[1:]), 0, 1)

  def _edge_params(self) -> dict:
    p = {}
    if self.conv_ops:
      p["dw1"] = [dw.w.get_value() for dw in self.dw1]  # tap counts differ
      p["pw1"] = self._per_edge(self.pw1.w.get_value())
    if self.sep_ops:
      p["dw2"] = [dw.w.get_value() for dw in self.dw2]
      p["pw2"] = self._per_edge(self.pw2.w.get_value())
    if isinstance(self.skip, FactorizedReduce):
      p["fr"] = jnp.stack([self.skip.conv1.w.get_value(), self.skip.conv2.w.get_value()], 1)
    return p

  def _run_one(self, name: str, x: jax.Array, p: dict, s: dict, *, train: bool):
    """Candidate ``name`` on one edge: ``x: [1, B, *S, C]``, one edge's weights/stats."""
    bns = tuple((k, m.momentum, m.eps) for k, m in self._bns().items())
    spec = _CandidateSpec(self.stride, self.conv_ops, self.sep_ops, self.pool_ops, self.impl,
                          isinstance(self.skip, FactorizedReduce), bns)
    return _run_candidate(spec, name, train, P.trace_settings(), x, p, s)

  def shared_candidates(self, x: jax.Array, edges: tuple[int, ...], *, train: bool
                        ) -> dict[int, tuple[jax.Array, dict]]:
    """What :meth:`single_path` would return on edges ``edges`` for each op, computed once.

    For an input no architecture changes (``x: [B, *S, C]``, the stem's
    output in the first cells), every candidate runs on the group's edges
    ``edges`` through the same single-path kernels as the switch, so that a
    population picks its ops from the result (``single_path(..., shared=)``)
    instead of running them once per architecture. Returns ``{e: (ys, stats)}``:
    ``ys [num_ops, B, *S_out, C]`` (zeros for ``none``) and each batch norm's
    new statistics for edge ``e``, stacked over the ops the same way. It costs
    ``num_ops`` outputs of memory per edge.
    """
    params = self._edge_params()
    stats = {k: (self._per_edge(m.mean.get_value()), self._per_edge(m.var.get_value()))
             for k, m in self._bns().items()}
    out = {}
    for e in edges:
      pe, se = jax.tree.map(lambda a, e=e: a[e], (params, stats))
      runs = [self._run_one(name, x[None], pe, se, train=train) for name in self.primitives]
      out[e] = (jnp.stack([y[0] for y, _ in runs]),
                jax.tree.map(lambda *a: jnp.stack(a), *[st for _, st in runs]))
    return out

  def single_path(self, x: jax.Array, weights: jax.Array, *, train: bool,
                  unroll: bool = False, repeat: int = 1,
                  shared: dict[int, tuple[jax.Array, dict]] | None = None) -> jax.Array:
    """Runs only each edge's chosen op: ``argmax(weights[e])``, scaled by that weight.

    ``weights`` is a one-hot (or hard straight-through Gumbel) matrix
    ``[E, num_ops]``. The output equals :meth:`__call__` for one-hot weights;
    the gradient reaches ``weights[e, chosen]`` (and through a straight-through
    sample, all of alpha), as in GDAS. ``unroll=True`` unrolls the scan over
    the group's edges (same result, no loop) and returns the edges' outputs
    as a list ``E x [B, *S_out, C]`` (``x`` may then be such a list too): for
    evaluation, where the loop's per-iteration slicing costs more than the
    larger program. ``repeat`` > 1: ``x`` holds ``E / repeat`` rows and edge
    ``e`` reads row ``e // repeat`` (as in :meth:`__call__`). ``shared``
    (unrolled only): :meth:`shared_candidates` for some edges, which then pick
    their op's precomputed output instead of running it (their ``x`` is not
    read).
    """
    idx = jnp.argmax(weights, axis=-1)
    params = self._edge_params()
    bns = self._bns()
    stats = {k: (self._per_edge(m.mean.get_value()), self._per_edge(m.var.get_value()))
             for k, m in bns.items()}
    branches = [functools.partial(self._run_one, name, train=train) for name in self.primitives]
    chosen = jnp.take_along_axis(weights, idx[:, None], axis=1)[:, 0]

    # A scan over the group's edges (they share shapes) traces and compiles the
    # switch and its branches once per group instead of once per edge: the
    # 8-cell GDAS step had 112 switches of 8 branches (plus their backward
    # passes) to compile, which took more than 11 minutes.
    def one_edge(carry, xs):
      i, xe, pe, se, we = xs
      y, s_new = P.switch_recompute(branches, i, xe[None], pe, se)
      return carry, (y[0] * we.astype(y.dtype), s_new)

    def picked(e):
      ys, st = shared[e]
      y = lax.dynamic_index_in_dim(ys, idx[e], keepdims=False)
      s_new = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, idx[e], keepdims=False), st)
      return y * chosen[e].astype(y.dtype), s_new

    # Unrolled, the 3-cell MNIST-1D evaluator went from 40 to 33 ms per
    # architecture (forward only; the training steps keep the loop, whose
    # backward pass would compile for much longer unrolled).
    if shared and not unroll:
      raise ValueError("MixedEdges.single_path: shared= needs unroll=True")
    shared = shared or {}
    if unroll:
      if repeat > 1:
        x = P.repeat_rows(x, repeat)
      # A Python loop, not an unrolled scan: the edges' outputs stay separate
      # arrays that the cell adds up directly. Stacking them (what the scan
      # returns) and summing over the stacked axis made one fusion per cell
      # that took a quarter of the evaluator's time.
      outs = [picked(e) if e in shared else
              one_edge(None, (idx[e], x[e]) + jax.tree.map(lambda a, e=e: a[e],
                                                           (params, stats, chosen)))[1]
              for e in range(len(x))]
      ys = [y for y, _ in outs]
      new_stats = jax.tree.map(lambda *a: jnp.stack(a), *[st for _, st in outs])
    else:
      # One scan per input row, the row a constant of its scan: edges that
      # share an input read it in place. Broadcasting the row to every edge
      # and scanning over the copies cost a full-size copy per edge forward,
      # a slice per iteration, the copies as saved residuals and their
      # gradients' sum backward: a fifth of the 8-cell GDAS step.
      parts = []
      for r in range(x.shape[0]):
        def row_edge(carry, xs, xr=x[r]):
          i, pe, se, we = xs
          return one_edge(carry, (i, xr, pe, se, we))
        rows = slice(r * repeat, (r + 1) * repeat)
        parts.append(lax.scan(row_edge, None,
                              jax.tree.map(lambda a: a[rows], (idx, params, stats, chosen)))[1])
      ys, new_stats = jax.tree.map(lambda *a: _stack(list(a)), *parts)
    if train:
      for key, mod in bns.items():
        for j, var in enumerate((mod.mean, mod.var)):
          per_edge = new_stats[key][j]  # [E, K, C]
          var.set_value(jnp.swapaxes(per_edge, 0, 1).reshape(var.get_value().shape))
    return ys

  def __call__(self, x: jax.Array, weights: jax.Array, *, train: bool,
               single_path: bool = False, unroll: bool = False, repeat: int = 1,
               shared: dict[int, tuple[jax.Array, dict]] | None = None) -> jax.Array:
    """Mixed outputs ``[E, B, *S_out, C]`` of edges ``x`` under ``weights [E, num_ops]``.

    ``repeat`` > 1: ``x`` has ``E / repeat`` rows and edge ``e`` reads row
    ``e // repeat``, as when one cell input feeds several edges. The native
    kernels then read each row once and sum its gradients themselves, which
    saves a broadcast copy and its reduction in the backward pass.
    """
    if single_path:
      return self.single_path(x, weights, train=train, unroll=unroll, repeat=repeat,
                              shared=shared)
    outs = self.candidate_outputs(x, train=train, repeat=repeat)
    # "none" contributes exactly zero, so it is left out of the sum.
    live = [k for k, name in enumerate(self.primitives) if name != "none"]
    out = None
    if live:
      out = P.mix([outs[self.primitives[k]] for k in live], weights[:, jnp.array(live)])
    if out is None:  # a space of only "none"
      nd = P.spatial_ndim(x)
      out = jnp.zeros_like(x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * nd])
    return out
