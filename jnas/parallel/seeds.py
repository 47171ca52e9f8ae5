"""Many searches in one program: stacked states, vmapped steps, seeds split over devices.

How and when this beats separate runs: see :mod:`jnas.parallel`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jnas.data.batching import epoch_batches, split_train_val
from jnas.parallel.data_parallel import StepFn, _global_from_host, _one_axis_mesh

#: Name of the mesh axis that stacked searches (seeds) are split along.
SEED_AXIS = "seeds"


def stack_trees(trees: Sequence[Any]) -> Any:
  """Stacks pytrees of equal structure along a new leading axis (typed keys included).

  Example:
    >>> stack_trees([{"a": jnp.zeros(2)}, {"a": jnp.ones(2)}])["a"].shape
    (2, 2)
  """
  if not trees:
    raise ValueError("nothing to stack: the list of pytrees is empty")
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def seed_slice(tree: Any, i: int) -> Any:
  """The ``i``-th seed's pytree out of a stacked one.

  Example:
    >>> seed_slice({"a": jnp.arange(6).reshape(3, 2)}, 1)["a"].tolist()
    [2, 3]
  """
  return jax.tree.map(lambda x: x[i], tree)


def unstack_trees(tree: Any) -> list[Any]:
  """Inverse of :func:`stack_trees`: one pytree per entry of the leading axis.

  Example:
    >>> len(unstack_trees({"a": jnp.zeros((3, 2))}))
    3
  """
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError("cannot unstack a pytree without leaves")
  return [seed_slice(tree, i) for i in range(leaves[0].shape[0])]


def init_seeds(init_fn: Callable[[Any], Any], keys: Sequence[Any]) -> Any:
  """One state per key (or integer seed), stacked along a leading seed axis.

  ``init_fn(key)`` must build the *whole* initial state of one search:
  weights and architecture parameters included. A strategy whose ``init``
  ignores the key, like DARTS (its initial weights are given to its
  factory), needs an ``init_fn`` that builds a fresh supernet per seed, e.g.
  ``lambda s: darts(*build_supernet(seed=s), ...).init(jax.random.key(s))``
  (see ``benchmarks/seeds.py``). Initialisation runs once per seed on the
  host: it is not the hot path, and NNX module construction need not be
  traceable.

  The step of any one seed's strategy then serves all seeds under
  :func:`vmap_step`: a step closes over the network's structure and the
  optimizers, which the seeds share, not over initial values.

  Example:
    >>> keys = jax.random.split(jax.random.key(0), 3)
    >>> init_seeds(lambda k: {"w": jax.random.normal(k, (2,))}, keys)["w"].shape
    (3, 2)
  """
  return stack_trees([init_fn(k) for k in keys])


def seed_mesh(num_devices: int | None = None) -> Mesh:
  """A one-axis ``("seeds",)`` mesh over the first ``num_devices`` devices (default: all).

  Pass it to :func:`vmap_step` or :func:`vmap_gather_step` to split stacked
  searches over devices. On a CPU, ask for host devices before JAX starts,
  e.g. ``jax.config.update("jax_num_cpu_devices", 2)`` (see
  :func:`host_devices_for`).

  Example:
    >>> dict(seed_mesh(1).shape)
    {'seeds': 1}
  """
  return _one_axis_mesh(num_devices, SEED_AXIS)


def host_devices_for(num_seeds: int, cores: int | None = None) -> int:
  """How many CPU host devices to split ``num_seeds`` stacked searches over.

  The largest divisor of ``num_seeds`` that is at most ``cores`` (default:
  the cores this process may run on), so that every device holds the same
  number of searches and runs on a core of its own.

  Example:
    >>> host_devices_for(4, cores=2), host_devices_for(3, cores=2), host_devices_for(6, cores=4)
    (2, 1, 3)
  """
  if num_seeds < 1:
    raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
  if cores is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  cores = max(1, int(cores or 1))
  return max(d for d in range(1, min(num_seeds, cores) + 1) if num_seeds % d == 0)


def shard_seeds(tree: Any, mesh: Mesh) -> Any:
  """Splits every leaf of a stacked ``tree`` along its leading (seed) axis over ``mesh``.

  The number of seeds must be a multiple of the mesh's devices. With several
  processes each passes the whole stacked tree.

  Example:
    >>> states = shard_seeds({"w": jnp.zeros((4, 3))}, seed_mesh(1))
    >>> states["w"].shape
    (4, 3)
  """
  devices = mesh.devices.size
  for leaf in jax.tree.leaves(tree):
    size = np.shape(leaf)[0] if np.ndim(leaf) else None
    if size is None or size % devices:
      raise ValueError(f"seed axis ({size}) must be a multiple of the {devices} devices it is "
                       f"split over")
  sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _global_from_host(x, sharding), tree)


def _map_seeds(fn: Callable[..., Any], in_axes: tuple[Any, ...]) -> Callable[..., Any]:
  """Like ``jax.vmap(fn, in_axes)`` but one seed after the other (``lax.map``)."""

  def mapped(*args):
    stacked = tuple(a for a, ax in zip(args, in_axes) if ax is not None)

    def one(per_seed):
      it = iter(per_seed)
      return fn(*(a if ax is None else next(it) for a, ax in zip(args, in_axes)))

    return jax.lax.map(one, stacked)

  return mapped


def _over_seeds(fn: Callable[..., Any], in_axes: tuple[Any, ...], mesh: Mesh | None,
                per_device: str, donate: bool,
                compiler_options: dict[str, Any] | None) -> Callable[..., Any]:
  """``jit(vmap(fn))`` (or ``lax.map``), the seed axis split over ``mesh`` if one is given.

  ``in_axes`` entries are 0 (stacked on the seed axis) or None (shared).
  """
  if per_device == "vmap":
    batched = jax.vmap(fn, in_axes=in_axes)
  elif per_device == "map":
    batched = _map_seeds(fn, in_axes)
  else:
    raise ValueError(f"per_device must be 'vmap' or 'map', got {per_device!r}")
  if mesh is not None:
    # shard_map, not sharding propagation: each device runs a plain per-device
    # program, so custom calls (jnas's native CPU kernels) need no partitioning rule.
    axis = mesh.axis_names[0]
    spec = lambda a: PartitionSpec() if a is None else PartitionSpec(axis)  # noqa: E731
    batched = jax.shard_map(batched, mesh=mesh, in_specs=tuple(spec(a) for a in in_axes),
                            out_specs=PartitionSpec(axis), check_vma=False)
  return jax.jit(batched, donate_argnums=(0,) if donate else (),
                 compiler_options=compiler_options)


def vmap_step(step_fn: StepFn, *, donate: bool = True,
              compiler_options: dict[str, Any] | None = None,
              mesh: Mesh | None = None, per_device: str = "vmap") -> StepFn:
  """``step(states, batches_train, batches_val)`` for N searches stacked on axis 0, jitted.

  Every argument and result carries the seed axis first: states from
  :func:`init_seeds`, batches ``[N, batch, ...]`` (each seed its own), metrics
  ``[N]``. The states' buffers are donated. ``compiler_options`` go to
  ``jax.jit`` (see :func:`jnas.utils.xla.compiler_options`). With ``mesh``
  (from :func:`seed_mesh`) the seeds are split over its devices, N a
  multiple of their number; place the states with :func:`shard_seeds`.

  ``per_device`` says how a device advances its share of the seeds:
  ``"vmap"`` (default) batches them into kernels N / devices times larger,
  the better choice on an accelerator; ``"map"`` (``lax.map``) runs them one
  after the other inside the same program, each at the working set of one
  search, which is faster on CPU host devices whose searches outgrow the
  cache (``benchmarks/seeds.py`` has the measurements). Both give each seed
  the numbers of a separate run.

  Example:
    >>> step = vmap_step(strategy.step)  # doctest: +SKIP
    >>> states, metrics = step(states, (xs_t, ys_t), (xs_v, ys_v))  # doctest: +SKIP
  """
  return _over_seeds(step_fn, (0, 0, 0), mesh, per_device, donate, compiler_options)


def gather_step(step_fn: StepFn) -> Callable[[Any, Any, jax.Array, jax.Array], tuple[Any, Any]]:
  """Wraps a step to take index arrays into device-resident data instead of batches.

  The returned ``step(state, data, idx_train, idx_val)`` gathers
  ``data = (x, y)`` at the integer index arrays ``[batch]`` on the device, so
  a small dataset is moved to the device once and each step only sends the
  indices.

  Example:
    >>> step = jax.jit(gather_step(strategy.step))  # doctest: +SKIP
    >>> state, metrics = step(state, (x_all, y_all), idx_t, idx_v)  # doctest: +SKIP
  """

  def step(state, data, idx_train, idx_val):
    take = lambda idx: jax.tree.map(lambda a: jnp.take(a, idx, axis=0), data)
    return step_fn(state, take(idx_train), take(idx_val))

  return step


def vmap_gather_step(step_fn: StepFn, *, donate: bool = True,
                     compiler_options: dict[str, Any] | None = None,
                     mesh: Mesh | None = None, per_device: str = "vmap"
                     ) -> Callable[[Any, Any, jax.Array, jax.Array], tuple[Any, Any]]:
  """:func:`gather_step` for N stacked searches that share one dataset, jitted.

  ``step(states, data, idx_train, idx_val)``: ``states`` and the index
  arrays (``[N, batch]``) carry the seed axis, ``data`` is shared. Each seed
  thus reads its own batches (see :func:`seed_batch_indices`) without N
  copies of the data. ``compiler_options`` go to ``jax.jit``. With ``mesh``
  (from :func:`seed_mesh`) the seeds are split over its devices and every
  device keeps a copy of ``data``. ``per_device`` as in :func:`vmap_step`.

  Example:
    >>> step = vmap_gather_step(strategy.step)  # doctest: +SKIP
    >>> states, metrics = step(states, (x_all, y_all), idx_t[:, i], idx_v[:, i])  # doctest: +SKIP
  """
  return _over_seeds(gather_step(step_fn), (0, None, 0, 0), mesh, per_device, donate,
                     compiler_options)


def seed_batch_indices(num_examples: int, batch_size: int, seeds: Sequence[int], epoch: int,
                       *, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Per-seed batch indices of one search epoch, stacked: ``(idx_train, idx_val)``.

  Both have shape ``[len(seeds), steps, batch_size]`` and index the full
  training set. For each seed they follow the data plan of
  :func:`jnas.run.search` with ``config.seed = seed``: the training set is
  split in halves with :func:`~jnas.data.batching.split_train_val` (``seed``),
  the weight half is batched with ``seed`` and the architecture half with
  ``seed + 1`` by :func:`~jnas.data.batching.epoch_batches`; ``steps`` is
  the smaller half's number of full batches. A vmapped search therefore reads,
  seed by seed, the batches that separate runs read.

  Example:
    >>> it, iv = seed_batch_indices(20, 4, [0, 1], epoch=0)
    >>> it.shape, bool((it[0] != it[1]).any())
    ((2, 2, 4), True)
  """
  if not seeds:
    raise ValueError("seeds is empty: give at least one seed")
  ids = np.arange(num_examples)
  train, val = [], []
  for s in seeds:
    (iw, _), (ia, _) = split_train_val(ids, ids, fraction=fraction, seed=s)
    steps = min(len(iw), len(ia)) // batch_size
    if steps < 1:
      raise ValueError(f"batch_size={batch_size} is larger than half of the {num_examples} "
                       f"examples")
    train.append(epoch_batches(iw, iw, batch_size, seed=s, epoch=epoch)[0][:steps])
    val.append(epoch_batches(ia, ia, batch_size, seed=s + 1, epoch=epoch)[0][:steps])
  return np.stack(train).astype(np.int32), np.stack(val).astype(np.int32)
