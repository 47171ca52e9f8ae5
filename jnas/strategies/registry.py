"""Gradient-based strategies by name, built from a config's ``search`` section.

``jnas search`` reads ``search.strategy`` and builds the strategy here, so a
config switches between DARTS, GDAS and SNAS by one field:

* ``darts``: ``search.order`` 1 or 2;
* ``gdas``: hard Gumbel samples, one op per edge (single-path supernet),
  temperature from ``search.tau_max`` to ``search.tau_min`` (10 -> 0.1);
* ``snas``: soft Gumbel samples, temperature ``search.tau0`` times
  ``search.tau_decay`` per epoch.

DARTS collapse mitigations (:mod:`jnas.strategies.mitigations`) are switched
on by name in ``search.mitigations``, a comma list (default ``""``, plain
DARTS; with ``gdas`` and ``snas`` only ``beta_decay``, the one that acts on alpha alone): ``fairdarts`` (``search.fairdarts_w01``), ``drnas``
(``search.drnas_anchor``), ``darts_minus`` (``search.darts_minus_beta0``),
``beta_decay`` (``search.beta_decay_max``), ``sdarts_rs``
(``search.sdarts_eps_min``, ``search.sdarts_eps_max``) and ``pruning``
(``search.prune_epochs``, default a third and two thirds of the search).
``search.partial_channels`` = K > 1 is PC-DARTS (partial channels, in the
NAS-Bench-201 supernet: :class:`jnas.supernet.nb201.NB201SearchCell`).
``search.early_stop_skips`` > 0 turns on DARTS+'s early stop (:func:`build_early_stop`). Every parameter has a default
(:data:`jnas.config.SEARCH_OPTIONAL_DEFAULTS`), so configs need not list them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from flax import nnx

from jnas.config import SEARCH_OPTIONAL_DEFAULTS
import jnas.strategies.mitigations as mit
from jnas.strategies.base import GradientStrategy
from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
from jnas.strategies.gumbel import gdas, snas
from jnas.supernet.functional import make_apply

GRADIENT_STRATEGIES = ("darts", "gdas", "snas")
MITIGATIONS = ("fairdarts", "drnas", "darts_minus", "beta_decay", "sdarts_rs", "pruning")
# Mitigations that act on alpha alone (a regulariser), so they fit Gumbel sampling too; the
# others replace or perturb the softmax relaxation, or prune it, which GDAS/SNAS do not use.
GUMBEL_MITIGATIONS = ("beta_decay",)


def _opt(sc: Any, name: str) -> Any:
  """``sc.name``, or its default when the config does not list it."""
  return sc.get(name, SEARCH_OPTIONAL_DEFAULTS[name])


def mitigation_names(sc: Any) -> list[str]:
  """The names in ``search.mitigations``; ``ValueError`` (one line) for an unknown one.

  Example:
    >>> mitigation_names({"mitigations": "fairdarts, pruning"})
    ['fairdarts', 'pruning']
  """
  text = sc.get("mitigations", "") or ""
  names = [n.strip() for n in str(text).split(",") if n.strip()]
  for n in names:
    if n not in MITIGATIONS:
      raise ValueError(f"unknown mitigation {n!r} in search.mitigations "
                       f"(known: {', '.join(MITIGATIONS)})")
  return names


def build_mitigation(sc: Any, *, primitives: Sequence[str], total_steps: int,
                     steps_per_epoch: int) -> mit.Mitigation | None:
  """The chained mitigations named by ``sc.mitigations``, or ``None`` when there are none.

  ``primitives`` are the space's op names (DARTS- needs ``skip_connect``'s
  index). Raises ``ValueError`` with one line for an unknown name, a space
  without ``skip_connect`` for ``darts_minus``, or two relaxations.

  Example:
    >>> m = build_mitigation(config.search, primitives=space.primitives,
    ...                      total_steps=1000, steps_per_epoch=50)  # doctest: +SKIP
  """
  names = mitigation_names(sc)
  if not names:
    return None
  parts = []
  for n in names:
    if n == "fairdarts":
      parts.append(mit.fairdarts(float(_opt(sc, "fairdarts_w01"))))
    elif n == "drnas":
      parts.append(mit.drnas(float(_opt(sc, "drnas_anchor"))))
    elif n == "darts_minus":
      if "skip_connect" not in primitives:
        raise ValueError("search.mitigations 'darts_minus' needs a space with skip_connect")
      parts.append(mit.darts_minus(list(primitives).index("skip_connect"), total_steps,
                                   float(_opt(sc, "darts_minus_beta0"))))
    elif n == "beta_decay":
      parts.append(mit.beta_decay(float(_opt(sc, "beta_decay_max")), total_steps))
    elif n == "sdarts_rs":
      parts.append(mit.sdarts_rs(float(_opt(sc, "sdarts_eps_min")),
                                 float(_opt(sc, "sdarts_eps_max")), total_steps))
    else:  # pruning
      epochs = tuple(_opt(sc, "prune_epochs")) or _thirds(total_steps // max(steps_per_epoch, 1))
      parts.append(mit.progressive_pruning([int(e) * steps_per_epoch for e in epochs]))
  return mit.chain(*parts)


def _thirds(epochs: int) -> tuple[int, ...]:
  """Default pruning epochs: after a third and two thirds of the search (P-DARTS's stages)."""
  return tuple(sorted({e for e in (epochs // 3, 2 * epochs // 3) if e > 0}))


def build_early_stop(sc: Any, space: Any) -> Callable[[Any], bool] | None:
  """DARTS+'s per-epoch stop predicate when ``search.early_stop_skips`` > 0, else ``None``.

  The search loop calls it on host-side architecture parameters after each
  epoch and stops when it returns ``True``.

  Example:
    >>> stop = build_early_stop(config.search, space)  # doctest: +SKIP
    >>> if stop is not None and stop(jax.device_get(strategy.arch_params(state))):  # doctest: +SKIP
    ...   break
  """
  k = int(_opt(sc, "early_stop_skips"))
  return mit.skip_connect_stop(space, max_skips=k) if k > 0 else None


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
  names = mitigation_names(sc)
  not_gumbel = [n for n in names if n not in GUMBEL_MITIGATIONS]
  if name != "darts" and not_gumbel:
    raise ValueError(f"search.mitigations {', '.join(not_gumbel)} apply to strategy 'darts' "
                     f"only, not {name!r} (with {name}: {', '.join(GUMBEL_MITIGATIONS)})")
  w_opt = weight_optimizer(sc.w_lr, sc.w_lr_min, sc.momentum, sc.weight_decay, sc.grad_clip,
                           total_steps)
  a_opt = arch_optimizer(sc.a_lr, sc.a_b1, sc.a_b2, sc.a_weight_decay)
  if name == "darts":
    mitigation = None
    if mitigation_names(sc):
      # The space's op names live on the supernet; merging builds no arrays.
      space = getattr(nnx.merge(graphdef, params, batch_stats), "space", None)
      mitigation = build_mitigation(sc, primitives=tuple(getattr(space, "primitives", ())),
                                    total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return darts(make_apply(graphdef), params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
                 order=sc.order, unrolled_lr=sc.w_lr, unrolled_momentum=sc.momentum,
                 unrolled_weight_decay=sc.weight_decay, mitigation=mitigation)
  reg = None
  if names:
    reg = build_mitigation(sc, primitives=(), total_steps=total_steps,
                           steps_per_epoch=steps_per_epoch).regularizer
  if name == "gdas":
    return gdas(make_apply(graphdef, single_path=True), params, batch_stats, alpha, w_opt=w_opt,
                a_opt=a_opt, total_steps=total_steps, tau_max=sc.get("tau_max", 10.0),
                tau_min=sc.get("tau_min", 0.1), regularizer=reg, key=key)
  return snas(make_apply(graphdef), params, batch_stats, alpha, w_opt=w_opt, a_opt=a_opt,
              steps_per_epoch=steps_per_epoch, tau0=sc.get("tau0", 1.0),
              decay=sc.get("tau_decay", 0.97), regularizer=reg, key=key)
