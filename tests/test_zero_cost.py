"""Zero-cost proxies (jnas.estimation.zero_cost) and `jnas score`."""

from __future__ import annotations

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas import cli
from jnas import score_cli
from jnas.nb201_table import nb201_params
from jnas.estimation.zero_cost import (DATA_PROXIES, PROXIES, NB201Skeleton, ZeroCost,
                                       cell_indices, check_proxy, nb201_cost, prefilter)
from jnas.spaces.nb201 import NB201Space
from jnas.train import nb201_network
from jnas.train.nb201_network import NB201Network

SPACE = NB201Space()
BIG = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
DEAD_CONV = "|none~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|none~2|"
ZERO = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
CELLS = [BIG, MIXED, DEAD_CONV, ZERO, "|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
         "|nor_conv_1x1~0|none~1|skip_connect~2|"]
TINY = NB201Skeleton((12, 1), 10, channels=2, cells_per_stage=1)


def _batch(n=16, shape=(12, 1), seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, *shape)).astype(np.float32), (np.arange(n) % 10).astype(np.int32)


@pytest.fixture(scope="module")
def zc():
  return ZeroCost(TINY, chunk=4)


def _discrete(zc: ZeroCost, cell: str) -> NB201Network:
  """The cell's discrete network holding the supernet path's weights (an independent forward)."""
  sk, g = zc.skeleton, SPACE.parse(cell)
  sup = nnx.merge(zc._split.graphdef, zc._split.params, zc._split.state)
  net = NB201Network(g, sk.input_shape[-1], sk.num_classes, ndim=sk.ndim, channels=sk.channels,
                     cells_per_stage=sk.cells_per_stage, rngs=nnx.Rngs(99))
  nnx.update(net.stem, nnx.state(sup.stem))
  nnx.update(net.head, nnx.state(sup.head))
  for d, s in zip(net.layers, sup.layers):
    if isinstance(d, nb201_network.NB201Cell):
      live = [(e, SPACE.ops.index(op)) for e, op in enumerate(g.ops) if op != "none"]
      for mod, (e, k) in zip(d.ops, live):
        nnx.update(mod, nnx.state(s.edges[e].candidates[k]))
    else:
      nnx.update(d, nnx.state(s))
  return net


# ---------------------------------------------------------------------------------------------
# params, flops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,c,n", [((40, 1), 8, 1), ((32, 32, 3), 16, 5), ((12, 2), 4, 2)])
def test_params_equal_the_discrete_networks(shape, c, n):
  sk = NB201Skeleton(shape, 10, channels=c, cells_per_stage=n)
  got = ZeroCost(sk).score("params", CELLS)
  want = nb201_params(CELLS, channels=c, cells_per_stage=n, in_channels=shape[-1], ndim=len(shape) - 1)
  assert got.tolist() == want
  # and the network's own parameter count, by shape inference
  net = nnx.eval_shape(lambda: NB201Network(SPACE.parse(MIXED), shape[-1], 10, ndim=len(shape) - 1,
                                            channels=c, cells_per_stage=n, rngs=nnx.Rngs(0)))
  assert nb201_cost([MIXED], sk)[0].params == sum(
      v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))


def test_flops_count_each_convolution_at_its_stage():
  sk = NB201Skeleton((40, 1), 10, channels=8, cells_per_stage=1)
  empty = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  one = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  f = ZeroCost(sk).score("flops", [empty, one])
  # widths 8, 16, 32 at lengths 40, 20, 10; k = 3
  assert f[1] - f[0] == 3 * (8 * 8 * 40 + 16 * 16 * 20 + 32 * 32 * 10)
  assert f[0] > 0


# ---------------------------------------------------------------------------------------------
# The proxies against independent forward passes of the discrete network
# ---------------------------------------------------------------------------------------------


def test_synflow_equals_the_discrete_network_in_float64(zc):
  got = zc.score("synflow", CELLS)
  with jax.enable_x64(True):
    for cell, g in zip(CELLS, got):
      net = _discrete(zc, cell)
      graphdef, params, stats = nnx.split(net, nnx.Param, nnx.BatchStat)
      params = jax.tree.map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), params)
      # BN removed: inference form with mean 0, variance 1 - eps
      stats = jax.tree_util.tree_map_with_path(
          lambda p, a: jnp.full(a.shape, 1 - 1e-5 if "var" in str(p) else 0.0, jnp.float64), stats)

      def total(p):
        model = nnx.merge(graphdef, *jax.tree.map(lambda a: a, (p, stats)))
        return jnp.sum(model(jnp.ones((1, *TINY.input_shape), jnp.float64), train=False))

      grads = jax.grad(total)(params)
      flat = jax.tree_util.tree_flatten_with_path(params)[0]
      want = sum(float(jnp.sum(p * q)) for (path, p), q in zip(flat, jax.tree.leaves(grads))
                 if "'w'" in str(path[-2]))
      assert g == pytest.approx(want, rel=1e-5), cell
  assert got[CELLS.index(ZERO)] == 0.0  # a cell whose output is zero passes no flow
  assert got[0] > got[1] > 0


