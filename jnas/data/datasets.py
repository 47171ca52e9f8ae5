"""In-memory datasets and a name registry for loading them.

Everything here lives on the host as numpy arrays; moving batches to the device
is the training loop's job (see :mod:`jnas.data.batching`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

#: Seed used when the caller does not pick one. It equals mnist1d's own default
#: (``get_dataset_args().seed == 42``), so ``load_dataset("mnist1d")`` gives the
#: package's standard dataset and train/test split.
DEFAULT_DATA_SEED = 42

# Bump when the cached file layout changes so stale caches are ignored, not misread.
_CACHE_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held as host numpy arrays.

    Inputs are float32 and channels-last (``[N, length, 1]`` for MNIST-1D,
    ``[N, 8, 8, 1]`` for digits); labels are int32 in ``[0, num_classes)``.
    Inputs are already standardized as ``(raw - mean) / std``, with the scalar
    ``mean`` and ``std`` computed on the training inputs only.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.input_shape, ds.num_classes
        ((8, 8, 1), 10)
        >>> raw = ds.x_train * ds.std + ds.mean  # undo the standardization
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != np.float32 or y.dtype != np.int32:
                raise ValueError(
                    f"{self.name}: {split} arrays must be float32/int32, got {x.dtype}/{y.dtype}"
                )
            if y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: x_{split} {x.shape} and y_{split} {y.shape} do not match"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train/test example shapes differ: "
                f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of a single example, e.g. ``(40, 1)`` for MNIST-1D.

        Example:
            >>> load_dataset("digits").input_shape
            (8, 8, 1)
        """
        return tuple(self.x_train.shape[1:])

    @classmethod
    def from_arrays(
        cls,
        name: str,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        num_classes: int | None = None,
    ) -> Dataset:
        """Build a standardized ``Dataset`` from raw arrays.

        Casts inputs to float32 and labels to int32, then standardizes both
        splits with the scalar mean/std of ``x_train``. ``num_classes`` defaults
        to ``max(label) + 1`` over both splits. Intended for loaders passed to
        :func:`register_dataset`.

        Example:
            >>> x = np.arange(12.0).reshape(6, 2, 1)
            >>> y = np.array([0, 1, 0, 1, 0, 1])
            >>> ds = Dataset.from_arrays("toy", x[:4], y[:4], x[4:], y[4:])
            >>> ds.num_classes, ds.input_shape
            (2, (2, 1))
        """
        x_train = np.asarray(x_train, dtype=np.float32)
        x_test = np.asarray(x_test, dtype=np.float32)
        y_train = np.asarray(y_train).astype(np.int32)
        y_test = np.asarray(y_test).astype(np.int32)
        if x_train.shape[0] == 0:
            raise ValueError(f"{name}: the training set is empty")
        # Statistics in float64: float32 accumulation drifts on large datasets.
        mean = float(x_train.mean(dtype=np.float64))
        std = float(x_train.std(dtype=np.float64))
        if not std > 0.0:
            # A constant training set would otherwise turn into NaNs.
            std = 1.0
        if num_classes is None:
            num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
        return cls(
            name=name,
            x_train=((x_train - mean) / std).astype(np.float32),
            y_train=y_train,
            x_test=((x_test - mean) / std).astype(np.float32),
            y_test=y_test,
            num_classes=int(num_classes),
            mean=mean,
            std=std,
        )


class DatasetLoader(Protocol):
    """Signature of a loader accepted by :func:`register_dataset`.

    It is called with keyword arguments only: ``seed`` (int) and ``cache_dir``
    (a :class:`pathlib.Path` it may use for files it wants to keep).
    """

    def __call__(self, *, seed: int, cache_dir: Path) -> Dataset: ...


_REGISTRY: dict[str, DatasetLoader] = {}


