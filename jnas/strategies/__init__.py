"""Search strategies: pure functions over explicit, pytree states."""

from jnas.strategies.base import AskTellStrategy
from jnas.strategies.base import GradientStrategy
from jnas.strategies.darts import DartsState
from jnas.strategies.darts import arch_optimizer
from jnas.strategies.darts import darts
from jnas.strategies.darts import mixed_hvp
from jnas.strategies.darts import softmax_encoding
from jnas.strategies.darts import weight_optimizer
