"""Mutation/crossover of spaces and the sample-based strategies (random, REA, top-k, NSGA-II)."""

import functools
import json
import os
import time

import jax
import numpy as np
import pytest

from jnas.estimation import non_dominated_mask
from jnas.spaces import GENOTYPES, DartsSpace, NB201Space
from jnas.strategies.driver import genotype_scorer, run_ask_tell
from jnas.strategies.evolution import nsga2, regularized_evolution, topk_evolution
from jnas.strategies.random_search import random_search
from jnas.strategies.sampling import ConstraintError, Constraints, encode_batch

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


# Strategies on a synthetic NAS-Bench-201 table -------------------------------

NB201 = NB201Space()


def synthetic_table(space, seed=0):
  """A fixed score per cell: additive per (edge, op) effects plus per-cell noise.

  The additive part gives evolution something to climb, as real tables do; the
  noise makes every cell's score distinct.
  """
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(space.num_edges, len(space.ops)))
  idx = np.asarray([space.encode_indices(g) for g in space.all_genotypes()])
  return w[np.arange(space.num_edges), idx].sum(1) + 0.3 * rng.normal(size=len(idx)), w


TABLE, _ = synthetic_table(NB201)
POWERS = 5 ** np.arange(5, -1, -1)


def table_scorer(encodings, genotypes):
  # Reads the cell index off the one-hot encodings: what a tabular lookup does.
  return TABLE[np.argmax(encodings["cell"], -1) @ POWERS]


def flops(g):
  """A toy cost: 3 per 3x3 conv, 1 per 1x1 conv (the table favours neither)."""
  return {"flops": 3 * g.ops.count("nor_conv_3x3") + g.ops.count("nor_conv_1x1")}


STRATEGIES = {
    "random": lambda c=None: random_search(NB201, batch_size=10, constraints=c),
    "rea": lambda c=None: regularized_evolution(NB201, population_size=20, sample_size=5,
                                                constraints=c),
    "topk": lambda c=None: topk_evolution(NB201, population_size=20, top_k=5, constraints=c),
    "nsga2": lambda c=None: nsga2(NB201, 1, population_size=20, constraints=c),
}


def best_found(name, seed, num_evals=200, constraints=None, scorer=table_scorer):
  result = run_ask_tell(STRATEGIES[name](constraints), NB201, scorer,
                        key=jax.random.key(seed), num_evals=num_evals)
  assert len(result.history) == num_evals
  return result


def test_table_scorer_matches_genotype_lookup():
  rng = np.random.default_rng(0)
  gs = [NB201.random_genotype(rng) for _ in range(20)]
  np.testing.assert_array_equal(table_scorer(encode_batch(NB201, gs), gs),
                                TABLE[[NB201.index_of(g) for g in gs]])


@functools.cache
def mean_regret(name, num_evals=200, seeds=6):
  return np.mean([TABLE.max() - best_found(name, s, num_evals).best().objectives["score"]
                  for s in range(seeds)])


@pytest.mark.parametrize("name", ["rea", "topk", "nsga2"])
def test_evolution_beats_random_search_at_the_same_budget(name):
  assert mean_regret(name) < 0.7 * mean_regret("random"), (mean_regret(name),
                                                           mean_regret("random"))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_runs_are_reproducible_from_their_seed(name):
  a, b, c = (best_found(name, s, num_evals=60) for s in (3, 3, 4))
  arch = lambda r: [str(e.genotype) for e in r.history]
  assert arch(a) == arch(b)
  assert arch(a) != arch(c)
  same = jax.tree.map(lambda x, y: np.array_equal(x, y), a.state, b.state)
  assert all(jax.tree.leaves(same))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_evaluated_architecture_satisfies_a_flops_limit(name):
  # The score rewards FLOPs, so the search presses on the limit.
  limit = 6
  scorer = lambda e, gs: table_scorer(e, gs) + np.asarray([flops(g)["flops"] for g in gs])
  for seed in range(8):
    c = Constraints(cost_fn=flops, max_flops=limit)
    result = best_found(name, seed, num_evals=60, constraints=c, scorer=scorer)
    assert all(flops(e.genotype)["flops"] <= limit for e in result.history)
    assert flops(result.best().genotype)["flops"] <= limit
    assert max(flops(e.genotype)["flops"] for e in result.history) == limit
  unconstrained = best_found(name, 0, num_evals=60, scorer=scorer).best().genotype
  assert flops(unconstrained)["flops"] > limit  # the limit really binds


