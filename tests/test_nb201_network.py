"""NAS-Bench-201 networks: the benchmark's parameter counts, the supernet, and `jnas search` on it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jnas import checkpoint, run
from jnas.config import apply_overrides, load_config
from jnas.search import loop
from jnas.spaces.nb201 import NB201Space
from jnas.strategies.spos import encoding_pool, spos
from jnas.supernet.functional import make_apply, split_model
from jnas.supernet.nb201 import NB201Supernet
from jnas.train.nb201_network import NB201Network
from jnas.utils.metrics import read_metrics

from tiny_search import sigterm_after_steps

ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
             "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def _params(net) -> int:
  return sum(v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))


@pytest.mark.parametrize("arch, expected", [
    (ALL_CONV3, 1_531_546),  # the benchmark's largest cell: 1.53M parameters
    # No cell weights at all: stem, the two residual blocks, last BN and classifier.
    ("|none~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|skip_connect~2|", 73_306),
])
def test_cifar10_parameter_counts(arch, expected):
  g = NB201Space().parse(arch)
  net = nnx.eval_shape(lambda: NB201Network(g, 3, 10, ndim=2, rngs=nnx.Rngs(0)))
  assert _params(net) == expected


def test_supernet_single_path_equals_mixed_and_spos_trains_only_the_path():
  space = NB201Space(num_nodes=3)  # 3 edges per cell keep compilation short
  s = split_model(NB201Supernet(space, 1, 10, ndim=1, channels=4, cells_per_stage=1,
                                rngs=nnx.Rngs(0)))
  x = jax.random.normal(jax.random.key(0), (8, 12, 1))
  y = jnp.arange(8) % 10
  pool = encoding_pool(space, 4, seed=3)
  both = jax.jit(lambda enc: (make_apply(s.graphdef)(s.params, s.state, enc, x, False)[0],
                              make_apply(s.graphdef, single_path=True)(
                                  s.params, s.state, enc, x, False)[0]))
  for i in range(2):
    mixed, single = both({k: jnp.asarray(v[i]) for k, v in pool.items()})
    np.testing.assert_allclose(mixed, single, atol=1e-5)

  strat = spos(make_apply(s.graphdef, single_path=True), s.params, s.state, pool,
               w_opt=optax.sgd(0.1))
  s0 = strat.init(jax.random.key(1))
  s1, m = jax.jit(strat.step)(s0, (x, y))
  chosen = np.argmax(pool["cell"][int(m["path"])], axis=-1)
  moved = {jax.tree_util.keystr(p): bool(jnp.any(a != b)) for (p, a), b in zip(
      jax.tree_util.tree_flatten_with_path(s0.params)[0], jax.tree.leaves(s1.params))}
  conv_ops = [k for k, op in enumerate(space.ops) if op.startswith("nor_conv")]
  for e in range(space.num_edges):
    for k in conv_ops:
      prefix = f"['layers'][0]['edges'][{e}]['candidates'][{k}]"
      changed = [v for name, v in moved.items() if name.startswith(prefix)]
      assert changed and any(changed) == (k == chosen[e]), (e, k, chosen)
  assert np.isfinite(float(m["train_loss"]))


def _tiny(strategy: str, epochs: int = 1, *extra: str):
  cfg = load_config("experiments/nb201_mnist1d.py")
  return apply_overrides(cfg, [
      f"search.strategy={strategy}", f"search.epochs={epochs}", "search.batch_size=256",
      "search.channels=4", "search.cells_per_stage=1", "search.pool_size=16",
      "evolution.population=4", "evolution.top_k=2", "evolution.evals=8",
      "evolution.calib_batches=1", "evolution.val_batches=1", "retrain.enabled=false", *extra])


@pytest.fixture(scope="module")
def spos_run(tmp_path_factory):
  """An uninterrupted SPOS search on NB201: 2 epochs of 7 steps, 8 architectures evolved."""
  wd = tmp_path_factory.mktemp("spos") / "run"
  return wd, run.search(_tiny("spos", epochs=2), str(wd))


def test_jnas_search_spos_on_nb201_writes_a_benchmark_string(spos_run):
  wd, summary = spos_run
  arch = json.loads((wd / "genotype.json").read_text())["arch"]
  g = NB201Space().parse(arch)  # the benchmark's own string format
  assert summary["genotype"]["arch"] == arch
  with np.load(wd / "arch_params.npz") as a:
    np.testing.assert_array_equal(a["cell"], NB201Space().genotype_to_encoding(g)["cell"])
  evo = json.loads((wd / "evolution.json").read_text())
  assert evo["num_evaluated"] == 8 and evo["best"]["genotype"]["arch"] == arch
  best = max(h["val_accuracy"] for h in evo["history"])
  assert summary["shared_val_accuracy"] == pytest.approx(best)
  phases = [json.loads(line).get("phase") for line in (wd / "metrics.jsonl").open()]
  assert phases == ["search", "search", "evolution"]
  again = run.search(_tiny("spos", epochs=2), str(wd))
  assert again["status"] == "finished"


def test_spos_stopped_mid_epoch_resumes_to_the_same_result(spos_run, tmp_path, monkeypatch):
  """SIGTERM during step 10 of 14: a checkpoint after that step, then the rerun ends identical.

  One step per call here; the reference ran each epoch as one scan (the config's
  ``steps_per_call=0``): the two give the same files."""
  ref, _ = spos_run
  progress_that_signals = sigterm_after_steps(loop.progress, 10, [])
  wd = tmp_path / "run"
  monkeypatch.setattr(loop, "progress", progress_that_signals)
  with pytest.raises(KeyboardInterrupt):
    run.search(_tiny("spos", 2, "search.steps_per_call=1"), str(wd))
  monkeypatch.undo()
  assert checkpoint.all_steps(wd / "checkpoints/search") == [7, 10]
  assert not (wd / "evolution.json").exists()
  run.search(_tiny("spos", 2, "search.steps_per_call=1"), str(wd))
  for name in ("genotype.json", "evolution.json"):
    assert (wd / name).read_text() == (ref / name).read_text(), name
  losses = lambda d: [r["train_loss"] for r in read_metrics(str(d)) if r["phase"] == "search"]
  assert losses(wd) == losses(ref)


@pytest.mark.slow  # ~40 s: the GDAS step on the NAS-Bench-201 supernet compiles
def test_jnas_search_gdas_on_nb201(tmp_path):
  wd = tmp_path / "gdas"
  run.search(_tiny("gdas"), str(wd))
  NB201Space().parse(json.loads((wd / "genotype.json").read_text())["arch"])
  with np.load(wd / "alpha_history.npz") as h:
    assert h["alpha_cell"].shape == (1, 6, 5)
    assert str(h["edge_labels"][2]) == "node 2 <- node 1"
