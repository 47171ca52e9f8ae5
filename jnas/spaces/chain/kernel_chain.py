"""The VGG-style kernel-size chain: each convolution layer picks its kernel size."""

from __future__ import annotations

from typing import Sequence

from jnas.spaces.chain.common import ChainSpace, Position

KERNEL_CANDIDATES: tuple[str, ...] = ("k1", "k3", "k5")


class KernelChainSpace(ChainSpace):
  """A plain chain of convolutions, each choosing its kernel size (the seed's example).

  Layer ``i`` is a ``k``-wide convolution to ``widths[i]`` channels, batch
  norm and ReLU, followed by a stride-2 max pooling when ``i`` is in
  ``pool_after``. The head is global average pooling and a linear classifier.

  Args:
    input_shape: per-example input, ``(L, C)`` or ``(H, W, C)``.
    num_classes: classifier outputs.
    widths: output channels of each layer (its length is the depth).
    pool_after: indices of the layers followed by 2x max pooling.
    kernels: candidate kernel sizes (odd).

  Example:
    >>> space = KernelChainSpace((40, 1), 10, widths=(16, 16, 32), pool_after=(1,))
    >>> space.encoding_shape(), space.candidates
    ({'blocks': (3, 3)}, ('k1', 'k3', 'k5'))
  """

  name = "kernel_chain"

  def __init__(self, input_shape: Sequence[int] = (40, 1), num_classes: int = 10, *,
               widths: Sequence[int] = (16, 16, 32, 32, 64, 64),
               pool_after: Sequence[int] = (1, 3), kernels: Sequence[int] = (1, 3, 5)):
    self.input_shape = tuple(int(s) for s in input_shape)
    if len(self.input_shape) not in (2, 3) or min(self.input_shape) < 1:
      raise ValueError(f"input_shape must be (L, C) or (H, W, C) with positive sizes, "
                       f"got {tuple(input_shape)}")
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    self.num_classes = int(num_classes)
    self.widths = tuple(int(w) for w in widths)
    if not self.widths or min(self.widths) < 1:
      raise ValueError(f"widths must be a non-empty list of positive ints, got {tuple(widths)}")
    self.pool_after = tuple(sorted(int(i) for i in pool_after))
    bad = [i for i in self.pool_after if not 0 <= i < len(self.widths)]
    if bad:
      raise ValueError(f"pool_after names layer {bad[0]}, outside [0, {len(self.widths) - 1}]")
    self.kernels = tuple(int(k) for k in kernels)
    if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
      raise ValueError(f"kernels must be odd and positive, got {tuple(kernels)}")
    self.candidates = tuple(f"k{k}" for k in self.kernels)
    if len(set(self.candidates)) != len(self.candidates):
      raise ValueError(f"duplicate kernel sizes in {self.kernels}")
    self._positions = self._make_positions()

  def _make_positions(self) -> list[Position]:
    spatial = list(self.input_shape[:-1])
    c_in = self.input_shape[-1]
    out = []
    for i, w in enumerate(self.widths):
      pool = 2 if i in self.pool_after else 1
      new = [max(x // pool, 1) for x in spatial]
      out.append(Position(i, 0, tuple(spatial) + (c_in,), tuple(new) + (w,), 1, pool))
      spatial, c_in = new, w
    return out

  def positions(self) -> list[Position]:
    return list(self._positions)

  def stem_out_shape(self) -> tuple[int, ...]:
    return self.input_shape

  def config(self) -> dict:
    return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "widths": list(self.widths), "pool_after": list(self.pool_after),
            "kernels": list(self.kernels)}