def test_synflow_runs_in_float64_past_float32s_range():
  zc = ZeroCost(TINY, chunk=2)
  # Weights 1e4 times larger: a path through ~10 weight layers carries 1e40 times more flow.
  zc._split = zc._split._replace(params=jax.tree.map(lambda a: a * 1e4, zc._split.params))
  s = zc.score("synflow", [BIG, ZERO])
  assert np.isfinite(s[0]) and s[0] > 1e39 and s[1] == 0.0


@pytest.mark.slow  # compiles the C=16, N=5 skeleton: a minute or more on a CPU
def test_synflow_does_not_overflow_in_the_benchmark_skeleton():
  # 15 cells of 3x3 convolutions: about 1e66 at C=16, beyond float32's 3e38.
  s = ZeroCost(NB201Skeleton((32, 32, 3), 10), chunk=1).score("synflow", [BIG])
  assert np.isfinite(s[0]) and s[0] > 1e40


def test_naswot_equals_the_kernel_of_the_discrete_networks_relus(zc, monkeypatch):
  x, _ = _batch()
  got = zc.score("naswot", CELLS, x)
  relu = jax.nn.relu
  for cell, g in zip(CELLS, got):
    seen = []

    def recording(h):
      seen.append(np.asarray(h))
      return relu(h)

    monkeypatch.setattr(jax.nn, "relu", recording)
    _discrete(zc, cell)(jnp.asarray(x), train=True)
    monkeypatch.setattr(jax.nn, "relu", relu)
    codes = [(h.reshape(len(x), -1) > 0).astype(np.float64) for h in seen]
    k = sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes)
    assert g == pytest.approx(np.linalg.slogdet(k)[1], rel=1e-9, abs=1e-9), cell
  # DEAD_CONV's conv on node 1 (a zero node) still has its ReLU; BIG has the most ReLUs.
  assert np.argmax(got) == 0


@pytest.mark.parametrize("name", ["snip", "grad_norm"])
def test_gradient_proxies_equal_the_discrete_networks(zc, name):
  x, y = _batch()
  got = zc.score(name, CELLS, x, y)
  for cell, g in zip(CELLS, got):
    graphdef, params, stats = nnx.split(_discrete(zc, cell), nnx.Param, nnx.BatchStat)

    def loss(p):
      model = nnx.merge(graphdef, *jax.tree.map(lambda a: a, (p, stats)))
      logits = model(jnp.asarray(x), train=True)
      return jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

    grads = jax.grad(loss)(params)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    pairs = [(p, q) for (path, p), q in zip(flat, jax.tree.leaves(grads)) if "'w'" in str(path[-2])]
    if name == "snip":
      want = sum(float(jnp.sum(jnp.abs(p * q))) for p, q in pairs)
    else:
      want = sum(float(jnp.linalg.norm(q)) for _, q in pairs)
    assert g == pytest.approx(want, rel=1e-4), cell


# ---------------------------------------------------------------------------------------------
# One compilation per proxy, any population
# ---------------------------------------------------------------------------------------------


def test_one_compilation_serves_every_population():
  zc = ZeroCost(TINY, chunk=4)
  x, y = _batch()
  rng = np.random.default_rng(1)
  for name in ("synflow", "naswot", "snip"):
    for n in (3, 9):  # one padded chunk, then three chunks
      cells = [SPACE.random_genotype(rng) for _ in range(n)]
      assert zc.score(name, cells, x, y).shape == (n,)
    assert zc.compilations(name) == 1, name
  assert zc.compilations() == 3


@pytest.mark.slow  # 77 s on a loaded 2-core CPU: the vmapped form is for accelerators
def test_vmapped_groups_give_the_same_scores(zc):
  x, y = _batch()
  grouped = ZeroCost(TINY, chunk=4, vmap_size=2)
  for name in ("synflow", "naswot", "snip", "grad_norm"):
    np.testing.assert_allclose(grouped.score(name, CELLS, x, y), zc.score(name, CELLS, x, y),
                               rtol=1e-5, err_msg=name)


