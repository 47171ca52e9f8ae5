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
  4.2 GB instead of 7.2 GB (measured back to back); reading shared cell
  inputs once (``repeat``), native batch norm and no YNNPACK fusions then
  brought it to 3.5-3.8 s, 21-28 s and 4.1 GB. Where they cannot be built it
  falls back to ``"taps"``.
* ``"taps"``: a sum of ``k**n`` shifted slices times per-channel weights. On
  XLA:CPU this is roughly 100x faster than a grouped convolution, and XLA fuses
  the whole sum into one loop.
* ``"xla"``: ``lax.conv_general_dilated`` with ``feature_group_count``, the
  fast path on GPU and TPU.

The code is split by concern: ``_impl`` (the implementation choice, the
custom-VJP switch and the helpers every primitive shares; it owns the
process-wide settings), ``depthwise`` (depthwise, pointwise and dense
convolutions), ``pooling``, ``batchnorm`` and ``mixing`` (:func:`mix`,
:func:`switch_recompute`). Import from this module.
"""

from jnas.ops._impl import DepthwiseImpl
from jnas.ops._impl import forward_mode_compatible
from jnas.ops._impl import out_size
from jnas.ops._impl import resolve_depthwise_impl
from jnas.ops._impl import set_depthwise_impl
from jnas.ops._impl import spatial_ndim
from jnas.ops._impl import twice_differentiable
from jnas.ops._impl import sum_many
from jnas.ops.batchnorm import batch_norm
from jnas.ops.batchnorm import recalibrating_batch_norm
from jnas.ops.batchnorm import recalibration_serial
from jnas.ops.depthwise import dense_conv
from jnas.ops.depthwise import depthwise_conv
from jnas.ops.depthwise import depthwise_multi
from jnas.ops.depthwise import pointwise_conv
from jnas.ops.depthwise import repeat_rows
from jnas.ops.mixing import mix
from jnas.ops.mixing import switch_recompute
from jnas.ops.pooling import pool
from jnas.ops.pooling import pool_multi

# Internals the tests reach (read, never rebound: the state lives in ``_impl``).
from jnas.ops._impl import _CUSTOM_VJPS
from jnas.ops._impl import _TWICE_DIFFERENTIABLE
from jnas.ops._impl import _DEFAULT_IMPL
from jnas.ops._impl import _native_ok
from jnas.ops.mixing import _mix_fwd_only
from jnas.ops.pooling import _max_pool_autodiff


def trace_settings() -> tuple:
  """Every process-wide setting that changes how the primitives trace, as a hashable key.

  The implementation choice, :func:`forward_mode_compatible`,
  :func:`twice_differentiable` and the active
  :func:`recalibrating_batch_norm` context. A function that caches traces
  of code built from these primitives (a ``jax.jit`` with static arguments)
  passes this key as one, so that a trace made under other settings is
  never replayed.

  Example:
    >>> trace_settings() == trace_settings()
    True
  """
  return (resolve_depthwise_impl(), _CUSTOM_VJPS[0], _TWICE_DIFFERENTIABLE[0],
          recalibration_serial())