def test_mutation_under_a_tight_limit_falls_back_to_feasible_samples():
  # Only 1 + 6 cells have flops <= 1; mutations of them often break the limit.
  c = Constraints(cost_fn=flops, max_flops=1, predicate=lambda g: g.ops.count("none") < 6)
  result = run_ask_tell(regularized_evolution(NB201, population_size=4, sample_size=2,
                                              constraints=c), NB201, table_scorer,
                        key=jax.random.key(0), num_evals=40)
  assert all(flops(e.genotype)["flops"] <= 1 and e.genotype.ops.count("none") < 6
             for e in result.history)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_unsatisfiable_constraint_fails_fast_with_one_clear_line(name):
  c = Constraints(cost_fn=flops, max_flops=-1, max_tries=500)
  start = time.perf_counter()
  with pytest.raises(ConstraintError) as info:
    best_found(name, 0, num_evals=20, constraints=c)
  msg = str(info.value)
  assert msg.startswith("no architecture satisfies max_flops=-1 after 500 random samples")
  assert "the smallest seen had flops=0" in msg and "\n" not in msg
  assert time.perf_counter() - start < 5


def test_unsatisfiable_predicate_is_named():
  with pytest.raises(ConstraintError, match="satisfies the predicate after 50 .*50 met the "
                                            "limits but failed the predicate"):
    best_found("rea", 0, constraints=Constraints(lambda g: False, max_tries=50))


def test_flops_range_and_its_error():
  c = Constraints(cost_fn=flops, limits={"flops": (10, 12)})
  result = best_found("topk", 0, num_evals=40, constraints=c)
  assert all(10 <= flops(e.genotype)["flops"] <= 12 for e in result.history)
  with pytest.raises(ConstraintError, match="satisfies min_flops=19 after 100 random samples; "
                                            r"the largest seen had flops=\d+$"):
    best_found("rea", 0, constraints=Constraints(cost_fn=flops, limits={"flops": (19, None)},
                                                 max_tries=100))


def test_constraint_arguments_are_checked():
  with pytest.raises(ValueError, match="need a cost_fn"):
    Constraints(max_params=10)
  c = Constraints(cost_fn=lambda g: {"params": 1}, max_flops=10)
  with pytest.raises(ValueError, match="cost_fn returned no 'flops'"):
    c.check(NB201.random_genotype(np.random.default_rng(0)))


def test_bad_scores_are_refused():
  strategy = regularized_evolution(NB201, population_size=5, sample_size=2, batch_size=3)
  state = strategy.init(jax.random.key(0))
  state, enc = strategy.ask(state)
  with pytest.raises(ValueError, match="told 4 scores but only 3"):
    strategy.tell(state, enc, np.zeros(4))
  with pytest.raises(ValueError, match=r"scores must be \[batch\]"):
    strategy.tell(state, enc, np.zeros((3, 2)))
  # Scores for a prefix of the batch are fine (a budget ran out mid-batch).
  state = strategy.tell(state, enc, np.zeros(2))
  assert int(state.size) == 2
  with pytest.raises(ValueError, match="only 0 candidates were asked since the last tell"):
    strategy.tell(state, enc, np.zeros(1))
  with pytest.raises(ValueError, match="scorer returned no 'acc'"):
    run_ask_tell(strategy, NB201, lambda e, g: {"score": np.zeros(len(g))}, objectives=["acc"],
                 key=jax.random.key(0), num_evals=3)
  with pytest.raises(ValueError, match="give num_evals or budget"):
    run_ask_tell(strategy, NB201, table_scorer, key=jax.random.key(0))


def test_aging_removes_the_oldest():
  strategy = regularized_evolution(NB201, population_size=3, sample_size=2)
  state = strategy.init(jax.random.key(0))
  told = []
  for i in range(6):
    state, enc = strategy.ask(state)
    # The first member is the best by far, yet aging still removes it.
    state = strategy.tell(state, enc, np.asarray([100.0 if i == 0 else float(i)]))
    told.append(np.argmax(enc["cell"][0], -1))
  assert int(state.size) == 3
  np.testing.assert_array_equal(state.population[:3], np.stack(told[3:]))
  np.testing.assert_array_equal(state.fitness[:3], [3.0, 4.0, 5.0])
  assert float(state.best_score) == 100.0


def test_budget_is_charged_sequentially():
  scorer = lambda e, gs: {"score": table_scorer(e, gs), "time_s": np.full(len(gs), 30.0)}
  result = run_ask_tell(random_search(NB201, batch_size=7), NB201, scorer,
                        key=jax.random.key(0), budget=100.0, cost_key="time_s", cost_fn=flops)
  # 30 s a query: the fourth query crosses 100 s and is the last one counted.
  assert len(result.history) == 4 and result.spent == 120.0
  assert result.history[-1].cost == {"flops": flops(result.history[-1].genotype)["flops"],
                                     "time_s": 30.0}
  assert int(result.state.num_told) == 4


def test_genotype_scorer_and_minimised_objective():
  scorer = genotype_scorer(lambda g: {"flops": flops(g)["flops"], "acc": 0.0})
  result = run_ask_tell(regularized_evolution(NB201, population_size=10, sample_size=3), NB201,
                        scorer, objectives=[("flops", "min")], key=jax.random.key(1),
                        num_evals=80)
  assert result.best().objectives["flops"] == 0
  assert result.history[0].metrics == {"acc": 0.0}


# NSGA-II against a brute-force front ------------------------------------------

SMALL = NB201Space(num_nodes=3)  # 125 cells


