"""A space defined here, outside jnas, is registered and searched end to end through ``jnas search``.

The toy space is a chain of three positions over three layer types on flattened
inputs. Registering its kit (space, supernet, discrete network) is all it takes
for DARTS (gradient) and REA with the scratch estimator to search it, derive a
genotype and retrain it, with no switch on space types in jnas.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jnas import cli
from jnas.spaces import registry
from jnas.spaces.base import Choice, SearchSpace
from jnas.spaces.registry import SpaceKit

OPS = ("linear", "relu", "skip")
DARTS = "experiments/darts_mnist1d.py"
REA = "experiments/reinforce_scratch_mnist1d.py"


class ToySpace(SearchSpace):
  name = "toy"

  def __init__(self, positions: int = 3):
    self.positions = positions

  def choices(self) -> dict[str, list[Choice]]:
    return {"layers": [Choice(f"layer{i}", OPS) for i in range(self.positions)]}

  def genotype_to_encoding(self, genotype: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"layers": np.eye(len(OPS), dtype=np.float32)[[OPS.index(o) for o in genotype]]}

  def encoding_to_genotype(self, encoding: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(OPS[int(i)] for i in np.argmax(np.asarray(encoding["layers"]), -1))

  def random_genotype(self, rng: np.random.Generator) -> tuple[str, ...]:
    return tuple(OPS[int(i)] for i in rng.integers(0, len(OPS), self.positions))

  def genotype_to_json(self, genotype: tuple[str, ...]) -> dict:
    return {"space": self.name, "layers": list(genotype)}

  def genotype_from_json(self, data: Mapping) -> tuple[str, ...]:
    layers = tuple(data["layers"])
    if len(layers) != self.positions or not set(layers) <= set(OPS):
      raise ValueError(f"not a toy genotype: {data!r}")
    return layers


def _candidates(width: int, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([nnx.Linear(width, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)])


def _run(cands, op: int, h: jax.Array) -> jax.Array:
  if op == 2:
    return h
  y = cands[op](h)
  return jax.nn.relu(y) if op == 1 else y


class ToySupernet(nnx.Module):
  """Every op at every position, mixed by the encoding's weights (``single_path``: the argmax)."""

  def __init__(self, space: ToySpace, in_features: int, num_classes: int, width: int,
               rngs: nnx.Rngs):
    self.stem = nnx.Linear(in_features, width, rngs=rngs)
    self.layers = nnx.List([_candidates(width, rngs) for _ in range(space.positions)])
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, x, encoding, *, train: bool, single_path: bool = False):
    del train
    w = encoding["layers"]
    if single_path:
      w = jax.nn.one_hot(jnp.argmax(w, -1), len(OPS), dtype=w.dtype)
    h = self.stem(x.reshape(x.shape[0], -1))
    for i, cands in enumerate(self.layers):
      h = sum(w[i, k] * _run(cands, k, h) for k in range(len(OPS)))
    return self.head(h)


class ToyNetwork(nnx.Module):
  """The discrete network of one toy genotype."""

  def __init__(self, genotype: tuple[str, ...], in_features: int, num_classes: int, width: int,
               rngs: nnx.Rngs):
    self.ops = [OPS.index(o) for o in genotype]
    self.stem = nnx.Linear(in_features, width, rngs=rngs)
    self.layers = nnx.List([_candidates(width, rngs) for _ in genotype])
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, x, *, train: bool, key=None):
    del train, key
    h = self.stem(x.reshape(x.shape[0], -1))
    for op, cands in zip(self.ops, self.layers):
      h = _run(cands, op, h)
    return self.head(h)


def _supernet(config, space, ds):
  return ToySupernet(space, int(np.prod(ds.input_shape)), ds.num_classes,
                     int(config.search.channels), nnx.Rngs(config.seed))


def _network(config, space, genotype, input_shape, num_classes, rngs):
  return ToyNetwork(genotype, int(np.prod(input_shape)), num_classes,
                    int(config.retrain.channels), rngs)


@pytest.fixture
def toy_space(monkeypatch):
  kit = SpaceKit("toy", space_class=ToySpace, space=lambda c: ToySpace(c.space.get("positions", 3)),
                 supernet=_supernet, network=_network)
  monkeypatch.setitem(registry._KITS, "toy", kit)
  return kit


SMALL = ["--config.space.name=toy", "--config.search.channels=16",
         "--config.search.batch_size=256", "--config.retrain.enabled=true",
         "--config.retrain.epochs=1", "--config.retrain.channels=16",
         "--config.retrain.batch_size=256"]


def _check_run(wd) -> dict:
  summary = json.loads((wd / "summary.json").read_text())
  genotype = json.loads((wd / "genotype.json").read_text())
  assert genotype["space"] == "toy" and len(genotype["layers"]) == 3
  assert set(genotype["layers"]) <= set(OPS)
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  # The toy network learns MNIST-1D a little in one epoch: above chance (10 classes).
  assert summary["test_accuracy"] > 0.12
  return summary


def test_darts_searches_a_space_registered_outside_jnas(tmp_path, toy_space):
  wd = tmp_path / "darts"
  assert cli.main(["search", "--config", DARTS, "--workdir", str(wd), *SMALL,
                   "--config.search.epochs=2"]) == 0
  _check_run(wd)
  with np.load(wd / "alpha_history.npz") as h:
    assert h["alpha_layers"].shape == (2, 3, len(OPS))
    assert [str(p) for p in h["primitives"]] == list(OPS)


def test_rea_with_the_scratch_estimator_searches_a_registered_space(tmp_path, toy_space):
  wd = tmp_path / "rea"
  assert cli.main(["search", "--config", REA, "--workdir", str(wd), *SMALL,
                   "--config.search.strategy=rea", "--config.search.evals=4",
                   "--config.search.scratch_epochs=1", "--config.search.strategy_settings="]) == 0
  _check_run(wd)
  ev = json.loads((wd / "evaluations.json").read_text())
  assert ev["num_evaluated"] == 4
  # The parameter count comes from the toy network: stem + 2 linears per layer + head.
  width, params = 16, [r["num_params"] for r in ev["history"]]
  assert all(p == 40 * width + width + 3 * 2 * (width * width + width) + width * 10 + 10
             for p in params)


def test_an_unregistered_space_is_refused_in_one_line(tmp_path, capsys):
  wd = tmp_path / "none"
  assert cli.main(["search", "--config", DARTS, "--workdir", str(wd),
                   "--config.space.name=toy"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "toy" in err[0] and "known" in err[0]
  assert not wd.exists()
