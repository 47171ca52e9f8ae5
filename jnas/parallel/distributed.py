"""Multi-host start: ``jax.distributed`` when launched as one of several processes."""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


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
