"""NAS-Bench-201 cells for the tables: canonical forms (from :mod:`jnas.spaces.nb201_canonical`,
where the space's samplers can use them too) and parameter counts.

Example:
  >>> canonical_form("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|skip_connect~1|avg_pool_3x3~2|")
  'conv3(x)+pool(x)'
"""

from __future__ import annotations

from typing import Iterable

from jnas.spaces.nb201 import NB201Genotype, NB201Space
from jnas.spaces.nb201_canonical import ZERO, canonical_form, genotype_at, unique_cells
from jnas.train.nb201_network import NB201_KERNELS

__all__ = ["canonical_form", "unique_cells", "genotype_at", "nb201_params", "ZERO"]


def nb201_params(cells: Iterable[NB201Genotype | str], *, channels: int, cells_per_stage: int,
                 in_channels: int = 1, num_classes: int = 10, ndim: int = 1,
                 space: NB201Space | None = None) -> list[int]:
  """Weights of :class:`~jnas.train.nb201_network.NB201Network` for each cell, counted analytically.

  The skeleton (stem, reductions, head) is counted once by shape inference;
  each cell then adds ``k^ndim * c * c + 2c`` per convolution edge (kernel
  ``k``, affine batch norm) at each stage width ``c``. Dead edges count, as in
  the network that string builds.

  Example:
    >>> nb201_params(["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
    ...               "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"],
    ...              channels=16, cells_per_stage=5, in_channels=3, ndim=2)
    [1531546]
  """
  import jax  # noqa: PLC0415 (the canonical form itself needs no JAX)
  from flax import nnx  # noqa: PLC0415

  from jnas.train.nb201_network import NB201Network, nb201_plan  # noqa: PLC0415

  space = space or NB201Space()
  empty = NB201Genotype(("none",) * space.num_edges)
  net = nnx.eval_shape(lambda: NB201Network(
      empty, in_channels, num_classes, ndim=ndim, channels=channels,
      cells_per_stage=cells_per_stage, space=space, rngs=nnx.Rngs(0)))
  skeleton = sum(v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))
  widths = [c for kind, c, _ in nb201_plan(channels, cells_per_stage) if kind == "cell"]
  out = []
  for cell in cells:
    g = space.parse(cell) if isinstance(cell, str) else cell
    total = skeleton
    for op in g.ops:
      if op in NB201_KERNELS:
        k = NB201_KERNELS[op] ** ndim
        total += sum(k * c * c + 2 * c for c in widths)
    out.append(int(total))
  return out
