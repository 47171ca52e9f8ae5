"""Few-shot supernets (Zhao et al., 2021): SPOS with the supernet split on one edge."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jnas.spaces.nb201 import NB201Space
from jnas.strategies.spos import (FewShot, encoding_pool, few_shot_apply, parse_few_shot, spos,
                                  stack_sub_supernets)
from jnas.supernet import make_apply, split_model
from jnas.supernet.nb201 import NB201Supernet

SPACE = NB201Space()


def _setup(warmup: int):
  s = split_model(NB201Supernet(SPACE, 1, 10, ndim=1, channels=4, cells_per_stage=1,
                                rngs=nnx.Rngs(0)))
  apply = make_apply(s.graphdef, single_path=True)
  pool = encoding_pool(SPACE, 32, seed=0)
  opt = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.05, momentum=0.9))
  one = spos(apply, s.params, s.state, pool, w_opt=opt)
  few = spos(apply, s.params, s.state, pool, w_opt=opt,
             few_shot=FewShot("cell", 0, len(SPACE.ops), warmup))
  x = jax.random.normal(jax.random.key(1), (4, 16, 12, 1))
  y = jnp.arange(64).reshape(4, 16) % 10
  return s, apply, pool, one, few, x, y


def test_before_the_split_every_sub_supernet_trains_as_the_one_shot_supernet():
  _, _, _, one, few, x, y = _setup(warmup=100)
  a, b = one.init(jax.random.key(3)), few.init(jax.random.key(3))
  step_a, step_b = jax.jit(one.step), jax.jit(few.step)
  for t in range(4):
    a, ma = step_a(a, (x[t], y[t]))
    b, mb = step_b(b, (x[t], y[t]))
    assert int(ma["path"]) == int(mb["path"])  # the same key draws the same paths
    np.testing.assert_allclose(float(ma["train_loss"]), float(mb["train_loss"]), rtol=1e-5)
  for one_leaf, few_leaf in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    for k in range(len(SPACE.ops)):
      np.testing.assert_allclose(few_leaf[k], one_leaf, rtol=1e-5, atol=1e-6)


def test_after_the_split_a_step_moves_only_the_paths_sub_supernet():
  _, _, pool, _, few, x, y = _setup(warmup=1)
  state = few.init(jax.random.key(0))
  step = jax.jit(few.step)
  state, _ = step(state, (x[0], y[0]))  # warm-up: every copy moves alike
  before = state
  state, m = step(state, (x[1], y[1]))
  s = int(np.argmax(pool["cell"][int(m["path"])][0]))
  for old, new in zip(jax.tree.leaves((before.params, before.w_opt_state)),
                      jax.tree.leaves((state.params, state.w_opt_state))):
    if np.ndim(old) == 0 or np.shape(old)[0] != len(SPACE.ops):
      continue
    for k in range(len(SPACE.ops)):
      if k != s:  # weight decay and momentum leave the other copies alone too
        np.testing.assert_array_equal(new[k], old[k])
  changed = [not np.array_equal(n[s], o[s]) for o, n in
             zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params))]
  assert any(changed)


def test_few_shot_apply_runs_each_cell_in_its_own_sub_supernet():
  s, apply, _, _, _, x, _ = _setup(warmup=0)
  num = len(SPACE.ops)
  # Sub-supernet k: the weights scaled by (1 + k), so each gives other logits.
  params = jax.tree.map(lambda a: jnp.stack([a * (1 + k) for k in range(num)]), s.params)
  stats = stack_sub_supernets(s.state, num)
  fs = few_shot_apply(apply, FewShot("cell", 0, num, 0))
  for g in ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|avg_pool_3x3~2|",
            "|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|skip_connect~1|avg_pool_3x3~2|"):
    enc = {k: jnp.asarray(v) for k, v in SPACE.genotype_to_encoding(SPACE.parse(g)).items()}
    k = SPACE.ops.index(SPACE.parse(g).ops[0])
    got, _ = fs(params, stats, enc, x[0], False)
    want, _ = apply(jax.tree.map(lambda a: a[k], params), s.state, enc, x[0], False)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_parse_few_shot_refuses_bad_text_in_one_line():
  pool = {"cell": np.zeros((3, 6, 5))}
  assert parse_few_shot("", pool, 10) is None
  assert parse_few_shot("cell:5", pool, 10) == FewShot("cell", 5, 5, 10)
  for bad, match in [("cell", "KEY:EDGE"), ("normal:0", "no encoding part"),
                     ("cell:6", "out of range"), ("cell:x", "KEY:EDGE")]:
    with pytest.raises(ValueError, match=match) as e:
      parse_few_shot(bad, pool, 10)
    assert "\n" not in str(e.value)


def test_a_few_shot_spos_search_runs_and_is_benched_end_to_end(tmp_path):
  import json

  from jnas import run
  from jnas.config import apply_overrides, load_config
  from jnas.nb201_table import bench_workdir
  from test_nb201_bench import _write_table

  cfg = apply_overrides(load_config("experiments/nb201_table_search.py"), [
      "search.strategy=spos", "search.epochs=2", "search.batch_size=256", "search.channels=4",
      "search.pool_size=16", "evolution.population=4", "evolution.top_k=2", "evolution.evals=8",
      "evolution.calib_batches=1", "evolution.val_batches=1", "search.few_shot=cell:0",
      "search.few_shot_warmup=0.5", "retrain.enabled=false"])
  wd = tmp_path / "run"
  summary = run.search(cfg, str(wd))
  assert json.loads((wd / "config.json").read_text())["search"]["few_shot"] == "cell:0"
  with np.load(wd / "supernet.npz") as f:  # five stacked sub-supernets, no longer identical
    leaf = next(f[k] for k in f.files if "params" in k and f[k].ndim >= 2)
  assert leaf.shape[0] == len(SPACE.ops) and not np.array_equal(leaf[0], leaf[1])
  r = bench_workdir(wd, _write_table(tmp_path / "t" / "table.csv"), sample=20, yardsticks=False)
  assert r["arch"] == summary["genotype"]["arch"]
  assert r["correlation"]["shared_weights"]["cells"] == 20
