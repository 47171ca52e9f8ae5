"""Chain search spaces: a fixed sequence of blocks, one choice per block.

Two spaces live here:

* :class:`FBNetSpace`: FBNet's layer-wise space (Wu et al., CVPR 2019): a
  stem convolution, stages of inverted-residual blocks, a 1x1 head convolution,
  global pooling and a classifier. Each searchable block picks one of the
  paper's nine candidates (its Table 2)::

      k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6, skip

  ``kK_eE`` is an inverted-residual block (MobileNetV2): a 1x1 expansion to
  ``E`` times the input channels, a ``KxK`` depthwise convolution, a linear
  1x1 projection, each followed by batch norm (and the activation, except after
  the projection), with a residual connection when input and output shapes
  match. ``_g2`` makes the 1x1 convolutions group convolutions with two
  groups. With ``E = 1`` there is no expansion convolution (MobileNetV2 omits
  it, and so do FBNet's released model definitions, whose ``_g2`` blocks group
  only the projection); a channel shuffle follows a grouped expansion.
* :class:`KernelChainSpace`: the seed's VGG-style plain chain where each
  convolution layer picks its kernel size from {1, 3, 5}.

**Skip at blocks that change shape.** FBNet's first block of a stage changes
the width (and often the stride). There ``skip`` cannot be an identity; as in
FBNet's released builder, it becomes a projection shortcut (a strided 1x1
convolution, batch norm and the activation), so that every block keeps all
nine candidates (the paper's 9^22 count). Elsewhere ``skip`` is the identity.

Both spaces handle images (``input_shape = (H, W, C)``) and sequences
(``input_shape = (L, C)``). The encoding is ``{"blocks": [num_blocks,
num_candidates]}``; the genotype is a :class:`ChainGenotype`, a tuple of
candidate names, one per block.

Named architectures (:data:`NAMED_GENOTYPES`) carry the macro-architecture
they need (stem, stages, head): ``mobilenet_v2`` (Sandler et al., 2018) and
FBNet-A/B/C, whose block lists follow the FBNet model definitions released in
facebookresearch/mobile-vision.

The code is split by concern: ``common`` (candidate names, positions, the
genotype and the :class:`ChainSpace` base class with its encodings and JSON),
``fbnet`` and ``kernel_chain`` (the two spaces), ``from_config`` (spaces and
genotypes from configs, names and files). Import from this package.
"""

from jnas.spaces.chain.common import BlockOp
from jnas.spaces.chain.common import ChainGenotype
from jnas.spaces.chain.common import ChainSpace
from jnas.spaces.chain.common import Position
from jnas.spaces.chain.common import conv_out
from jnas.spaces.chain.common import parse_candidate
from jnas.spaces.chain.fbnet import ACTIVATIONS
from jnas.spaces.chain.fbnet import FBNET_CANDIDATES
from jnas.spaces.chain.fbnet import FBNET_GENOTYPES
from jnas.spaces.chain.fbnet import FBNET_STAGES
from jnas.spaces.chain.fbnet import MACROS
from jnas.spaces.chain.fbnet import MOBILENET_V2_STAGES
from jnas.spaces.chain.fbnet import FBNetSpace
from jnas.spaces.chain.from_config import CHAIN_SPACES
from jnas.spaces.chain.from_config import resolve_chain_genotype
from jnas.spaces.chain.from_config import resolve_named
from jnas.spaces.chain.from_config import space_from_config
from jnas.spaces.chain.kernel_chain import KERNEL_CANDIDATES
from jnas.spaces.chain.kernel_chain import KernelChainSpace
