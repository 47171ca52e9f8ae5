"""Scale: data parallelism over devices, and many searches in one program.

**Data parallelism.** A search step is compiled once with ``jax.jit`` over a
one-axis :class:`jax.sharding.Mesh` named ``"data"``: batches are split along
their leading (example) axis, everything else (weights, batch-norm
statistics, architecture parameters, optimizer states, RNG keys) is
replicated. No collective is written by hand. The step computes its losses as
means over the *logical* global batch, so XLA inserts the all-reduces: weight
gradients and architecture gradients are the global means (every device ends
the step with the same weights and the same architecture), and batch norm
normalises with the statistics of the global batch, exactly as one device
would. A random sample drawn from a replicated key is one replicated value, so
a GDAS/SNAS Gumbel sample is the same on every device. The mesh uses
``AxisType.Auto`` (sharding propagated by the compiler): jax 0.12's default
``Explicit`` axes make optax's losses fail to trace.

**Many searches in one program.** ``jax.vmap`` over a leading seed axis runs
N independent searches (own weights, alphas, optimizer states and data
orders) as one compiled step with N-times larger kernels. Given a
:func:`seed_mesh`, the seed axis is also split over devices with
``jax.shard_map``: each device advances its own N / devices searches and no
device talks to another. That is the way to spread seeds over the GPUs of a
node, and on a CPU over host devices (``jax_num_cpu_devices``), where each
device's program runs on its own core instead of sharing every kernel between
the cores. ``benchmarks/seeds.py`` measures the cost against N separate runs:
on a 2-core CPU, 4 MNIST-1D searches over 2 host devices with
``per_device="map"`` take 0.55-0.60x the time, plain vmap on one device about
1.0x (its working set outgrows the cache; see the README).

Example (4 CPU devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``)::

  mesh = make_mesh()
  state = replicate(strategy.init(key), mesh)
  step = data_parallel_step(strategy.step, mesh)
  state, metrics = step(state, shard_batch(batch_train, mesh), shard_batch(batch_val, mesh))
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jnas.data.batching import epoch_batches, split_train_val

log = logging.getLogger(__name__)

#: Name of the mesh axis that batches are split along.
DATA_AXIS = "data"
#: Name of the mesh axis that stacked searches (seeds) are split along.
SEED_AXIS = "seeds"

StepFn = Callable[[Any, Any, Any], tuple[Any, Any]]


# ---------------------------------------------------------------------------
# Multi-host start
# ---------------------------------------------------------------------------


def _distributed_env() -> str | None:
  """Which multi-process launcher the environment shows, or None for a single process."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "jax"
  if all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                            "SLURM_PROCID", "SLURM_LOCALID")) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "ompi"
  hosts = env.get("TPU_WORKER_HOSTNAMES") or env.get("TPU_PROCESS_ADDRESSES") or ""
  if "," in hosts:
    return "tpu"
  return None


def initialize_distributed() -> bool:
  """Starts ``jax.distributed`` when launched as one of several processes; no-op otherwise.

  Call it first thing, before any JAX computation. It recognises:

  * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) together with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (and optionally
    ``JAX_LOCAL_DEVICE_IDS``): a launcher of your own;
  * Slurm (``srun`` with ``SLURM_NTASKS > 1``), Open MPI (``mpirun`` with more
    than one rank) and multi-host Cloud TPU slices (``TPU_WORKER_HOSTNAMES``
    listing several hosts), whose settings ``jax.distributed.initialize``
    detects itself.

  Returns True if it initialised (or JAX already was), False for a single
  process. Afterwards ``jax.devices()`` lists the devices of every process and
  :func:`make_mesh` spans them all; each process then feeds its own part of
  the global batch (see :func:`shard_batch`).

  Example:
    >>> initialize_distributed()  # one process, no launcher variables
    False
  """
  if jax.distributed.is_initialized():
    return True
  kind = _distributed_env()
  if kind is None:
    return False
  if kind == "jax":
    env = os.environ
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not")
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
  log.info("jax.distributed started (%s): process %d of %d, %d devices in all", kind,
           jax.process_index(), jax.process_count(), jax.device_count())
  return True


# ---------------------------------------------------------------------------
# Data parallelism
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Many searches in one program (vmap over seeds)
# ---------------------------------------------------------------------------


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
