"""Latency lookup tables: built here, saved, reloaded, refused when they do not fit."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas.estimation.latency import (build_latency_table, expected_latency, load_latency_table,
                                     measure_latencies, predicted_latency, rank_correlations,
                                     table_from_json)
from jnas.spaces.chain import ChainGenotype, FBNetSpace, KernelChainSpace

CANDS = ("k3_e1", "k5_e3", "skip")


def tiny_space(**kw):
  args = dict(stem_channels=8, stem_stride=1, stages=((8, 1, 1), (16, 1, 2)), head_channels=16,
              candidates=CANDS)
  return FBNetSpace((16, 1), 4, **{**args, **kw})


@pytest.fixture(scope="module")
def table():
  # Process CPU time and the fastest repeat: the orderings asserted below are a fraction of a
  # millisecond apart, and wall-clock medians on a loaded machine (the suite runs on two workers
  # beside whatever else runs) once ordered a skip block above a k5_e3 block.
  return build_latency_table(tiny_space(), batch_size=1, repeats=5, warmup=1, stat="min",
                             clock="cpu")


@pytest.fixture(scope="module")
def saved(table, tmp_path_factory):
  path = tmp_path_factory.mktemp("lat") / "table.json"
  table.save(path)
  return path


def test_table_has_an_entry_per_block_and_candidate(table):
  assert table.ops_ms.shape == (2, 3)
  assert np.all(np.isfinite(table.ops_ms)) and np.all(table.ops_ms >= 0)
  # The identity skip at block 0 does no work; a k5_e3 block does.
  assert table.ops_ms[0, 2] < table.ops_ms[0, 1]
  assert table.stem_ms >= 0 and table.head_ms >= 0 and table.overhead_ms > 0


def test_saved_table_records_where_and_how_it_was_measured(saved, table):
  data = json.loads(saved.read_text())
  assert data["space"] == "fbnet" and data["space_fingerprint"] == tiny_space().fingerprint()
  assert [p["input_shape"] for p in data["positions"]] == [[16, 8], [16, 8]]
  assert data["positions"][1]["output_shape"] == [8, 16]
  assert data["device"]["platform"] == jax.devices()[0].platform
  assert data["device"]["device_kind"] and "cpu_model" in data["device"]
  assert (data["backend"], data["dtype"], data["batch_size"], data["repeats"]) == (
      jax.default_backend(), "float32", 1, 5)
  assert (data["statistic"], data["clock"]) == ("min", "cpu")
  assert data["jax_version"] == jax.__version__
  back = load_latency_table(saved, space=tiny_space(), batch_size=1, dtype="float32")
  np.testing.assert_allclose(back.ops_ms, table.ops_ms)
  assert back.fixed_ms == pytest.approx(table.fixed_ms)


@pytest.mark.parametrize("kwargs, message", [
    (dict(space=KernelChainSpace((16, 1), 4, widths=(8, 8), pool_after=())),
     "latency table is for space 'fbnet', not 'kernel_chain'"),
    (dict(space=FBNetSpace((32, 1), 4, stem_channels=8, stem_stride=1,
                           stages=((8, 1, 1), (16, 1, 2)), head_channels=16, candidates=CANDS)),
     "block 0 input shape is [16, 8], the space's is [32, 8]"),
    (dict(space=tiny_space(stages=((8, 1, 1), (24, 1, 2)))),
     "block 1 output shape is [8, 16], the space's is [8, 24]"),
    (dict(space=tiny_space(stages=((8, 1, 1), (16, 1, 2), (16, 1, 1)))),
     "latency table has 2 blocks, the space has 3"),
    (dict(space=tiny_space(head_channels=32)), "head_channels=16 in the table, 32 here"),
    (dict(space=tiny_space(candidates=("k3_e1", "skip", "k5_e3"))), "candidates"),
    (dict(batch_size=256), "measured at batch size 1, not 256"),
    (dict(dtype="bfloat16"), "measured in float32, not bfloat16"),
])
def test_table_for_another_space_shape_or_batch_is_refused(saved, kwargs, message):
  args = {"space": tiny_space(), "batch_size": 1, **kwargs}
  with pytest.raises(ValueError) as e:
    load_latency_table(saved, **args)
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_missing_or_broken_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_latency_table(tmp_path / "nope.json")
  bad = tmp_path / "bad.json"
  bad.write_text("{")
  with pytest.raises(ValueError, match="is not valid JSON"):
    load_latency_table(bad)


def test_predicted_latency_is_the_sum_of_entries(table):
  g = ChainGenotype(("skip", "k5_e3"))
  want = table.stem_ms + table.head_ms + table.overhead_ms + table.ops_ms[0, 2] + \
      table.ops_ms[1, 1]
  assert predicted_latency(table, g) == pytest.approx(want)
  with pytest.raises(ValueError, match="genotype has 1 blocks"):
    predicted_latency(table, ChainGenotype(("skip",)))


def test_expected_latency_matches_prediction_and_is_differentiable(table):
  space = tiny_space()
  rng = np.random.default_rng(0)
  for _ in range(4):
    g = space.random_genotype(rng)
    enc = space.genotype_to_encoding(g)
    assert float(expected_latency(table, enc)) == pytest.approx(predicted_latency(table, g),
                                                               rel=1e-5)
  logits = jnp.zeros((2, 3))
  grad = jax.grad(lambda a: expected_latency(table, {"blocks": jax.nn.softmax(a)}))(logits)
  assert bool(jnp.all(jnp.isfinite(grad)))
  w_grad = jax.grad(lambda w: expected_latency(table, w))(jnp.full((2, 3), 1 / 3))
  np.testing.assert_allclose(w_grad, table.ops_ms, rtol=1e-5)
  batch = jnp.stack([jnp.asarray(space.genotype_to_encoding(space.random_genotype(rng))
                                 ["blocks"]) for _ in range(5)])
  assert expected_latency(table, batch).shape == (5,)


def test_external_table_with_entries_loads(tmp_path):
  space = tiny_space()
  entries = [{"block": i, "candidate": c, "ms": 0.1 * (i + 1) + j}
             for i in range(2) for j, c in enumerate(CANDS)]
  data = {"space": "fbnet", "candidates": list(CANDS), "batch_size": 1,
          "positions": [{"input_shape": list(p.in_shape)} for p in space.positions()],
          "entries": entries, "stem_ms": 0.5}
  path = tmp_path / "phone.json"
  path.write_text(json.dumps(data))
  t = load_latency_table(path, space=space, batch_size=1)
  assert predicted_latency(t, ChainGenotype(("k3_e1", "skip"))) == pytest.approx(0.5 + 0.1 + 2.2)
  with pytest.raises(ValueError, match="no entry for block 1, candidate 'skip'"):
    table_from_json({**data, "entries": entries[:-1]})


def test_measured_latency_of_a_whole_network(table):
  space = tiny_space()
  small, big = ChainGenotype(("skip", "skip")), ChainGenotype(("k5_e3", "k5_e3"))
  ms = measure_latencies(space, [small, big], batch_size=1, repeats=3, warmup=1)
  assert all(m > 0 for m in ms)
  assert predicted_latency(table, small) < predicted_latency(table, big)


def test_rank_correlations():
  r = rank_correlations([1, 2, 3, 4], [1, 3, 5, 9])
  assert r["spearman"] == pytest.approx(1.0) and r["kendall_tau"] == pytest.approx(1.0)
  r = rank_correlations([1, 2, 3, 4], [4, 3, 2, 1])
  assert r["pearson"] == pytest.approx(-1.0) and r["kendall_tau"] == pytest.approx(-1.0)


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown dtype 'int8'"):
    build_latency_table(tiny_space(), dtype="int8")
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    build_latency_table(tiny_space(), batch_size=0)


def test_clocks_and_thread_flags(monkeypatch):
  from jnas.estimation.latency import set_cpu_threads, time_call
  f = jax.jit(lambda x: x * 2)
  assert time_call(f, (jnp.ones(8),), repeats=2, clock="cpu") >= 0
  with pytest.raises(ValueError, match="unknown clock 'gpu'"):
    time_call(f, (jnp.ones(8),), repeats=2, clock="gpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x intra_op_parallelism_threads=4")
  set_cpu_threads(1)
  import os
  flags = os.environ["XLA_FLAGS"].split()
  assert flags == ["--xla_dump_to=/tmp/x", "--xla_cpu_multi_thread_eigen=false",
                   "intra_op_parallelism_threads=1"]
  with pytest.raises(ValueError, match="threads must be >= 0"):
    set_cpu_threads(-1)
