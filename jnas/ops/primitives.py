"""Array-level building blocks shared by every candidate operation.

Every function here takes activations with a leading *edge* axis: ``x`` has shape
``[E, B, *spatial, C]``, where ``E`` counts independent edges of a cell that are
computed together (each with its own weights), ``B`` is the batch and
``spatial`` has one axis (sequences) or two (images). A discrete network simply
uses ``E = 1``.

Batching edges this way keeps the compiled program small (one computation per
group of edges instead of one per edge) and hands XLA bigger, better-shaped
work.

Depthwise convolution has three implementations, chosen per backend:

* ``"native"`` (CPU default): C++ kernels called through the XLA FFI
  (:mod:`jnas.ops.native`), built with the system's compiler on first use;
  the choice also routes pooling and training-mode batch norm to their
  native kernels. For the DARTS search step (C=16, 8 cells, batch 32) the
  native depthwise convolutions and pools measured 7.36 s per step against
  10.11 s for ``"taps"``, compiled in 62 s instead of 175 s and peaked at
  4.2 GB instead of 7.2 GB (back to back, session 11); reading shared cell
  inputs once (``repeat``), native batch norm and no YNNPACK fusions then
  brought it to 3.5-3.8 s, 21-28 s and 4.1 GB (session 12). Where they
  cannot be built it falls back to ``"taps"``.
* ``"taps"``: a sum of ``k**n`` shifted slices times per-channel weights. On
  XLA:CPU this is roughly 100x faster than a grouped convolution, and XLA fuses
  the whole sum into one loop.
* ``"xla"``: ``lax.conv_general_dilated`` with ``feature_group_count``, the
  fast path on GPU and TPU.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jnas.ops import native

DepthwiseImpl = Literal["auto", "taps", "xla", "native"]
_IMPLS = ("auto", "taps", "xla", "native")

_DEFAULT_IMPL: list[str] = ["auto"]


def set_depthwise_impl(impl: DepthwiseImpl) -> None:
  """Sets the process-wide default depthwise-convolution implementation.

  Args:
    impl: ``"taps"`` (shifted multiply-adds in JAX), ``"native"`` (jnas's C++
      XLA:CPU kernels, :mod:`jnas.ops.native`, which then also compute the
      pools and training-mode batch norm; ``"taps"`` where they cannot be
      built), ``"xla"`` (grouped convolution, fast on GPU/TPU) or
      ``"auto"`` (pick by backend at trace time).

  Example:
    >>> set_depthwise_impl("taps")
    >>> set_depthwise_impl("auto")
  """
  if impl not in _IMPLS:
    raise ValueError(f"unknown depthwise implementation {impl!r} (known: {', '.join(_IMPLS)})")
  _DEFAULT_IMPL[0] = impl


def resolve_depthwise_impl(impl: DepthwiseImpl | None = None) -> str:
  """Returns the concrete implementation name for ``impl`` on the current backend."""
  impl = impl or _DEFAULT_IMPL[0]
  if impl == "auto":
    impl = "native" if jax.default_backend() == "cpu" else "xla"
  if impl == "native" and not (jax.default_backend() == "cpu" and native.available()):
    return "taps"
  return impl


def spatial_ndim(x: jax.Array) -> int:
  """Number of spatial axes of an edge-batched activation ``[E, B, *S, C]``."""
  return x.ndim - 3


def out_size(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
  """Output length of a 'same'-padded (pad = dilation*(kernel-1)//2) window op."""
  pad = dilation * (kernel - 1) // 2
  return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _materialize(x: jax.Array) -> jax.Array:
  """Keeps XLA from fusing ``x``'s producers into a many-tap consumer.

  A tap-sum reads its input at every tap offset. Left alone, XLA:CPU fuses the
  elementwise chain that produces the input (batch-norm normalisation, the
  mixed-op sum, ReLU) into the consumer and recomputes it once per tap: up to
  25 times per conv, which made single fusions of the DARTS step take 0.5 s.
  An optimization barrier asks XLA to write the input to memory once.

  Measured on jaxlib 0.10.2 (2026-12): XLA:CPU drops optimization barriers
  before fusion, so this is a no-op there; the pads it wraps are written to
  memory anyway, but a many-tap sum that is *not* followed by a reduction
  does get fused into its consumers (and recomputed per consumer) despite a
  barrier. Only a reduction reliably ends a fusion on XLA:CPU.
  """
  return lax.optimization_barrier(x)


def _upsample_pad_config(in_spatial, out_spatial, pad: int, stride: int) -> list:
  """``lax.pad`` config that zero-upsamples an output-sized ``[E, B, *S, C]`` array by
  ``stride`` and pads it so that slices of the input's size line up with every tap
  (the backward passes of strided tap-sums)."""
  cfg = [(0, 0, 0), (0, 0, 0)]
  for n_in, n_out in zip(in_spatial, out_spatial):
    up = (n_out - 1) * stride + 1
    cfg.append((pad, n_in + pad - up, stride - 1))
  return cfg + [(0, 0, 0)]


def _shifted_views(
    x: jax.Array, kernel: int, dilation: int, stride: int, pad_value: float = 0.0
) -> tuple[list[jax.Array], list[int]]:
  """All ``kernel**n`` shifted, strided views of a padded ``x`` (one per tap)."""
  nd = spatial_ndim(x)
  pad = dilation * (kernel - 1) // 2
  spatial = x.shape[2:-1]
  outs = [out_size(s, kernel, stride, dilation) for s in spatial]
  xp = _materialize(jnp.pad(
      x, [(0, 0), (0, 0)] + [(pad, pad)] * nd + [(0, 0)], constant_values=pad_value))
  views = []
  for offs in itertools.product(range(kernel), repeat=nd):
    start = (0, 0) + tuple(o * dilation for o in offs) + (0,)
    limit = (x.shape[0], x.shape[1]) + tuple(
        o * dilation + (n - 1) * stride + 1 for o, n in zip(offs, outs)) + (x.shape[-1],)
    views.append(lax.slice(xp, start, limit, (1, 1) + (stride,) * nd + (1,)))
  return views, outs


def depthwise_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    kernel: int,
    dilation: int = 1,
    stride: int = 1,
    impl: DepthwiseImpl | None = None,
) -> jax.Array:
  """Depthwise ('same'-padded) convolution of edge-batched activations.

  Args:
    x: ``[E, B, *S, C]`` activations.
    w: ``[E, kernel**n, C]`` per-edge, per-tap, per-channel weights (taps in
      row-major order over the spatial axes).
    kernel: kernel size along every spatial axis.
    dilation: spacing between taps.
    stride: output stride along every spatial axis.
    impl: ``"taps"``, ``"xla"`` or ``"auto"``/``None`` (process default).

  Returns:
    ``[E, B, *S_out, C]`` activations.

  Example:
    >>> x = jnp.ones((1, 2, 8, 8, 4)); w = jnp.ones((1, 9, 4))
    >>> depthwise_conv(x, w, kernel=3).shape
    (1, 2, 8, 8, 4)
  """
  nd = spatial_ndim(x)
  if w.shape != (x.shape[0], kernel**nd, x.shape[-1]):
    raise ValueError(
        f"depthwise weights have shape {w.shape}, expected "
        f"{(x.shape[0], kernel**nd, x.shape[-1])}")
  resolved = resolve_depthwise_impl(impl)
  if resolved == "xla":
    return _depthwise_xla(x, w, kernel=kernel, dilation=dilation, stride=stride)
  if resolved == "native" and _native_ok(x):
    return _depthwise_native(x, w, (kernel,), (dilation,), stride, True, False, 1)
  if _CUSTOM_VJPS[0]:
    return _depthwise_taps(x, w, kernel, dilation, stride)
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride)


