"""Chain supernet and FBNet search: weight sharing, one compilation, latency-aware steps, targets."""

from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jnas.estimation.latency import (build_latency_table, expected_latency, measure_latencies,
                                     predicted_latency, table_from_json)
from jnas.spaces.chain import ChainGenotype, FBNetSpace, KernelChainSpace
from jnas.strategies.gumbel import fbnet, fbnet_loss, sample_encoding
from jnas.search.fbnet import derive_genotype, latency_target_loss, search_fbnet
from jnas.supernet.chain import ChainSupernet, extract_network, make_supernet_apply
from jnas.supernet.functional import make_apply, split_model

FB = FBNetSpace((16, 1), 4, stem_channels=4, stem_stride=1, stages=((4, 1, 1), (8, 1, 2)),
                head_channels=8, candidates=("k3_e1", "k5_e3_g2", "skip"))
KC = KernelChainSpace((6, 6, 1), 4, widths=(4,), pool_after=())  # 2-D
TINY = FBNetSpace((8, 1), 2, stem_channels=2, stem_stride=1, stages=((2, 1, 1),), head_channels=0,
                  candidates=("k3_e1", "k5_e3"))


def _one_hot(space, genotype):
  return {"blocks": jnp.asarray(space.genotype_to_encoding(genotype)["blocks"])}


def _leaves(state, b, j):
  cands = state["blocks"][b]["candidates"]
  return jax.tree.leaves(cands[j]) if j in cands else []  # the identity skip has no state


def _synthetic_table(space, ms):
  return table_from_json({
      "space": space.name, "candidates": list(space.candidates), "batch_size": 1,
      "positions": [{"input_shape": list(p.in_shape)} for p in space.positions()],
      "latency_ms": ms, "stem_ms": 0.1, "head_ms": 0.1})


@pytest.mark.slow  # compiles several networks; run with -m slow
def test_one_hot_supernet_equals_discrete_network_and_single_path():
  net = ChainSupernet(FB, rngs=nnx.Rngs(0))
  split = split_model(net)
  full = jax.jit(make_apply(split.graphdef), static_argnums=4)
  single = make_supernet_apply(split.graphdef, single_path=True)
  x = jax.random.normal(jax.random.key(1), (3,) + FB.input_shape)
  g = ChainGenotype(("k5_e3_g2", "skip"))  # grouped + shuffled block, projection shortcut
  enc = _one_hot(FB, g)

  @jax.jit
  def single_and_grad(params):
    (y, stats), grads = jax.value_and_grad(
        lambda p: (lambda out: (out[0].sum(), out))(single(p, split.state, enc, x, True)),
        has_aux=True)(params)
    return stats[0], stats[1], grads

  disc = extract_network(FB, net, g)
  y_full, _ = full(split.params, split.state, enc, x, False)
  np.testing.assert_allclose(y_full, disc(x, train=False), atol=1e-5)
  y_single, s_single, grads = single_and_grad(split.params)
  np.testing.assert_allclose(y_single, disc(x, train=True), atol=1e-5)
  s_disc = nnx.state(disc, nnx.BatchStat)
  # Training mode: the chosen candidates' running statistics move as in the
  # discrete network; single path leaves the others untouched, and only the
  # chosen candidates get a gradient.
  for b, name in enumerate(g.blocks):
    k = FB.candidates.index(name)
    want = jax.tree.leaves(s_disc["blocks"][b])
    for j in range(len(FB.candidates)):
      got, before = _leaves(s_single, b, j), _leaves(split.state, b, j)
      for c, o, w in zip(got, before, want if j == k else before):
        np.testing.assert_allclose(c, w, atol=1e-5)
      assert j != k or len(got) == len(want)
      norm = sum(float(jnp.abs(leaf).sum()) for leaf in _leaves(grads, b, j))
      assert norm > 0 if j == k else norm == 0


