"""Supernets (Flax NNX) and their pure-function views."""

from jnas.supernet.darts import DartsSupernet
from jnas.supernet.darts import MixedEdges
from jnas.supernet.darts import SearchCell
from jnas.supernet.evaluator import make_evaluator
from jnas.supernet.functional import count_params
from jnas.supernet.functional import cross_entropy
from jnas.supernet.functional import make_apply
from jnas.supernet.functional import make_prefix
from jnas.supernet.functional import split_model
