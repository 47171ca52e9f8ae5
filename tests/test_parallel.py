"""Data parallelism: a step on 4 CPU devices equals the same step on one device.

The device count is fixed when JAX starts, and this pytest process has
already started it, so the 4-device run happens in a subprocess (this file
run as a script with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
The worker runs the same strategy twice, on one device and on a 4-device
mesh, and writes both results (and facts about the shardings) to an .npz that
the test compares.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas import parallel
from jnas.spaces.darts import DartsSpace
from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
from jnas.supernet import DartsSupernet, make_apply, split_model

NUM_DEVICES = 4
BATCH = 8
# One op of each kind that touches the batch axis differently (zero, identity,
# pooling + BN, separable conv + BN): compiling a step costs about half of the
# 8-op space's. The full space runs in the slow test.
SMALL_PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny_space(full: bool = False) -> DartsSpace:
  return DartsSpace(num_nodes=2) if full else DartsSpace(num_nodes=2, primitives=SMALL_PRIMITIVES)


def tiny_darts(seed: int = 0, total_steps: int = 10, full: bool = False):
  """A 2-cell DARTS supernet (2 nodes, C=4) on 1-D inputs, and its first-order strategy."""
  space = tiny_space(full)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=2, rngs=nnx.Rngs(seed))
  s = split_model(net)
  alpha = space.init_alpha(jax.random.key(seed + 1))
  # A large architecture learning rate, so that alpha moves visibly in 2 steps.
  return space, darts(make_apply(s.graphdef), s.params, s.state, alpha,
                      w_opt=weight_optimizer(total_steps=total_steps),
                      a_opt=arch_optimizer(lr=0.05))


def batches(key: int = 1, n: int = 2):
  """``n`` (train, val) pairs of random 1-D inputs of length 24."""
  out = []
  for i in range(n):
    kx, kv = jax.random.split(jax.random.key(key * 100 + i))
    x = jax.random.normal(kx, (BATCH, 24, 1))
    xv = jax.random.normal(kv, (BATCH, 24, 1))
    y = (jnp.arange(BATCH) + i) % 10
    out.append(((x, y), (xv, y[::-1])))
  return out


def _flat(tree) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): np.asarray(jax.device_get(v)) for p, v in leaves}


def _toy_step(state, batch_train, batch_val):
  """A least-squares step with a batch-norm-like running mean: cheap to compile."""
  x, y = batch_train
  loss = lambda w: jnp.mean((x @ w - y) ** 2)  # noqa: E731
  l, g = jax.value_and_grad(loss)(state["w"])
  new = {"w": state["w"] - 0.1 * g, "mean": 0.9 * state["mean"] + 0.1 * jnp.mean(x, axis=0)}
  return new, {"loss": l, "val_x": jnp.mean(batch_val[0])}


def _toy_data():
  x = jax.random.normal(jax.random.key(3), (2, BATCH, 4))
  return x, jnp.sum(x, -1), {"w": jnp.zeros(4), "mean": jnp.zeros(4)}


def _multihost_worker(out_path: str) -> None:
  """One of two processes (2 CPU devices each) running the toy step on a 4-device mesh."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  assert parallel.initialize_distributed()
  assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
  mesh = parallel.make_mesh()
  xs, ys, state0 = _toy_data()
  state = parallel.replicate(state0, mesh)
  step = parallel.data_parallel_step(_toy_step, mesh)
  half = BATCH // 2
  lo = jax.process_index() * half
  for i in range(2):
    local = (xs[i, lo:lo + half], ys[i, lo:lo + half])  # this process's part of the batch
    bt = parallel.shard_batch(local, mesh)
    assert bt[0].shape == (BATCH, 4)
    state, metrics = step(state, bt, bt)
  got = {k: np.asarray(v.addressable_shards[0].data) for k, v in state.items()}
  ref = state0
  for i in range(2):  # the same steps on the whole batch, on this process's first device
    ref, _ = jax.jit(_toy_step)(ref, (xs[i], ys[i]), (xs[i], ys[i]))
  np.savez(out_path, **{f"got_{k}": v for k, v in got.items()},
           **{f"ref_{k}": np.asarray(v) for k, v in ref.items()},
           loss=np.asarray(metrics["loss"].addressable_shards[0].data))


