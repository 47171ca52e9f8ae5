"""The one pure evaluator that every strategy shares.

``evaluate(params, batch_stats, encoding, batch) -> metrics`` scores one
architecture encoding on one batch. The encoding is a traced argument, so
``jax.vmap(evaluate, in_axes=(None, None, 0, None))`` scores a whole
population with a single compilation.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jnas.supernet.functional import cross_entropy

Evaluator = Callable[[Any, Any, Any, tuple[jax.Array, jax.Array]], dict[str, jax.Array]]


def make_evaluator(apply_fn: Callable[..., tuple[jax.Array, Any]], *,
                   batch_stats: str = "running") -> Evaluator:
  """Returns ``evaluate(params, state, encoding, (x, y)) -> {"loss", "accuracy"}``.

  Args:
    apply_fn: a supernet's pure apply (see
      :func:`jnas.supernet.functional.make_apply`).
    batch_stats: ``"running"`` normalises with the stored BN statistics;
      ``"batch"`` with the statistics of the evaluated batch (what one-shot
      methods use when the shared statistics do not fit a sampled path).

  Example:
    >>> evaluate = make_evaluator(apply)  # doctest: +SKIP
    >>> many = jax.jit(jax.vmap(evaluate, in_axes=(None, None, 0, None)))  # doctest: +SKIP
    >>> metrics = many(params, state, stacked_encodings, (x, y))  # doctest: +SKIP
  """
  if batch_stats not in ("running", "batch"):
    raise ValueError(f"batch_stats must be 'running' or 'batch', got {batch_stats!r}")
  train_mode = batch_stats == "batch"

  def evaluate(params, state, encoding, batch):
    x, y = batch
    logits, _ = apply_fn(params, state, encoding, x, train_mode)
    return {"loss": cross_entropy(logits, y),
            "accuracy": jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))}

  return evaluate
