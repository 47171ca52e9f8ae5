"""Gradient-based strategies by name, built from a config's ``search`` section.

``jnas search`` reads ``search.strategy`` and builds the strategy here, so a
config switches between DARTS, GDAS and SNAS by one field:

* ``darts``: ``search.order`` 1 or 2;
* ``gdas``: hard Gumbel samples, one op per edge (single-path supernet),
  temperature from ``search.tau_max`` to ``search.tau_min`` (10 -> 0.1);
* ``snas``: soft Gumbel samples, temperature ``search.tau0`` times
  ``search.tau_decay`` per epoch.
"""

from __future__ import annotations

from typing import Any

import jax

from jnas.strategies.base import GradientStrategy
from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
from jnas.strategies.gumbel import gdas, snas
from jnas.supernet.functional import make_apply

GRADIENT_STRATEGIES = ("darts", "gdas", "snas")


def build_gradient_strategy(sc: Any, graphdef: Any, params: Any, batch_stats: Any, alpha: Any, *,
                            total_steps: int, steps_per_epoch: int, key: jax.Array
                            ) -> GradientStrategy:
  """The strategy named by ``sc.strategy`` (``sc`` is a config's ``search`` section).

  Raises ``ValueError`` with one line naming the unknown strategy.

  Example:
    >>> strat = build_gradient_strategy(config.search, split.graphdef, split.params,
    ...                                 split.state, alpha, total_steps=1000,
    ...                                 steps_per_epoch=50, key=key)  # doctest: +SKIP
  """
  name = sc.strategy
  if name not in GRADIENT_STRATEGIES:
    raise ValueError(f"unknown search strategy {name!r} (known: {', '.join(GRADIENT_STRATEGIES)})")
  w_opt = weight_optimizer(sc.w_lr, sc.w_lr_min, sc.momentum, sc.weight_decay, sc.grad_clip,
                           total_steps)
  a_opt = arch_optimizer(sc.a_lr, sc.a_b1, sc.a_b2, sc.a_weight_decay)
  if name == "darts":
    return darts(make_apply(graphdef), params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
                 order=sc.order, unrolled_lr=sc.w_lr, unrolled_momentum=sc.momentum,
                 unrolled_weight_decay=sc.weight_decay)
  if name == "gdas":
    return gdas(make_apply(graphdef, single_path=True), params, batch_stats, alpha, w_opt=w_opt,
                a_opt=a_opt, total_steps=total_steps, tau_max=sc.get("tau_max", 10.0),
                tau_min=sc.get("tau_min", 0.1), key=key)
  return snas(make_apply(graphdef), params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
              steps_per_epoch=steps_per_epoch, tau0=sc.get("tau0", 1.0),
              decay=sc.get("tau_decay", 0.97), key=key)
