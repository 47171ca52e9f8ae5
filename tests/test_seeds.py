"""Many searches in one program: a vmapped run over seeds equals separate runs."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas import parallel
from jnas.data.batching import epoch_batches, split_train_val
from jnas.spaces.darts import DartsSpace
from jnas.strategies.darts import arch_optimizer, darts, weight_optimizer
from jnas.supernet import DartsSupernet, make_apply, split_model

N_EXAMPLES, BATCH = 32, 8
# Zero, pooling + BN, identity and separable conv + BN: compiles in about half
# the time of the 8-op space, which the slow test covers.
SMALL = DartsSpace(num_nodes=2, primitives=("none", "max_pool_3x3", "skip_connect",
                                            "sep_conv_3x3"))
FULL = DartsSpace(num_nodes=2)


def build(seed: int, space: DartsSpace = SMALL):
  """A tiny 2-cell DARTS supernet and its first-order strategy, initialised from ``seed``."""
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=2, rngs=nnx.Rngs(seed))
  s = split_model(net)
  alpha = space.init_alpha(jax.random.fold_in(jax.random.key(seed), 1))
  return darts(make_apply(s.graphdef), s.params, s.state, alpha,
               w_opt=weight_optimizer(total_steps=10), a_opt=arch_optimizer(lr=0.05))


def dataset():
  x = np.asarray(jax.random.normal(jax.random.key(7), (N_EXAMPLES, 24, 1)))
  y = np.arange(N_EXAMPLES) % 10
  return x, y


def test_seed_batch_indices_follow_the_search_data_plan():
  x, y = dataset()
  seeds = [3, 5]
  idx_t, idx_v = parallel.seed_batch_indices(N_EXAMPLES, BATCH, seeds, epoch=1)
  assert idx_t.shape == idx_v.shape == (2, 2, BATCH) and idx_t.dtype == np.int32
  for i, s in enumerate(seeds):
    # What jnas.run.search reads for config.seed = s.
    (xw, yw), (xa, ya) = split_train_val(x, y, fraction=0.5, seed=s)
    xw_b, yw_b = epoch_batches(xw, yw, BATCH, seed=s, epoch=1)
    xa_b, ya_b = epoch_batches(xa, ya, BATCH, seed=s + 1, epoch=1)
    np.testing.assert_array_equal(x[idx_t[i]], xw_b)
    np.testing.assert_array_equal(y[idx_v[i]], ya_b)
    np.testing.assert_array_equal(x[idx_v[i]], xa_b)
    # Weight and architecture halves are disjoint.
    assert not set(idx_t[i].ravel()) & set(idx_v[i].ravel())
  assert (idx_t[0] != idx_t[1]).any()  # each seed its own order
  with pytest.raises(ValueError, match="seeds is empty"):
    parallel.seed_batch_indices(N_EXAMPLES, BATCH, [], epoch=0)
  with pytest.raises(ValueError, match="larger than half"):
    parallel.seed_batch_indices(N_EXAMPLES, 20, [0], epoch=0)


@pytest.mark.slow  # compiles the DARTS step twice; run with -m slow
@pytest.mark.parametrize("space", [SMALL, pytest.param(FULL, marks=pytest.mark.slow)],
                         ids=["small", "full"])
def test_vmapped_seeds_equal_separate_runs(space):
  x, y = dataset()
  seeds = [0, 1]
  strategy = build(seeds[0], space)
  init = parallel.init_seeds(lambda s: build(s, space).init(jax.random.key(s)), seeds)
  idx_t, idx_v = parallel.seed_batch_indices(N_EXAMPLES, BATCH, seeds, epoch=0)
  data = (jnp.asarray(x), jnp.asarray(y))
  steps = idx_t.shape[1]

  # Separate runs: one compiled single-seed step, reused for each seed.
  single = jax.jit(parallel.gather_step(strategy.step))
  separate = []
  for i, s in enumerate(seeds):
    state = build(s, space).init(jax.random.key(s))
    for k in range(steps):
      state, m1 = single(state, data, idx_t[i, k], idx_v[i, k])
    separate.append(state)

  # One program for both seeds.

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def counted(*a):
    return strategy.step(*a)

  step_n = parallel.vmap_gather_step(counted)
  init = jax.device_get(init)  # a host copy: the step donates (invalidates) its input
  states = jax.tree.map(jnp.asarray, init)
  for k in range(steps):
    states, metrics = step_n(states, data, idx_t[:, k], idx_v[:, k])
  assert metrics["train_loss"].shape == (2,)

  for i in range(len(seeds)):
    got, want = parallel.seed_slice(states, i), separate[i]
    leaves_got = jax.tree_util.tree_leaves_with_path(got)
    for (path, a), b in zip(leaves_got, jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  # Seeds give different searches: weights, architectures and losses differ.
  s0, s1 = parallel.unstack_trees(states)
  assert not np.allclose(s0.alpha["reduce"], s1.alpha["reduce"])
  assert not np.allclose(jax.tree.leaves(s0.params)[0], jax.tree.leaves(s1.params)[0])
  assert float(metrics["train_loss"][0]) != float(metrics["train_loss"][1])
  # Each seed's alpha moved by its own gradient (not only its initial value differs).
  a0 = parallel.unstack_trees(init)
  for before, after in zip(a0, (s0, s1)):
    moved = np.asarray(after.alpha["reduce"]) - np.asarray(before.alpha["reduce"])
    assert np.abs(moved).max() > 1e-3
  # A genotype per seed.
  genotypes = [space.encoding_to_genotype(jax.device_get(strategy.arch_params(s)))
               for s in (s0, s1)]
  assert len(genotypes) == 2


def _lstsq_step(w, bt, bv):
  """A least-squares "strategy" step: cheap to compile, enough to compare seed mappings."""
  loss = lambda w_, b: jnp.mean((b[0] @ w_ - b[1]) ** 2)  # noqa: E731
  w = w - 0.1 * jax.grad(loss)(w, bt)
  return w, {"val_loss": loss(w, bv)}


def test_vmap_step_takes_stacked_batches():
  # vmap_step must equal a loop over seeds.
  step = _lstsq_step
  keys = jax.random.split(jax.random.key(0), 3)
  w0 = parallel.init_seeds(lambda k: jax.random.normal(k, (4,)), keys)
  xs = jax.random.normal(jax.random.key(1), (3, 8, 4))
  ys = jax.random.normal(jax.random.key(2), (3, 8))
  got, metrics = parallel.vmap_step(step, donate=False)(w0, (xs, ys), (xs[::-1], ys[::-1]))
  assert metrics["val_loss"].shape == (3,)
  for i in range(3):
    want, m = step(w0[i], (xs[i], ys[i]), (xs[2 - i], ys[2 - i]))
    np.testing.assert_allclose(got[i], want, rtol=1e-5)
    np.testing.assert_allclose(metrics["val_loss"][i], m["val_loss"], rtol=1e-5)


def test_stacking_helpers():
  keys = jax.random.split(jax.random.key(0), 3)
  tree = parallel.init_seeds(lambda k: {"w": jax.random.normal(k, (2,)), "k": k}, keys)
  assert tree["w"].shape == (3, 2) and tree["k"].shape == (3,)
  parts = parallel.unstack_trees(tree)
  assert len(parts) == 3
  np.testing.assert_array_equal(parts[1]["w"], jax.random.normal(keys[1], (2,)))
  with pytest.raises(ValueError, match="empty"):
    parallel.stack_trees([])


def test_seed_mesh_helpers_check_their_input():
  mesh = parallel.seed_mesh(1)
  assert mesh.axis_names == (parallel.SEED_AXIS,)
  assert parallel.host_devices_for(4, cores=2) == 2
  assert parallel.host_devices_for(5, cores=2) == 1  # 5 seeds do not split evenly over 2
  assert parallel.host_devices_for(8, cores=16) == 8
  with pytest.raises(ValueError, match="num_seeds"):
    parallel.host_devices_for(0)
  with pytest.raises(ValueError, match="num_devices"):
    parallel.seed_mesh(jax.device_count() + 1)
  with pytest.raises(ValueError, match="per_device"):
    parallel.vmap_step(lambda w, a, b: (w, {}), per_device="scan")
  w = jnp.zeros((3, 2))
  np.testing.assert_array_equal(parallel.shard_seeds({"w": w}, mesh)["w"], w)


def test_map_per_device_equals_vmap():
  # lax.map over the seeds must give what vmap gives (here on one device).
  step = _lstsq_step
  w0 = jax.random.normal(jax.random.key(0), (3, 4))
  data = (jax.random.normal(jax.random.key(1), (16, 4)), jax.random.normal(jax.random.key(2), (16,)))
  it = jnp.arange(24).reshape(3, 8) % 16
  iv = it[::-1]
  a = parallel.vmap_gather_step(step, donate=False)(w0, data, it, iv)
  b = parallel.vmap_gather_step(step, donate=False, per_device="map")(w0, data, it, iv)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6)


def _host_device_worker(out: str) -> None:
  """Run with 2 CPU devices: the DARTS step of 2 seeds, split over them or not."""
  assert jax.device_count() == 2, jax.devices()
  x, y = dataset()
  seeds = [0, 1]
  strategy = build(seeds[0])
  init = jax.device_get(parallel.init_seeds(lambda s: build(s).init(jax.random.key(s)), seeds))
  idx_t, idx_v = parallel.seed_batch_indices(N_EXAMPLES, BATCH, seeds, epoch=0)
  data = (jnp.asarray(x), jnp.asarray(y))
  results = {}
  for name, mesh, per_device in [("one", None, "vmap"), ("vmap", parallel.seed_mesh(2), "vmap"),
                                 ("map", parallel.seed_mesh(2), "map")]:
    step = parallel.vmap_gather_step(strategy.step, mesh=mesh, per_device=per_device)
    states = jax.tree.map(jnp.asarray, init)
    it, iv = jnp.asarray(idx_t), jnp.asarray(idx_v)
    if mesh is not None:
      states, (it, iv) = parallel.shard_seeds(states, mesh), parallel.shard_seeds((it, iv), mesh)
    for k in range(2):
      states, metrics = step(states, data, it[:, k], iv[:, k])
    if mesh is not None:  # each device holds its own seed
      leaf = jax.tree.leaves(states.params)[0]
      assert {s.device for s in leaf.addressable_shards} == set(jax.devices())
      assert all(s.data.shape[0] == 1 for s in leaf.addressable_shards)
    flat = jax.tree.leaves(jax.device_get((states.params, states.alpha, metrics)))
    results.update({f"{name}_{i}": np.asarray(v) for i, v in enumerate(flat)})
  np.savez(out, **results)


def test_seeds_split_over_host_devices_equal_one_device(tmp_path):
  # Needs 2 CPU devices, so it runs this file as a worker in a fresh process.
  import os
  import subprocess
  import sys
  from pathlib import Path

  root = Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
  out = tmp_path / "seeds.npz"
  proc = subprocess.run([sys.executable, __file__, str(out)], env=env, cwd=root,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with np.load(out) as z:
    n = len([k for k in z.files if k.startswith("one_")])
    assert n > 10
    moved = False
    for i in range(n):
      for name in ("vmap", "map"):
        np.testing.assert_allclose(z[f"{name}_{i}"], z[f"one_{i}"], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} leaf {i}")
    # The two seeds' searches differ (the split did not copy one seed to both devices).
    for i in range(n):
      a = z[f"one_{i}"]
      if a.ndim and a.shape[0] == 2 and not np.allclose(a[0], a[1]):
        moved = True
    assert moved


if __name__ == "__main__":
  import sys as _sys

  _host_device_worker(_sys.argv[1])
