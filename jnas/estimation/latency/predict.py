"""A network's latency from a table: exact for a genotype, differentiable for an encoding."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jnas.estimation.latency.table import LatencyTable
from jnas.spaces.chain import ChainGenotype


def predicted_latency(table: LatencyTable, genotype: ChainGenotype) -> float:
  """Milliseconds: the fixed cost plus each block's chosen candidate's entry.

  Example:
    >>> predicted_latency(table, ChainGenotype(("k3", "k5")))  # doctest: +SKIP
    0.0123
  """
  if len(genotype.blocks) != table.ops_ms.shape[0]:
    raise ValueError(f"genotype has {len(genotype.blocks)} blocks, the latency table "
                     f"{table.ops_ms.shape[0]}")
  total = table.fixed_ms
  for i, name in enumerate(genotype.blocks):
    if name not in table.candidates:
      raise ValueError(f"candidate {name!r} at block {i} is not in the latency table")
    total += float(table.ops_ms[i, table.candidates.index(name)])
  return total


def expected_latency(table: LatencyTable, encoding: Mapping[str, Any] | jax.Array) -> jax.Array:
  """Milliseconds expected under an encoding: ``fixed + sum(w * table)`` (differentiable).

  ``encoding["blocks"]`` (or the array itself) is ``[..., num_blocks,
  num_candidates]``; leading batch axes are kept. A one-hot encoding gives
  :func:`predicted_latency`.

  Example:
    >>> jax.grad(lambda w: expected_latency(table, {"blocks": w}))(w)  # doctest: +SKIP
  """
  w = encoding["blocks"] if isinstance(encoding, Mapping) else encoding
  w = jnp.asarray(w)
  if w.shape[-2:] != table.ops_ms.shape:
    raise ValueError(f"encoding has shape {tuple(w.shape)}, the latency table "
                     f"{table.ops_ms.shape} (blocks, candidates)")
  ops = jnp.asarray(table.ops_ms, w.dtype if jnp.issubdtype(w.dtype, jnp.floating)
                    else jnp.float32)
  return jnp.sum(w * ops, axis=(-2, -1)) + table.fixed_ms