def test_vmapped_evaluation_over_encodings_compiles_once():
  net = ChainSupernet(KC, rngs=nnx.Rngs(0))
  split = split_model(net)
  apply = make_apply(split.graphdef)

  @chex.assert_max_traces(n=1)  # a second trace (a recompilation) fails the test
  def evaluate(params, state, enc, x):
    return apply(params, state, enc, x, False)[0]

  batched = jax.jit(jax.vmap(evaluate, in_axes=(None, None, 0, None)))
  x = jax.random.normal(jax.random.key(3), (2, 6, 6, 1))
  rng = np.random.default_rng(0)
  outs = []
  for _ in range(3):
    genos = [KC.random_genotype(rng) for _ in range(4)]
    encs = {"blocks": jnp.stack([_one_hot(KC, g)["blocks"] for g in genos])}
    outs.append(batched(split.params, split.state, encs, x))
  assert outs[0].shape == (4, 2, 4)
  g = genos[-1]
  np.testing.assert_allclose(outs[-1][-1], extract_network(KC, net, g)(x, train=False),
                             atol=1e-5)


def test_fbnet_steps_move_alpha_and_latency_has_gradient():
  net = ChainSupernet(TINY, rngs=nnx.Rngs(0))
  split = split_model(net)
  ms = [[0.05, 0.4]]
  table = _synthetic_table(TINY, ms)
  alpha = {"blocks": jnp.zeros((1, 2))}
  latency_us = lambda enc: 1e3 * expected_latency(table, enc)
  strat = fbnet(make_apply(split.graphdef), split.params, split.state, alpha,
                w_opt=optax.sgd(0.05, momentum=0.9), a_opt=optax.adam(0.05), steps_per_epoch=2,
                latency_fn=latency_us, b=3.0)
  state = strat.init(jax.random.key(0))
  step = jax.jit(strat.step)
  rng = np.random.default_rng(0)
  batch = lambda: (jnp.asarray(rng.standard_normal((8, 8, 1)), jnp.float32),
                   jnp.asarray(rng.integers(0, 2, 8)))
  for _ in range(3):
    state, metrics = step(state, batch(), batch())
  assert np.isfinite(float(metrics["arch_objective"]))
  assert not np.allclose(state.alpha["blocks"], 0.0)
  assert float(metrics["cost"]) > 1e3 * table.fixed_ms
  # The latency term alone: its gradient wrt alpha is nonzero and points to
  # the slow candidate (k5_e3) being made less likely.
  lat_grad = jax.grad(lambda a: fbnet_loss(
      jnp.float32(1.0), latency_us(sample_encoding(jax.random.key(1), a, 5.0, hard=False)),
      b=3.0))(alpha)
  g = np.asarray(lat_grad["blocks"])
  assert np.all(np.abs(g).sum(-1) > 0)
  assert np.all(g[:, 1] > 0)


def test_derive_genotype_repairs_to_target_and_refuses_impossible_targets():
  table = _synthetic_table(FB, [[0.05, 0.4, 0.0], [0.06, 0.5, 0.02]])
  alpha = np.array([[0.0, 2.0, 0.0], [0.0, 1.0, 0.5]])
  g, repairs = derive_genotype(FB, alpha)
  assert g.blocks == ("k5_e3_g2", "k5_e3_g2") and repairs == 0
  g, repairs = derive_genotype(FB, alpha, table, target_ms=0.2 + 0.4 + 0.1)
  assert predicted_latency(table, g) <= 0.7 and repairs == 1
  assert g.blocks[0] == "k5_e3_g2"  # alpha prefers it more strongly there
  with pytest.raises(ValueError, match="below the fastest"):
    derive_genotype(FB, alpha, table, target_ms=0.1)


def test_latency_target_loss_adds_hinge_above_target():
  ce, lat = jnp.float32(1.0), jnp.float32(300.0)
  base = fbnet_loss(ce, lat)
  assert float(latency_target_loss(ce, lat, target=400.0)) == pytest.approx(float(base))
  assert float(latency_target_loss(ce, lat, target=200.0, penalty=2.0)) == pytest.approx(
      float(base) + 1.0)
  with pytest.raises(ValueError, match="target"):
    latency_target_loss(ce, lat, target=0.0)