def register_dataset(name: str, loader_fn: DatasetLoader, *, overwrite: bool = False) -> None:
    """Make ``load_dataset(name)`` call ``loader_fn(seed=..., cache_dir=...)``.

    Raises ``ValueError`` if ``name`` is taken, unless ``overwrite=True``.

    Example:
        >>> def tiny(*, seed: int, cache_dir: Path) -> Dataset:
        ...     x, y = np.zeros((4, 3, 1)), np.array([0, 1, 0, 1])
        ...     return Dataset.from_arrays("tiny", x[:2], y[:2], x[2:], y[2:])
        >>> register_dataset("tiny", tiny)
        >>> load_dataset("tiny").num_classes
        2
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = loader_fn


def available_datasets() -> list[str]:
    """Sorted names accepted by :func:`load_dataset`.

    Example:
        >>> available_datasets()
        ['digits', 'mnist1d']
    """
    return sorted(_REGISTRY)


def default_cache_dir() -> Path:
    """Where datasets are cached: ``$JNAS_CACHE_DIR``, else ``~/.cache/jnas``.

    Read on every call so that setting the variable after import still works.

    Example:
        >>> default_cache_dir().name  # doctest: +SKIP
        'jnas'
    """
    env = os.environ.get("JNAS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jnas"


def load_dataset(
    name: str, *, seed: int = DEFAULT_DATA_SEED, cache_dir: str | os.PathLike | None = None
) -> Dataset:
    """Load a registered dataset by name.

    ``seed`` fixes how the data are generated or split into train/test; it is a
    *data* seed, separate from any training seed. The default gives each
    dataset's standard split (for MNIST-1D, exactly the package default).

    Example:
        >>> load_dataset("digits").x_train.shape
        (1437, 8, 8, 1)
        >>> ds = load_dataset("mnist1d")  # doctest: +SKIP
        >>> ds.x_train.shape, ds.x_test.shape  # doctest: +SKIP
        ((4000, 40, 1), (1000, 40, 1))
    """
    loader = _REGISTRY.get(name)
    if loader is None:
        raise ValueError(
            f"unknown dataset {name!r} (known: {', '.join(available_datasets())})"
        )
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return loader(seed=int(seed), cache_dir=path)


# ---------------------------------------------------------------------------
# digits (scikit-learn, bundled with the package: no download)
# ---------------------------------------------------------------------------

_DIGITS_TEST_FRACTION = 0.2


def _load_digits(*, seed: int, cache_dir: Path) -> Dataset:
    del cache_dir  # Bundled with scikit-learn and fast to load; nothing to cache.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images[..., None]  # [N, 8, 8] -> channels-last [N, 8, 8, 1]
    labels = bunch.target
    # Stratified so that the small (≈36 per class) test set keeps the class balance.
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=_DIGITS_TEST_FRACTION,
        random_state=seed,
        stratify=labels,
    )
    return Dataset.from_arrays("digits", x_train, y_train, x_test, y_test, num_classes=10)


# ---------------------------------------------------------------------------
# MNIST-1D (generated offline by the mnist1d package, cached as .npz)
# ---------------------------------------------------------------------------

# Args that do not change the generated arrays and so must not change the cache key.
_MNIST1D_IGNORED_ARGS = frozenset({"url"})
_MNIST1D_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _mnist1d_args(seed: int, **overrides: Any) -> Any:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    for name, value in overrides.items():
        setattr(args, name, value)
    if hasattr(args, "seed"):
        args.seed = seed
    elif seed != DEFAULT_DATA_SEED:
        # Silently returning the same data for every seed would fake independent runs.
        raise ValueError(
            "this mnist1d version has no 'seed' argument; only the default data seed "
            f"({DEFAULT_DATA_SEED}) is supported"
        )
    return args


def _mnist1d_cache_key(args: Any) -> str:
    relevant = {k: v for k, v in vars(args).items() if k not in _MNIST1D_IGNORED_ARGS}
    # The generator itself may change between releases even with identical args.
    relevant["_mnist1d_version"] = importlib.metadata.version("mnist1d")
    relevant["_format"] = _CACHE_FORMAT_VERSION
    return json.dumps(relevant, sort_keys=True, default=str)


def _generate_mnist1d(args: Any) -> dict[str, np.ndarray]:
    """Run mnist1d's generator; ``make_dataset`` is pure computation, no network.

    ``get_dataset`` is deliberately not used: it downloads a pickle by default.
    """
    import mnist1d.data

    # make_dataset reseeds the global `random` and `np.random` generators; restore
    # them so that loading data does not silently change a caller's randomness.
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        raw = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(raw["x"]),
        "y_train": np.asarray(raw["y"]),
        "x_test": np.asarray(raw["x_test"]),
        "y_test": np.asarray(raw["y_test"]),
    }


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """Return the cached arrays, or None if the file is missing, corrupt or stale."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                logger.warning("cache %s was written for other args; regenerating", path)
                return None
            arrays = {name: np.array(npz[name]) for name in _MNIST1D_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        logger.warning("cannot read cache %s (%s); regenerating", path, err)
        return None
    return arrays


def _write_cache_atomically(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write via a temp file + rename so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target: os.replace is only atomic within a filesystem.
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _mnist1d_cache_path(cache_dir: Path, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"mnist1d-{digest}.npz"


def _load_mnist1d(*, seed: int, cache_dir: Path, name: str = "mnist1d", **overrides: Any) -> Dataset:
    args = _mnist1d_args(seed, **overrides)
    key = _mnist1d_cache_key(args)
    path = _mnist1d_cache_path(cache_dir, key)
    arrays = _read_cache(path, key)
    if arrays is None:
        logger.info("generating MNIST-1D (seed=%d); caching to %s", seed, path)
        arrays = _generate_mnist1d(args)
        try:
            _write_cache_atomically(path, key, arrays)
        except OSError as err:
            # A read-only or full disk should cost time, not the run.
            logger.warning("could not write cache %s (%s); continuing uncached", path, err)
    return Dataset.from_arrays(
        name,
        arrays["x_train"][..., None],  # [N, length] -> channels-last [N, length, 1]
        arrays["y_train"],
        arrays["x_test"][..., None],
        arrays["y_test"],
        num_classes=10,
    )


register_dataset("digits", _load_digits)
register_dataset("mnist1d", _load_mnist1d)
# The same generator with 40,000 sequences, split 10,000 / 30,000: a test set large enough that a
# cell's accuracy has a sampling error under 0.3 points, and a training pool to draw small,
# hard training sets from (the NB201 MNIST-1D table v2, issue 27).
register_dataset("mnist1d_40k", functools.partial(
    _load_mnist1d, name="mnist1d_40k", num_samples=40_000, train_split=0.25))
# Harder: twice the correlated noise and a stronger shear, so that converged cells do not tie.
register_dataset("mnist1d_40k_noisy", functools.partial(
    _load_mnist1d, name="mnist1d_40k_noisy", num_samples=40_000, train_split=0.25,
    corr_noise_scale=0.5, shear_scale=1.0))
