"""NAS-Bench-201 cells in a skeleton: the network a cell is scored in, and its exact cost.

:class:`NB201Skeleton` is the network around the cell (stem, stages, head)
that :class:`jnas.estimation.zero_cost.ZeroCost` scores cells in;
:func:`nb201_cost` counts a cell's parameters and multiply-adds in it, and
:func:`cell_indices` reads cells in any form (strings, genotypes, integer forms).

Example:
  >>> nb201_cost(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
  ...            NB201Skeleton((40, 1), 10, channels=4, cells_per_stage=1))[0].params > 0
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from jnas.estimation.flops import Cost, conv_cost
from jnas.spaces.chain.common import conv_out
from jnas.spaces.nb201 import NB201Genotype, NB201Space
from jnas.train.nb201_network import NB201_KERNELS, nb201_plan

__all__ = ["NB201Skeleton", "cell_indices", "nb201_cost"]


@dataclasses.dataclass(frozen=True)
class NB201Skeleton:
  """The NAS-Bench-201 network a cell is scored in.

  Args:
    input_shape: one example, channels last: ``(40, 1)`` for MNIST-1D,
      ``(32, 32, 3)`` for CIFAR-10.
    num_classes: classifier outputs.
    channels, cells_per_stage: the skeleton's ``C`` and ``N`` (16 and 5 in
      the benchmark).

  Example:
    >>> NB201Skeleton((32, 32, 3), 10).ndim
    2
  """

  input_shape: tuple[int, ...]
  num_classes: int
  channels: int = 16
  cells_per_stage: int = 5

  def __post_init__(self):
    object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
    if len(self.input_shape) not in (2, 3) or min(self.input_shape) < 1:
      raise ValueError(f"input_shape must be (length, channels) or (height, width, channels), "
                       f"got {self.input_shape}")
    if self.num_classes < 2 or self.channels < 1 or self.cells_per_stage < 1:
      raise ValueError(f"num_classes must be >= 2, channels and cells_per_stage >= 1; got "
                       f"{self.num_classes}, {self.channels}, {self.cells_per_stage}")

  @property
  def ndim(self) -> int:
    """Spatial axes: 1 for sequences, 2 for images."""
    return len(self.input_shape) - 1


# ---------------------------------------------------------------------------------------------
# Parameters and multiply-adds, from shapes
# ---------------------------------------------------------------------------------------------


def nb201_cost(cells: Any, skeleton: NB201Skeleton, space: NB201Space | None = None
               ) -> list[Cost]:
  """Parameters and multiply-adds (per example) of each cell's discrete network.

  Follows :class:`~jnas.train.nb201_network.NB201Network`: a stem convolution
  with batch norm; per stage width ``c`` and length (or side) ``s``, each
  convolution edge costs ``k^n c^2 (+ 2c)`` weights and ``k^n c^2 s^n``
  multiply-adds; a reduction is two 3x3 convolutions with batch norm (the
  first strided) and a 1x1 shortcut convolution; the head is batch norm and a
  linear classifier with bias.

  Args:
    cells: anything :func:`cell_indices` reads.
    skeleton: the network's shape.
    space: the cell space (the benchmark's by default).

  Example:
    >>> big = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    >>> nb201_cost([big], NB201Skeleton((32, 32, 3), 10))[0].params  # the benchmark's 1.53M
    1531546
  """
  space = space or NB201Space()
  idx = cell_indices(cells, space)
  nd, c0 = skeleton.ndim, skeleton.channels
  spatial = list(skeleton.input_shape[:-1])
  fixed = conv_cost(skeleton.input_shape[-1], c0, 3, spatial, ndim=nd)
  # What each op adds to the network, summed over the cells of every stage (one cell, repeated).
  params_per_op = np.zeros((len(space.ops),), np.int64)
  madds_per_op = np.zeros((len(space.ops),), np.int64)
  for kind, c_in, c_out in nb201_plan(c0, skeleton.cells_per_stage):
    if kind == "reduce":
      spatial = [conv_out(s, 3, 2) for s in spatial]
      fixed += conv_cost(c_in, c_out, 3, spatial, ndim=nd)
      fixed += conv_cost(c_out, c_out, 3, spatial, ndim=nd)
      fixed += conv_cost(c_in, c_out, 1, spatial, ndim=nd, bn=False)
      continue
    for k, op in enumerate(space.ops):
      if op in NB201_KERNELS:
        cost = conv_cost(c_in, c_in, NB201_KERNELS[op], spatial, ndim=nd)
        params_per_op[k] += cost.params
        madds_per_op[k] += cost.madds
  c_last = 4 * c0
  fixed += Cost(2 * c_last + c_last * skeleton.num_classes + skeleton.num_classes,
                c_last * skeleton.num_classes)
  return [Cost(fixed.params + int(params_per_op[row].sum()),
               fixed.madds + int(madds_per_op[row].sum())) for row in idx]


# ---------------------------------------------------------------------------------------------
# Architectures in
# ---------------------------------------------------------------------------------------------


def cell_indices(archs: Any, space: NB201Space | None = None) -> np.ndarray:
  """``[n, num_edges]`` op indices of a population, whatever form it comes in.

  Accepts stacked encodings (``{"cell": [n, edges, ops]}``: the arg-max op of
  each edge, so one-hot rows, as the ask/tell strategies produce), an integer
  array ``[n, edges]``, or a sequence of genotypes or benchmark strings.

  Example:
    >>> cell_indices(["|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"])
    array([[3, 0, 0, 0, 0, 1]], dtype=int32)
  """
  space = space or NB201Space()
  if isinstance(archs, Mapping):
    w = np.asarray(archs["cell"])
    if w.ndim != 3 or w.shape[1:] != (space.num_edges, len(space.ops)):
      raise ValueError(f"encodings['cell'] has shape {w.shape}, expected "
                       f"[n, {space.num_edges}, {len(space.ops)}]")
    return np.argmax(w, axis=-1).astype(np.int32)
  if isinstance(archs, np.ndarray) and np.issubdtype(archs.dtype, np.integer):
    if archs.ndim != 2 or archs.shape[1] != space.num_edges:
      raise ValueError(f"cell indices have shape {archs.shape}, expected [n, {space.num_edges}]")
    if archs.size and (archs.min() < 0 or archs.max() >= len(space.ops)):
      raise ValueError(f"cell indices must lie in [0, {len(space.ops)})")
    return archs.astype(np.int32)
  rows = []
  for a in archs:
    g = space.parse(a) if isinstance(a, str) else a
    if not isinstance(g, NB201Genotype):
      raise ValueError(f"not a NAS-Bench-201 cell: {a!r}")
    rows.append(space.encode_indices(g))
  return np.asarray(rows, np.int32).reshape(len(rows), space.num_edges)


# ---------------------------------------------------------------------------------------------
# The scorer
# ---------------------------------------------------------------------------------------------
