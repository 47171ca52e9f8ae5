"""Mutation/crossover of spaces and the sample-based strategies (random, REA, top-k, NSGA-II)."""

import numpy as np
import pytest

from jnas.spaces import GENOTYPES, DartsSpace, NB201Space

SPACES = [NB201Space(), DartsSpace(), DartsSpace(num_nodes=2)]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.name}")
def test_mutate_changes_exactly_one_decision(space):
  rng = np.random.default_rng(0)
  for _ in range(200):
    g = space.random_genotype(rng)
    child = space.mutate(g, rng)
    diff = space.encode_indices(child) != space.encode_indices(g)
    assert diff.sum() == 1
    assert space.decode_indices(space.encode_indices(child)) == child
    space.genotype_to_encoding(child)  # valid: encodes without error


def test_darts_mutation_keeps_inputs_distinct_and_ops_real():
  space = DartsSpace()
  rng = np.random.default_rng(1)
  g = GENOTYPES["DARTS_V2"]
  for _ in range(300):
    g = space.mutate(g, rng)
    for cell in (g.normal, g.reduce):
      for k in range(0, len(cell), 2):
        assert cell[k][1] != cell[k + 1][1]
      assert all(op != "none" for op, _ in cell)
    enc = space.genotype_to_encoding(g)
    assert enc["normal"].max() == 1.0 and enc["normal"].sum() == 8


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.name}")
def test_crossover_takes_every_decision_from_a_parent(space):
  rng = np.random.default_rng(0)
  from_a = from_b = 0
  for _ in range(100):
    a, b = space.random_genotype(rng), space.random_genotype(rng)
    child = space.crossover(a, b, rng)
    ia, ib, ic = (space.encode_indices(x) for x in (a, b, child))
    assert np.all((ic == ia) | (ic == ib))
    from_a += np.sum((ic == ia) & (ic != ib))
    from_b += np.sum((ic == ib) & (ic != ia))
    space.genotype_to_encoding(child)
  # Both parents contribute, about equally.
  assert from_a > 0 and from_b > 0 and 0.7 < from_a / from_b < 1.4


def test_darts_crossover_is_node_wise():
  space = DartsSpace()
  rng = np.random.default_rng(3)
  a, b = GENOTYPES["DARTS_V1"], GENOTYPES["DARTS_V2"]
  for _ in range(50):
    child = space.crossover(a, b, rng)
    for ca, cb, cc in ((a.normal, b.normal, child.normal), (a.reduce, b.reduce, child.reduce)):
      for k in range(0, len(cc), 2):
        assert cc[k:k + 2] in (ca[k:k + 2], cb[k:k + 2])


def test_darts_decode_rejects_repeated_input():
  space = DartsSpace()
  idx = space.encode_indices(GENOTYPES["DARTS_V2"])
  idx[3] = idx[1]  # node 0's second edge now reads node 0's first input again
  with pytest.raises(ValueError, match="normal node 0 reads input 0 twice"):
    space.decode_indices(idx)
