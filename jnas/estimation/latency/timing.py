"""Timing compiled calls on the current backend, and what they were timed on.

Placeholder weights, compiled forward passes of single ops, the dispatch
baseline, interleaved timing rounds and the XLA:CPU thread setting: everything
:mod:`jnas.estimation.latency.measure` needs to turn a module into milliseconds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

DTYPES = ("float32", "bfloat16", "float16")


def device_description() -> dict[str, Any]:
  """What the table was measured on: JAX device kind, platform, CPU model, device count.

  Example:
    >>> device_description()["platform"] in ("cpu", "gpu", "tpu")
    True
  """
  dev = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"device_kind": str(dev.device_kind), "platform": dev.platform, "cpu_model": cpu,
          "num_devices": jax.device_count(), "host": platform.node(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def set_cpu_threads(threads: int) -> None:
  """Sets how many threads XLA:CPU uses inside one op; call before JAX starts its backend.

  ``threads=1`` runs every op on one thread (Eigen's thread pool off): the
  setting to measure in when small ops dominate, and far less sensitive to
  other processes on a shared machine, where waking pool threads costs more
  than the op. ``0`` keeps XLA's default. The flags end up in the table's
  ``device.xla_flags``.

  Example:
    >>> set_cpu_threads(1)  # doctest: +SKIP
  """
  if threads < 0:
    raise ValueError(f"threads must be >= 0, got {threads}")
  if threads == 0:
    return
  flags = os.environ.get("XLA_FLAGS", "").split()
  flags = [f for f in flags if not f.startswith(("--xla_cpu_multi_thread_eigen",
                                                  "intra_op_parallelism_threads"))]
  if threads == 1:
    flags.append("--xla_cpu_multi_thread_eigen=false")
  flags.append(f"intra_op_parallelism_threads={threads}")
  os.environ["XLA_FLAGS"] = " ".join(flags)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_calls(calls: Sequence[tuple[Callable[..., Any], Sequence[Any]]], *, repeats: int = 20,
               warmup: int = 3, min_repeat_s: float = 1e-3, stat: str = "median",
               clock: str = "wall") -> list[float]:
  """Seconds per call of each ``fn(*args)`` in ``calls``, measured in interleaved rounds.

  Each call is warmed up, then calibrated to ``number`` back-to-back calls
  lasting about ``min_repeat_s``; each call is timed alone and waited for
  (``jax.block_until_ready``). Round ``r`` runs one repeat of every call in
  turn, so a burst of load from other processes hits all calls alike instead
  of one; the result is the median (or minimum, ``stat="min"``) over all
  ``repeats * number`` timed calls.

  ``clock="wall"`` (default) measures elapsed time. ``clock="cpu"`` measures
  this process's CPU time instead: on the CPU backend with one thread per op
  (:func:`set_cpu_threads`) that is the op's run time without the time other
  processes hold the cores, so it suits a shared machine; it is meaningless
  for GPU or TPU, whose work it does not see.

  Example:
    >>> f = jax.jit(lambda x: x * 2)
    >>> [t > 0 for t in time_calls([(f, (jnp.ones(4),))], repeats=3)]
    [True]
  """
  if stat not in ("median", "min"):
    raise ValueError(f"unknown statistic {stat!r} (known: median, min)")
  if clock not in CLOCKS:
    raise ValueError(f"unknown clock {clock!r} (known: {', '.join(CLOCKS)})")
  now = CLOCKS[clock]
  numbers = []
  for fn, args in calls:
    for _ in range(max(warmup, 1)):
      jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    one = max(time.perf_counter() - t0, 1e-7)
    numbers.append(max(1, min(100, int(min_repeat_s / one))))
  times: list[list[float]] = [[] for _ in calls]
  for _ in range(repeats):
    for k, ((fn, args), number) in enumerate(zip(calls, numbers)):
      for _ in range(number):
        t0 = now()
        jax.block_until_ready(fn(*args))
        times[k].append(now() - t0)
  reduce = statistics.median if stat == "median" else min
  return [reduce(t) for t in times]


def time_call(fn: Callable[..., Any], args: Sequence[Any], *, repeats: int = 20,
              warmup: int = 3, min_repeat_s: float = 1e-3, stat: str = "median",
              clock: str = "wall") -> float:
  """Seconds per call of ``fn(*args)`` (see :func:`time_calls`).

  Example:
    >>> f = jax.jit(lambda x: x * 2)
    >>> time_call(f, (jnp.ones(4),), repeats=3) > 0
    True
  """
  return time_calls([(fn, args)], repeats=repeats, warmup=warmup, min_repeat_s=min_repeat_s,
                    stat=stat, clock=clock)[0]


def _check_clock(clock: str) -> None:
  if clock not in CLOCKS:
    raise ValueError(f"unknown clock {clock!r} (known: {', '.join(CLOCKS)})")
  if clock == "cpu" and jax.default_backend() != "cpu":
    raise ValueError(f"clock='cpu' cannot see work on the {jax.default_backend()} backend; "
                     f"use clock='wall'")


def _check_dtype(dtype: str) -> jnp.dtype:
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
  return jnp.dtype(dtype)


def placeholder_weights(build: Callable[[nnx.Rngs], nnx.Module], seed: int = 0,
                        dtype=jnp.float32) -> tuple[Any, Any, Any]:
  """``(graphdef, params, batch_stats)`` of ``build(rngs)`` filled with host random numbers.

  The module is built abstractly (``nnx.eval_shape``): eager JAX initialisers
  would compile one kernel per weight shape, which costs more than compiling
  the op itself. Weights are ``N(0, 0.1^2)``, batch statistics ones; values do
  not change the speed of dense float arithmetic, so this is for timing and
  shape checks, not training.

  Example:
    >>> g, p, s = placeholder_weights(lambda r: nnx.Linear(2, 3, rngs=r))
    >>> p["kernel"].shape
    (2, 3)
  """
  abstract = nnx.eval_shape(lambda: build(nnx.Rngs(seed)))
  graphdef, params, state = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda a: jnp.asarray((0.1 * rng.standard_normal(a.shape)).astype(np.float32), dtype),
      params)
  state = jax.tree.map(lambda a: jnp.ones(a.shape, dtype), state)
  return graphdef, params, state


def _forward_call(build: Callable[[nnx.Rngs], nnx.Module], in_shape: Sequence[int],
                  batch_size: int, dtype, seed: int) -> tuple[Callable, tuple]:
  """A compiled inference-mode forward pass of ``build(rngs)`` and its arguments."""
  graphdef, params, state = placeholder_weights(build, seed, dtype)
  rng = np.random.default_rng(seed + 1)
  x = jnp.asarray(rng.standard_normal((batch_size,) + tuple(in_shape)).astype(np.float32), dtype)

  def fwd(p, s, x):
    return nnx.merge(graphdef, p, s)(x, train=False)

  compiled = jax.jit(fwd).lower(params, state, x).compile()
  return compiled, (params, state, x)


def _dispatch_call(shape, batch_size, dtype) -> tuple[Callable, tuple]:
  # A compiled call that touches its input but computes next to nothing: the
  # fixed price of launching compiled code from Python on this backend.
  x = jnp.zeros((batch_size,) + tuple(shape), dtype)
  p = {"w": jnp.zeros((1,), dtype)}
  fn = jax.jit(lambda p, s, x: x.reshape(-1)[:1] + p["w"]).lower(p, {}, x).compile()
  return fn, (p, {}, x)
