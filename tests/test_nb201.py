"""The NAS-Bench-201 cell space: string format, enumeration, integer form, errors, registry."""

import json

import numpy as np
import pytest

from jnas.spaces import NB201_OPS, NB201Genotype, NB201Space, get_space, space_names

# A cell as it appears in the published tables (the best CIFAR-10 cell).
BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")


@pytest.fixture
def space():
  return NB201Space()


def test_shape_and_count(space):
  assert space.encoding_shape() == {"cell": (6, 5)}
  assert space.num_architectures == 15625
  assert space.index_sizes() == (5,) * 6
  assert space.edge_list == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


def test_string_round_trip(space):
  g = space.parse(BEST)
  assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect",
                   "nor_conv_3x3", "nor_conv_3x3")
  assert str(g) == BEST and space.format(g) == BEST
  assert space.parse("  " + BEST + "\n") == g  # CSV cells often carry whitespace
  rng = np.random.default_rng(0)
  for _ in range(50):
    g = space.random_genotype(rng)
    assert space.parse(str(g)) == g
    assert space.encoding_to_genotype(space.genotype_to_encoding(g)) == g
    assert space.decode_indices(space.encode_indices(g)) == g


def test_json_round_trip(space):
  g = space.parse(BEST)
  data = space.genotype_to_json(g)
  assert data == {"space": "nb201", "arch": BEST}
  assert space.genotype_loads(space.genotype_dumps(g)) == g
  assert space.genotype_from_json(BEST) == g  # a bare string is accepted too
  assert space.genotype_loads(json.dumps(BEST)) == g


def test_all_genotypes_enumerates_every_cell_once(space):
  cells = list(space.all_genotypes())
  assert len(cells) == 15625
  assert len({c.ops for c in cells}) == 15625
  assert str(cells[0]) == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  for n in (0, 1, 777, 15624):
    assert space.index_of(cells[n]) == n


def test_encoding_to_genotype_takes_argmax(space):
  logits = np.zeros((6, 5), np.float32)
  logits[np.arange(6), [3, 3, 3, 1, 3, 3]] = 1.0
  assert str(space.encoding_to_genotype({"cell": logits})) == BEST


@pytest.mark.parametrize("text, match", [
    ("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'nor_conv_5x5'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 edge 0 reads input '1'"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "node 2 edge 1 reads input '2'"),
    ("|none~0|+|none~0|none~1|", "has 2 node groups"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "has 4 node groups"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 group .* has 1 edges"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~input'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with"),
])
def test_bad_strings(space, text, match):
  with pytest.raises(ValueError, match=match) as info:
    space.parse(text)
  assert "\n" not in str(info.value)


def test_bad_genotypes_and_indices(space):
  with pytest.raises(ValueError, match="unknown op 'conv'"):
    space.genotype_to_encoding(NB201Genotype(("conv",) * 6))
  with pytest.raises(ValueError, match="has 3 edges"):
    space.format(NB201Genotype(("none",) * 3))
  with pytest.raises(ValueError, match=r"decision 2 has index 5"):
    space.decode_indices([0, 0, 5, 0, 0, 0])
  with pytest.raises(ValueError, match="6 integers"):
    space.decode_indices([0, 0])
  with pytest.raises(ValueError, match="'arch'"):
    space.genotype_from_json({"normal": []})
  with pytest.raises(ValueError, match="duplicate op"):
    NB201Space(ops=("none", "none"))


def test_smaller_cell_and_custom_ops():
  space = NB201Space(num_nodes=3, ops=NB201_OPS[:3])
  assert space.num_architectures == 27
  g = space.parse("|skip_connect~0|+|none~0|nor_conv_1x1~1|")
  assert space.index_of(g) == 9 + 0 + 2
  assert len(list(space.all_genotypes())) == 27


def test_registry():
  assert {"darts", "nb201", "fbnet", "kernel_chain"} <= set(space_names())
  assert get_space("kernel_chain").name == "kernel_chain"
  assert isinstance(get_space("nb201"), NB201Space)
  assert get_space("darts", num_nodes=2).num_edges == 5
  with pytest.raises(ValueError, match="unknown search space 'nope' .*nb201"):
    get_space("nope")
