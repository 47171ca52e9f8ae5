"""Data parallelism: one-axis meshes, shardings, placing state and batches, the compiled step.

How the step shares work between devices: see :mod:`jnas.parallel`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Name of the mesh axis that batches are split along.
DATA_AXIS = "data"

StepFn = Callable[[Any, Any, Any], tuple[Any, Any]]


def _one_axis_mesh(num_devices: int | None, axis: str) -> Mesh:
  available = jax.device_count()
  n = available if num_devices is None else int(num_devices)
  if not 1 <= n <= available:
    raise ValueError(f"num_devices must be in [1, {available}] (the devices JAX sees), got {n}")
  devices = jax.devices()[:n]
  axis_type = getattr(jax.sharding, "AxisType", None)
  if axis_type is None:  # JAX before axis types: every axis behaves as Auto
    return jax.make_mesh((n,), (axis,), devices=devices)
  return jax.make_mesh((n,), (axis,), axis_types=(axis_type.Auto,), devices=devices)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis ``("data",)`` mesh over the first ``num_devices`` devices (default: all).

  The axis type is ``Auto`` on every JAX version that has axis types, so
  shardings propagate through the step without annotations.

  Example:
    >>> dict(make_mesh(1).shape)
    {'data': 1}
  """
  return _one_axis_mesh(num_devices, DATA_AXIS)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (example) axis over the mesh's ``data`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _global_from_host(x: Any, sharding: NamedSharding) -> jax.Array:
  """Builds a global array from a value every process holds in full."""
  if _is_key(x):
    impl = jax.random.key_impl(x)
    data = _global_from_host(jax.random.key_data(x), sharding)
    return jax.random.wrap_key_data(data, impl=impl)
  arr = np.asarray(x)
  return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies every leaf of ``tree`` (a strategy state, say) to every device of ``mesh``.

  With several processes each must pass the same values (they do when they
  start from the same seed).

  Example:
    >>> state = replicate({"w": jnp.ones(3)}, make_mesh(1))
    >>> state["w"].sharding.is_fully_replicated
    True
  """
  sharding = replicated_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _global_from_host(x, sharding), tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits every leaf of ``batch`` (e.g. ``(x, y)``) along its leading axis over ``mesh``.

  With one process ``batch`` is the global batch, and its size must be a
  multiple of the number of devices. With several processes each passes its
  own part (the global batch is the concatenation in process order), whose
  size must be a multiple of its local device count.

  Example:
    >>> x, y = shard_batch((jnp.ones((8, 24, 1)), jnp.zeros(8, jnp.int32)), make_mesh(1))
    >>> x.shape
    (8, 24, 1)
  """
  sharding = batch_sharding(mesh)
  n = mesh.devices.size if jax.process_count() == 1 else len(
      [d for d in mesh.devices.flat if d.process_index == jax.process_index()])
  for leaf in jax.tree.leaves(batch):
    size = np.shape(leaf)[0] if np.ndim(leaf) else None
    if size is None or size % n:
      raise ValueError(f"batch leading axis ({size}) must be a multiple of the {n} devices "
                       f"it is split over")
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def data_parallel_step(step_fn: StepFn, mesh: Mesh, *, donate: bool = True,
                       compiler_options: dict[str, Any] | None = None) -> StepFn:
  """Compiles ``step(state, batch_train, batch_val) -> (state, metrics)`` for ``mesh``.

  Works for any :class:`~jnas.strategies.base.GradientStrategy` step: the
  state (and the metrics) are replicated, both batches split along their
  leading axis. The state's buffers are donated, so pass the state returned
  by the previous step (the old one is invalid afterwards). Inputs placed by
  :func:`replicate` and :func:`shard_batch` skip a transfer; other inputs are
  moved to these shardings. ``compiler_options`` go to ``jax.jit`` (see
  :func:`jnas.utils.xla.compiler_options`).

  Example:
    >>> step = data_parallel_step(strategy.step, mesh)  # doctest: +SKIP
    >>> state, metrics = step(state, shard_batch(bt, mesh), shard_batch(bv, mesh))  # doctest: +SKIP
  """
  rep, data = replicated_sharding(mesh), batch_sharding(mesh)
  return jax.jit(step_fn, in_shardings=(rep, data, data), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else (), compiler_options=compiler_options)