def test_populations_in_every_form_agree(zc):
  enc = {"cell": np.stack([SPACE.genotype_to_encoding(SPACE.parse(c))["cell"] for c in CELLS])}
  idx = cell_indices(CELLS)
  assert (cell_indices(enc) == idx).all()
  assert (cell_indices([SPACE.parse(c) for c in CELLS]) == idx).all()
  np.testing.assert_array_equal(zc.score("synflow", enc), zc.score("synflow", idx))
  assert zc.score("params", []).shape == (0,)
  with pytest.raises(ValueError, match="shape"):
    cell_indices({"cell": np.zeros((2, 6, 4))})
  with pytest.raises(ValueError, match="node groups"):
    cell_indices(["|conv~0|"])
  with pytest.raises(ValueError, match="not a NAS-Bench-201 cell"):
    cell_indices([3])


def test_scorer_fits_the_ask_tell_contract(zc):
  x, y = _batch()
  scorer = zc.scorer("grad_norm", x, y)
  enc = {"cell": np.stack([SPACE.genotype_to_encoding(SPACE.parse(c))["cell"] for c in CELLS])}
  np.testing.assert_array_equal(scorer(enc, [SPACE.parse(c) for c in CELLS]),
                                zc.score("grad_norm", CELLS, x, y))


def test_bad_proxy_and_data_are_one_line_errors(zc):
  with pytest.raises(ValueError, match=r"unknown zero-cost estimator 'jacob'.*synflow.*flops"):
    check_proxy("jacob")
  for name in sorted(DATA_PROXIES):
    with pytest.raises(ValueError, match="needs a minibatch"):
      zc.score(name, CELLS)
  with pytest.raises(ValueError, match=r"\[B, 12, 1\]"):
    zc.score("naswot", CELLS, np.zeros((4, 40, 1)))
  with pytest.raises(ValueError, match="labels"):
    zc.score("snip", CELLS, np.zeros((4, 12, 1)), np.zeros((3,), np.int32))
  with pytest.raises(ValueError, match="vmap_size"):
    ZeroCost(TINY, chunk=5, vmap_size=2)
  assert set(score_cli.ESTIMATORS) == set(PROXIES)


# ---------------------------------------------------------------------------------------------
# prefilter
# ---------------------------------------------------------------------------------------------


def test_prefilter_keeps_the_best_in_any_form():
  enc = {"cell": np.eye(5)[np.array([[0] * 6, [3] * 6, [1] * 6, [2] * 6])]}
  scores = np.array([0.1, 2.0, np.nan, 2.0])
  kept = prefilter(enc, scores, 3)
  assert kept.index.tolist() == [1, 3, 0]  # ties in input order, NaN last
  assert kept.encodings["cell"].shape == (3, 6, 5)
  np.testing.assert_array_equal(kept.encodings["cell"], enc["cell"][[1, 3, 0]])
  assert prefilter(enc, scores, 0.5).index.tolist() == [1, 3]
  assert prefilter(enc, scores, 0.01).index.tolist() == [1]  # at least one
  assert prefilter(CELLS[:4], scores, 2).encodings == [CELLS[1], CELLS[3]]
  assert prefilter(np.arange(4), scores, 4).encodings.tolist() == [1, 3, 0, 2]
  for bad in (0, 5, 1.5, 0.0, True, "2"):
    with pytest.raises(ValueError):
      prefilter(enc, scores, bad)
  with pytest.raises(ValueError, match="3 scores"):
    prefilter(enc, scores[:3], 1)


def test_prefilter_with_synflow_keeps_the_wide_cells(zc):
  rng = np.random.default_rng(0)
  enc = SPACE.sample_encodings(rng, 12)
  scores = zc.score("synflow", enc)
  kept = prefilter(enc, scores, 4)
  assert (kept.scores >= np.sort(scores)[-4]).all()
  np.testing.assert_array_equal(zc.score("synflow", kept.encodings), kept.scores)


# ---------------------------------------------------------------------------------------------
# jnas score
# ---------------------------------------------------------------------------------------------


def _archs(tmp_path, lines, name="archs.txt"):
  p = tmp_path / name
  p.write_text("\n".join(lines) + "\n")
  return str(p)


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def test_score_cli_on_the_cifar10_skeleton_needs_no_data(tmp_path, capsys):
  archs = _archs(tmp_path, ["# three cells", BIG, "", MIXED, ZERO])
  out = tmp_path / "o" / "params.csv"
  assert cli.main(["score", "--config", "experiments/nb201_cifar10.py", "--estimator", "params",
                   "--archs", archs, "--out", str(out)]) == 0
  rows = _rows(out)
  assert rows[0] == ["arch", "score"]
  assert [r[0] for r in rows[1:]] == [BIG, MIXED, ZERO]
  assert float(rows[1][1]) == 1531546  # the benchmark's 1.53M
  assert "3 architectures" in capsys.readouterr().out
  assert os.listdir(out.parent) == ["params.csv"]  # no temporary file left
  # synflow, in a smaller skeleton of the same config (C=16, N=5 compiles for a minute on a CPU)
  out = tmp_path / "synflow.csv"
  assert cli.main(["score", "--config", "experiments/nb201_cifar10.py", "--estimator", "synflow",
                   "--archs", archs, "--out", str(out), "--config.search.channels=2",
                   "--config.search.cells_per_stage=1", "--seed", "3"]) == 0
  s = [float(r[1]) for r in _rows(out)[1:]]
  assert s[0] > s[1] > s[2] == 0.0


