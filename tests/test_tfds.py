"""TFDS datasets through tfds.data_source + grain, offline with tfds.testing.mock_data."""

from __future__ import annotations

import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")

from jnas.data import available_datasets, load_dataset  # noqa: E402
from jnas.data import tfds as jtfds  # noqa: E402


def test_names_are_registered():
  names = available_datasets()
  for name in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
    assert f"tfds:{name}" in names and name in names


@pytest.mark.parametrize("name,shape,classes", [("tfds:cifar10", (32, 32, 3), 10),
                                                ("tfds:mnist", (28, 28, 1), 10),
                                                ("cifar100", (32, 32, 3), 100)])
def test_load_dataset_reads_mock_records_without_tensorflow(name, shape, classes, tmp_path):
  with tfds.testing.mock_data(num_examples=24):
    ds = load_dataset(name, cache_dir=tmp_path)
    raw = tfds.data_source(name.removeprefix("tfds:"), split="train")
    first = np.asarray(raw[0]["image"], np.float32)
  assert ds.x_train.shape == (24, *shape) and ds.x_test.shape == (24, *shape)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.num_classes == classes and 0 <= ds.y_train.min() and ds.y_train.max() < classes
  # Standardized with the training set's statistics, and in the records' order.
  assert abs(float(ds.x_train.mean())) < 1e-3 and abs(float(ds.x_train.std()) - 1) < 1e-3
  np.testing.assert_allclose(ds.x_train[0] * ds.std + ds.mean, first, atol=1e-3)
  assert "tensorflow" not in sys.modules


def test_batches_are_a_function_of_seed_and_epoch():
  with tfds.testing.mock_data(num_examples=20):
    def epoch(seed, e):
      return list(jtfds.tfds_batches("cifar10", "train", 8, seed=seed, epoch=e, workers=2))

    a, b, c = epoch(0, 0), epoch(0, 0), epoch(0, 1)
    all_images = np.stack([np.asarray(r["image"]) for r in
                           (tfds.data_source("cifar10", split="train")[i] for i in range(20))])
  assert len(a) == 2 and a[0][0].shape == (8, 32, 32, 3) and a[0][1].shape == (8,)
  assert a[0][0].dtype == np.uint8 and a[0][1].dtype == np.int32
  for (xa, ya), (xb, yb) in zip(a, b):
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
  assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
  # Each batch row is one distinct record of the split (a permutation, no repeats).
  rows = np.concatenate([x for x, _ in a]).reshape(16, -1)
  flat = all_images.reshape(20, -1)
  idx = [int(np.flatnonzero((flat == r).all(1))[0]) for r in rows]
  assert len(set(idx)) == 16


def test_imagenet_style_images_are_resized_and_cropped():
  with tfds.testing.mock_data(num_examples=6):  # mock ImageNet images have random sizes
    batches = list(jtfds.tfds_batches("imagenet2012", "validation", 3, seed=1, epoch=0,
                                      image_size=16, train=False, shuffle=False, workers=2))
    again = list(jtfds.tfds_batches("imagenet2012", "validation", 3, seed=1, epoch=0,
                                    image_size=16, train=True, workers=2))
  assert [x.shape for x, _ in batches] == [(3, 16, 16, 3)] * 2
  assert [x.shape for x, _ in again] == [(3, 16, 16, 3)] * 2


def test_unprepared_dataset_fails_with_one_line_and_no_download(tmp_path):
  with pytest.raises(ValueError) as info:
    jtfds.source("cifar10", "train", data_dir=str(tmp_path))
  msg = str(info.value)
  assert "\n" not in msg and "tfds build cifar10 --file_format=array_record" in msg
  assert not any(tmp_path.rglob("*.array_record*"))


@pytest.mark.slow
def test_retraining_on_tfds_cifar10_with_crop_flip_cutout(tmp_path):
  """`jnas train` on (mock) tfds:cifar10 with the papers' augmentation, one tiny epoch."""
  from jnas.cli import main

  with tfds.testing.mock_data(num_examples=32):
    rc = main(["train", "--config", "experiments/darts_mnist1d.py", "--workdir", str(tmp_path),
               "--genotype", "DARTS_V2", "--config.data.name=tfds:cifar10",
               "--config.retrain.epochs=1", "--config.retrain.channels=4",
               "--config.retrain.layers=1", "--config.retrain.batch_size=16",
               "--config.retrain.augment.crop_padding=4", "--config.retrain.augment.flip=true",
               "--config.retrain.augment.cutout=8"])
  assert rc == 0
  import json

  report = json.loads((tmp_path / "report.json").read_text())
  assert report["dataset"] == "tfds:cifar10" and 0.0 <= report["test_accuracy"] <= 1.0