def _weighted_sum(views: list[jax.Array], w: jax.Array) -> jax.Array:
  bshape = (w.shape[0],) + (1,) * (views[0].ndim - 2) + (w.shape[-1],)
  acc = views[0] * w[:, 0].reshape(bshape)
  for t in range(1, len(views)):
    acc = acc + views[t] * w[:, t].reshape(bshape)
  return acc


def _depthwise_taps_fwd_only(x, w, kernel, dilation, stride):
  with jax.named_scope("depthwise"):
    views, _ = _shifted_views(x, kernel, dilation, stride)
    return _weighted_sum(views, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_taps(x, w, kernel, dilation, stride):
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride)


def _depthwise_taps_vjp_fwd(x, w, kernel, dilation, stride):
  return _depthwise_taps_fwd_only(x, w, kernel, dilation, stride), (x, w)


def _depthwise_taps_vjp_bwd(kernel, dilation, stride, res, g):
  # Autodiff of the shifted slices gives one padded scatter per tap, which
  # XLA:CPU neither fuses nor compiles quickly. The input gradient is instead
  # a correlation of the (zero-upsampled, for stride 2) output gradient with
  # the flipped kernel: one fused loop like the forward pass.
  x, w = res
  nd = spatial_ndim(x)
  pad = dilation * (kernel - 1) // 2
  with jax.named_scope("depthwise_dx"):
    cfg = _upsample_pad_config(x.shape[2:-1], g.shape[2:-1], pad, stride)
    gp = _materialize(lax.pad(g, jnp.zeros((), g.dtype), cfg))
    w_flip = w[:, ::-1]
    views = []
    for offs in itertools.product(range(kernel), repeat=nd):
      start = (0, 0) + tuple(o * dilation for o in offs) + (0,)
      views.append(lax.slice(gp, start, tuple(s + n for s, n in zip(start, x.shape))))
    dx = _weighted_sum(views, w_flip)
  # Weight gradient: every tap's reduction over the batch and positions in one
  # pass (a variadic reduce), 4-7x faster on XLA:CPU than one reduction per tap.
  with jax.named_scope("depthwise_dw"):
    xviews, _ = _shifted_views(x, kernel, dilation, stride)
    axes = tuple(range(1, x.ndim - 1))
    dw = jnp.stack(sum_many([v * g for v in xviews], axes), axis=1)
  return dx, dw.astype(w.dtype)


