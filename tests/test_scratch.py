"""Train-from-scratch scorer: validation comes from the training set, results are cached."""

from __future__ import annotations

import numpy as np
import pytest

from flax import nnx

from jnas.data import Dataset
from jnas.estimation.scratch import PathScratchScorer, ScratchScorer
from jnas.spaces.darts import DartsSpace, Genotype
from jnas.spaces.nb201 import NB201Space
from jnas.supernet.functional import count_params
from jnas.train.network import DiscreteNetwork


def _toy() -> Dataset:
  # Class = which half of the sequence holds the bump: learnable in one epoch.
  rng = np.random.default_rng(0)
  n = 600
  y = rng.integers(0, 2, n)
  x = rng.normal(0, 0.3, (n, 16, 1))
  x[y == 0, 2:6, 0] += 2.0
  x[y == 1, 10:14, 0] += 2.0
  return Dataset.from_arrays("toy", x[:500], y[:500], x[500:], y[500:])


GENO = Genotype(normal=(("skip_connect", 0), ("max_pool_3x3", 1)), normal_concat=(2,),
                reduce=(("max_pool_3x3", 0), ("skip_connect", 1)), reduce_concat=(2,))


def test_validation_split_comes_from_train_only():
  ds = _toy()
  scorer = ScratchScorer(ds, epochs=1, batch_size=50, val_fraction=0.2, seed=3)
  assert len(scorer.x_val) == 100 and len(scorer.x_tr) == 400
  train_rows = {r.tobytes() for r in ds.x_train}
  assert all(r.tobytes() in train_rows for r in scorer.x_val)
  test_rows = {r.tobytes() for r in ds.x_test}
  assert not any(r.tobytes() in test_rows for r in scorer.x_val)
  with pytest.raises(ValueError, match="epochs"):
    ScratchScorer(ds, epochs=0)
  with pytest.raises(ValueError, match="batch_size"):
    ScratchScorer(ds, batch_size=10_000)


@pytest.mark.slow  # one DARTS-cell network compile: 20-60 s on a busy 2-core CPU
def test_scorer_trains_caches_and_reports():
  scorer = ScratchScorer(_toy(), epochs=2, batch_size=50, channels=4, layers=3,
                         learning_rate=0.05, shift=0)
  r = scorer.evaluate(GENO)
  assert r["val_accuracy"] > 0.75  # chance is 0.5
  assert r["num_params"] > 0 and r["latency_ms"] > 0
  assert scorer(GENO) == r["val_accuracy"] and scorer.trained == 1  # cached, not retrained
  assert 0.0 <= scorer.test_accuracy(GENO) <= 1.0


def test_path_scorer_compiles_once_and_is_deterministic():
  space = DartsSpace(num_nodes=1, primitives=("max_pool_3x3", "skip_connect"))
  kw = dict(space=space, epochs=2, batch_size=50, channels=4, layers=3, shift=0, seed=1)
  scorer = PathScratchScorer(_toy(), **kw)
  genos = [GENO, Genotype(normal=(("skip_connect", 0), ("skip_connect", 1)), normal_concat=(2,),
                          reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1)), reduce_concat=(2,))]
  results = [scorer.evaluate(g) for g in genos]
  assert scorer.compilations == 1 and scorer.trained == 2  # the second genotype reused it
  assert results[0]["val_accuracy"] > 0.75  # chance is 0.5
  assert results[0]["val_accuracy"] != results[1]["val_accuracy"]  # the genotype matters
  # Fresh weights per genotype: retraining the first in a new scorer gives the same number.
  again = PathScratchScorer(_toy(), **kw)
  assert again.evaluate(GENO)["val_accuracy"] == results[0]["val_accuracy"]
  discrete = DiscreteNetwork(GENO, 1, 2, ndim=1, channels=4, layers=3, rngs=nnx.Rngs(0))
  assert results[0]["num_params"] == count_params(nnx.state(discrete, nnx.Param))
  assert 0.0 <= scorer.test_accuracy(GENO) <= 1.0 and scorer.compilations == 1
  with pytest.raises(TypeError, match="DARTS"):
    PathScratchScorer(_toy(), space=NB201Space())
  with pytest.raises(TypeError, match="latency"):
    PathScratchScorer(_toy(), space=space, latency_batch=8)
