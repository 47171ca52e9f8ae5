"""Named TFDS datasets read through ``tfds.data_source`` (array_record) and grain.

No TensorFlow is needed: ``tfds.data_source`` gives random access to records
prepared in the array_record format, and grain shuffles, decodes and batches
them on the host. Nothing is downloaded here (``download=False``); prepare a
dataset once as the README's "Real datasets" section shows, e.g.
``tfds build cifar10 --file_format=array_record``. The data directory is
``TFDS_DATA_DIR`` (TFDS's own variable), else ``~/tensorflow_datasets``.

Two ways in:

* ``load_dataset("tfds:cifar10")`` (also ``cifar10``, ``cifar100``, ``mnist``,
  ``fashion_mnist``, ``svhn_cropped``) reads both splits into a standardized
  in-memory :class:`~jnas.data.Dataset`, so every jnas command can use it; the
  random crop, flip and cutout of the papers are applied on the device during
  retraining (``retrain.augment`` in the config, see :mod:`jnas.data.augment`).
* :func:`tfds_batches` streams shuffled, batched numpy arrays of any TFDS
  image dataset whose images differ in size (``imagenet2012``), resized and
  cropped on the host, for pipelines that do not fit in memory. Batch order is
  a pure function of ``(seed, epoch)``, as in :mod:`jnas.data.batching`.

Example:
  >>> ds = load_dataset("tfds:cifar10")                    # doctest: +SKIP
  >>> ds.x_train.shape                                      # doctest: +SKIP
  (50000, 32, 32, 3)
  >>> for x, y in tfds_batches("imagenet2012", "train", 256, seed=0, epoch=0,
  ...                          image_size=64):             # doctest: +SKIP
  ...   pass
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jnas.data.datasets import Dataset, register_dataset

__all__ = ["IN_MEMORY", "TEST_SPLIT", "load_tfds", "source", "tfds_batches"]

#: TFDS datasets small enough to hold as float32 arrays: jnas name -> TFDS name.
IN_MEMORY: dict[str, str] = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "svhn_cropped": "svhn_cropped",
}
#: The split used as the test set when a dataset has no ``test`` split.
TEST_SPLIT: dict[str, str] = {"imagenet2012": "validation"}
_MAX_WORKERS = 16


def source(name: str, split: str, data_dir: str | None = None):
  """Random-access records of a prepared TFDS split (``tfds.data_source``, no download).

  Raises ValueError (one line, saying how to prepare it) when the split is
  not prepared in the array_record format.

  Example:
    >>> src = source("cifar10", "train")                    # doctest: +SKIP
    >>> src[0]["image"].shape                                # doctest: +SKIP
    (32, 32, 3)
  """
  import tensorflow_datasets as tfds  # lazy: only runs that use TFDS data pay for it

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as err:  # noqa: BLE001 - tfds raises many types for "not there"
    where = data_dir or "$TFDS_DATA_DIR or ~/tensorflow_datasets"
    first = " ".join(str(err).split())[:160]
    raise ValueError(
        f"TFDS dataset {name!r} split {split!r} is not prepared as array_record under {where} "
        f"({type(err).__name__}: {first}); prepare it once with "
        f"`tfds build {name} --file_format=array_record` (see README, Real datasets)") from None


def _resize_center(image: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
  """Shorter side to ``size * 8/7`` then a ``size`` crop (random when ``rng``, else centered)."""
  from PIL import Image

  h, w = image.shape[:2]
  short = int(round(size * 8 / 7))  # 224 from 256, the usual ImageNet ratio
  scale = short / min(h, w)
  nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  channels = image.shape[2] if image.ndim == 3 else 1
  pil = Image.fromarray(image if channels != 1 else image.reshape(h, w))
  out = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
  if rng is None:
    top, left = (nh - size) // 2, (nw - size) // 2
  else:
    top, left = int(rng.integers(0, nh - size + 1)), int(rng.integers(0, nw - size + 1))
  out = out[top:top + size, left:left + size]
  return out.reshape(size, size, channels)


def _read_all(src, workers: int = _MAX_WORKERS) -> tuple[np.ndarray, np.ndarray]:
  """Every record of ``src`` in order, as stacked uint8 images and int labels (grain reads)."""
  import grain

  n = len(src)
  ds = grain.MapDataset.source(src).map(lambda e: (np.asarray(e["image"]), e["label"]))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=256))
  images, labels = [], []
  for image, label in it:
    images.append(image)
    labels.append(label)
  if len(images) != n:
    raise ValueError(f"read {len(images)} of {n} records; the dataset files may be damaged")
  return np.stack(images), np.asarray(labels)


def load_tfds(name: str, *, data_dir: str | None = None) -> Dataset:
  """A TFDS image classification dataset as an in-memory, standardized :class:`Dataset`.

  ``name`` is a TFDS name (``cifar10``, ``mnist``, ...); its ``train`` split
  becomes ``x_train`` and its ``test`` (or validation) split ``x_test``.

  Example:
    >>> load_tfds("mnist").input_shape                     # doctest: +SKIP
    (28, 28, 1)
  """
  import tensorflow_datasets as tfds

  train_src = source(name, "train", data_dir)
  test_src = source(name, TEST_SPLIT.get(name, "test"), data_dir)
  x_train, y_train = _read_all(train_src)
  x_test, y_test = _read_all(test_src)
  try:
    num_classes = int(tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes)
  except (KeyError, AttributeError, TypeError):
    num_classes = None
  return Dataset.from_arrays(f"tfds:{name}", x_train, y_train, x_test, y_test,
                             num_classes=num_classes)


def tfds_batches(name: str, split: str, batch_size: int, *, seed: int, epoch: int,
                 image_size: int | None = None, train: bool = True, shuffle: bool = True,
                 drop_remainder: bool = True, data_dir: str | None = None,
                 workers: int = _MAX_WORKERS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of ``(images uint8 [B, H, W, C], labels int32 [B])`` batches, read with grain.

  The order is a permutation that depends only on ``(seed, epoch)``. With
  ``image_size`` every image is resized (shorter side to ``size * 8/7``) and
  cropped to ``size`` x ``size``: a random crop when ``train``, else the center
  (the usual ImageNet preprocessing; flips and cutout are applied on the device
  by :mod:`jnas.data.augment`). Without it the images must share one shape.

  Example:
    >>> xb, yb = next(tfds_batches("cifar10", "train", 64, seed=0, epoch=0))  # doctest: +SKIP
    >>> xb.shape, yb.shape                                                    # doctest: +SKIP
    ((64, 32, 32, 3), (64,))
  """
  import grain

  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if seed < 0 or epoch < 0:
    raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
  src = source(name, split, data_dir)
  ds = grain.MapDataset.source(src)
  if shuffle:
    # A seed derived from (seed, epoch) as numpy's SeedSequence does, so that
    # neighbouring epochs get unrelated orders.
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    ds = ds.shuffle(seed=epoch_seed)

  def prepare(index: int, example: dict[str, Any]) -> tuple[np.ndarray, np.int32]:
    image = np.asarray(example["image"])
    if image_size is not None:
      rng = np.random.default_rng([seed, epoch, index]) if train else None
      image = _resize_center(image, image_size, rng)
    return image, np.int32(example["label"])

  ds = ds.map_with_index(prepare).batch(batch_size, drop_remainder=drop_remainder)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=4))
  for images, labels in it:
    yield np.asarray(images), np.asarray(labels, np.int32)


def _loader(tfds_name: str, *, seed: int, cache_dir: Path) -> Dataset:
  del seed, cache_dir  # TFDS splits are fixed; TFDS keeps its own files under data_dir.
  return load_tfds(tfds_name)


for _name, _tfds_name in IN_MEMORY.items():
  register_dataset(f"tfds:{_name}", functools.partial(_loader, _tfds_name))
  register_dataset(_name, functools.partial(_loader, _tfds_name))
