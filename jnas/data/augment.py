"""Batch data augmentation in pure JAX, usable inside ``jax.jit``.

Every function has the form ``fn(key, x, ...) -> x`` for a batch ``x`` of shape
``[B, *spatial, C]`` and draws independent randomness per example. Shape and
dtype are preserved. Size arguments (``max_shift``, ``padding``, ``size``) are
static Python ints, so bind them with ``functools.partial`` before jitting.

Filled-in regions are zeros. Our datasets are standardized, so zero is the
training-set mean rather than "black", which is what cutout/crop-padding do
on normalized CIFAR inputs in the original implementations too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_static_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative Python int, got {value!r}")
    return value


def _check_rank(fn_name: str, x: jax.Array, ndim: int, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{fn_name} expects x of shape {layout}, got shape {x.shape}")


def random_shift_1d(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Translate each sequence by a random integer in ``[-max_shift, max_shift]``.

    ``x`` has shape ``[B, L, C]``. A positive shift moves content towards the
    end; positions shifted in from outside are zero (no wraparound).
    ``max_shift=0`` is the identity.

    Example:
        >>> x = jnp.ones((2, 40, 1))
        >>> random_shift_1d(jax.random.key(0), x, max_shift=4).shape
        (2, 40, 1)
    """
    _check_static_int("max_shift", max_shift)
    _check_rank("random_shift_1d", x, 3, "[B, L, C]")
    batch, length, _ = x.shape
    shifts = jax.random.randint(key, (batch,), -max_shift, max_shift + 1)
    src = jnp.arange(length)[None, :] - shifts[:, None]  # out[i] = x[i - shift]
    valid = (src >= 0) & (src < length)
    gathered = jnp.take_along_axis(x, jnp.clip(src, 0, length - 1)[:, :, None], axis=1)
    return jnp.where(valid[:, :, None], gathered, jnp.zeros((), x.dtype))


def random_crop_2d(key: jax.Array, x: jax.Array, padding: int) -> jax.Array:
    """Zero-pad each image by ``padding`` on all sides and take a random crop of the original size.

    ``x`` has shape ``[B, H, W, C]``. This is the standard CIFAR "random crop
    with padding"; ``padding=0`` is the identity.

    Example:
        >>> x = jnp.ones((2, 8, 8, 1))
        >>> random_crop_2d(jax.random.key(0), x, padding=2).shape
        (2, 8, 8, 1)
    """
    _check_static_int("padding", padding)
    _check_rank("random_crop_2d", x, 4, "[B, H, W, C]")
    batch, height, width, channels = x.shape
    if padding == 0:
        return x
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (height, width, channels)
        )

    return jax.vmap(crop)(padded, offsets)


def random_flip_2d(key: jax.Array, x: jax.Array) -> jax.Array:
    """Flip each image left-right (along the width axis) with probability 0.5.

    ``x`` has shape ``[B, H, W, C]``.

    Example:
        >>> x = jnp.arange(8.0).reshape(1, 2, 4, 1)
        >>> random_flip_2d(jax.random.key(0), x).shape
        (1, 2, 4, 1)
    """
    _check_rank("random_flip_2d", x, 4, "[B, H, W, C]")
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def cutout(key: jax.Array, x: jax.Array, size: int) -> jax.Array:
    """Zero a random ``size`` x ``size`` square in each image (DeVries & Taylor, 2017).

    ``x`` has shape ``[B, H, W, C]``. The square's center is uniform over all
    pixels and the square is clipped at the borders, so near an edge fewer than
    ``size**2`` pixels are zeroed. All channels are cut. ``size=0`` is the identity.

    Example:
        >>> x = jnp.ones((2, 8, 8, 1))
        >>> out = cutout(jax.random.key(0), x, size=4)
        >>> out.shape, bool((out == 0).any())
        ((2, 8, 8, 1), True)
    """
    _check_static_int("size", size)
    _check_rank("cutout", x, 4, "[B, H, W, C]")
    batch, height, width, _ = x.shape
    key_y, key_x = jax.random.split(key)
    center_y = jax.random.randint(key_y, (batch,), 0, height)
    center_x = jax.random.randint(key_x, (batch,), 0, width)
    # Exactly `size` rows/cols before clipping, also for odd sizes.
    top = center_y - size // 2
    left = center_x - size // 2
    rows = jnp.arange(height)[None, :]
    cols = jnp.arange(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # [B, W]
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)
