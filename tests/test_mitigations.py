"""DARTS collapse mitigations: each hook changes what it should, and plain DARTS is unchanged."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jnas.spaces.darts import DartsSpace
from jnas.strategies import mitigations as mit
from jnas.strategies.darts import DartsState, arch_optimizer, darts, weight_optimizer
from jnas.strategies.registry import build_gradient_strategy, build_mitigation
from jnas.supernet import DartsSupernet, make_apply, split_model

# A small space (one op of each kind) keeps the supernet's compilation short.
PRIMS = ("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")
SKIP = PRIMS.index("skip_connect")


def tiny():
  space = DartsSpace(num_nodes=2, primitives=PRIMS)
  net = DartsSupernet(space, 1, 10, ndim=1, channels=4, layers=1, rngs=nnx.Rngs(0))
  s = split_model(net)
  alpha = space.init_alpha(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (8, 12, 1))
  y = jnp.arange(8) % 10
  return space, s, alpha, (x, y), (x[::-1], y[::-1])


def build(s, alpha, mitigation=None):
  return darts(make_apply(s.graphdef), s.params, s.state, alpha,
               w_opt=weight_optimizer(total_steps=10), a_opt=arch_optimizer(lr=0.01),
               mitigation=mitigation)


def rows(n=3, k=4, seed=0):
  return {"normal": jax.random.normal(jax.random.key(seed), (n, k)),
          "reduce": jax.random.normal(jax.random.key(seed + 1), (n, k))}


def test_default_darts_unchanged_and_empty_mitigation_matches():
  # mitigation=None keeps today's state layout and numbers; an empty
  # Mitigation runs the hooked path and must give the same numbers.
  _, s, alpha, bt, bv = tiny()
  plain, hooked = build(s, alpha), build(s, alpha, mit.Mitigation())
  st0 = plain.init(jax.random.key(0))
  assert type(st0) is DartsState and len(st0) == 6  # checkpoints of plain DARTS unchanged
  a, ma = jax.jit(plain.step)(st0, bt, bv)
  b, mb = jax.jit(hooked.step)(hooked.init(jax.random.key(0)), bt, bv)
  for u, v in zip(jax.tree.leaves((a.params, a.alpha)), jax.tree.leaves((b.params, b.alpha))):
    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ma["val_loss"], mb["val_loss"], rtol=1e-6)


def test_fairdarts_sigmoid_and_zero_one_loss():
  m = mit.fairdarts(w01=10.0)
  a = rows()
  enc = m.relax(a, jnp.array(0), None)
  np.testing.assert_allclose(enc["normal"], jax.nn.sigmoid(a["normal"]), rtol=1e-6)
  assert not np.allclose(enc["normal"].sum(-1), 1.0)  # no longer a softmax
  both = jnp.concatenate([a["normal"], a["reduce"]])
  want = -10.0 * jnp.mean((jax.nn.sigmoid(both) - 0.5) ** 2)
  np.testing.assert_allclose(m.regularizer(a, jnp.array(0)), want, rtol=1e-6)
  # The loss pushes weights away from 0.5: its gradient has the sign of -(s - 0.5).
  g = jax.grad(m.regularizer)(a, jnp.array(0))["normal"]
  assert np.all(np.sign(g) == -np.sign(jax.nn.sigmoid(a["normal"]) - 0.5))


def test_drnas_dirichlet_sample_mean_and_gradient():
  m = mit.drnas(anchor_weight=1e-3)
  a = rows()
  key = jax.random.key(3)
  # Jitted: eager sampling compiles the gamma sampler op by op.
  sample = jax.jit(lambda a_, k: m.relax(a_, jnp.array(0), k))
  e1, e2 = sample(a, key), sample(a, jax.random.key(4))
  np.testing.assert_allclose(e1["normal"].sum(-1), 1.0, rtol=1e-5)
  assert not np.allclose(e1["normal"], e2["normal"])  # a sample, not a function of alpha
  conc = jax.nn.elu(a["normal"]) + 1
  np.testing.assert_allclose(m.relax(a, jnp.array(0), None)["normal"],
                             conc / conc.sum(-1, keepdims=True), rtol=1e-6)
  # Pathwise gradient through the sample reaches alpha.
  w = jnp.arange(4.0)
  g = jax.jit(jax.grad(lambda a_: jnp.sum(sample(a_, key)["normal"] * w)))(a)
  assert np.all(np.isfinite(g["normal"])) and float(jnp.abs(g["normal"]).sum()) > 1e-3
  assert float(m.regularizer(a, jnp.array(0))) > 0


def test_beta_decay_schedule_and_value():
  m = mit.beta_decay(weight_max=50.0, total_steps=100)
  a = rows()
  lse = jnp.mean(jax.nn.logsumexp(jnp.concatenate([a["normal"], a["reduce"]]), -1))
  assert float(m.regularizer(a, jnp.array(0))) == 0.0
  np.testing.assert_allclose(m.regularizer(a, jnp.array(50)), 25.0 * lse, rtol=1e-6)
  np.testing.assert_allclose(m.regularizer(a, jnp.array(100)), 50.0 * lse, rtol=1e-6)


def test_darts_minus_adds_decaying_skip():
  m = mit.darts_minus(skip_index=SKIP, total_steps=10)
  enc = {"normal": jnp.full((2, 4), 0.25)}
  for step, beta in ((0, 1.0), (5, 0.5), (10, 0.0), (20, 0.0)):
    out = m.adjust(enc, jnp.array(step))["normal"]
    np.testing.assert_allclose(out[:, SKIP], 0.25 + beta, rtol=1e-6)
    np.testing.assert_allclose(np.delete(np.asarray(out), SKIP, axis=1), 0.25)


def test_sdarts_rs_perturbs_within_eps_in_weight_step_only():
  m = mit.sdarts_rs(eps_min=0.03, eps_max=0.3, total_steps=10)
  enc = {"normal": jnp.full((14, 8), 0.5)}
  out = m.perturb(enc, jnp.array(0), jax.random.key(0))["normal"]
  d = np.abs(np.asarray(out) - 0.5)
  assert d.max() <= 0.03 + 1e-7 and d.max() > 0.01
  d_end = np.abs(np.asarray(m.perturb(enc, jnp.array(10), jax.random.key(0))["normal"]) - 0.5)
  assert d_end.max() > 0.1
  # In the strategy, the logged encoding has no noise.
  _, s, alpha, _, _ = tiny()
  strat, plain = build(s, alpha, m), build(s, alpha)
  st = strat.init(jax.random.key(0))
  np.testing.assert_allclose(strat.encoding(st)["reduce"],
                             plain.encoding(plain.init(jax.random.key(0)))["reduce"], rtol=1e-6)


def test_pruning_masks_weakest_live_op_at_given_steps():
  mask = {"n": jnp.ones((2, 3), bool)}
  a = {"n": jnp.array([[0.0, -1.0, 1.0], [2.0, 1.0, -3.0]])}
  same = mit.prune_weakest(mask, a, jnp.array(4), (5, 7))
  assert bool(jnp.all(same["n"]))
  once = mit.prune_weakest(mask, a, jnp.array(5), (5, 7))
  assert once["n"].tolist() == [[True, False, True], [True, True, False]]
  twice = mit.prune_weakest(once, a, jnp.array(7), (5, 7))
  assert twice["n"].tolist() == [[False, False, True], [True, False, False]]
  last = mit.prune_weakest(twice, a, jnp.array(7), (5, 7))
  assert last["n"].tolist() == twice["n"].tolist()  # the last live op stays
  enc = jax.nn.softmax(mit.apply_mask(a, once)["n"])
  assert float(enc[0, 1]) == 0.0 and float(enc[1, 2]) == 0.0


def test_skip_connect_stop_predicate():
  space = DartsSpace(num_nodes=2, primitives=PRIMS)
  shape = space.encoding_shape()
  a = {k: np.zeros(v, np.float32) for k, v in shape.items()}
  stop = mit.skip_connect_stop(space, max_skips=2)
  a["normal"][:, PRIMS.index("sep_conv_3x3")] = 1.0
  assert not stop(a)
  a["normal"][:, SKIP] = 2.0
  assert stop(a)


def test_combination_runs_jitted_without_retracing():
  _, s, alpha, bt, bv = tiny()
  m = mit.chain(mit.fairdarts(), mit.darts_minus(SKIP, total_steps=4),
                mit.progressive_pruning([1]), mit.sdarts_rs(total_steps=4))
  strat = build(s, alpha, m)

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def step(state, bt, bv):
    return strat.step(state, bt, bv)

  jstep = jax.jit(step)
  st0 = strat.init(jax.random.key(0))
  st1, m1 = jstep(st0, bt, bv)
  st2, m2 = jstep(st1, bt, bv)
  assert bool(jnp.all(st1.mask["reduce"]))
  assert np.all(np.asarray(st2.mask["reduce"]).sum(-1) == len(PRIMS) - 1)
  assert np.isfinite(float(m2["train_loss"])) and float(m2["arch_reg"]) < 0
  enc = strat.encoding(st2)["reduce"]
  assert np.all(np.asarray(enc)[~np.asarray(st2.mask["reduce"])] == 0.0)
  assert float(jnp.min(strat.arch_params(st2)["reduce"])) == mit.MASKED_LOGIT


def test_drnas_step_moves_alpha():
  _, s, alpha, bt, bv = tiny()
  strat = build(s, alpha, mit.drnas())
  st0 = strat.init(jax.random.key(0))
  st1, _ = jax.jit(strat.step)(st0, bt, bv)
  assert float(jnp.abs(st1.alpha["reduce"] - st0.alpha["reduce"]).max()) > 0


def search_section(**kw):
  sc = dict(strategy="darts", order=1, w_lr=0.025, w_lr_min=0.001, momentum=0.9,
            weight_decay=3e-4, grad_clip=5.0, a_lr=3e-4, a_b1=0.5, a_b2=0.999,
            a_weight_decay=1e-3)
  sc.update(kw)
  return ml_collections.ConfigDict(sc)


def test_registry_parses_and_refuses():
  m = build_mitigation(search_section(mitigations="fairdarts, beta_decay"), primitives=PRIMS,
                       total_steps=10, steps_per_epoch=5)
  assert m.relax is not None and m.regularizer is not None
  assert build_mitigation(search_section(), primitives=PRIMS, total_steps=10,
                          steps_per_epoch=5) is None
  with pytest.raises(ValueError, match="unknown mitigation 'fairdart'"):
    build_mitigation(search_section(mitigations="fairdart"), primitives=PRIMS, total_steps=10,
                     steps_per_epoch=5)
  with pytest.raises(ValueError, match="at most one"):
    build_mitigation(search_section(mitigations="fairdarts,drnas"), primitives=PRIMS,
                     total_steps=10, steps_per_epoch=5)
  _, s, alpha, _, _ = tiny()
  with pytest.raises(ValueError, match="fairdarts apply to strategy 'darts' only"):
    build_gradient_strategy(search_section(strategy="gdas", mitigations="fairdarts,beta_decay"),
                            s.graphdef, s.params, s.state, alpha, total_steps=10,
                            steps_per_epoch=5, key=jax.random.key(0))
  strat = build_gradient_strategy(search_section(mitigations="darts_minus,pruning",
                                                 prune_epochs=(1,)),
                                  s.graphdef, s.params, s.state, alpha, total_steps=10,
                                  steps_per_epoch=5, key=jax.random.key(0))
  assert strat.init(jax.random.key(0)).mask is not None


def test_config_accepts_mitigation_overrides_on_any_config():
  from jnas.config import ConfigError, apply_overrides

  base = ml_collections.ConfigDict({"search": {"epochs": 2}})
  cfg = apply_overrides(base, ["search.mitigations=fairdarts,sdarts_rs", "search.fairdarts_w01=5"])
  assert cfg.search.mitigations == "fairdarts,sdarts_rs" and cfg.search.fairdarts_w01 == 5.0
  assert "mitigations" not in base.search  # configs without the key keep their hash
  with pytest.raises(ConfigError, match="unknown config key 'search.mitigation'"):
    apply_overrides(base, ["search.mitigation=fairdarts"])


def test_pc_darts_partial_channels_on_nb201():
  """K=2: each edge's ops have half the channels; the bypassed half reaches the output."""
  from jnas.spaces.nb201 import NB201Space
  from jnas.supernet.nb201 import NB201SearchCell, NB201Supernet
  from jnas.train.chain_network import channel_shuffle

  np.testing.assert_array_equal(channel_shuffle(jnp.arange(6.0)[None], 2), [[0, 3, 1, 4, 2, 5]])
  space = NB201Space()
  full = NB201SearchCell(space, 4, ndim=1, rngs=nnx.Rngs(0))
  pc = NB201SearchCell(space, 4, ndim=1, partial_channels=2, rngs=nnx.Rngs(0))
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(pc) < count(full) / 2
  x = jax.random.normal(jax.random.key(0), (2, 9, 4))
  # Only "none" on every edge: the op half is zero, the bypassed half flows through, shuffled.
  none = jnp.zeros((6, 5)).at[:, 0].set(1.0)
  y = pc(x, none, train=False)
  assert y.shape == x.shape and float(jnp.abs(y).sum()) > 0
  for single in (False, True):
    net = NB201Supernet(space, 1, 10, ndim=1, channels=4, cells_per_stage=1, partial_channels=2,
                        rngs=nnx.Rngs(0))
    out = net(jnp.ones((2, 16, 1)), {"cell": jax.nn.one_hot(jnp.arange(6) % 5, 5)}, train=True,
              single_path=single)
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
  with pytest.raises(ValueError, match="divide"):
    NB201SearchCell(space, 4, ndim=1, partial_channels=3, rngs=nnx.Rngs(0))


