"""Derived networks: fidelity to the DARTS paper, shapes, and the `jnas info` command."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jnas.cli import main
from jnas.spaces.darts import GENOTYPES
from jnas.supernet import count_params
from jnas.train.network import DiscreteNetwork

ROOT = Path(__file__).resolve().parents[1]


def test_darts_v2_cifar10_parameter_count():
  # C=36, 20 cells, 10 classes, 32x32x3, no auxiliary head. The official
  # PyTorch code counts 3,349,342 parameters; the paper rounds it to 3.3M.
  net = nnx.eval_shape(lambda: DiscreteNetwork(GENOTYPES["DARTS_V2"], 3, 10, ndim=2,
                                               channels=36, layers=20, rngs=nnx.Rngs(0)))
  n = count_params(nnx.state(net, nnx.Param))
  assert n == 3_349_342
  assert round(n / 1e6, 1) == 3.3


@pytest.mark.parametrize("shape", [(2, 40, 1), (2, 8, 8, 1)])
def test_discrete_network_runs(shape):
  net = DiscreteNetwork(GENOTYPES["DARTS_V1"], 1, 10, ndim=len(shape) - 2, channels=4, layers=3,
                        drop_path_rate=0.2, rngs=nnx.Rngs(0))
  x = jnp.ones(shape)
  assert net(x, train=True, key=jax.random.key(0)).shape == (2, 10)
  assert net(x, train=False).shape == (2, 10)


def test_info_command_json(capsys):
  rc = main(["info", "--config", str(ROOT / "experiments/darts_cifar10.py"),
             "--genotype", "DARTS_V2", "--json"])
  assert rc == 0
  assert json.loads(capsys.readouterr().out)["num_params"] == 3_349_342


def test_info_reads_genotype_file(tmp_path, capsys):
  from jnas.spaces.darts import DartsSpace
  path = tmp_path / "g.json"
  path.write_text(DartsSpace().genotype_dumps(GENOTYPES["DARTS_V1"]))
  rc = main(["info", "--config", str(ROOT / "experiments/darts_cifar10.py"),
             "--genotype", str(path), "--json"])
  assert rc == 0
  assert json.loads(capsys.readouterr().out)["num_params"] > 3_000_000


@pytest.mark.parametrize("args, message", [
    (["--genotype", "NOPE"], "unknown genotype 'NOPE'"),
    (["--genotype", "DARTS_V2", "--config.data.name=nope"], "unknown dataset 'nope'"),
    (["--genotype", "DARTS_V2", "--config.search.epoch=3"], "unknown config key 'search.epoch'"),
])
def test_bad_input_is_one_line(capsys, args, message):
  rc = main(["info", "--config", str(ROOT / "experiments/darts_mnist1d.py")] + args)
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2
  assert message in err[-1] and err[-1].startswith("jnas: error:")
