"""Search strategies: pure functions over explicit, pytree states."""

from jnas.strategies.base import AskTellStrategy
from jnas.strategies.base import GradientStrategy
from jnas.strategies.darts import DartsState
from jnas.strategies.darts import MitigatedDartsState
from jnas.strategies.darts import arch_optimizer
from jnas.strategies.darts import darts
from jnas.strategies.darts import grad_and_mixed_hvp
from jnas.strategies.darts import mixed_hvp
from jnas.strategies.darts import softmax_encoding
from jnas.strategies.darts import weight_optimizer
from jnas.strategies.driver import Evaluation
from jnas.strategies.driver import SearchResult
from jnas.strategies.driver import genotype_scorer
from jnas.strategies.driver import run_ask_tell
from jnas.strategies.evolution import nsga2
from jnas.strategies.evolution import regularized_evolution
from jnas.strategies.evolution import topk_evolution
from jnas.strategies.mitigations import Mitigation
from jnas.strategies.progressive import dpp_net
from jnas.strategies.progressive import measured_front
from jnas.strategies.progressive import pnas
from jnas.strategies.random_search import random_search
from jnas.strategies.reinforce import mnasnet_reward
from jnas.strategies.reinforce import reinforce
from jnas.strategies.sampling import ConstraintError
from jnas.strategies.sampling import Constraints
