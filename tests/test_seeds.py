"""Many searches in one program: a vmapped run over seeds equals separate runs."""

from __future__ import annotations

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
  traces = []

  def counted(*a):
    traces.append(1)
    return strategy.step(*a)

  step_n = parallel.vmap_gather_step(counted)
  init = jax.device_get(init)  # a host copy: the step donates (invalidates) its input
  states = jax.tree.map(jnp.asarray, init)
  for k in range(steps):
    states, metrics = step_n(states, data, idx_t[:, k], idx_v[:, k])
  assert len(traces) == 1  # compiled once for all steps
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


def test_vmap_step_takes_stacked_batches():
  # A least-squares "strategy" keeps this cheap: vmap_step must equal a loop over seeds.
  def step(w, bt, bv):
    loss = lambda w_, b: jnp.mean((b[0] @ w_ - b[1]) ** 2)  # noqa: E731
    w = w - 0.1 * jax.grad(loss)(w, bt)
    return w, {"val_loss": loss(w, bv)}

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
