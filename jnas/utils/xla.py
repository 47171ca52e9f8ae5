"""XLA compiler options that jnas passes to its jitted steps (``jax.jit(..., compiler_options=)``).

XLA:CPU hands dot products and elementwise chains to the YNNPACK library
("library fusions", ``xla_cpu_experimental_ynn_fusion_type``). For jnas's
small 1-D networks (the MNIST-1D configs) that costs more than it gives:
measured on the 2-core development machine (jaxlib 0.10.2, same results both
ways), with library fusions off the MNIST-1D search step took 0.165 s instead
of 0.212 s (DARTS), 0.062 s instead of 0.129 s (GDAS), 0.032 s instead of
0.082 s (SPOS), and scoring 256 architectures with the population evaluator
8.0 s instead of 17.2 s. For the paper-size 2-D DARTS network (C=16, 8 cells,
32x32, batch 32) they pay: 10.0 s per step with them, 11.4 s without; and for
the FBNet chain supernet on MNIST-1D too (1.90 s per step with them, 2.29 s
without, both under the same load). With jnas's native CPU kernels
(:mod:`jnas.ops.native`: depthwise convolutions, pools, batch norm) the 2-D
DARTS network gains from turning them off too: 3.51 s per step instead of
5.32 s (DARTS first order), 1.23 s instead of 2.15 s (GDAS), measured back to
back at commit 40274fe (2026-12-02). Hence ``auto``: off for the DARTS
cell space on 1-D inputs, and on 2-D inputs when the native kernels run;
XLA's default elsewhere (the FBNet chain, the pure-JAX ``taps`` forms on
images).

The option is passed per compilation, not through ``XLA_FLAGS``, so one
process can use both settings; on a jaxlib that does not know it (checked
once, with a tiny compilation) nothing is passed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LIBRARY_FUSIONS = ("auto", "on", "off")
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"


@functools.lru_cache(maxsize=None)
def _known_option(name: str, value: str) -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options={name: value})(jnp.zeros((1,)))
  except jax.errors.JaxRuntimeError:  # "No such compile option"
    return False
  return True


def compiler_options(library_fusions: str = "auto", *, ndim: int, fusions_slower: bool = True,
                     native: bool | None = None) -> dict[str, str] | None:
  """The ``compiler_options`` for a jitted step on inputs with ``ndim`` spatial axes.

  Args:
    library_fusions: ``"auto"`` (off for a network they were measured to slow,
      ``fusions_slower``, on 1-D inputs, and on 2-D inputs when the native
      kernels run; XLA's default otherwise),
      ``"on"`` (XLA's default) or ``"off"`` (no YNNPACK library fusions).
      Only the CPU backend is affected.
    ndim: spatial axes of the network's input (1 for sequences, 2 for images).
    fusions_slower: whether library fusions were measured to slow the space's
      networks (its :class:`~jnas.spaces.registry.SpaceKit`; the DARTS cell space).
    native: whether jnas's native CPU kernels run (default: whether the
      process-wide implementation, see
      :func:`jnas.ops.primitives.set_depthwise_impl`, resolves to them now).

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``, or ``None`` for XLA's
    defaults.

  Example:
    >>> compiler_options("auto", ndim=2, native=False) is None
    True
    >>> compiler_options("on", ndim=1) is None
    True
  """
  if library_fusions not in LIBRARY_FUSIONS:
    raise ValueError(f"unknown library_fusions {library_fusions!r} "
                     f"(known: {', '.join(LIBRARY_FUSIONS)})")
  if native is None:
    from jnas.ops.primitives import resolve_depthwise_impl  # noqa: PLC0415 (ops import jax only)
    native = resolve_depthwise_impl() == "native"
  off = library_fusions == "off" or (library_fusions == "auto" and fusions_slower
                                     and (ndim == 1 or native))
  if not off or jax.default_backend() != "cpu" or not _known_option(_YNN_OPTION, ""):
    return None
  return {_YNN_OPTION: ""}


def library_fusions_label(options: dict[str, str] | None) -> str:
  """``"off"`` if ``options`` (from :func:`compiler_options`) turn library fusions off.

  Otherwise ``"default"``: the label the benchmarks print.

  Example:
    >>> library_fusions_label(None)
    'default'
  """
  return "off" if options and options.get(_YNN_OPTION) == "" else "default"
