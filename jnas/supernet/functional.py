"""Pure-function views of NNX modules for the hot paths.

Following the Flax performance guide, a module is split once into a static
``graphdef`` and two pytrees, weights (``nnx.Param``) and batch statistics
(``nnx.BatchStat``); the jitted steps take those pytrees and merge inside.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Params = Any
State = Any


class Split(NamedTuple):
  """A module split into its static graph, weights and batch statistics."""

  graphdef: Any
  params: Params
  state: State


def split_model(model: nnx.Module) -> Split:
  """Splits ``model`` into ``(graphdef, params, batch_stats)``.

  Example:
    >>> s = split_model(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    >>> sorted(s.params)
    ['bias', 'kernel']
  """
  graphdef, params, state = nnx.split(model, nnx.Param, nnx.BatchStat)
  return Split(graphdef, params, state)


ApplyFn = Callable[..., tuple[jax.Array, State]]


def make_apply(graphdef: Any, **call_kwargs: Any) -> ApplyFn:
  """Returns ``apply(params, state, encoding, x, train) -> (logits, new_state)``.

  ``encoding`` is passed to the module's ``__call__`` as a traced argument, so
  one compiled function serves every architecture. Pass ``encoding=None`` for
  modules that take no encoding (discrete networks). ``call_kwargs`` are
  passed to every call (e.g. ``single_path=True`` for the supernet).
  ``shared``, when given, is passed on too: the module's ``shared_prefix``
  of the same ``x`` (see :func:`make_prefix`).

  Example:
    >>> apply = make_apply(split.graphdef)  # doctest: +SKIP
    >>> logits, state = apply(split.params, split.state, enc, x, True)  # doctest: +SKIP
  """

  def apply(params, state, encoding, x, train, shared=None):
    model = _merge(graphdef, params, state)
    kwargs = dict(call_kwargs) if shared is None else {**call_kwargs, "shared": shared}
    if encoding is None:
      logits = model(x, train=train, **kwargs)
    else:
      logits = model(x, encoding, train=train, **kwargs)
    new_state = nnx.state(model, nnx.BatchStat)
    return logits, new_state

  return apply


def make_prefix(graphdef: Any) -> Callable[..., Any]:
  """Returns ``prefix(params, state, x, train) -> shared``, the module's ``shared_prefix``.

  A supernet with a ``shared_prefix(x, train=...)`` method (the DARTS
  supernet) can compute once the part of a single-path pass that no
  architecture changes; pass ``shared`` to :func:`make_apply`'s ``apply`` for
  each architecture, or give ``prefix`` to
  :func:`jnas.strategies.spos.make_population_evaluator`.

  Example:
    >>> prefix = make_prefix(split.graphdef)  # doctest: +SKIP
    >>> shared = prefix(split.params, split.state, x, False)  # doctest: +SKIP
    >>> logits, _ = apply(split.params, split.state, enc, x, False, shared)  # doctest: +SKIP
  """

  def prefix(params, state, x, train):
    return _merge(graphdef, params, state).shared_prefix(x, train=train)

  return prefix


def _merge(graphdef: Any, params: Params, state: State) -> nnx.Module:
  # Rebuild the Variables in the current trace: NNX refuses to update
  # Variables made under another trace (e.g. outside a jax.grad).
  params, state = jax.tree.map(lambda a: a, (params, state))
  return nnx.merge(graphdef, params, state)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
                  ) -> jax.Array:
  """Mean softmax cross-entropy over (optionally masked) examples."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  if mask is None:
    return jnp.mean(losses)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def count_params(params: Params) -> int:
  """Number of scalar weights in a pytree."""
  return int(sum(x.size for x in jax.tree.leaves(params)))