def test_beta_decay_regularises_snas():
  """With SNAS the regulariser's gradient adds to alpha's (its weight is 0 at step 0, so two steps)."""
  space, s, alpha, bt, bv = tiny()
  plain = build_gradient_strategy(search_section(strategy="snas"), s.graphdef, s.params, s.state,
                                  alpha, total_steps=10, steps_per_epoch=5, key=jax.random.key(0))
  reg = build_gradient_strategy(search_section(strategy="snas", mitigations="beta_decay",
                                               beta_decay_max=1e3),
                                s.graphdef, s.params, s.state, alpha, total_steps=10,
                                steps_per_epoch=5, key=jax.random.key(0))
  step_a, step_b = jax.jit(plain.step), jax.jit(reg.step)
  a, ma = step_a(plain.init(jax.random.key(1)), bt, bv)
  b, mb = step_b(reg.init(jax.random.key(1)), bt, bv)
  assert "arch_reg" in mb and "arch_reg" not in ma
  assert float(mb["val_loss"]) == pytest.approx(float(ma["val_loss"]))
  a, _ = step_a(a, bt, bv)
  b, mb = step_b(b, bt, bv)
  assert float(mb["arch_reg"]) > 0
  moved = jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a.alpha, b.alpha)
  assert max(jax.tree.leaves(moved)) > 0


def test_mitigated_search_checkpoints_and_finishes(tmp_path):
  """End to end through `jnas search`: the mitigated state (which keeps a key) survives donation."""
  import json

  from jnas.cli import main
  from tiny_search import CONFIG, TINY

  wd = tmp_path / "run"
  assert main(["search", "--config", CONFIG, "--workdir", str(wd), *TINY,
               "--config.search.mitigations=drnas,pruning"]) == 0
  assert json.loads((wd / "summary.json").read_text())["search_epochs"] == 3
