"""Search spaces: choice points, encodings, genotypes."""

from jnas.spaces.base import Choice
from jnas.spaces.base import SearchSpace
from jnas.spaces.darts import GENOTYPES
from jnas.spaces.darts import PRIMITIVES
from jnas.spaces.darts import DartsSpace
from jnas.spaces.darts import Genotype
