"""Performance estimation: how good is a pick (Pareto fronts over named objectives)."""

from jnas.estimation.pareto import Objective
from jnas.estimation.pareto import as_objectives
from jnas.estimation.pareto import crowding_distance
from jnas.estimation.pareto import dominates
from jnas.estimation.pareto import fast_non_dominated_sort
from jnas.estimation.pareto import non_dominated_mask
from jnas.estimation.pareto import pareto_front
from jnas.estimation.pareto import plot_pareto
from jnas.estimation.pareto import save_pareto_json

# Zero-cost proxies import JAX, and `jnas --help` imports this package (for `jnas score`'s
# options) without it: their names load on first use.
_ZERO_COST = (
    "DATA_PROXIES",
    "NB201Skeleton",
    "PROXIES",
    "Prefiltered",
    "ZeroCost",
    "cell_indices",
    "check_proxy",
    "default_batch",
    "nb201_cost",
    "prefilter",
)


def __getattr__(name: str):
  if name in _ZERO_COST:
    from jnas.estimation import zero_cost  # noqa: PLC0415

    return getattr(zero_cost, name)
  raise AttributeError(f"module 'jnas.estimation' has no attribute {name!r}")
