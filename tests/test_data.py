"""Tests for jnas.data: datasets, caching, splitting, batching and augmentation."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.data import DEFAULT_DATA_SEED
from jnas.data import Dataset
from jnas.data import available_datasets
from jnas.data import cutout
from jnas.data import datasets as datasets_module
from jnas.data import epoch_batches
from jnas.data import eval_batches
from jnas.data import load_dataset
from jnas.data import random_crop_2d
from jnas.data import random_flip_2d
from jnas.data import random_shift_1d
from jnas.data import register_dataset
from jnas.data import split_train_val


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Generating MNIST-1D takes seconds; do it once per module and share the cache.
    return tmp_path_factory.mktemp("jnas-cache")


@pytest.fixture(scope="module")
def mnist1d(mnist1d_cache: Path) -> Dataset:
    return load_dataset("mnist1d", cache_dir=mnist1d_cache)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


# ---------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------


def test_available_datasets_lists_builtins() -> None:
    assert {"digits", "mnist1d"} <= set(available_datasets())
    assert available_datasets() == sorted(available_datasets())


def test_mnist1d_shapes_and_dtypes(mnist1d: Dataset) -> None:
    assert mnist1d.name == "mnist1d"
    assert mnist1d.x_train.shape == (4000, 40, 1)
    assert mnist1d.x_test.shape == (1000, 40, 1)
    assert mnist1d.y_train.shape == (4000,)
    assert mnist1d.y_test.shape == (1000,)
    assert mnist1d.x_train.dtype == np.float32 and mnist1d.y_train.dtype == np.int32
    assert mnist1d.input_shape == (40, 1)
    assert mnist1d.num_classes == 10
    assert set(np.unique(mnist1d.y_train)) == set(range(10))
    assert set(np.unique(mnist1d.y_test)) == set(range(10))


def test_digits_shapes_and_dtypes(digits: Dataset) -> None:
    assert digits.name == "digits"
    assert digits.x_train.shape[1:] == (8, 8, 1)
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert digits.x_test.shape[0] == 360  # 20 % test split
    assert digits.x_train.dtype == np.float32 and digits.y_test.dtype == np.int32
    assert digits.input_shape == (8, 8, 1)
    assert digits.num_classes == 10
    # Stratified: every class is in the test set with roughly equal counts.
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_digits_split_is_deterministic(digits: Dataset) -> None:
    again = load_dataset("digits")
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    np.testing.assert_array_equal(digits.y_test, again.y_test)
    other = load_dataset("digits", seed=DEFAULT_DATA_SEED + 1)
    assert not np.array_equal(digits.y_test, other.y_test)


@pytest.mark.parametrize("fixture", ["mnist1d", "digits"])
def test_standardized_with_train_statistics(fixture: str, request: pytest.FixtureRequest) -> None:
    ds: Dataset = request.getfixturevalue(fixture)
    assert abs(float(ds.x_train.mean())) < 1e-4
    assert abs(float(ds.x_train.std()) - 1.0) < 1e-4
    assert ds.std > 0
    # The recorded statistics undo the standardization.
    if fixture == "digits":
        raw = ds.x_train * ds.std + ds.mean
        np.testing.assert_allclose(raw, np.round(raw), atol=1e-4)
        assert raw.min() > -1e-4 and raw.max() < 16 + 1e-4


def test_mnist1d_cache_created_and_reused(
    mnist1d: Dataset, mnist1d_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = list(mnist1d_cache.glob("mnist1d-*.npz"))
    assert len(files) == 1
    assert not list(mnist1d_cache.glob("*.tmp"))  # no leftovers from the atomic write

    def fail(args: object) -> None:
        raise AssertionError("cache should have been used")

    monkeypatch.setattr(datasets_module, "_generate_mnist1d", fail)
    again = load_dataset("mnist1d", cache_dir=mnist1d_cache)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, field), getattr(mnist1d, field))
    assert again.mean == mnist1d.mean and again.std == mnist1d.std


def test_mnist1d_corrupt_cache_is_regenerated(
    mnist1d: Dataset, mnist1d_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cached,) = mnist1d_cache.glob("mnist1d-*.npz")
    good = dict(np.load(cached))
    corrupt = tmp_path / cached.name
    corrupt.write_bytes(cached.read_bytes()[:100])  # truncated, as after a crash

    # Regenerating for real takes seconds; replay the known output and count calls.
    calls = []

    def fake_generate(args: object) -> dict[str, np.ndarray]:
        calls.append(args)
        return {k: good[k] for k in ("x_train", "y_train", "x_test", "y_test")}

    monkeypatch.setattr(datasets_module, "_generate_mnist1d", fake_generate)
    ds = load_dataset("mnist1d", cache_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(ds.x_train, mnist1d.x_train)
    # The regenerated file replaced the corrupt one and is readable now.
    assert corrupt.stat().st_size == cached.stat().st_size
    load_dataset("mnist1d", cache_dir=tmp_path)
    assert len(calls) == 1


def test_mnist1d_seed_reaches_generator_and_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def fake_generate(args: object) -> dict[str, np.ndarray]:
        seen.append(args.seed)  # type: ignore[attr-defined]
        x = np.random.default_rng(args.seed).normal(size=(20, 40))  # type: ignore[attr-defined]
        return {"x_train": x[:16], "y_train": np.arange(16) % 10,
                "x_test": x[16:], "y_test": np.arange(4)}

    monkeypatch.setattr(datasets_module, "_generate_mnist1d", fake_generate)
    load_dataset("mnist1d", cache_dir=tmp_path)
    load_dataset("mnist1d", seed=7, cache_dir=tmp_path)
    assert seen == [42, 7]  # 42 is mnist1d's own default seed
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2


def test_mnist1d_generation_restores_global_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    def reseeding_make_dataset(args: object) -> dict[str, np.ndarray]:
        mnist1d.utils.set_seed(123)  # what the real make_dataset does first
        return {"x": np.zeros((2, 40)), "y": np.zeros(2), "x_test": np.zeros((1, 40)),
                "y_test": np.zeros(1)}

    monkeypatch.setattr(mnist1d.data, "make_dataset", reseeding_make_dataset)
    np.random.seed(5)
    random.seed(5)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(5)
    random.seed(5)
    datasets_module._generate_mnist1d(mnist1d.data.get_dataset_args())
    assert np.random.rand() == expected_np
    assert random.random() == expected_py


def test_unknown_dataset_error_lists_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("cifar")
    message = str(info.value)
    assert "\n" not in message
    assert message == "unknown dataset 'cifar' (known: " + ", ".join(available_datasets()) + ")"
    assert "digits" in message and "mnist1d" in message


def test_register_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_module, "_REGISTRY", dict(datasets_module._REGISTRY))

    def tiny(*, seed: int, cache_dir: Path) -> Dataset:
        x = np.arange(24, dtype=np.float64).reshape(6, 4)
        y = np.array([0, 1, 2, 0, 1, 2])
        return Dataset.from_arrays("tiny", x[:4], y[:4], x[4:], y[4:])

    register_dataset("tiny", tiny)
    assert "tiny" in available_datasets()
    ds = load_dataset("tiny")
    assert ds.num_classes == 3 and ds.input_shape == (4,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny", tiny)
    register_dataset("tiny", tiny, overwrite=True)


def test_dataset_rejects_wrong_dtypes() -> None:
    x = np.zeros((2, 3), np.float64)
    y = np.zeros(2, np.int32)
    with pytest.raises(ValueError, match="float32"):
        Dataset("bad", x, y, x, y, num_classes=1)


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JNAS_CACHE_DIR", str(tmp_path / "env-cache"))
    assert datasets_module.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("JNAS_CACHE_DIR")
    assert datasets_module.default_cache_dir() == Path.home() / ".cache" / "jnas"


# ---------------------------------------------------------------------------
# splitting and batching
# ---------------------------------------------------------------------------


def _indexed(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Inputs encode their own index so examples can be tracked through shuffles.
    x = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 3, 1), np.float32)
    return x, np.arange(n, dtype=np.int32)


def test_split_train_val_disjoint_covering_deterministic() -> None:
    x, y = _indexed(101)
    (xa, ya), (xb, yb) = split_train_val(x, y, seed=3)
    assert len(ya) == 50 or len(ya) == 51
    assert len(ya) + len(yb) == 101
    assert not set(ya) & set(yb)
    assert sorted(np.concatenate([ya, yb]).tolist()) == list(range(101))
    np.testing.assert_array_equal(xa[:, 0, 0], ya)  # x and y stay paired
    (xa2, ya2), (_, yb2) = split_train_val(x, y, seed=3)
    np.testing.assert_array_equal(ya, ya2)
    np.testing.assert_array_equal(yb, yb2)
    (_, ya3), _ = split_train_val(x, y, seed=4)
    assert not np.array_equal(ya, ya3)
    assert not np.array_equal(np.sort(ya), np.arange(len(ya)))  # actually shuffled


def test_split_train_val_fraction_and_errors() -> None:
    x, y = _indexed(100)
    (_, ya), (_, yb) = split_train_val(x, y, fraction=0.8)
    assert (len(ya), len(yb)) == (80, 20)
    with pytest.raises(ValueError):
        split_train_val(x, y, fraction=1.0)
    with pytest.raises(ValueError):
        split_train_val(x[:1], y[:1])
    with pytest.raises(ValueError):
        split_train_val(x, y[:5])


def test_epoch_batches_shapes_and_distinct_examples() -> None:
    x, y = _indexed(103)
    xb, yb = epoch_batches(x, y, 10, seed=0, epoch=0)
    assert xb.shape == (10, 10, 3, 1) and yb.shape == (10, 10)
    assert xb.dtype == np.float32 and yb.dtype == np.int32
    assert len(set(yb.ravel().tolist())) == 100  # distinct examples, remainder dropped
    np.testing.assert_array_equal(xb[:, :, 0, 0], yb)


def test_epoch_batches_order_is_function_of_seed_and_epoch() -> None:
    x, y = _indexed(64)
    _, a = epoch_batches(x, y, 8, seed=1, epoch=2)
    _, b = epoch_batches(x, y, 8, seed=1, epoch=2)
    _, c = epoch_batches(x, y, 8, seed=1, epoch=3)
    _, d = epoch_batches(x, y, 8, seed=2, epoch=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    # Global RNG state must not influence the order (resumed runs see the same batches).
    np.random.seed(999)
    _, e = epoch_batches(x, y, 8, seed=1, epoch=2)
    np.testing.assert_array_equal(a, e)
    _, unshuffled = epoch_batches(x, y, 8, seed=1, epoch=2, shuffle=False)
    np.testing.assert_array_equal(unshuffled.ravel(), np.arange(64))


def test_epoch_batches_keep_remainder_covers_all() -> None:
    x, y = _indexed(10)
    _, yb = epoch_batches(x, y, 4, seed=0, epoch=0, drop_remainder=False)
    assert yb.shape == (3, 4)
    assert set(yb.ravel().tolist()) == set(range(10))
    _, big = epoch_batches(x, y, 16, seed=0, epoch=0, drop_remainder=False)
    assert big.shape == (1, 16) and set(big.ravel().tolist()) == set(range(10))


def test_epoch_batches_errors() -> None:
    x, y = _indexed(10)
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches(x, y, 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="larger than"):
        epoch_batches(x, y, 11, seed=0, epoch=0)


@pytest.mark.parametrize("n,batch_size", [(10, 4), (12, 4), (3, 8), (1, 1)])
def test_eval_batches_mask_and_order(n: int, batch_size: int) -> None:
    x, y = _indexed(n)
    xb, yb, mask = eval_batches(x, y, batch_size)
    num_batches = -(-n // batch_size)
    assert xb.shape == (num_batches, batch_size, 3, 1)
    assert yb.shape == mask.shape == (num_batches, batch_size)
    assert mask.dtype == np.float32
    assert mask.sum() == n
    flat_mask = mask.ravel().astype(bool)
    np.testing.assert_array_equal(yb.ravel()[flat_mask], np.arange(n))
    assert np.all(xb.reshape(-1, 3, 1)[~flat_mask] == 0)
    with pytest.raises(ValueError):
        eval_batches(x, y, 0)


# ---------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------

_KEY = jax.random.key(0)
_X1D = jax.random.normal(jax.random.key(1), (16, 40, 2))
_X2D = jax.random.normal(jax.random.key(2), (16, 8, 8, 3))

# Jitted once at import and used throughout: eager op-by-op execution compiles
# every primitive separately and would dominate this file's runtime.
_SHIFT5 = jax.jit(functools.partial(random_shift_1d, max_shift=5))
_CROP2 = jax.jit(functools.partial(random_crop_2d, padding=2))
_FLIP = jax.jit(random_flip_2d)
_CUTOUT4 = jax.jit(functools.partial(cutout, size=4))

_AUGMENTATIONS = [
    ("shift", functools.partial(random_shift_1d, max_shift=5), _SHIFT5, _X1D),
    ("crop", functools.partial(random_crop_2d, padding=2), _CROP2, _X2D),
    ("flip", random_flip_2d, _FLIP, _X2D),
    ("cutout", functools.partial(cutout, size=4), _CUTOUT4, _X2D),
]


@pytest.mark.parametrize("name,fn,jitted,x", _AUGMENTATIONS, ids=[a[0] for a in _AUGMENTATIONS])
def test_augmentation_contract(name: str, fn, jitted, x: jax.Array) -> None:
    out = jitted(_KEY, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, jitted(_KEY, x))  # deterministic given the key
    assert not np.array_equal(out, x)  # does something
    assert not np.array_equal(out, jitted(jax.random.key(7), x))  # depends on the key
    # bfloat16 in, bfloat16 out: no silent upcasting (checked by tracing only).
    traced = jax.eval_shape(fn, _KEY, jax.ShapeDtypeStruct(x.shape, jnp.bfloat16))
    assert traced.shape == x.shape and traced.dtype == jnp.bfloat16


def test_augmentation_accepts_legacy_uint32_keys() -> None:
    out = _SHIFT5(jax.random.PRNGKey(0), _X1D)
    assert out.shape == _X1D.shape


def test_random_shift_1d_zero_is_identity() -> None:
    identity = jax.jit(functools.partial(random_shift_1d, max_shift=0))
    np.testing.assert_array_equal(identity(_KEY, _X1D), _X1D)


def test_random_shift_1d_zero_fills_without_wraparound() -> None:
    # Strictly positive ramp: zeros can only come from the fill, and surviving
    # values must be one contiguous run of the original sequence.
    ramp = jnp.arange(1.0, 41.0)[None, :, None]
    out = np.asarray(_SHIFT5(jax.random.key(3), jnp.broadcast_to(ramp, _X1D.shape)))
    zeros = (out[:, :, 0] == 0).sum(axis=1)
    assert zeros.max() <= 5 and len(set(zeros.tolist())) > 1
    for row in out[:, :, 0]:
        kept = row[row != 0]
        np.testing.assert_array_equal(np.diff(kept), np.ones(len(kept) - 1))
        nz = np.flatnonzero(row)
        assert nz[-1] - nz[0] + 1 == len(nz)  # zeros only at one end


def test_random_crop_2d_is_a_shifted_window() -> None:
    image = jnp.arange(1.0, 65.0).reshape(1, 8, 8, 1)
    xs = jnp.broadcast_to(image, _X2D.shape)
    out = np.asarray(_CROP2(jax.random.key(4), xs))
    ref = np.pad(np.asarray(image[0, :, :, 0]), 2)
    windows = [ref[i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
    for img in out[:, :, :, 0]:
        assert any(np.array_equal(img, w) for w in windows)
    assert len({img.tobytes() for img in out[:, :, :, 0]}) > 1
    np.testing.assert_array_equal(random_crop_2d(_KEY, xs, padding=0), xs)


def test_random_flip_2d_flips_width_axis() -> None:
    out = np.asarray(_FLIP(_KEY, _X2D))
    x = np.asarray(_X2D)
    flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x, strict=True)]
    kept = [np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_cutout_zeros_a_clipped_square() -> None:
    x = jnp.ones(_X2D.shape)
    out = np.asarray(_CUTOUT4(_KEY, x))
    for img in out:
        hole = img[:, :, 0] == 0
        for c in range(1, img.shape[-1]):
            np.testing.assert_array_equal(hole, img[:, :, c] == 0)  # all channels cut
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
    assert any((img[:, :, 0] == 0).sum() == 16 for img in out)  # full squares occur
    assert any((img[:, :, 0] == 0).sum() < 16 for img in out)  # clipped at borders
    no_cut = jax.jit(functools.partial(cutout, size=0))
    np.testing.assert_array_equal(no_cut(_KEY, x), x)


def test_augmentation_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        random_shift_1d(_KEY, _X1D, max_shift=-1)
    with pytest.raises(ValueError):
        random_shift_1d(_KEY, _X2D, max_shift=1)
    with pytest.raises(ValueError):
        cutout(_KEY, _X1D, size=2)