def test_nsga2_front_matches_brute_force(tmp_path):
  acc, _ = synthetic_table(SMALL, seed=1)
  cells = list(SMALL.all_genotypes())
  cost = np.asarray([flops(g)["flops"] for g in cells], np.float64)
  objs = [("acc", "max"), ("flops", "min")]
  true_front = {(acc[i], cost[i]) for i in np.flatnonzero(non_dominated_mask(
      np.stack([acc, cost], 1), objs))}
  scorer = genotype_scorer(lambda g: {"acc": acc[SMALL.index_of(g)],
                                      "flops": cost[SMALL.index_of(g)]})
  for seed in range(3):
    result = run_ask_tell(nsga2(SMALL, 2, population_size=16), SMALL, scorer,
                          objectives=objs, key=jax.random.key(seed), num_evals=160)
    front = result.front()
    vals = np.asarray([[e.objectives["acc"], e.objectives["flops"]] for e in front])
    assert non_dominated_mask(vals, objs).all()
    assert {tuple(v) for v in vals} == true_front
    # The final population's first front holds the same points.
    st = result.state
    told = st.values[:int(st.size)] * [1, -1]  # tell got higher-is-better values
    pop_front = {tuple(v) for v in told[st.rank[:int(st.size)] == 0]}
    assert pop_front == true_front
  json_path, png = result.save_pareto(str(tmp_path), SMALL, title="nsga2")
  data = json.loads(open(json_path).read())
  assert data["size"] == len(true_front) and data["front"][0]["genotype"]["arch"].startswith("|")
  assert os.path.getsize(png) > 5000
  assert len(data["evaluated"]) == 160  # what `jnas plot` redraws the front against
  from jnas.plot import plot_pareto_file
  assert os.path.getsize(plot_pareto_file(json_path, tmp_path / "redrawn.png")) > 5000
  result.save(str(tmp_path / "history.json"), SMALL)
  assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 160


def test_darts_space_runs_through_every_strategy():
  space = DartsSpace(num_nodes=2)
  score = genotype_scorer(lambda g: sum(op == "sep_conv_3x3" for op, _ in g.normal + g.reduce))
  for make in (lambda: random_search(space, batch_size=4),
               lambda: regularized_evolution(space, population_size=8, sample_size=3),
               lambda: topk_evolution(space, population_size=8, top_k=3),
               lambda: nsga2(space, 1, population_size=8)):
    result = run_ask_tell(make(), space, score, key=jax.random.key(0), num_evals=32)
    assert len(result.history) == 32
    for e in result.history:
      space.validate(e.genotype)


def test_chain_spaces_use_the_generic_integer_form():
  from jnas.spaces.chain import FBNetSpace, KernelChainSpace
  rng = np.random.default_rng(0)
  for space in (FBNetSpace(), KernelChainSpace()):
    for _ in range(20):
      a, b = space.random_genotype(rng), space.random_genotype(rng)
      assert (space.encode_indices(space.mutate(a, rng)) != space.encode_indices(a)).sum() == 1
      ia, ib, ic = (space.encode_indices(x) for x in (a, b, space.crossover(a, b, rng)))
      assert np.all((ic == ia) | (ic == ib))
    score = genotype_scorer(lambda g: float(sum(x.startswith("k5") for x in g.blocks)))
    result = run_ask_tell(regularized_evolution(space, population_size=10, sample_size=3), space,
                          score, key=jax.random.key(0), num_evals=40)
    assert len(result.history) == 40


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_state_checkpoints_and_resumes_exactly(name, tmp_path):
  from jnas.checkpoint import latest_good, save
  strategy = STRATEGIES[name]()

  def steps(state, k):
    for _ in range(k):
      state, enc = strategy.ask(state)
      state = strategy.tell(state, enc, table_scorer(enc, None))
    return state

  mid = steps(strategy.init(jax.random.key(5)), 3)
  save(str(tmp_path / "ck"), 3, mid)
  _, restored, _ = latest_good(str(tmp_path / "ck"), strategy.init(jax.random.key(0)))
  a, b = steps(mid, 2), steps(restored, 2)
  same = jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)
  assert all(jax.tree.leaves(same))
  assert jax.tree.structure(mid) == jax.tree.structure(strategy.init(jax.random.key(0)))


def test_driver_accepts_strategies_that_ask_in_integer_form():
  from jnas.strategies.base import AskTellStrategy
  told = []

  def ask(state):
    rng = np.random.default_rng(int(state))
    return state + 1, rng.integers(5, size=(4, 6)).astype(np.int32)

  def tell(state, decisions, scores):
    told.append((np.asarray(decisions), np.asarray(scores)))
    return state

  strategy = AskTellStrategy(init=lambda key: 0, ask=ask, tell=tell)
  result = run_ask_tell(strategy, NB201, table_scorer, key=jax.random.key(0), num_evals=10)
  assert len(result.history) == 10 and [d.shape for d, _ in told] == [(4, 6), (4, 6), (2, 6)]
  for d, s in told:
    np.testing.assert_allclose(s, TABLE[d @ POWERS])
