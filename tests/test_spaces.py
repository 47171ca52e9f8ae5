"""The DARTS cell space: shapes, genotypes, derivation rule, JSON, errors."""

import json
import re

import numpy as np
import pytest

from jnas.spaces.darts import GENOTYPES, PRIMITIVES, DartsSpace, Genotype, edge_index


@pytest.fixture
def space():
  return DartsSpace()


def test_encoding_shape_and_edges(space):
  assert space.encoding_shape() == {"normal": (14, 8), "reduce": (14, 8)}
  edges = space.edges()
  assert len(edges) == 14
  assert [edge_index(j, i) for j, i in edges] == list(range(14))


def test_published_genotypes_round_trip(space):
  for name in ("DARTS_V1", "DARTS_V2"):
    g = space.genotype_by_name(name)
    enc = space.genotype_to_encoding(g)
    assert enc["normal"].shape == (14, 8)
    # Each derived node keeps exactly two incoming edges.
    assert enc["normal"].sum() == 8 and enc["reduce"].sum() == 8
    assert space.encoding_to_genotype(enc).canonical() == g.canonical()
    assert space.genotype_loads(space.genotype_dumps(g)) == g


def test_derivation_rule_picks_strongest_non_none(space):
  alpha = {k: np.zeros(s, np.float32) for k, s in space.encoding_shape().items()}
  none, sep3, skip = (PRIMITIVES.index(p) for p in ("none", "sep_conv_3x3", "skip_connect"))
  # Node 0: 'none' dominates edge 0 but is ignored; edge 1 prefers sep_conv_3x3.
  alpha["normal"][edge_index(0, 0), none] = 10.0
  alpha["normal"][edge_index(0, 0), skip] = 1.0
  alpha["normal"][edge_index(0, 1), sep3] = 2.0
  # Node 3: inputs 2 and 4 are the strongest.
  alpha["normal"][edge_index(3, 2), sep3] = 3.0
  alpha["normal"][edge_index(3, 4), skip] = 3.0
  g = space.encoding_to_genotype(alpha)
  assert g.normal[0:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))  # strongest first
  assert g.canonical().normal[6:8] == (("sep_conv_3x3", 2), ("skip_connect", 4))
  assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_random_genotypes_are_valid(space):
  rng = np.random.default_rng(0)
  for _ in range(20):
    g = space.random_genotype(rng)
    space.validate(g)
    assert space.encoding_to_genotype(space.genotype_to_encoding(g)).canonical() == g.canonical()
  stacked = space.sample_encodings(rng, 5)
  assert stacked["reduce"].shape == (5, 14, 8)


def test_one_dimensional_space_has_fewer_edges():
  sp = DartsSpace(num_nodes=2)
  assert sp.encoding_shape() == {"normal": (5, 8), "reduce": (5, 8)}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(0, ["conv_7x7", 0]), "unknown op 'conv_7x7'"),
    (lambda d: d["normal"].pop(), "has 7 (op, input) pairs"),
    (lambda d: d["reduce"].__setitem__(0, ["skip_connect", 5]), "reads input 5"),
    (lambda d: d.pop("reduce"), "lacks 'reduce'"),
])
def test_bad_genotypes_get_one_line_errors(space, mutate, message):
  data = space.genotype_to_json(GENOTYPES["DARTS_V2"])
  mutate(data)
  with pytest.raises(ValueError, match=re.escape(message)) as err:
    space.genotype_loads(json.dumps(data))
  assert "\n" not in str(err.value)


def test_unknown_names(space):
  with pytest.raises(ValueError, match="unknown genotype 'NOPE'"):
    space.genotype_by_name("NOPE")
  with pytest.raises(ValueError, match="unknown op"):
    DartsSpace(primitives=("none", "conv_9x9"))
  with pytest.raises(ValueError, match="not valid JSON"):
    space.genotype_loads("{")


def test_encoding_shape_mismatch_is_named(space):
  with pytest.raises(ValueError, match=r"encoding\['normal'\] has shape"):
    space.encoding_to_genotype({"normal": np.zeros((5, 8)), "reduce": np.zeros((14, 8))})


def test_genotype_is_plain_data():
  g = Genotype((("skip_connect", 0),), (2,), (("skip_connect", 1),), (2,))
  assert g.cell("normal") == (("skip_connect", 0),)
