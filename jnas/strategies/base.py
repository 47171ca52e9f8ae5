"""The shapes every search strategy shares (borrowed from optax).

A gradient-based strategy is a named tuple of pure functions over an explicit
state pytree: ``init(key) -> state`` and ``step(state, batch_train,
batch_val) -> (state, metrics)``. Sample-based strategies (random, evolution,
RL, progressive) use ``ask``/``tell``. Because every state is a pytree,
checkpointing and resuming is the same code for all of them.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

Batch = tuple[jax.Array, jax.Array]


class GradientStrategy(NamedTuple):
  """``init(key) -> state``; ``step(state, batch_train, batch_val) -> (state, metrics)``.

  ``encoding(state)`` returns the deterministic architecture encoding (e.g.
  ``softmax(alpha)``) and ``arch_params(state)`` the raw architecture
  parameters, both for logging and derivation.
  """

  init: Callable[[jax.Array], Any]
  step: Callable[[Any, Batch, Batch], tuple[Any, dict[str, jax.Array]]]
  encoding: Callable[[Any], Any]
  arch_params: Callable[[Any], Any]


class AskTellStrategy(NamedTuple):
  """``init(key) -> state``; ``ask(state) -> (state, encodings)``; ``tell(state, encodings, scores) -> state``."""

  init: Callable[[jax.Array], Any]
  ask: Callable[[Any], tuple[Any, Any]]
  tell: Callable[[Any, Any, jax.Array], Any]
