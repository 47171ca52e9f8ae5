"""Retraining discrete architectures from scratch."""

from jnas.train.network import DiscreteCell
from jnas.train.network import DiscreteNetwork