def _worker(out_dir: str, strategy_names: list[str]) -> None:
  """For each strategy: 2 steps on one device and on a 4-device mesh; saves both states."""
  for name in strategy_names:
    _compare(str(Path(out_dir) / f"{name}.npz"), name)


def _compare(out_path: str, case: str) -> None:
  """``case``: ``darts`` or ``gdas``, with ``_full`` for the 8-op space."""
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  full = case.endswith("_full")
  if case.startswith("darts"):
    _, strat = tiny_darts(full=full)
    key_of = None
  else:
    from jnas.strategies import gumbel  # noqa: PLC0415 (only when GDAS is tested)
    _, strat = gumbel_setup(gumbel, full=full)
    key_of = lambda s: s.key  # noqa: E731
  data = batches()

  # One device.
  state = strat.init(jax.random.key(0))
  step1 = jax.jit(strat.step)
  for bt, bv in data:
    state, m1 = step1(state, bt, bv)
  single = state

  # Four devices.
  mesh = parallel.make_mesh()
  state = parallel.replicate(strat.init(jax.random.key(0)), mesh)
  step4 = parallel.data_parallel_step(strat.step, mesh)
  shard_counts = []
  for bt, bv in data:
    bt, bv = parallel.shard_batch(bt, mesh), parallel.shard_batch(bv, mesh)
    shard_counts.append(len({str(s.index) for s in bt[0].addressable_shards}))
    state, m4 = step4(state, bt, bv)
  multi = state

  # Every device must hold the same (bitwise) architecture and weights.
  def copies_equal(x):
    shards = [np.asarray(s.data) for s in x.addressable_shards]
    return len(shards) == NUM_DEVICES and all(np.array_equal(shards[0], c) for c in shards[1:])

  arrays = {}
  for name, tree in (("single", single), ("multi", multi)):
    for k, v in _flat(tree if key_of is None else tree._replace(key=None)).items():
      arrays[f"{name}|{k}"] = v
  facts = {
      "replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(multi)),
      "copies_equal": all(copies_equal(x) for x in jax.tree.leaves(
          multi if key_of is None else multi._replace(key=None))),
      "batch_shards": shard_counts,
      "metrics_single": {k: float(v) for k, v in m1.items()},
      "metrics_multi": {k: float(v) for k, v in m4.items()},
  }
  if key_of is not None:
    kd = jax.random.key_data(key_of(multi))
    facts["key_copies_equal"] = copies_equal(kd)
    facts["key_equal"] = bool(np.array_equal(np.asarray(jax.random.key_data(key_of(single))),
                                              np.asarray(kd)))
    facts.update(gumbel_sample_facts(multi, single, mesh))
  arrays["facts"] = np.asarray(json.dumps(facts))
  np.savez(out_path, **arrays)


def gumbel_setup(gumbel, full: bool = False):
  """The tiny supernet with the GDAS strategy of ``jnas.strategies.gumbel``."""
  space = tiny_space(full)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=2, rngs=nnx.Rngs(0))
  s = split_model(net)
  alpha = space.init_alpha(jax.random.key(1))
  # GDAS's single-path apply when the supernet has one, else the full mixed op
  # with one-hot weights (the same function, slower).
  try:
    apply = make_apply(s.graphdef, single_path=True)
  except TypeError:
    apply = make_apply(s.graphdef)
  strat = gumbel.gdas(apply, s.params, s.state, alpha, w_opt=weight_optimizer(total_steps=10),
                      a_opt=arch_optimizer(lr=0.05), total_steps=10)
  return space, strat


