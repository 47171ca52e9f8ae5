"""What every primitive shares: the implementation choice and small array helpers.

This module sits at the bottom of the primitives (:mod:`jnas.ops.primitives`,
which re-exports its public names): the process-wide depthwise
implementation (:func:`set_depthwise_impl`), the custom-VJP switch
(:func:`forward_mode_compatible`), shapes of edge-batched activations, the
shifted views that tap-sums read, and one-pass sums (:func:`sum_many`). The
other primitive modules import their state from here; nothing here imports
them.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
from jax import lax

import jnas.ops.native as native

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


_CUSTOM_VJPS: list[bool] = [True]


@contextlib.contextmanager
def forward_mode_compatible():
  """Traces ops without custom VJPs, so ``jax.jvp`` can differentiate through them.

  Depthwise convolution (taps), max pooling and training-mode batch norm have
  hand-written backward passes that XLA:CPU runs and compiles much faster than
  autodiff's. JAX cannot apply forward-mode autodiff to ``custom_vjp``
  functions, so code that takes a JVP of a gradient (DARTS's second-order
  Hessian-vector product in its ``forward_over_reverse`` mode) traces inside
  this context and gets plain autodiff.

  Example:
    >>> from jnas.ops.primitives import pool
    >>> with forward_mode_compatible():
    ...   y = pool(jnp.ones((1, 1, 4, 2)), "max")
  """
  with _switched(_CUSTOM_VJPS, False):
    yield


_TWICE_DIFFERENTIABLE: list[bool] = [False]


@contextlib.contextmanager
def twice_differentiable():
  """Traces ops in forms that reverse-mode autodiff can differentiate twice.

  Every native kernel's backward pass has a VJP of its own (depthwise: the
  other kernels; pooling: a gather at the winning taps; batch norm: its
  backward kernel and a few elementwise terms), so a gradient of a gradient
  runs on the native kernels. What changes inside this context is
  :func:`sum_many`: its one-pass variadic reductions, whose autodiff expands
  into trees of slices and pads, become plain sums. DARTS's second-order step
  takes its Hessian-vector product here, as a gradient of a gradient.

  Example:
    >>> from jnas.ops.primitives import pool
    >>> with twice_differentiable():
    ...   y = pool(jnp.ones((1, 1, 4, 2)), "max")
  """
  with _switched(_TWICE_DIFFERENTIABLE, True):
    yield


@contextlib.contextmanager
def _switched(flag: list[bool], value: bool):
  previous = flag[0]
  flag[0] = value
  try:
    yield
  finally:
    flag[0] = previous


def _native_ok(x: jax.Array) -> bool:
  # The kernels are float32 only and have no forward-mode rule (see forward_mode_compatible).
  return x.dtype == jnp.float32 and _CUSTOM_VJPS[0]


def spatial_ndim(x: jax.Array) -> int:
  """Number of spatial axes of an edge-batched activation ``[E, B, *S, C]``."""
  return x.ndim - 3


def out_size(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
  """Output length of a 'same'-padded (pad = dilation*(kernel-1)//2) window op."""
  pad = dilation * (kernel - 1) // 2
  return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _native_out_shape(x, k_count, e, stride):
  spatial = tuple((n - 1) // stride + 1 for n in x.shape[2:-1])
  return jax.ShapeDtypeStruct((k_count * e, x.shape[1]) + spatial + (x.shape[-1],), x.dtype)


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


def sum_many(terms: Sequence[jax.Array], axes: tuple[int, ...]) -> list[jax.Array]:
  """Sums of several same-shaped arrays over ``axes``, computed in one pass.

  XLA:CPU runs each ``jnp.sum`` as its own loop over memory and does not merge
  sibling reductions; one variadic ``lax.reduce`` reads every input in the same
  loop, which for the depthwise weight gradient (9 or 25 taps) is 4-7x faster.
  When the sum keeps the last (channel) axis, the most major reduced axis is
  summed out first and the small remainder second (two passes, the first
  over long contiguous runs): 5x faster for batch-norm statistics.
  Autodiff of a variadic reduce expands into a tree of slices and pads, so
  under :func:`forward_mode_compatible` and :func:`twice_differentiable` (where
  the sums get differentiated) these are plain sums, one per term.

  Example:
    >>> a, b = sum_many([jnp.ones((2, 3)), 2 * jnp.ones((2, 3))], (1,))
    >>> b.tolist()
    [6.0, 6.0]
  """
  terms = tuple(terms)
  axes = tuple(sorted(a % terms[0].ndim for a in axes))
  if _TWICE_DIFFERENTIABLE[0] or not _CUSTOM_VJPS[0]:
    return [jnp.sum(t, axis=axes) for t in terms]
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