_depthwise_taps.defvjp(_depthwise_taps_vjp_fwd, _depthwise_taps_vjp_bwd)


def depthwise_multi(
    x: jax.Array,
    ws: Sequence[jax.Array],
    *,
    kernels: Sequence[int],
    dilations: Sequence[int],
    stride: int = 1,
    shared: bool = True,
    relu: bool = False,
    repeat: int = 1,
    impl: DepthwiseImpl | None = None,
) -> jax.Array:
  """``K`` depthwise convolutions of edge-batched activations, stacked: ``[K*E, B, *S_out, C]``.

  The conv candidates of a DARTS mixed op apply ReLU and then depthwise
  kernels of different sizes and dilations to the same input; their second
  stages apply one kernel each to their own input. This computes either case
  as one operation, output block ``k`` (rows ``k*E .. (k+1)*E``) holding
  kernel ``k``'s result, so that on CPU the native kernels
  (:mod:`jnas.ops.native`) read the input once for all kernels, fold ReLU and
  padding into the convolution, and sum the input gradients of shared inputs
  in the same pass.

  Args:
    x: ``[E / repeat, B, *S, C]`` if ``shared`` (every kernel reads it; edge
      ``e`` reads row ``e // repeat``), else ``[K*E, B, *S, C]`` (kernel ``k``
      reads block ``k``).
    ws: ``K`` weight arrays ``[E, kernels[k]**n, C]``.
    kernels: odd kernel sizes, one per weight array.
    dilations: dilations, one per weight array.
    stride: output stride, shared by all kernels.
    shared: whether all kernels read the same input (see ``x``).
    relu: apply ReLU to the input first.
    repeat: with ``shared``, how many consecutive edges read each input row.
      A DARTS cell feeds each input to several edges; passing the input once
      spares the native kernels a broadcast copy forward and its reduction
      backward (their input gradient sums over the edges itself).
    impl: as for :func:`depthwise_conv`; without the native kernels the
      result is computed by :func:`depthwise_conv` per kernel (same numbers).

  Example:
    >>> x = jnp.ones((2, 1, 6, 6, 4))
    >>> ws = [jnp.ones((2, 9, 4)), jnp.ones((2, 25, 4))]
    >>> depthwise_multi(x, ws, kernels=(3, 5), dilations=(1, 1), relu=True).shape
    (4, 1, 6, 6, 4)
  """
  ws, kernels, dilations = tuple(ws), tuple(int(k) for k in kernels), tuple(
      int(d) for d in dilations)
  k_count = len(ws)
  if not k_count or len(kernels) != k_count or len(dilations) != k_count:
    raise ValueError(f"depthwise_multi wants one kernel size and dilation per weight array, got "
                     f"{k_count} arrays, kernels={kernels}, dilations={dilations}")
  nd = spatial_ndim(x)
  e = ws[0].shape[0]
  if repeat < 1 or (repeat > 1 and not shared) or e % repeat:
    raise ValueError(f"depthwise_multi: repeat={repeat} needs shared=True and must divide the "
                     f"{e} edges")
  rows = e // repeat if shared else k_count * e
  if x.shape[0] != rows:
    raise ValueError(f"depthwise_multi input has {x.shape[0]} edge rows, expected {rows} "
                     f"({'shared' if shared else 'one block per kernel'})")
  for w, k in zip(ws, kernels):
    if w.shape != (e, k**nd, x.shape[-1]):
      raise ValueError(f"depthwise weights have shape {w.shape}, expected {(e, k**nd, x.shape[-1])}")
  if resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    w_all = ws[0] if k_count == 1 else jnp.concatenate(ws, axis=1)
    return _depthwise_native(x, w_all.astype(x.dtype), kernels, dilations, stride, shared, relu,
                             repeat)
  r = jax.nn.relu(x) if relu else x
  r = repeat_rows(r, repeat)
  if shared:
    blocks = [r] * k_count
  else:
    blocks = jnp.split(r, k_count, axis=0) if k_count > 1 else [r]
  outs = [depthwise_conv(b, w, kernel=k, dilation=d, stride=stride, impl=impl)
          for b, w, k, d in zip(blocks, ws, kernels, dilations)]
  return outs[0] if k_count == 1 else jnp.concatenate(outs, axis=0)


def _native_ok(x: jax.Array) -> bool:
  # The kernels are float32 only and have no forward-mode rule (see forward_mode_compatible).
  return x.dtype == jnp.float32 and _CUSTOM_VJPS[0]