def gumbel_sample_facts(state, single_state, mesh):
  """Draws the next step's hard Gumbel sample from the replicated key on the mesh.

  It must be one value on every device, and the value one device draws.
  """
  from jnas.strategies.gumbel import sample_encoding  # noqa: PLC0415

  def draw(s):
    _, k_arch, _ = jax.random.split(s.key, 3)  # the step's key for the architecture sample
    return sample_encoding(k_arch, s.alpha, 1.0, hard=True)

  rep = parallel.replicated_sharding(mesh)
  enc = jax.jit(draw, in_shardings=(rep,), out_shardings=rep)(state)
  enc1 = jax.jit(draw)(single_state)
  leaves = jax.tree.leaves(enc)
  same = all(len(x.addressable_shards) == NUM_DEVICES and all(
      np.array_equal(np.asarray(x.addressable_shards[0].data), np.asarray(c.data))
      for c in x.addressable_shards[1:]) for x in leaves)
  return {"gumbel_copies_equal": same,
          "gumbel_equal_single": all(np.array_equal(np.asarray(a), np.asarray(b))
                                     for a, b in zip(leaves, jax.tree.leaves(enc1))),
          "gumbel_one_hot": all(bool((np.asarray(x).sum(-1) == 1).all()) for x in leaves)}


def _gdas_available() -> bool:
  try:
    from jnas.strategies import gumbel  # noqa: PLC0415
  except ImportError:
    return False
  return hasattr(gumbel, "gdas")


STRATEGIES = ["darts"] + (["gdas"] if _gdas_available() else [])


def run_worker(out_dir: Path, cases: list[str]) -> dict[str, tuple[dict, dict, dict]]:
  """Runs this file as the 4-device worker; ``{case: (single, multi, facts)}``."""
  # Low LLVM optimisation: the worker compiles steps that run twice each, so
  # compile time is all that matters (about 1.5x faster to compile).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES} "
             "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
  root = Path(__file__).resolve().parents[1]
  env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, __file__, str(out_dir), *cases], env=env,
                        capture_output=True, text=True, timeout=1800, cwd=root)
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = {}
  for case in cases:
    with np.load(out_dir / f"{case}.npz") as z:
      arrays = {k: z[k] for k in z.files}
    facts = json.loads(str(arrays.pop("facts")))
    single = {k.split("|", 1)[1]: v for k, v in arrays.items() if k.startswith("single|")}
    multi = {k.split("|", 1)[1]: v for k, v in arrays.items() if k.startswith("multi|")}
    results[case] = (single, multi, facts)
  return results


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory) -> dict[str, tuple[dict, dict, dict]]:
  """DARTS (and GDAS, once written) on the small space, in one worker process."""
  return run_worker(tmp_path_factory.mktemp("parallel"), STRATEGIES)


def assert_same_state(single: dict, multi: dict) -> None:
  assert single.keys() == multi.keys() and single
  groups = {"params": 0, "batch_stats": 0, "alpha": 0}
  for k, a in single.items():
    np.testing.assert_allclose(multi[k], a, rtol=2e-4, atol=2e-5, err_msg=k)
    for g in groups:
      groups[g] += k.startswith(f".{g}")
  # The comparison covered weights, BN statistics and the architecture.
  assert all(groups.values()), groups


