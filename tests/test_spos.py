"""SPOS: uniform single-path supernet training and recalibrated population scoring."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jnas.spaces.darts import PRIMITIVES, DartsSpace
from jnas.strategies.sampling import ConstraintError
from jnas.strategies.spos import (encoding_pool, make_population_evaluator,
                                  make_recalibrated_evaluator,
                                  pad_population, spos)
from jnas.supernet import DartsSupernet, make_apply, make_prefix, split_model


# Four ops (one of each kind, max pooling included) keep compilation short.
SMALL = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


def tiny(primitives=SMALL):
  space = DartsSpace(num_nodes=2, primitives=primitives)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=3, rngs=nnx.Rngs(0))
  return space, split_model(net)


def convs(g):
  ops = [op for cell in (g.normal, g.reduce) for op, _ in cell]
  return {"flops": sum("conv" in op for op in ops)}


def test_pool_respects_constraints_and_refuses_impossible_ones():
  space = DartsSpace(num_nodes=2, primitives=PRIMITIVES)
  pool = encoding_pool(space, 20, seed=0, constraints=None)
  assert pool["normal"].shape == (20, 5, 8)
  from jnas.strategies.sampling import Constraints
  cons = Constraints(cost_fn=convs, max_flops=2)
  pool = encoding_pool(space, 20, seed=0, constraints=cons)
  for i in range(20):
    g = space.encoding_to_genotype({k: v[i] for k, v in pool.items()})
    assert convs(g)["flops"] <= 2
  with pytest.raises(ConstraintError, match="max_flops"):
    encoding_pool(space, 2, constraints=Constraints(cost_fn=convs, max_flops=-1, max_tries=50))


@pytest.mark.parametrize("primitives", [SMALL, pytest.param(PRIMITIVES, marks=pytest.mark.slow)])
def test_spos_trains_only_the_sampled_path_and_compiles_once(primitives):
  space, s = tiny(primitives)
  pool = encoding_pool(space, 8, seed=0)
  apply = make_apply(s.graphdef, single_path=True)
  strat = spos(apply, s.params, s.state, pool, w_opt=optax.sgd(0.05, momentum=0.9))
  x = jax.random.normal(jax.random.key(1), (16, 12, 1))
  y = jnp.arange(16) % 10

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def step(state, bt, bv):
    return strat.step(state, bt, bv)

  jstep = jax.jit(step)
  state = strat.init(jax.random.key(0))
  paths = set()
  for _ in range(30):
    state, m = jstep(state, (x, y), (x, y))
    paths.add(int(m["path"]))
  assert len(paths) > 1, "SPOS must sample different paths"

  # The shared weights learn for the pool as a whole: the loss of every path,
  # evaluated with one fixed function, falls on average.
  def pool_loss(params):
    def one(e):
      logits, _ = apply(params, s.state, e, x, True)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), y])
    return jnp.mean(jax.lax.map(one, {k: jnp.asarray(v) for k, v in pool.items()}))

  pool_loss = jax.jit(pool_loss)
  assert float(pool_loss(state.params)) < float(pool_loss(s.params))

  # One step changes only the weights of the sampled ops (plus stem/classifier/preprocessing).
  s0 = strat.init(jax.random.key(3))
  s1, m = jstep(s0, (x, y), (x, y))
  enc = {k: jnp.asarray(v[int(m["path"])]) for k, v in pool.items()}
  # A random projection of the logits, not their plain sum: behind a batch norm without
  # affine parameters the sum's gradient is zero in exact arithmetic (the normalised features
  # have zero mean over the batch), and only rounding noise would make it nonzero.
  probe = jax.random.normal(jax.random.key(4), (16, 10))
  g = jax.jit(jax.grad(lambda p: jnp.sum(
      probe * make_apply(s.graphdef)(p, s.state, enc, x, True)[0])))(s.params)
  # Element by element: every weight that changed has a nonzero gradient on the
  # sampled path (momentum starts at zero, so nothing else can move it).
  ok = jax.tree.map(lambda a, b, gg: bool(jnp.all((a == b) | (gg != 0))), s0.params, s1.params, g)
  assert all(jax.tree.leaves(ok))


def test_recalibrated_evaluator_population_equals_loop_and_compiles_once():
  space, s = tiny()
  key = jax.random.key(2)
  calib_x = jax.random.normal(key, (2, 8, 12, 1))
  val_x = jax.random.normal(jax.random.key(3), (2, 8, 12, 1))
  val_y = jnp.arange(16).reshape(2, 8) % 10
  encs = {k: jnp.asarray(v) for k, v in encoding_pool(space, 6, seed=1).items()}
  # The fast forms (unrolled edge loops, merged validation batches) against the plain
  # ones (full mixed op, one validation batch at a time): the same numbers.
  single = make_recalibrated_evaluator(make_apply(s.graphdef, single_path=True, unroll=True))

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def population(encs):
    return jax.lax.map(lambda e: single(s.params, s.state, e, calib_x, val_x, val_y), encs)

  pop = jax.jit(population)
  got = pop(encs)
  pop({k: v[::-1] for k, v in encs.items()})
  full = jax.jit(make_recalibrated_evaluator(make_apply(s.graphdef), merge_val_batches=False))
  for i in range(6):
    one = full(s.params, s.state, {k: v[i] for k, v in encs.items()}, calib_x, val_x, val_y)
    np.testing.assert_allclose(got["accuracy"][i], one["accuracy"], atol=1e-6)
    np.testing.assert_allclose(got["loss"][i], one["loss"], rtol=1e-3)


def test_population_evaluator_split_over_a_mesh_and_with_the_shared_prefix_equals_plain():
  # One device here; the split's padding path runs when the mesh does not divide the population
  # (checked with a 2-device mesh by benchmarks/population_eval.py). With the prefix, the stem and
  # the 2 + 1 input rows of cells 0 and 1 run once for the population; the reduction cell's shared
  # edges are strided (skip is a factorized reduce there), so every kind of candidate is picked
  # from the prefix somewhere, and the prefix is traced inside shard_map's per-device program.
  from jnas.parallel import seed_mesh
  space, s = tiny()
  calib_x = jax.random.normal(jax.random.key(2), (2, 8, 12, 1))
  val_x = jax.random.normal(jax.random.key(3), (2, 8, 12, 1))
  val_y = jnp.arange(16).reshape(2, 8) % 10
  encs = {k: jnp.asarray(v) for k, v in encoding_pool(space, 5, seed=1).items()}
  apply = make_apply(s.graphdef, single_path=True, unroll=True)
  prefix = make_prefix(s.graphdef)
  plain = jax.jit(make_population_evaluator(apply))(s.params, s.state, encs, calib_x, val_x, val_y)
  assert plain["accuracy"].shape == (5,)
  for kwargs in ({"mesh": seed_mesh(1)}, {"mesh": seed_mesh(1), "prefix_fn": prefix}):
    got = jax.jit(make_population_evaluator(apply, **kwargs))(
        s.params, s.state, encs, calib_x, val_x, val_y)
    chex.assert_trees_all_close(got, plain, atol=1e-6)
  with pytest.raises(ValueError, match="prefix_fn needs"):
    make_population_evaluator(apply, prefix_fn=prefix, fuse_calibration=False)


def test_shared_prefix_needs_the_unrolled_single_path():
  space, s = tiny()
  net = nnx.merge(s.graphdef, s.params, s.state)
  x = jnp.ones((4, 12, 1))
  enc = {k: jnp.asarray(v[0]) for k, v in encoding_pool(space, 1, seed=0).items()}
  with pytest.raises(ValueError, match="needs single_path=True and unroll=True"):
    net(x, enc, train=False, single_path=True, shared=net.shared_prefix(x, train=False))


def _nb201():
  from jnas.spaces.nb201 import NB201Space
  from jnas.supernet.nb201 import NB201Supernet
  space = NB201Space(num_nodes=3, ops=("none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"))
  return space, split_model(NB201Supernet(space, 1, 10, ndim=1, channels=4, cells_per_stage=1,
                                          rngs=nnx.Rngs(0)))


def _chain():
  from jnas.spaces.chain import FBNetSpace
  from jnas.supernet.chain import ChainSupernet
  space = FBNetSpace((12, 1), 10, stem_channels=4, stem_stride=1, stages=((4, 1, 1), (8, 1, 2)),
                     head_channels=8, candidates=("k3_e1", "k5_e3", "skip"))
  return space, split_model(ChainSupernet(space, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("build", [
    tiny, _chain,
    pytest.param(_nb201, marks=pytest.mark.slow),  # 35 s of compiling on 2 cores
], ids=["darts", "chain", "nb201"])
def test_fused_calibration_equals_separate_passes(build):
  """One [calibration; validation] pass gives what separate calibration passes give."""
  space, s = build()
  calib_x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (3, 8, 12, 1))
  val_x = jax.random.normal(jax.random.key(1), (2, 8, 12, 1))
  val_y = jnp.arange(16).reshape(2, 8) % 10
  apply = make_apply(s.graphdef, single_path=True)
  fused = jax.jit(make_recalibrated_evaluator(apply))
  separate = jax.jit(make_recalibrated_evaluator(apply, fuse_calibration=False))
  pool = encoding_pool(space, 3, seed=2)
  for i in range(3):
    enc = {k: jnp.asarray(v[i]) for k, v in pool.items()}
    a = fused(s.params, s.state, enc, calib_x, val_x, val_y)
    b = separate(s.params, s.state, enc, calib_x, val_x, val_y)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    assert float(a["accuracy"]) == float(b["accuracy"])


def test_fused_calibration_refuses_an_apply_that_traces_no_batch_norm():
  space, s = tiny()
  apply = jax.jit(make_apply(s.graphdef, single_path=True), static_argnums=4)
  enc = {k: jnp.asarray(v[0]) for k, v in encoding_pool(space, 1, seed=0).items()}
  x = jnp.ones((1, 8, 12, 1))
  apply(s.params, s.state, enc, jnp.ones((16, 12, 1)), True)  # traced outside the context
  with pytest.raises(ValueError, match="traced no batch norm"):
    make_recalibrated_evaluator(apply)(s.params, s.state, enc, x, x, jnp.zeros((1, 8), jnp.int32))


def test_recalibrating_batch_norm_is_per_batch_then_recalibrated():
  from jnas.ops import primitives as P
  x = jax.random.normal(jax.random.key(0), (2, 20, 3, 4)) * jnp.arange(1.0, 5.0)
  scale, bias = jnp.full((2, 4), 2.0), jnp.full((2, 4), 0.5)
  for n_val in (8, 5):  # whole batches, and a partial last batch (the concatenating form)
    xs = x[:, :8 + n_val]
    with P.recalibrating_batch_norm(2, 4):
      y, (m, v) = P.batch_norm(xs, jnp.zeros((2, 4)), jnp.ones((2, 4)), train=True,
                               scale=scale, bias=bias)
    stats = [P.batch_norm(xs[:, 4 * j:4 * j + 4], jnp.zeros((2, 4)), jnp.ones((2, 4)),
                          train=True, momentum=0.0, scale=scale, bias=bias) for j in range(2)]
    for j, (yj, _) in enumerate(stats):
      np.testing.assert_allclose(y[:, 4 * j:4 * j + 4], yj, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m, (stats[0][1][0] + stats[1][1][0]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, (stats[0][1][1] + stats[1][1][1]) / 2, rtol=1e-5)
    want, _ = P.batch_norm(xs[:, 8:], m, v, train=False, scale=scale, bias=bias)
    np.testing.assert_allclose(y[:, 8:], want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="fewer than the 2 x 4 calibration examples"):
    with P.recalibrating_batch_norm(2, 4):
      P.batch_norm(x[:, :6], jnp.zeros((2, 4)), jnp.ones((2, 4)), train=True)
  with pytest.raises(ValueError, match="at least one calibration batch"):
    with P.recalibrating_batch_norm(0, 4):
      pass


def test_recalibration_uses_the_calibration_batches():
  space, s = tiny()
  ev = jax.jit(make_recalibrated_evaluator(make_apply(s.graphdef, single_path=True)))
  enc = {k: jnp.asarray(v[0]) for k, v in encoding_pool(space, 1, seed=4).items()}
  val_x = jax.random.normal(jax.random.key(3), (1, 8, 12, 1))
  val_y = jnp.arange(8).reshape(1, 8) % 10
  a = ev(s.params, s.state, enc, val_x, val_x, val_y)
  b = ev(s.params, s.state, enc, 5.0 + 3.0 * val_x, val_x, val_y)
  assert float(a["loss"]) != float(b["loss"])
  with pytest.raises(ValueError, match="bn_momentum"):
    make_recalibrated_evaluator(lambda *a: None, bn_momentum=1.0)


@pytest.mark.slow  # 25-45 s on 2 cores: keeps the default suite under 10 minutes
def test_spos_on_a_chain_space_updates_only_the_sampled_blocks():
  """SPOS is space-agnostic: on an FBNet chain, a step touches only the sampled candidates."""
  from jnas.spaces.chain import FBNetSpace
  from jnas.supernet.chain import ChainSupernet, make_supernet_apply

  space = FBNetSpace((12, 1), 10, stem_channels=4, stem_stride=1, stages=((4, 1, 1), (8, 1, 2)),
                     head_channels=8, candidates=("k3_e1", "k5_e3", "skip"))
  s = split_model(ChainSupernet(space, rngs=nnx.Rngs(0)))
  pool = encoding_pool(space, 6, seed=0)
  assert pool["blocks"].shape == (6, 2, 3)
  strat = spos(make_supernet_apply(s.graphdef, single_path=True), s.params, s.state, pool,
               w_opt=optax.sgd(0.05))
  x = jax.random.normal(jax.random.key(1), (16, 12, 1))
  y = jnp.arange(16) % 10
  jstep = jax.jit(strat.step)
  s0 = strat.init(jax.random.key(3))
  s1, m = jstep(s0, (x, y), (x, y))
  chosen = np.argmax(pool["blocks"][int(m["path"])], axis=-1)
  moved = {jax.tree_util.keystr(path): bool(jnp.any(a != b)) for (path, a), b in zip(
      jax.tree_util.tree_flatten_with_path(s0.params)[0], jax.tree.leaves(s1.params))}
  for b in range(space.num_blocks):
    for k in range(len(space.candidates)):
      prefix = f"['blocks'][{b}]['candidates'][{k}]"
      changed = [v for name, v in moved.items() if name.startswith(prefix)]
      if k == chosen[b]:
        assert not changed or any(changed), (b, k)  # "skip" has no weights
      else:
        assert changed == [] or not any(changed), (b, k, chosen)
  # Some sampled candidate with weights learned (the pool holds parameterised blocks).
  assert any(v for name, v in moved.items() if "['candidates']" in name)
  # And the loss over the pool falls after a few steps.
  state = s0
  for _ in range(20):
    state, m = jstep(state, (x, y), (x, y))
  assert float(m["train_loss"]) < 2.3


def test_pad_population_repeats_the_first_row_and_refuses_overflow():
  encs = {"normal": np.arange(6.0).reshape(3, 2)}
  padded = pad_population(encs, 5)["normal"]
  assert padded.dtype == jnp.float32 and padded.shape == (5, 2)
  np.testing.assert_array_equal(padded[:3], encs["normal"])
  np.testing.assert_array_equal(padded[3:], [[0.0, 1.0], [0.0, 1.0]])
  with pytest.raises(ValueError, match="3 encodings do not fit a population of 2"):
    pad_population(encs, 2)


def test_unique_cell_pool_draws_functions_not_encodings():
  """search.pool_sampling=unique: every function a NAS-Bench-201 cell computes is equally likely,
  so the zero cell and the one-op cells, which own many encodings, no longer dominate the pool."""
  import collections

  from jnas.spaces.nb201 import NB201Space
  from jnas.spaces.nb201_canonical import ZERO, canonical_form, unique_cell_sampler, unique_cells

  space = NB201Space()
  forms = {}
  for name, sampler in (("uniform", None), ("unique", unique_cell_sampler(space))):
    pool = encoding_pool(space, 2000, seed=0, sampler=sampler)
    assert pool["cell"].shape == (2000, 6, 5) and np.all(pool["cell"].sum(-1) == 1)
    forms[name] = collections.Counter(
        canonical_form(space.decode_indices(row), space) for row in pool["cell"].argmax(-1))
  # 4,660 functions: a function's expected count is 2000 / 4660 < 1 under unique sampling.
  assert forms["uniform"][ZERO] > 20 and forms["unique"][ZERO] <= 3
  assert forms["uniform"]["conv3(x)"] > 30 and forms["unique"]["conv3(x)"] <= 5
  assert len(forms["unique"]) > 1.5 * len(forms["uniform"])
  assert set(forms["unique"]) <= set(unique_cells(space))
  # Reproducible from the seed.
  again = encoding_pool(space, 2000, seed=0, sampler=unique_cell_sampler(space))
  np.testing.assert_array_equal(again["cell"], encoding_pool(
      space, 2000, seed=0, sampler=unique_cell_sampler(space))["cell"])
  with pytest.raises(ValueError, match="pool_sampling=unique needs the nb201 space"):
    unique_cell_sampler(DartsSpace())