def _native_out_shape(x, k_count, e, stride):
  spatial = tuple((n - 1) // stride + 1 for n in x.shape[2:-1])
  return jax.ShapeDtypeStruct((k_count * e, x.shape[1]) + spatial + (x.shape[-1],), x.dtype)


def repeat_rows(x: jax.Array, repeat: int) -> jax.Array:
  """Row ``e`` of the result is ``x[e // repeat]`` (the edge layout of ``repeat``).

  Example:
    >>> repeat_rows(jnp.arange(2), 3).tolist()
    [0, 0, 0, 1, 1, 1]
  """
  if repeat == 1:
    return x
  return jnp.broadcast_to(x[:, None], (x.shape[0], repeat) + x.shape[1:]).reshape(
      (x.shape[0] * repeat,) + x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _depthwise_native(x, w_all, kernels, dilations, stride, shared, relu, repeat):
  with jax.named_scope("depthwise"):
    return native.call("jnas_depthwise_fwd", _native_out_shape(x, len(kernels), w_all.shape[0],
                                                                 stride),
                       x, w_all, nd=spatial_ndim(x), stride=stride, shared=shared, relu=relu,
                       repeat=repeat, kernels=kernels, dilations=dilations)


def _depthwise_native_fwd(x, w_all, kernels, dilations, stride, shared, relu, repeat):
  return (_depthwise_native(x, w_all, kernels, dilations, stride, shared, relu, repeat),
          (x, w_all))


def _depthwise_native_bwd(kernels, dilations, stride, shared, relu, repeat, res, g):
  x, w_all = res
  kw = dict(nd=spatial_ndim(x), stride=stride, shared=shared, relu=relu, repeat=repeat,
            kernels=kernels, dilations=dilations)
  with jax.named_scope("depthwise_dx"):
    dx = native.call("jnas_depthwise_dx", jax.ShapeDtypeStruct(x.shape, x.dtype), g, w_all, x,
                     **kw)
  with jax.named_scope("depthwise_dw"):
    dw = native.call("jnas_depthwise_dw", jax.ShapeDtypeStruct(w_all.shape, w_all.dtype), g, x,
                     **kw)
  return dx, dw


_depthwise_native.defvjp(_depthwise_native_fwd, _depthwise_native_bwd)


def sum_many(terms: Sequence[jax.Array], axes: tuple[int, ...]) -> list[jax.Array]:
  """Sums of several same-shaped arrays over ``axes``, computed in one pass.

  XLA:CPU runs each ``jnp.sum`` as its own loop over memory and does not merge
  sibling reductions; one variadic ``lax.reduce`` reads every input in the same
  loop, which for the depthwise weight gradient (9 or 25 taps) is 4-7x faster.
  When the sum keeps the last (channel) axis, the most major reduced axis is
  summed out first and the small remainder second (two passes, the first
  over long contiguous runs): 5x faster for batch-norm statistics.
  Not differentiable: use it inside hand-written backward passes, or when
  custom VJPs are on (see :func:`forward_mode_compatible`).

  Example:
    >>> a, b = sum_many([jnp.ones((2, 3)), 2 * jnp.ones((2, 3))], (1,))
    >>> b.tolist()
    [6.0, 6.0]
  """
  terms = tuple(terms)
  axes = tuple(sorted(a % terms[0].ndim for a in axes))
  if (len(axes) > 1 and terms[0].ndim - 1 not in axes
      and len(terms) <= _TWO_STAGE_MAX_TERMS):
    # Kept-channel reductions run at about 2 GB/s on XLA:CPU (see docstring).
    partial = _variadic_sum(terms, axes[:1])
    return _variadic_sum(partial, tuple(a - 1 for a in axes[1:]))
  return _variadic_sum(terms, axes)


# Above this many terms (the 5x5 depthwise weight gradient's 25) the two-stage
# form's partial sums cost more than they save (measured in isolation on
# XLA:CPU: 27 -> 44 ms); for 9 terms it measured 19 -> 9.5 ms.
_TWO_STAGE_MAX_TERMS = 9


def _variadic_sum(terms: Sequence[jax.Array], axes: tuple[int, ...]) -> list[jax.Array]:
  terms = tuple(terms)
  if len(terms) == 1:
    return [jnp.sum(terms[0], axis=axes)]
  init = tuple(jnp.zeros((), t.dtype) for t in terms)
  out = lax.reduce(terms, init, lambda a, b: tuple(u + v for u, v in zip(a, b)), axes)
  return list(out)


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


def _depthwise_xla(x, w, *, kernel, dilation, stride):
  """Grouped convolution with the edge axis folded into the channels."""
  e, b = x.shape[:2]
  nd = spatial_ndim(x)
  c = x.shape[-1]
  spatial = x.shape[2:-1]
  # [E, B, *S, C] -> [B, *S, E*C]: each (edge, channel) pair is its own group.
  xt = jnp.moveaxis(x, 0, -2).reshape((b,) + spatial + (e * c,))
  # [E, k^n, C] -> [*k, 1, E*C]
  wk = jnp.moveaxis(w, 0, 1).reshape((kernel,) * nd + (1, e * c))
  pad = dilation * (kernel - 1) // 2
  dims = "NWC" if nd == 1 else "NHWC"
  kdims = "WIO" if nd == 1 else "HWIO"
  y = lax.conv_general_dilated(
      xt, wk, window_strides=(stride,) * nd, padding=[(pad, pad)] * nd,
      rhs_dilation=(dilation,) * nd, dimension_numbers=(dims, kdims, dims),
      feature_group_count=e * c)
  out_spatial = y.shape[1:-1]
  return jnp.moveaxis(y.reshape((b,) + out_spatial + (e, c)), -2, 0)


def pointwise_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """1x1 convolution with per-edge weights ``w: [E, C_in, C_out]``.

  Example:
    >>> pointwise_conv(jnp.ones((2, 3, 5, 4)), jnp.ones((2, 4, 6))).shape
    (2, 3, 5, 6)
  """
  # Flattening to [E, N, C] first makes the weight gradient a plain batched
  # matmul; contracting several middle axes is ~3x slower on XLA:CPU.
  e, c = x.shape[0], x.shape[-1]
  with jax.named_scope("pointwise"):
    y = jnp.einsum("enc,ecd->end", x.reshape(e, -1, c), w)
  return y.reshape(x.shape[:-1] + (w.shape[-1],))


def pool(x: jax.Array, kind: str, *, kernel: int = 3, stride: int = 1,
         impl: DepthwiseImpl | None = None) -> jax.Array:
  """'Same'-padded max or average pooling over the spatial axes.

  Average pooling divides by the number of real (non-padding) inputs under the
  window, as DARTS does (``count_include_pad=False``). Max pooling sends each
  window's gradient to its first maximal input. ``impl`` picks as for
  :func:`depthwise_conv`: ``"native"`` (the CPU default) runs jnas's C++
  kernels, anything else the pure-JAX forms below.

  Example:
    >>> pool(jnp.ones((1, 1, 4, 4, 2)), "avg").shape
    (1, 1, 4, 4, 2)
  """
  if kind in _POOL_CODES and resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    return _pool_native(x, (_POOL_CODES[kind],), kernel, stride, 1)
  if kind == "max":
    if _CUSTOM_VJPS[0]:
      return _max_pool(x, kernel, stride)
    return _max_pool_autodiff(x, kernel, stride)
  if kind == "avg":
    # A depthwise conv with unit weights: its hand-written backward pass (one
    # fused correlation) replaces autodiff's one padded scatter per tap.
    nd = spatial_ndim(x)
    unit = jnp.ones((x.shape[0], kernel**nd, x.shape[-1]), x.dtype)
    total = depthwise_conv(x, unit, kernel=kernel, stride=stride, impl="taps")
    ones = jnp.ones((1, 1) + x.shape[2:-1] + (1,), x.dtype)
    count_views, _ = _shifted_views(ones, kernel, 1, stride)
    count = count_views[0]
    for v in count_views[1:]:
      count = count + v
    return total / count
  raise ValueError(f"unknown pool kind {kind!r} (known: avg, max)")


_POOL_CODES = {"max": 0, "avg": 1}


def pool_multi(x: jax.Array, kinds: Sequence[str], *, kernel: int = 3, stride: int = 1,
               repeat: int = 1, impl: DepthwiseImpl | None = None) -> jax.Array:
  """Several :func:`pool` kinds of one input, stacked: ``[len(kinds) * E, B, *S_out, C]``.

  Block ``p`` (rows ``p*E .. (p+1)*E``) is ``pool(repeat_rows(x, repeat),
  kinds[p])``: with ``repeat`` > 1, ``x`` has ``E / repeat`` rows, each read
  by ``repeat`` consecutive edges (see :func:`depthwise_multi`). On CPU the
  native kernels (:mod:`jnas.ops.native`) compute all kinds in one pass over
  the input and their input gradients in one more; elsewhere (or without the
  kernels) this stacks :func:`pool` results, with the same numbers. ``impl``
  picks as for :func:`depthwise_conv` (``"native"`` or not).

  Example:
    >>> pool_multi(jnp.ones((2, 1, 4, 4, 3)), ("max", "avg"), stride=2).shape
    (4, 1, 2, 2, 3)
  """
  kinds = tuple(kinds)
  unknown = [k for k in kinds if k not in _POOL_CODES]
  if not kinds or unknown:
    raise ValueError(f"unknown pool kind {unknown[0] if unknown else None!r} (known: avg, max)")
  if repeat < 1:
    raise ValueError(f"pool_multi: repeat must be >= 1, got {repeat}")
  if resolve_depthwise_impl(impl) == "native" and _native_ok(x):
    return _pool_native(x, tuple(_POOL_CODES[k] for k in kinds), kernel, stride, repeat)
  x = repeat_rows(x, repeat)
  outs = [pool(x, k, kernel=kernel, stride=stride, impl=impl) for k in kinds]
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _pool_native(x, codes, kernel, stride, repeat):
  with jax.named_scope("pool"):
    return native.call("jnas_pool_fwd",
                       _native_out_shape(x, len(codes), x.shape[0] * repeat, stride), x,
                       nd=spatial_ndim(x), stride=stride, kernel=kernel, repeat=repeat,
                       kinds=codes)


def _pool_native_fwd(x, codes, kernel, stride, repeat):
  return _pool_native(x, codes, kernel, stride, repeat), x


def _pool_native_bwd(codes, kernel, stride, repeat, x, g):
  with jax.named_scope("pool_dx"):
    return (native.call("jnas_pool_dx", jax.ShapeDtypeStruct(x.shape, x.dtype), g, x,
                        nd=spatial_ndim(x), stride=stride, kernel=kernel, repeat=repeat,
                        kinds=codes),)


_pool_native.defvjp(_pool_native_fwd, _pool_native_bwd)


_CUSTOM_VJPS: list[bool] = [True]


@contextlib.contextmanager
def forward_mode_compatible():
  """Traces ops without custom VJPs, so ``jax.jvp`` can differentiate through them.

  Depthwise convolution (taps), max pooling and training-mode batch norm have
  hand-written backward passes that XLA:CPU runs and compiles much faster than
  autodiff's. JAX cannot apply forward-mode autodiff to ``custom_vjp``
  functions, so code that takes a JVP of a gradient (DARTS's second-order
  Hessian-vector product) traces inside this context and gets plain autodiff.

  Example:
    >>> with forward_mode_compatible():
    ...   y = pool(jnp.ones((1, 1, 4, 2)), "max")
  """
  previous = _CUSTOM_VJPS[0]
  _CUSTOM_VJPS[0] = False
  try:
    yield
  finally:
    _CUSTOM_VJPS[0] = previous


@jax.named_scope("max_pool")
def _max_pool_argmax(x, kernel, stride):
  """Window maxima and, per output, the index of the first tap that attains it."""
  views, _ = _shifted_views(x, kernel, 1, stride, pad_value=-jnp.inf)
  out = views[0]
  idx = jnp.zeros(out.shape, jnp.int8)
  for k, v in enumerate(views[1:], start=1):
    # Strictly greater keeps the first maximal tap, so ties route the whole
    # gradient to one input (as cuDNN and PyTorch do) instead of duplicating
    # or splitting it; chained max pools create many exact ties.
    better = v > out
    out = jnp.where(better, v, out)
    idx = jnp.where(better, jnp.int8(k), idx)
  return views, out, idx


def _max_pool_autodiff(x, kernel, stride):
  # Selecting the winning view by index differentiates (forward and reverse
  # mode) to the same first-maximum convention as the custom VJP below.
  views, _, idx = _max_pool_argmax(x, kernel, stride)
  idx = lax.stop_gradient(idx)
  out = jnp.zeros_like(views[0])
  for k, v in enumerate(views):
    out = out + jnp.where(idx == k, v, 0.0)
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, kernel, stride):
  return _max_pool_argmax(x, kernel, stride)[1]


def _max_pool_fwd(x, kernel, stride):
  _, out, idx = _max_pool_argmax(x, kernel, stride)
  return out, (idx, x.shape[2:-1])


@jax.named_scope("max_pool_dx")
def _max_pool_bwd(kernel, stride, res, g):
  # "Pull" form: each input gathers the gradient of every window whose (first)
  # maximum it is. Unlike autodiff (one padded scatter per tap), this is one
  # fused loop, ~20x faster on XLA:CPU. For stride 2 the output gradient and
  # the argmax are zero-upsampled first (as in the depthwise backward pass).
  idx, spatial = res
  nd = len(spatial)
  pad = (kernel - 1) // 2
  cfg = _upsample_pad_config(spatial, g.shape[2:-1], pad, stride)
  gp = _materialize(lax.pad(g, jnp.zeros((), g.dtype), cfg))
  ip = lax.pad(idx, jnp.int8(-1), cfg)
  in_shape = g.shape[:2] + tuple(spatial) + g.shape[-1:]
  dx = None
  for k, offs in enumerate(itertools.product(range(kernel), repeat=nd)):
    start = (0, 0) + tuple(2 * pad - o for o in offs) + (0,)
    limit = tuple(st + n for st, n in zip(start, in_shape))
    term = jnp.where(lax.slice(ip, start, limit) == k, lax.slice(gp, start, limit), 0.0)
    dx = term if dx is None else dx + term
  return (dx.astype(g.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def batch_norm(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    *,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Batch norm over every axis but the edge and channel axes.

  Args:
    x: ``[E, B, *S, C]``.
    mean, var: running statistics ``[E, C]``.
    train: normalise with batch statistics and return updated running ones
      (``running = momentum * running + (1 - momentum) * batch``, PyTorch's
      convention with its momentum 0.1 written as 0.9 here); otherwise use the
      running statistics.
    scale, bias: optional affine parameters ``[E, C]``.

  Returns:
    ``(y, (new_mean, new_var))``.

  Example:
    >>> y, _ = batch_norm(jnp.ones((1, 4, 3, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), train=True)
  """
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  recal = _RECALIBRATION[0]
  if train and recal is not None:
    recal.traced += 1
    return _bn_recalibrating(x, recal.calib_batches, recal.batch_size, eps=eps, scale=scale,
                             bias=bias)
  if train:
    n = x.size // (x.shape[0] * x.shape[-1])
    s = jnp.ones_like(mean) if scale is None else scale
    b = jnp.zeros_like(mean) if bias is None else bias
    if _native_ok(x) and resolve_depthwise_impl() == "native":
      y, bmean, bvar = _bn_train_native(x, s.astype(x.dtype), b.astype(x.dtype), eps)
    elif _CUSTOM_VJPS[0]:
      y, bmean, bvar = _bn_train(x, s, b, eps)
    else:
      y, bmean, bvar = _bn_train_fwd_only(x, s, b, eps)
    unbiased = bvar * (n / max(n - 1, 1))
    new_stats = (
        momentum * mean + (1 - momentum) * lax.stop_gradient(bmean),
        momentum * var + (1 - momentum) * lax.stop_gradient(unbiased),
    )
    return y, new_stats
  inv = lax.rsqrt(var + eps)
  if scale is not None:
    inv = inv * scale
  y = (x - mean.reshape(bshape).astype(x.dtype)) * inv.reshape(bshape).astype(x.dtype)
  if bias is not None:
    y = y + bias.reshape(bshape).astype(x.dtype)
  return y, (mean, var)


class _Recalibration:
  """The active :func:`recalibrating_batch_norm` setting, and a count of the BNs it traced."""

  def __init__(self, calib_batches: int, batch_size: int):
    self.calib_batches, self.batch_size = calib_batches, batch_size
    self.traced = 0


_RECALIBRATION: list[_Recalibration | None] = [None]


@contextlib.contextmanager
def recalibrating_batch_norm(calib_batches: int, batch_size: int):
  """Traces training-mode batch norms as SPOS's BN recalibration fused into one pass.

  Inside this context, ``batch_norm(x, ..., train=True)`` reads the examples
  of ``x: [E, N, *S, C]`` as ``calib_batches`` calibration batches of
  ``batch_size`` examples, followed by ``N - calib_batches * batch_size``
  evaluation examples. Each calibration batch is normalised with its own
  batch statistics (as a training-mode pass does); the evaluation examples
  are normalised with the *recalibrated* statistics, the mean over the
  calibration batches of their batch mean and unbiased batch variance, which
  is what running separate calibration passes from zeroed statistics and
  then an inference pass computes. Because every layer's calibration
  statistics depend only on the calibration examples below it, one forward
  pass of ``[calibration; evaluation]`` gives the recalibrated network's
  outputs for the evaluation examples, without the statistics ever leaving
  the network. The returned "new statistics" are the recalibrated ones; the
  running statistics passed in are not read. It is a trace-time setting:
  what it changes is compiled into the functions traced inside it (a
  function already jitted and traced elsewhere replays its old trace). The
  context yields the active setting, whose ``traced`` counts the batch norms
  traced inside it.

  Example:
    >>> x = jnp.arange(24.0).reshape(1, 6, 2, 2)
    >>> with recalibrating_batch_norm(2, 2):
    ...   y, (m, v) = batch_norm(x, jnp.zeros((1, 2)), jnp.ones((1, 2)), train=True)
    >>> y.shape, m.shape
    ((1, 6, 2, 2), (1, 2))
  """
  if calib_batches < 1 or batch_size < 1:
    raise ValueError(f"need at least one calibration batch of at least one example, got "
                     f"{calib_batches} batches of {batch_size}")
  previous = _RECALIBRATION[0]
  _RECALIBRATION[0] = recal = _Recalibration(int(calib_batches), int(batch_size))
  try:
    yield recal
  finally:
    _RECALIBRATION[0] = previous


def _bn_recalibrating(x, k, b, *, eps, scale, bias):
  e, c = x.shape[0], x.shape[-1]
  if x.shape[1] < k * b:
    raise ValueError(f"recalibrating batch norm: {x.shape[1]} examples, fewer than the "
                     f"{k} x {b} calibration examples")
  spatial = x.shape[2:-1]
  xf = x.astype(jnp.float32)
  xc = xf[:, :k * b].reshape((e, k, b) + spatial + (c,))
  n = b * math.prod(spatial)
  bmean, bvar = _one_pass_moments(xc, tuple(range(2, xc.ndim - 1)))  # [E, K, C]
  mean = jnp.mean(bmean, axis=1)
  var = jnp.mean(bvar, axis=1) * (n / max(n - 1, 1))
  s = jnp.ones((e, c), jnp.float32) if scale is None else scale.astype(jnp.float32)
  inv_c = lax.rsqrt(bvar + eps) * s[:, None]
  inv_v = lax.rsqrt(var + eps) * s
  vshape = (e, 1) + (1,) * len(spatial) + (c,)
  if x.shape[1] % b == 0:
    # Whole batches throughout: one elementwise pass over x with per-batch
    # shift and scale (small [E, N / B, C] tables) instead of normalising the
    # two parts separately and concatenating them, a full extra copy.
    m = x.shape[1] // b - k
    shift = jnp.concatenate([bmean, jnp.broadcast_to(mean[:, None], (e, m, c))], axis=1)
    inv = jnp.concatenate([inv_c, jnp.broadcast_to(inv_v[:, None], (e, m, c))], axis=1)
    tshape = (e, k + m, 1) + (1,) * len(spatial) + (c,)
    y = ((xf.reshape((e, k + m, b) + spatial + (c,)) - shift.reshape(tshape))
         * inv.reshape(tshape)).reshape(x.shape)
  else:
    cshape = (e, k, 1) + (1,) * len(spatial) + (c,)
    yc = (xc - bmean.reshape(cshape)) * inv_c.reshape(cshape)
    yv = (xf[:, k * b:] - mean.reshape(vshape)) * inv_v.reshape(vshape)
    y = jnp.concatenate([yc.reshape((e, k * b) + spatial + (c,)), yv], axis=1)
  if bias is not None:
    y = y + bias.astype(jnp.float32).reshape(vshape)
  return y.astype(x.dtype), (mean, var)


def _one_pass_moments(xf: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance over ``axes`` in one pass (E[x^2] - E[x]^2, as flax's fast variance)."""
  n = math.prod(xf.shape[a] for a in axes)
  s1, s2 = sum_many([xf, jnp.square(xf)], axes)
  mean = s1 / n
  return mean, jnp.maximum(s2 / n - jnp.square(mean), 0.0)


@jax.named_scope("batch_norm")
def _bn_train_fwd_only(x, scale, bias, eps):
  axes = tuple(range(1, x.ndim - 1))
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  # Statistics in float32 even for low-precision activations.
  xf = x.astype(jnp.float32)
  if _CUSTOM_VJPS[0]:
    bmean, bvar = _one_pass_moments(xf, axes)
  else:
    bmean = jnp.mean(xf, axis=axes)
    bvar = jnp.mean(jnp.square(xf - bmean.reshape(bshape)), axis=axes)
  inv = lax.rsqrt(bvar + eps) * scale
  y = (xf - bmean.reshape(bshape)) * inv.reshape(bshape) + bias.reshape(bshape)
  return y.astype(x.dtype), bmean, bvar


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train(x, scale, bias, eps):
  return _bn_train_fwd_only(x, scale, bias, eps)


def _bn_train_vjp_fwd(x, scale, bias, eps):
  y, bmean, bvar = _bn_train_fwd_only(x, scale, bias, eps)
  return (y, bmean, bvar), (x, scale, bmean, bvar)


@jax.named_scope("batch_norm_dx")
def _bn_train_vjp_bwd(eps, res, cts):
  # The closed form needs two reductions; autodiff of the forward pass makes
  # XLA:CPU do several more full passes. Cotangents of the batch statistics
  # are ignored: callers only use them under stop_gradient.
  x, scale, bmean, bvar = res
  g = cts[0].astype(jnp.float32)
  axes = tuple(range(1, x.ndim - 1))
  bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  inv = lax.rsqrt(bvar + eps)
  xhat = (x.astype(jnp.float32) - bmean.reshape(bshape)) * inv.reshape(bshape)
  dbias, dscale = sum_many([g, g * xhat], axes)
  n = x.size // (x.shape[0] * x.shape[-1])
  k = (scale * inv).reshape(bshape)
  dx = k * (g - (dbias / n).reshape(bshape) - xhat * (dscale / n).reshape(bshape))
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_bn_train.defvjp(_bn_train_vjp_fwd, _bn_train_vjp_bwd)


# The native kernels (jnas.ops.native) compute the same training-mode batch norm in two streaming
# passes each way; XLA:CPU's kept-channel reductions (the statistics and the backward sums) run at
# 1-3 GB/s, and in the 2-cell DARTS step they took a third of the kernel time.
@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train_native(x, scale, bias, eps):
  stats = jax.ShapeDtypeStruct(scale.shape, x.dtype)
  with jax.named_scope("batch_norm"):
    return native.call("jnas_batch_norm_fwd", (jax.ShapeDtypeStruct(x.shape, x.dtype), stats,
                                               stats), x, scale, bias, nd=spatial_ndim(x),
                       eps=float(eps))


def _bn_train_native_fwd(x, scale, bias, eps):
  y, bmean, bvar = _bn_train_native(x, scale, bias, eps)
  return (y, bmean, bvar), (x, scale, bmean, bvar)


def _bn_train_native_bwd(eps, res, cts):
  # As _bn_train_vjp_bwd: the statistics' cotangents are ignored (they are used under
  # stop_gradient only).
  x, scale, bmean, bvar = res
  with jax.named_scope("batch_norm_dx"):
    return native.call("jnas_batch_norm_dx", (jax.ShapeDtypeStruct(x.shape, x.dtype),
                                              jax.ShapeDtypeStruct(scale.shape, scale.dtype),
                                              jax.ShapeDtypeStruct(scale.shape, scale.dtype)),
                       cts[0], x, scale, bmean, bvar, nd=spatial_ndim(x), eps=float(eps))


_bn_train_native.defvjp(_bn_train_native_fwd, _bn_train_native_bwd)


def dense_conv(
    x: jax.Array, w: jax.Array, *, stride: int = 1, padding: str | Sequence[tuple[int, int]] = "SAME"
) -> jax.Array:
  """Ordinary (dense) convolution of ``[B, *S, C_in]`` with ``w: [*k, C_in, C_out]``.

  Used for stems; XLA's dense convolution is fast on every backend.

  Example:
    >>> dense_conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16))).shape
    (2, 8, 8, 16)
  """
  nd = x.ndim - 2
  dims = "NWC" if nd == 1 else "NHWC"
  kdims = "WIO" if nd == 1 else "HWIO"
  return lax.conv_general_dilated(
      x, w, (stride,) * nd, padding, dimension_numbers=(dims, kdims, dims))
