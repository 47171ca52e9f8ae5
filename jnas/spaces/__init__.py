"""Search spaces: choice points, encodings, genotypes."""

from jnas.spaces.base import Choice
from jnas.spaces.base import SearchSpace
from jnas.spaces.base import get_space
from jnas.spaces.base import register_space
from jnas.spaces.base import space_names
from jnas.spaces.darts import GENOTYPES
from jnas.spaces.darts import PRIMITIVES
from jnas.spaces.darts import DartsSpace
from jnas.spaces.darts import Genotype
from jnas.spaces.nb201 import NB201_OPS
from jnas.spaces.nb201 import NB201Genotype
from jnas.spaces.nb201 import NB201Space
from jnas.spaces.chain import ChainGenotype
from jnas.spaces.chain import ChainSpace
from jnas.spaces.chain import FBNetSpace
from jnas.spaces.chain import KernelChainSpace

register_space("fbnet", "jnas.spaces.chain:FBNetSpace")
register_space("kernel_chain", "jnas.spaces.chain:KernelChainSpace")