@pytest.mark.slow  # compiles several networks; run with -m slow
def test_darts_on_4_devices_equals_one_device(worker_results):
  single, multi, facts = worker_results["darts"]
  assert facts["batch_shards"] == [NUM_DEVICES, NUM_DEVICES]  # the batch really was split
  assert facts["replicated"] and facts["copies_equal"]
  assert_same_state(single, multi)
  # Two steps moved alpha and the BN running statistics away from their start.
  _, strat = tiny_darts()
  init = _flat(strat.init(jax.random.key(0)))
  for k in single:
    if k.startswith((".alpha", ".batch_stats")):
      assert np.abs(single[k] - init[k]).max() > 1e-4, k
  for k, v in facts["metrics_single"].items():
    np.testing.assert_allclose(facts["metrics_multi"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.slow  # compiles several networks; run with -m slow
@pytest.mark.skipif(not _gdas_available(), reason="jnas.strategies.gumbel.gdas not written yet")
def test_gdas_on_4_devices_equals_one_device(worker_results):
  single, multi, facts = worker_results["gdas"]
  assert facts["replicated"] and facts["copies_equal"]
  assert facts["key_copies_equal"] and facts["key_equal"]
  assert facts["gumbel_copies_equal"] and facts["gumbel_equal_single"] and facts["gumbel_one_hot"]
  assert_same_state(single, multi)


@pytest.mark.slow
def test_full_space_on_4_devices_equals_one_device(tmp_path):
  # All 8 DARTS ops (dilated convs, average pooling too); minutes on 2 cores.
  cases = ["darts_full"] + (["gdas_full"] if _gdas_available() else [])
  for case, (single, multi, facts) in run_worker(tmp_path, cases).items():
    assert facts["replicated"] and facts["copies_equal"], case
    assert_same_state(single, multi)


@pytest.mark.slow  # compiles several networks; run with -m slow
def test_two_processes_equal_one(tmp_path):
  # Two processes with 2 CPU devices each, started through initialize_distributed's
  # JAX_* variables: each feeds half of every batch, the step sees the global batch.
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  root = Path(__file__).resolve().parents[1]
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(pid),
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path / f"{pid}.npz"),
                                   "multihost"], env=env, cwd=root, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  for pid in range(2):
    with np.load(tmp_path / f"{pid}.npz") as z:
      for k in ("w", "mean"):
        assert np.abs(z[f"ref_{k}"]).max() > 1e-3  # the steps did something
        np.testing.assert_allclose(z[f"got_{k}"], z[f"ref_{k}"], rtol=1e-5, atol=1e-6)


def test_make_mesh_and_shard_batch_checks():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == (parallel.DATA_AXIS,)
  if hasattr(jax.sharding, "AxisType"):
    assert tuple(mesh.axis_types) == (jax.sharding.AxisType.Auto,)
  with pytest.raises(ValueError, match="num_devices must be in"):
    parallel.make_mesh(jax.device_count() + 1)
  with pytest.raises(ValueError, match="multiple of"):
    parallel.shard_batch((np.zeros(()),), mesh)


def test_initialize_distributed_is_a_no_op_for_one_process(monkeypatch):
  for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri",
            "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
    monkeypatch.delenv(k, raising=False)
  assert parallel.initialize_distributed() is False
  assert jax.process_count() == 1


def test_initialize_distributed_reads_the_jax_variables(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    parallel.initialize_distributed()
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  assert parallel.initialize_distributed() is True
  assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                    "process_id": 1}]


if __name__ == "__main__":
  if sys.argv[2] == "multihost":
    _multihost_worker(sys.argv[1])
  else:
    _worker(sys.argv[1], sys.argv[2:])


@pytest.mark.slow  # two small searches in a 4-device subprocess; about a minute or two on 2 cores
def test_jnas_search_data_parallel_equals_one_device(tmp_path):
  """`jnas search --config.search.data_parallel=4` ends with the alphas of a one-device run."""
  root = Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JNAS_PROGRESS="off",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}")
  common = [sys.executable, "-m", "jnas", "search",
            f"--config={root / 'experiments' / 'darts_mnist1d.py'}",
            "--config.search.epochs=1", "--config.search.channels=4",
            "--config.search.batch_size=256", "--config.space.num_nodes=2",
            "--config.retrain.enabled=false"]
  alphas = {}
  for n in (0, NUM_DEVICES):
    wd = tmp_path / f"dp{n}"
    proc = subprocess.run([*common, f"--workdir={wd}", f"--config.search.data_parallel={n}"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if n:
      assert f"split over {n} devices" in proc.stderr
    with np.load(wd / "arch_params.npz") as z:
      alphas[n] = {k: z[k] for k in z.files}
  for k, a in alphas[0].items():
    assert np.abs(a).max() > 0, k  # the search moved alpha
    np.testing.assert_allclose(alphas[NUM_DEVICES][k], a, rtol=2e-4, atol=2e-5, err_msg=k)
