"""What a discrete network costs: parameters, multiply-adds and latency on this device.

The second objective of the multi-objective strategies (``nsga2``'s front,
``dpp_net``'s device cost) when a config sets ``search.objective``, and the
figures ``jnas compare`` reports per run. Every figure is of the network
``jnas train`` would retrain, freshly initialised (no figure depends on the
weights' values):

* ``params``: trainable parameters (``nnx.eval_shape``: nothing allocated);
* ``flops``: multiply-adds of one example's inference (XLA's cost analysis of
  the compiled batch-1 forward pass, FLOPs / 2);
* ``latency``: the median wall time of that compiled call on this machine, in
  milliseconds (MnasNet's and FBNet's point: it is measured on the device the
  network will run on, and differs between devices).

Example:
  >>> cost = objective_fn("params", lambda g: MyNet(g, rngs=nnx.Rngs(0)), (40, 1))  # doctest: +SKIP
  >>> cost(genotype)  # doctest: +SKIP
  12345.0
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jnas.estimation.latency import time_call

__all__ = ["OBJECTIVES", "network_costs", "objective_fn"]

#: The architecture costs ``search.objective`` names (a table column is another choice there).
OBJECTIVES = ("params", "flops", "latency")


def network_costs(net: nnx.Module, input_shape: Sequence[int], *, repeats: int = 20,
                  latency: bool = True) -> dict[str, float]:
  """``params``, ``madds`` (one example) and ``latency_ms`` (batch 1, median) of ``net``.

  ``net`` is called as ``net(x, train=False)``; ``latency=False`` skips the timing.

  Example:
    >>> network_costs(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), (3,), latency=False)["params"]
    8.0
  """
  graphdef, state = nnx.split(net)
  params = float(sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param))))

  def forward(state, x):
    return nnx.merge(graphdef, state)(x, train=False)

  x = jnp.zeros((1, *input_shape), jnp.float32)
  compiled = jax.jit(forward).lower(state, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  out = {"params": params, "madds": flops / 2}
  if latency:
    out["latency_ms"] = 1e3 * time_call(compiled, (state, x), repeats=repeats)
  return out


def objective_fn(name: str, build: Callable[[Any], nnx.Module], input_shape: Sequence[int],
                 *, key: Callable[[Any], str] = repr, repeats: int = 20
                 ) -> Callable[[Any], float]:
  """``genotype -> cost`` for ``name`` in :data:`OBJECTIVES`, cached by ``key(genotype)``.

  ``build(genotype)`` makes the discrete network. ``flops`` and ``latency``
  compile the network once per new genotype.

  Example:
    >>> cost = objective_fn("flops", build, (40, 1))  # doctest: +SKIP
  """
  if name not in OBJECTIVES:
    raise ValueError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
  cache: dict[str, float] = {}

  def cost(genotype: Any) -> float:
    k = key(genotype)
    if k not in cache:
      if name == "params":
        shapes = nnx.eval_shape(lambda: build(genotype))
        cache[k] = float(sum(x.size for x in jax.tree.leaves(nnx.state(shapes, nnx.Param))))
      else:
        c = network_costs(build(genotype), input_shape, repeats=repeats,
                          latency=name == "latency")
        cache[k] = c["madds"] if name == "flops" else c["latency_ms"]
    return cache[k]
  return cost