@pytest.mark.slow  # compiles several networks; run with -m slow
def test_latency_target_is_met_by_search_and_measurement():
  # Dense convolutions of 1, 3 or 5 taps at batch 64: compute dominates, so
  # the table separates the architectures clearly. The target sits halfway
  # between the fastest and the slowest predicted architecture.
  space = KernelChainSpace((32, 1), 4, widths=(32, 32), pool_after=(), kernels=(1, 5))
  table = build_latency_table(space, 64, repeats=5, warmup=1, stat="min")
  fast = table.fixed_ms + float(table.ops_ms.min(1).sum())
  slow = table.fixed_ms + float(table.ops_ms.max(1).sum())
  assert slow > 1.5 * fast
  target = 0.5 * (fast + slow)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((192, 32, 1)).astype(np.float32)
  y = (x[:, :16, 0].sum(1) > 0).astype(np.int32) + 2 * (x[:, 16:, 0].sum(1) > 0)
  data = ((x[:96], y[:96]), (x[96:], y[96:]))
  res = search_fbnet(space, table, data, epochs=2, warmup_epochs=0, batch_size=32, seed=0,
                     a_lr=0.2, target_ms=target, penalty=10.0)
  assert res.repairs == 0
  assert res.predicted_ms <= target
  slowest = ChainGenotype(("k5", "k5"))
  got, worst = measure_latencies(space, [res.genotype, slowest], 64, repeats=5, stat="min")
  assert got <= 1.2 * target and got < worst


@pytest.mark.slow  # about 60-90 s on 2 cores; the target is also checked in the default suite above
def test_jnas_search_on_a_chain_config_measures_a_table_and_meets_its_target(tmp_path, capsys):
  """`jnas search` on an FBNet config: latency table measured here, target met, files written."""
  from jnas import cli
  from jnas.estimation.latency import load_latency_table, predicted_latency

  root = Path(__file__).resolve().parents[1]
  base = [f"--config={root / 'experiments' / 'fbnet_mnist1d.py'}",
          "--config.space.stem_channels=4", "--config.space.stages=((4,1,1),(8,1,2))",
          "--config.space.head_channels=8", "--config.search.epochs=1",
          "--config.search.warmup_epochs=0", "--config.search.batch_size=200",
          "--config.latency.repeats=3", "--config.retrain.enabled=false"]
  # An impossible target is refused before any search work, naming the fastest possible.
  assert cli.main(["search", *base, "--workdir", str(tmp_path / "a"),
                   "--config.fbnet.target_ms=1e-6"]) != 0
  assert "below the fastest architecture" in capsys.readouterr().err
  wd = tmp_path / "a"  # the table measured above is reused: same config apart from the target
  table = load_latency_table(wd / "latency_table.json")
  ops = table.ops_ms
  target = (table.fixed_ms + float(ops.min(axis=1).sum())
            + 0.25 * float((ops.max(1) - ops.min(1)).sum()))
  wd2 = tmp_path / "b"
  wd2.mkdir()
  (wd2 / "latency_table.json").write_text((wd / "latency_table.json").read_text())
  assert cli.main(["search", *base, "--workdir", str(wd2), f"--config.fbnet.target_ms={target}"]) == 0
  summary = json.loads((wd2 / "summary.json").read_text())
  space = FBNetSpace((40, 1), 10, stem_channels=4, stem_stride=1,
                     stages=((4, 1, 1), (8, 1, 2)), head_channels=8)
  geno = space.genotype_from_json(json.loads((wd2 / "genotype.json").read_text()))
  assert predicted_latency(table, geno) <= target + 1e-9
  assert summary["predicted_ms"] == pytest.approx(predicted_latency(table, geno))
  assert np.load(wd2 / "arch_params.npz")["blocks"].shape == (2, len(space.candidates))
  assert len((wd2 / "metrics.jsonl").read_text().splitlines()) == 1
  # A finished run is reported as such and left alone.
  capsys.readouterr()
  assert cli.main(["search", *base, "--workdir", str(wd2), f"--config.fbnet.target_ms={target}"]) == 0
  assert "finished" in capsys.readouterr().out
