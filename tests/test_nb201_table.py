"""The exhaustive NAS-Bench-201 table: canonical forms, resumable deterministic builds, the table."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jnas.nb201_table import (ZERO, CellTrainer, Protocol, build, canonical_form, expand,
                                         genotype_at, nb201_params, read_raw, summary,
                                         unique_cells)
from jnas.estimation.tabular import load_table
from jnas.spaces.nb201 import NB201Space
from jnas.train.chain_network import Conv
from jnas.train.nb201_network import NB201Network

SPACE = NB201Space()
# A few hundred examples, 1 epoch, C=2: seconds to train, the same code path as the real table.
TINY = Protocol(channels=2, epochs=1, batch_size=64, train_size=256, val_size=128, test_size=128)


def _cell(*nodes: tuple[str, ...]) -> str:
  return "+".join("|" + "|".join(f"{op}~{i}" for i, op in enumerate(ops)) + "|" for ops in nodes)


# Canonical form ----------------------------------------------------------------

def test_isomorphic_cells_share_a_form():
  # The same convolution reached directly, or through a skip into node 1 or node 2.
  a = _cell(("nor_conv_3x3",), ("none", "none"), ("avg_pool_3x3", "skip_connect", "none"))
  b = _cell(("none",), ("nor_conv_3x3", "none"), ("avg_pool_3x3", "none", "skip_connect"))
  c = _cell(("skip_connect",), ("none", "avg_pool_3x3"), ("nor_conv_3x3", "none", "skip_connect"))
  assert canonical_form(a) == canonical_form(b) == canonical_form(c) == "conv3(x)+pool(x)"
  # Term order within a sum does not matter; pooling distributes over a sum.
  d = _cell(("nor_conv_1x1",), ("skip_connect", "skip_connect"), ("none", "none", "avg_pool_3x3"))
  e = _cell(("nor_conv_1x1",), ("none", "none"), ("avg_pool_3x3", "avg_pool_3x3", "none"))
  assert canonical_form(d) == canonical_form(e) == "pool(conv1(x))+pool(x)"
  # A convolution is not linear: conv(a + b) differs from conv(a) + conv(b).
  f = _cell(("nor_conv_1x1",), ("skip_connect", "skip_connect"), ("none", "none", "nor_conv_3x3"))
  g = _cell(("nor_conv_1x1",), ("none", "none"), ("nor_conv_3x3", "nor_conv_3x3", "none"))
  assert canonical_form(f) != canonical_form(g)


def test_dead_branches_are_pruned():
  pruned = _cell(("none",), ("none", "none"), ("nor_conv_3x3", "none", "none"))
  # Node 1 feeds nothing; node 2 reads only the zero node 1.
  dead = _cell(("nor_conv_1x1",), ("none", "nor_conv_3x3"), ("nor_conv_3x3", "none", "none"))
  zero_input = _cell(("none",), ("none", "nor_conv_3x3"), ("nor_conv_3x3", "avg_pool_3x3",
                                                            "nor_conv_1x1"))
  assert canonical_form(dead) == canonical_form(zero_input) == canonical_form(pruned) == "conv3(x)"
  assert canonical_form(_cell(("nor_conv_3x3",), ("skip_connect", "none"),
                              ("none", "none", "none"))) == ZERO


def test_unique_cell_counts_and_representatives():
  groups = unique_cells()
  assert len(groups) == 4660  # NAS-Bench-201's to_unique_str gives 6,466 (see canonical.py)
  members = sorted(n for ns in groups.values() for n in ns)
  assert members == list(range(15625))
  # ZERO holds exactly the cells with no path of live edges from input to output.
  def has_path(n):
    e10, e20, e21, e30, e31, e32 = (op != "none" for op in genotype_at(n).ops)
    return e30 or (e10 and e31) or (e20 and e32) or (e10 and e21 and e32)
  assert sorted(groups[ZERO]) == [n for n in range(15625) if not has_path(n)]
  assert len(groups[ZERO]) == 341
  none = SPACE.ops.index("none")
  for key, ns in list(groups.items())[::97]:
    live = [int(np.sum(SPACE.encode_indices(genotype_at(n)) != none)) for n in ns]
    assert live[0] == min(live)
    assert all(canonical_form(genotype_at(n)) == key for n in ns)


def test_params_match_the_discrete_network():
  rng = np.random.default_rng(0)
  cells = [SPACE.random_genotype(rng) for _ in range(4)]
  counted = nb201_params(cells, channels=4, cells_per_stage=2)
  for g, n in zip(cells, counted):
    net = nnx.eval_shape(lambda g=g: NB201Network(g, 1, 10, ndim=1, channels=4,
                                                  cells_per_stage=2, rngs=nnx.Rngs(0)))
    assert n == sum(v.size for v in jax.tree.leaves(nnx.state(net, nnx.Param)))


@pytest.mark.parametrize("kernel,stride,length", [(3, 1, 40), (3, 2, 40), (5, 2, 17), (3, 2, 7)])
def test_1d_convolution_is_lax_conv(kernel, stride, length):
  conv = Conv(3, 5, kernel, ndim=1, stride=stride, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, length, 3)), jnp.float32)
  pad = (kernel - 1) // 2
  ref = lax.conv_general_dilated(x, conv.w.get_value(), (stride,), [(pad, pad)],
                                 dimension_numbers=("NWC", "WIO", "NWC"))
  np.testing.assert_allclose(conv(x), ref, atol=1e-5)


# Building ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer():
  return CellTrainer(TINY)


def _results(out) -> list[tuple]:
  return [(r["canonical"], r["arch_str"], r["seed"], r["val_acc"], r["test_acc"], r["train_loss"])
          for r in read_raw(out)]


def test_resumed_build_equals_uninterrupted_and_compiles_once(tmp_path, trainer):
  whole = build(tmp_path / "a", TINY, limit=3, trainer=trainer)
  assert whole == {"trained": 6, "done": 6, "total": 6, "stopped": False}
  # Interrupted: one cell done, then a kill in the middle of writing the next row.
  build(tmp_path / "b", TINY, limit=1, trainer=trainer)
  with open(tmp_path / "b" / "raw.csv", "a") as f:
    f.write("conv3(x),|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|,0,0.51")
  assert build(tmp_path / "b", TINY, limit=3, minutes=0)["stopped"]  # stops before any run
  again = build(tmp_path / "b", TINY, limit=3, trainer=trainer)
  assert again["trained"] == 4 and again["done"] == 6
  assert _results(tmp_path / "b") == _results(tmp_path / "a")
  assert len({r[0] for r in _results(tmp_path / "a")}) == 3
  assert trainer.compilations == 1
  assert build(tmp_path / "a", TINY, limit=3, trainer=trainer)["trained"] == 0


def test_other_protocol_is_refused(tmp_path, trainer):
  build(tmp_path, TINY, limit=1, trainer=trainer)
  other = Protocol(**{**TINY.to_json(), "seeds": (0, 1), "epochs": 2})
  with pytest.raises(ValueError, match="epochs=1 there, 2 here"):
    build(tmp_path, other, limit=1)
  # Seeds only say which runs exist: a third seed continues the same table.
  more = Protocol(**{**TINY.to_json(), "seeds": (0, 1, 2)})
  assert build(tmp_path, more, limit=1, trainer=trainer)["trained"] == 1


def test_expanded_table_loads_and_summarises(tmp_path, trainer):
  build(tmp_path, TINY, limit=3, trainer=trainer)
  path = expand(tmp_path)
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  groups = unique_cells()
  keys = {r["canonical"] for r in read_raw(tmp_path)}
  assert len(rows) == sum(len(groups[k]) for k in keys)
  assert {"val_acc_s0", "test_acc_s1", "params"} <= set(rows[0])
  bench = load_table(str(path), arch_column="arch_str", signal_column="val_acc",
                     report_column="test_acc", cost_column="train_seconds")
  assert len(bench) == len(rows)
  s = summary(path)
  assert s["unique_cells"] == 3 and s["strings"] == len(rows)
  assert s["test_acc"]["worst"] <= s["test_acc"]["median"] <= s["test_acc"]["best"]
  assert s["rank_correlation"]["test_acc"]["cells"] == 3
