"""Native XLA:CPU kernels (C++ through the XLA FFI), built on first use.

jnas's depthwise convolutions on CPU are written in JAX as sums of shifted
slices (``impl="taps"``). XLA:CPU fuses those into large loops that take long
to compile, and with the stacked candidates of a DARTS mixed op they run at a
fraction of the memory bandwidth. The C++ kernels compute the same
convolutions, forward, input gradient and weight gradient, for several kernels
at once (the conv candidates of a mixed op) with ReLU folded into the input
(:func:`jnas.ops.primitives.depthwise_multi`), max and average pooling
with their input gradient (:func:`jnas.ops.primitives.pool_multi`), and
training-mode batch norm forward and backward
(:func:`jnas.ops.primitives.batch_norm`). The convolution and pool kernels
let several edges read one input block (``repeat``), as a DARTS cell feeds
each input to several edges. Every backward kernel has a VJP of its own
(the depthwise ones are each other's, the pool gradient's is a gather at the
winning taps, batch norm's is its backward kernel plus a few elementwise
terms), so a gradient of a gradient, as DARTS's second-order step takes, runs
on these kernels too. Each concern has its own file: ``depthwise.cc``,
``pooling.cc`` and ``batch_norm.cc``, sharing the thread-pool loop and FFI
helpers of ``common.h``.

The sources are compiled together, as one translation unit, into one shared
library with the system's C++ compiler (``$CXX``, else ``c++`` or ``g++``)
against the XLA FFI headers that jaxlib ships, the first time a process asks
for it; the library is cached under ``$JNAS_CACHE_DIR/native`` (default
``~/.cache/jnas/native``), keyed by every source and header, the compiler
flags, jaxlib's version and the CPU, so later processes load it in
milliseconds. Without a compiler, on another backend, or with
``JNAS_NATIVE=0`` in the environment, :func:`available` is ``False`` and jnas
uses the pure-JAX forms, which give the same numbers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

_SOURCES = tuple(Path(__file__).with_name(n) for n in ("depthwise.cc", "pooling.cc",
                                                       "batch_norm.cc"))
#: Included by the sources: they key the build cache too, so editing one rebuilds.
_HEADERS = (Path(__file__).with_name("common.h"),)
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
#: FFI target names, by the C++ handler symbol they are bound to.
TARGETS = {"jnas_depthwise_fwd": "JnasDepthwiseFwd", "jnas_depthwise_dx": "JnasDepthwiseDx",
           "jnas_depthwise_dw": "JnasDepthwiseDw", "jnas_pool_fwd": "JnasPoolFwd",
           "jnas_pool_dx": "JnasPoolDx", "jnas_pool_gather": "JnasPoolGather",
           "jnas_batch_norm_fwd": "JnasBatchNormFwd",
           "jnas_batch_norm_dx": "JnasBatchNormDx"}
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def _cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def cache_dir() -> Path:
  """Where built libraries are kept: ``$JNAS_CACHE_DIR/native`` or ``~/.cache/jnas/native``."""
  root = os.environ.get("JNAS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "jnas")
  return Path(root) / "native"


def build(force: bool = False) -> Path:
  """Compiles the kernel sources (unless a matching build is cached) and returns the library path.

  Raises:
    RuntimeError: no C++ compiler was found, or compilation failed (the
      compiler's message is included).

  Example:
    >>> build().suffix  # doctest: +SKIP
    '.so'
  """
  import jaxlib

  cxx = _compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set $CXX, or install g++/clang++)")
  # Names as well as contents: moving code between files changes the key.
  source = b"\0".join(p.name.encode() + b"\0" + p.read_bytes() for p in (*_SOURCES, *_HEADERS))
  key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), cxx.encode(),
                                   jaxlib.__version__.encode(), _cpu_model().encode()]))
  out = cache_dir() / f"jnas_native_{key.hexdigest()[:16]}.so"
  if out.exists() and not force:
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Build to a private name, then rename: concurrent processes (pytest workers) never see a
  # half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  # One translation unit that includes every source, as when the kernels were one file: the
  # XLA FFI header is parsed once (separate units cost about a third more compile time).
  unit = "".join(f'#include "{p.name}"\n' for p in _SOURCES)
  cmd = [cxx, *_FLAGS, "-I", jax.ffi.include_dir(), "-I", str(_SOURCES[0].parent), "-x", "c++",
         "-", "-o", tmp]
  proc = subprocess.run(cmd, input=unit, capture_output=True, text=True)
  if proc.returncode != 0:
    os.unlink(tmp)
    raise RuntimeError(f"compiling {', '.join(p.name for p in _SOURCES)} failed: "
                       f"{proc.stderr.strip()[-2000:]}")
  os.replace(tmp, out)
  return out


def available() -> bool:
  """Whether the native kernels are built, loaded and registered with XLA:CPU.

  The first call in a process builds or loads the library (see the module
  docstring); a failure is reported once as a warning and the answer stays
  ``False``. ``JNAS_NATIVE=0`` turns the kernels off.

  Example:
    >>> isinstance(available(), bool)
    True
  """
  with _LOCK:
    if "ok" in _STATE:
      return bool(_STATE["ok"])
    _STATE["ok"] = False
    if os.environ.get("JNAS_NATIVE", "1") == "0" or jax.default_backend() != "cpu":
      return False
    try:
      lib = ctypes.CDLL(str(build()))
      for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    except (RuntimeError, OSError, AttributeError) as e:
      warnings.warn(f"jnas native CPU kernels unavailable, using the pure-JAX forms: {e}",
                    RuntimeWarning, stacklevel=2)
      return False
    _STATE["lib"] = lib  # keeps the library loaded for the process's lifetime
    _STATE["ok"] = True
    return True


def _attr(value: object) -> object:
  if isinstance(value, (bool, int)):
    return np.int64(value)
  if isinstance(value, float):
    return np.float32(value)
  return np.asarray(value, np.int64)


def call(target: str, result: jax.ShapeDtypeStruct | Sequence[jax.ShapeDtypeStruct],
         *args: jax.Array, **attrs: object) -> jax.Array | tuple[jax.Array, ...]:
  """Calls one of :data:`TARGETS` (``available()`` must be ``True``).

  Integer (and boolean) attributes go to the kernel as int64, floats as
  float32, sequences as int64 arrays; ``result`` may be a sequence of
  shapes, for kernels with several outputs (a tuple is returned). Leading axes that ``jax.vmap`` adds are passed to the
  kernels, which treat every leading index as an independent problem
  (``vmap_method="broadcast_all"``).

  Example:
    >>> y = call("jnas_pool_fwd", jax.ShapeDtypeStruct((1, 1, 4, 2), jnp.float32),
    ...          jnp.ones((1, 1, 4, 2)), nd=1, stride=1, kernel=3, kinds=(0,))  # doctest: +SKIP
  """
  return jax.ffi.ffi_call(target, result, vmap_method="broadcast_all")(
      *args, **{k: _attr(v) for k, v in attrs.items()})
