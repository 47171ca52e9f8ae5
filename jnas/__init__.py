"""jnas: neural architecture search in JAX.

Search spaces are data (:mod:`jnas.spaces`), supernets are Flax NNX modules
whose forward pass takes the architecture encoding as an argument
(:mod:`jnas.supernet`), strategies are pure functions over explicit states
(:mod:`jnas.strategies`), and derived architectures retrain from scratch
(:mod:`jnas.train`). The CLI (``jnas search|train|info``) lives in
:mod:`jnas.cli`; :mod:`jnas.run` holds the same entry points for notebooks.

Importing ``jnas`` itself is cheap: it imports neither JAX nor Flax.

On import it adds ``--xla_gpu_enable_triton_gemm=false`` to ``XLA_FLAGS``
unless the variable already mentions that flag: XLA's GPU compiler in
jaxlib 0.11.2 aborts the process (``triton_tiling_propagation.cc: Check
failed: subdim_size_accumulator == dim_size``) on the DARTS supernet when
Triton GEMM fusion is on (seen on an H200). The flag only affects GPUs, and
must be set before JAX starts its backend, hence here. Set
``XLA_FLAGS=--xla_gpu_enable_triton_gemm=true`` to keep Triton GEMMs.
"""

import os as _os

__version__ = "0.1.0"

_TRITON_FLAG = "--xla_gpu_enable_triton_gemm"
if _TRITON_FLAG not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + f" {_TRITON_FLAG}=false").strip()