def test_score_cli_data_proxy_on_a_small_dataset(tmp_path):
  archs = _archs(tmp_path, [BIG, MIXED])
  out = tmp_path / "naswot.csv"
  r = score_cli.score_archs(_digits_config(), "naswot", archs, out, batch=32)
  assert r["batch"] == 32 and r["archs"] == 2
  assert all(np.isfinite(float(v)) for _, v in _rows(out)[1:])


def _digits_config():
  from jnas.config import apply_overrides, load_config

  return apply_overrides(load_config("experiments/nb201_mnist1d.py"),
                         ["data.name=digits", "search.channels=2", "search.cells_per_stage=1"])


@pytest.mark.parametrize("case,message", [
    ("estimator", r"unknown zero-cost estimator 'zen' \(known: synflow, naswot, snip, grad_norm, "
                  r"params, flops\)"),
    ("bad line", r"line 3: '\|nor_conv_3x3~0\|\+\|oops~0\|'"),
    ("empty", "holds no architecture strings"),
    ("missing", "does not exist"),
])
def test_score_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, case, message):
  lines = {"estimator": [BIG], "bad line": [BIG, "", "|nor_conv_3x3~0|+|oops~0|"],
           "empty": ["# nothing", ""]}
  archs = _archs(tmp_path, lines[case]) if case in lines else str(tmp_path / "nope.txt")
  est = "zen" if case == "estimator" else "params"
  out = tmp_path / "s.csv"
  assert cli.main(["score", "--config", "experiments/nb201_cifar10.py", "--estimator", est,
                   "--archs", archs, "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jnas: error: ") and err.count("\n") == 1
  assert __import__("re").search(message, err), err
  assert not out.exists()


def test_score_cli_refuses_other_spaces(tmp_path):
  from jnas.config import load_config

  with pytest.raises(ValueError, match="NAS-Bench-201"):
    score_cli.score_archs(load_config("experiments/darts_mnist1d.py"), "params",
                          _archs(tmp_path, [BIG]), tmp_path / "s.csv")


def test_estimation_package_exports_the_proxies_lazily():
  import jnas.estimation as est
  from jnas.estimation import zero_cost

  assert set(est._ZERO_COST) == set(zero_cost.__all__)
  assert est.prefilter is prefilter and est.ZeroCost is ZeroCost
  with pytest.raises(AttributeError):
    est.no_such_name  # noqa: B018


# ---------------------------------------------------------------------------------------------
# benchmarks/zero_cost.py
# ---------------------------------------------------------------------------------------------


def _benchmark():
  import importlib.util
  from pathlib import Path

  path = Path(__file__).resolve().parents[1] / "benchmarks" / "zero_cost.py"
  spec = importlib.util.spec_from_file_location("zero_cost_benchmark", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


TABLE = "benchmarks/results/nb201_mnist1d/table.csv"


def test_benchmark_ranks_free_proxies_against_the_table(tmp_path, capsys):
  import json

  out = tmp_path / "r.json"
  assert _benchmark().main(["--table", TABLE, "--sample", "40", "--proxies", "params,flops",
                            "--out", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["command"].startswith("python benchmarks/zero_cost.py --table")
  assert r["sample"] == 40 and set(r["proxies"]) == {"params", "flops"}
  for p in r["proxies"].values():
    assert -1 <= p["kendall_tau"] <= 1 and p["compilations"] == 0
  assert 0 < r["noise_ceiling"]["kendall_tau"] < 1 and r["noise_ceiling"]["seeds"] == [0, 1]
  assert "| params |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--sample", "5000"], r"--sample 5000 must lie in \[3, 4660\]"),
    (["--proxies", "params,zen"], "unknown zero-cost estimator 'zen'"),
    (["--table", "nope/table.csv"], "does not exist"),
])
def test_benchmark_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
  argv = (["--table", TABLE] if "--table" not in argv else []) + argv
  assert _benchmark().main(argv + ["--out", str(tmp_path / "r.json")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and __import__("re").search(message, err), err
  assert not (tmp_path / "r.json").exists()
