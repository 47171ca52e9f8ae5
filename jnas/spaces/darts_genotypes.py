"""DARTS genotypes: the derived architecture's form, and the cells published with DARTS.

Example:
  >>> GENOTYPES["DARTS_V2"].normal[0]
  ('sep_conv_3x3', 0)
"""

from __future__ import annotations

import dataclasses

__all__ = ["GENOTYPES", "Genotype"]


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A derived DARTS architecture: for each cell type, ``(op, input)`` pairs.

  ``normal`` and ``reduce`` list two ``(op_name, input_index)`` pairs per node,
  node by node; input 0 and 1 are the cell inputs, ``k >= 2`` is node ``k - 2``.
  ``*_concat`` name the states concatenated into the cell output.

  Example:
    >>> g = GENOTYPES["DARTS_V2"]
    >>> g.normal[0]
    ('sep_conv_3x3', 0)
  """

  normal: tuple[tuple[str, int], ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[tuple[str, int], ...]
  reduce_concat: tuple[int, ...]

  def cell(self, cell_type: str) -> tuple[tuple[str, int], ...]:
    return getattr(self, cell_type)

  def canonical(self, inputs_per_node: int = 2) -> "Genotype":
    """The same architecture with each node's pairs sorted by input.

    Published genotypes list a node's edges by strength; two genotypes are
    the same architecture exactly when their canonical forms are equal.
    """
    def sort_cell(cell):
      out = []
      for k in range(0, len(cell), inputs_per_node):
        out += sorted(cell[k:k + inputs_per_node], key=lambda p: (p[1], p[0]))
      return tuple(out)
    return Genotype(sort_cell(self.normal), self.normal_concat, sort_cell(self.reduce),
                    self.reduce_concat)


def _g(normal, reduce, concat=(2, 3, 4, 5)) -> Genotype:
  return Genotype(tuple(normal), tuple(concat), tuple(reduce), tuple(concat))


# The cells published with DARTS (first- and second-order search on CIFAR-10).
GENOTYPES: dict[str, Genotype] = {
    "DARTS_V1": _g(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0), ("skip_connect", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 0), ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "DARTS_V2": _g(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
                ("skip_connect", 0), ("dil_conv_3x3", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("max_pool_3x3", 1)]),
}
GENOTYPES["DARTS"] = GENOTYPES["DARTS_V2"]
