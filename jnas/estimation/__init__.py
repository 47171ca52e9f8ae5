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
