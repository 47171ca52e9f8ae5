"""Deterministic host-side splitting and batching.

Batches of a whole epoch are returned stacked (``[num_batches, batch_size, ...]``)
so a training loop can move one epoch to the device at once and ``lax.scan``
over it. Orders depend only on ``(seed, epoch)``, never on global RNG state, so
a run resumed from a checkpoint sees exactly the batches it would have seen.
"""

from __future__ import annotations

import numpy as np


def _check_pair(x: np.ndarray, y: np.ndarray) -> int:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same leading dimension, got {x.shape} and {y.shape}"
        )
    return int(x.shape[0])


def split_train_val(
    x: np.ndarray, y: np.ndarray, *, fraction: float = 0.5, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Shuffle the training set and split it into two disjoint parts.

    The first part gets ``round(fraction * N)`` examples, the second the rest.
    DARTS-style search uses the halves for the weights and the architecture
    parameters respectively; pass only training data, never the test set.

    Example:
        >>> x, y = np.arange(10.0)[:, None], np.arange(10)
        >>> (xa, ya), (xb, yb) = split_train_val(x, y, seed=0)
        >>> len(ya), len(yb), sorted(np.concatenate([ya, yb])) == list(range(10))
        (5, 5, True)
    """
    n = _check_pair(x, y)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_a = int(round(fraction * n))
    if n_a == 0 or n_a == n:
        raise ValueError(
            f"fraction={fraction} of {n} examples leaves one part empty; need more data"
        )
    perm = np.random.default_rng(seed).permutation(n)
    idx_a, idx_b = perm[:n_a], perm[n_a:]
    x, y = np.asarray(x), np.asarray(y)
    return (x[idx_a], y[idx_a]), (x[idx_b], y[idx_b])


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Example indices for one epoch: a permutation that is a pure function of (seed, epoch).

    Example:
        >>> epoch_order(5, seed=0, epoch=1).tolist() == epoch_order(5, seed=0, epoch=1).tolist()
        True
    """
    if not shuffle:
        return np.arange(n)
    if seed < 0 or epoch < 0:
        # SeedSequence rejects negative entropy; fail with a message that names our args.
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """All training batches of one epoch, stacked.

    Returns ``xb`` of shape ``[num_batches, batch_size, *x.shape[1:]]`` and ``yb``
    of shape ``[num_batches, batch_size]``. With ``drop_remainder=True`` the last
    ``N % batch_size`` examples of this epoch's order are skipped (a different
    set each epoch when shuffling). With ``drop_remainder=False`` every example
    appears: the last batch is filled up with examples from the start of this
    epoch's order, so a few are seen twice. For exact evaluation over all
    examples use :func:`eval_batches` instead.

    Example:
        >>> x, y = np.zeros((10, 3), np.float32), np.arange(10)
        >>> xb, yb = epoch_batches(x, y, 4, seed=0, epoch=0)
        >>> xb.shape, yb.shape
        ((2, 4, 3), (2, 4))
    """
    n = _check_pair(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0:
        raise ValueError("cannot batch an empty dataset")
    if drop_remainder and batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {n} examples, so "
            "drop_remainder=True would yield no batches"
        )
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
    if drop_remainder:
        num_batches = n // batch_size
        order = order[: num_batches * batch_size]
    else:
        num_batches = -(-n // batch_size)
        # np.resize repeats the order cyclically, which also covers batch_size > n.
        order = np.resize(order, num_batches * batch_size)
    x, y = np.asarray(x), np.asarray(y)
    xb = x[order].reshape(num_batches, batch_size, *x.shape[1:])
    yb = y[order].reshape(num_batches, batch_size, *y.shape[1:])
    return xb, yb


def eval_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All examples in order, stacked into padded batches with a validity mask.

    Returns ``(xb, yb, mask)`` with shapes ``[num_batches, batch_size, ...]``,
    ``[num_batches, batch_size]`` and ``[num_batches, batch_size]`` where
    ``num_batches = ceil(N / batch_size)``. ``mask`` is float32, 1 for real
    examples and 0 for padding, so ``sum(metric * mask) / sum(mask)`` is exact.
    Padding inputs are zeros and padding labels are 0.

    Example:
        >>> x, y = np.ones((10, 3), np.float32), np.arange(10)
        >>> xb, yb, mask = eval_batches(x, y, 4)
        >>> xb.shape, int(mask.sum())
        ((3, 4, 3), 10)
    """
    n = _check_pair(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0:
        raise ValueError("cannot batch an empty dataset")
    x, y = np.asarray(x), np.asarray(y)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    # Label 0 rather than e.g. -1: padded rows still go through the loss, and an
    # out-of-range class index can turn a masked-out term into NaN.
    x_pad = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y_pad = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return (
        x_pad.reshape(num_batches, batch_size, *x.shape[1:]),
        y_pad.reshape(num_batches, batch_size, *y.shape[1:]),
        mask.reshape(num_batches, batch_size),
    )
