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

The code is split by concern: ``distributed`` (multi-host start),
``data_parallel`` (meshes, shardings, placement and the data-parallel step)
and ``seeds`` (many searches in one program). Import from this package.
"""

from jnas.parallel.data_parallel import DATA_AXIS
from jnas.parallel.data_parallel import StepFn
from jnas.parallel.data_parallel import batch_sharding
from jnas.parallel.data_parallel import data_parallel_step
from jnas.parallel.data_parallel import make_mesh
from jnas.parallel.data_parallel import replicate
from jnas.parallel.data_parallel import replicated_sharding
from jnas.parallel.data_parallel import shard_batch
from jnas.parallel.distributed import initialize_distributed
from jnas.parallel.seeds import SEED_AXIS
from jnas.parallel.seeds import gather_step
from jnas.parallel.seeds import host_devices_for
from jnas.parallel.seeds import init_seeds
from jnas.parallel.seeds import seed_batch_indices
from jnas.parallel.seeds import seed_mesh
from jnas.parallel.seeds import seed_slice
from jnas.parallel.seeds import shard_seeds
from jnas.parallel.seeds import stack_trees
from jnas.parallel.seeds import unstack_trees
from jnas.parallel.seeds import vmap_gather_step
from jnas.parallel.seeds import vmap_step
