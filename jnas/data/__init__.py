"""Datasets, deterministic batching and JAX augmentation for jnas.

Example:
    >>> from jnas.data import load_dataset, split_train_val, epoch_batches
    >>> ds = load_dataset("digits")
    >>> (xw, yw), (xa, ya) = split_train_val(ds.x_train, ds.y_train, seed=0)
    >>> xb, yb = epoch_batches(xw, yw, 64, seed=0, epoch=0)
"""

from jnas.data.augment import cutout
from jnas.data.augment import random_crop_2d
from jnas.data.augment import random_flip_2d
from jnas.data.augment import random_shift_1d
from jnas.data.batching import epoch_batches
from jnas.data.batching import epoch_order
from jnas.data.batching import eval_batches
from jnas.data.batching import split_train_val
from jnas.data.datasets import DEFAULT_DATA_SEED
from jnas.data.datasets import Dataset
from jnas.data.datasets import DatasetLoader
from jnas.data.datasets import available_datasets
from jnas.data.datasets import default_cache_dir
from jnas.data.datasets import load_dataset
from jnas.data.datasets import register_dataset
from jnas.data import tfds as _tfds  # registers tfds:cifar10, ... (TFDS is imported lazily)

__all__ = [
    "DEFAULT_DATA_SEED",
    "Dataset",
    "DatasetLoader",
    "available_datasets",
    "cutout",
    "default_cache_dir",
    "epoch_batches",
    "epoch_order",
    "eval_batches",
    "load_dataset",
    "random_crop_2d",
    "random_flip_2d",
    "random_shift_1d",
    "register_dataset",
    "split_train_val",
]
