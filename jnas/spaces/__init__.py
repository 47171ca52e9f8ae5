"""Search spaces: choice points, encodings, genotypes."""

from jnas.spaces.base import Choice
from jnas.spaces.base import SearchSpace
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
from jnas.spaces.registry import SpaceKit
from jnas.spaces.registry import get_space
from jnas.spaces.registry import register_space
from jnas.spaces.registry import space_kit
from jnas.spaces.registry import space_names
