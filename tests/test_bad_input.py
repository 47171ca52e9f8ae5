"""Bad input through the ``jnas`` command line: one line, exit 2, and the work directory untouched.

Each probe runs ``jnas.cli.main`` in-process. Nothing here trains or compiles:
the run module is a stand-in whose ``search``/``train`` fail the test if a
probe ever gets that far, so every refusal must come from the checks made
before a run starts (jnas/validate.py, the genotype and path checks in
jnas/cli.py, the table checks of ``jnas bench``).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from jnas import cli

ROOT = Path(__file__).resolve().parents[1]
DARTS = str(ROOT / "experiments/darts_mnist1d.py")
NB201 = str(ROOT / "experiments/nb201_mnist1d.py")
FBNET = str(ROOT / "experiments/fbnet_mnist1d.py")
SPOS = str(ROOT / "experiments/spos_mnist1d.py")


class ReachedTheRun(AssertionError):
  """A probe got past every check and would have started a run."""


@pytest.fixture
def stand_in_run(monkeypatch):
  """``jnas.run`` with the real space and genotype resolution, and runs that must not happen."""
  import jnas
  import jnas.run as real

  fake = types.ModuleType("jnas.run")
  fake.build_space = real.build_space
  fake.resolve_genotype = real.resolve_genotype
  fake.resolve_architecture = real.resolve_architecture
  fake.is_chain = real.is_chain
  fake.info = real.info

  def reached(*args, **kwargs):
    raise ReachedTheRun(f"the run was called with {args[1:]!r}")

  fake.search = fake.train = reached
  monkeypatch.setitem(sys.modules, "jnas.run", fake)
  monkeypatch.setattr(jnas, "run", fake)
  return fake


def _snapshot(path: Path) -> dict[str, bytes | None] | None:
  """Every file (bytes) and folder (None) under ``path``; None when it does not exist."""
  if not os.path.lexists(path):
    return None
  if path.is_file():
    return {".": path.read_bytes()}
  out: dict[str, bytes | None] = {}
  for p in sorted(path.rglob("*")):
    out[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else None
  return out


def _refused(capsys, argv: list[str], watch: Path | None = None) -> str:
  """Runs the CLI; asserts exit 2, one ``jnas: error:`` line, ``watch`` unchanged; returns it."""
  before = _snapshot(watch) if watch is not None else None
  rc = cli.main(argv)
  err = capsys.readouterr().err
  lines = err.splitlines()
  assert rc == 2, (rc, err)
  assert len(lines) == 1 and lines[0].startswith("jnas: error: "), err
  assert "Traceback" not in err
  if watch is not None:
    assert _snapshot(watch) == before, f"{watch} changed"
  return lines[0]


# ---------------------------------------------------------------------------
# Config values (jnas search)
# ---------------------------------------------------------------------------

SEARCH_PROBES = [
    # (config, overrides, text the error must contain)
    (DARTS, ["search.epochs=0"], "search.epochs=0"),
    (DARTS, ["search.epochs=-1"], "search.epochs=-1"),
    (DARTS, ["search.epochs=99999999999"], "search.epochs"),
    (DARTS, ["search.epochs=ten"], "search.epochs"),
    (DARTS, ["retrain.epochs=0"], "retrain.epochs=0"),
    (DARTS, ["search.batch_size=0"], "search.batch_size=0"),
    (DARTS, ["search.batch_size=-5"], "search.batch_size=-5 must be an integer >= 1"),
    (DARTS, ["search.batch_size=5000"], "larger than half of the mnist1d training set"),
    (DARTS, ["retrain.batch_size=0"], "retrain.batch_size=0"),
    (DARTS, ["retrain.batch_size=4001"], "larger than the mnist1d training set"),
    (DARTS, ["search.channels=0"], "search.channels=0"),
    (DARTS, ["search.layers=0"], "search.layers=0"),
    (DARTS, ["search.w_lr=nan"], "search.w_lr=nan"),
    (DARTS, ["search.w_lr=inf"], "search.w_lr=inf"),
    (DARTS, ["search.w_lr=0"], "search.w_lr=0"),
    (DARTS, ["search.a_lr=-0.1"], "search.a_lr"),
    (DARTS, ["search.momentum=1.5"], "search.momentum"),
    (DARTS, ["search.a_b2=1.0"], "search.a_b2"),
    (DARTS, ["search.weight_decay=-1"], "search.weight_decay"),
    (DARTS, ["search.grad_clip=0"], "search.grad_clip"),
    (DARTS, ["search.strategy=gdas", "search.tau_min=-10"], "search.tau_min=-10"),
    (DARTS, ["search.strategy=snas", "search.tau0=0"], "search.tau0"),
    (DARTS, ["search.strategy=bogus"], "search.strategy='bogus'"),
    (DARTS, ["search.strategy=fbnet"], "not a strategy for the darts space"),
    (DARTS, ["search.order=3"], "search.order=3"),
    (DARTS, ["search.data_parallel=-2"], "search.data_parallel"),
    (DARTS, ["search.mitigations=nope"], "unknown mitigation 'nope'"),
    (DARTS, ["search.strategy=gdas", "search.mitigations=fairdarts"], "fairdarts"),
    (DARTS, ["search.strategy=spos", "search.mitigations=pruning"], "search.mitigations"),
    (DARTS, ["search.partial_channels=2"], "search.partial_channels=2"),
    (DARTS, ["search.sdarts_eps_min=0.5", "search.sdarts_eps_max=0.1"], "sdarts_eps_min"),
    (DARTS, ["search.prune_epochs=(20,)"], "search.prune_epochs"),
    (DARTS, ["search.early_stop_skips=-1"], "search.early_stop_skips"),
    (DARTS, ["space.name=nope"], "space.name='nope'"),
    (DARTS, ["space.num_nodes=0"], "space.num_nodes=0"),
    (DARTS, ["data.name=nope"], "data.name='nope'"),
    (DARTS, ["data.seed=-3"], "data.seed=-3"),
    (DARTS, ["seed=-1"], "seed=-1"),
    (DARTS, ["model.depthwise_impl=gpu"], "model.depthwise_impl"),
    (DARTS, ["model.cpu_library_fusions=maybe"], "model.cpu_library_fusions"),
    (DARTS, ["retrain.lr=0"], "retrain.lr=0"),
    (DARTS, ["retrain.lr=nan"], "retrain.lr=nan"),
    (DARTS, ["retrain.drop_path=1.0"], "retrain.drop_path"),
    (DARTS, ["retrain.label_smoothing=-0.1"], "retrain.label_smoothing"),
    (DARTS, ["retrain.augment.shift=-1"], "retrain.augment.shift"),
    (DARTS, ["retrain.channels=0"], "retrain.channels=0"),
    (SPOS, ["evolution.val_batches=100"], "evolution.val_batches=100"),
    (SPOS, ["evolution.calib_batches=1000"], "evolution.calib_batches=1000"),
    (SPOS, ["evolution.top_k=100"], "evolution.top_k=100"),
    (SPOS, ["evolution.crossover_fraction=1.5"], "evolution.crossover_fraction"),
    (SPOS, ["search.pool_size=0"], "search.pool_size=0"),
    (SPOS, ["search.pool_sampling=unique"], "needs space.name=nb201, not 'darts'"),
    (SPOS, ["search.pool_sampling=fair"], "search.pool_sampling='fair'"),
    (DARTS, ["search.strategy=spos", "search.epochs=0"], "search.epochs=0"),
    (NB201, ["search.partial_channels=3"], "must divide search.channels=16"),
    (NB201, ["space.num_nodes=1"], "num_nodes"),
    (NB201, ["search.cells_per_stage=0"], "search.cells_per_stage=0"),
    (FBNET, ["search.warmup_epochs=10"], "search.warmup_epochs=10"),
    (FBNET, ["search.strategy=darts"], "not a strategy for the fbnet space"),
    (FBNET, ["fbnet.temperature=0"], "fbnet.temperature=0"),
    (FBNET, ["latency.statistic=mean"], "latency.statistic"),
    (FBNET, ["latency.table=/nonexistent/latency.json"], "latency.table"),
    (FBNET, ["space.stages=((32,0,1),)"], "space (fbnet)"),
    (FBNET, ["data.num_classes=1"], "data.num_classes=1"),
]


@pytest.mark.parametrize("config,overrides,expect", SEARCH_PROBES,
                         ids=[f"{Path(c).stem}:{' '.join(o)}" for c, o, _ in SEARCH_PROBES])
def test_search_refuses_bad_config_values(stand_in_run, tmp_path, capsys, config, overrides,
                                          expect):
  wd = tmp_path / "run"
  line = _refused(capsys, ["search", "--config", config, "--workdir", str(wd)]
                  + [f"--config.{o}" for o in overrides], watch=wd)
  assert expect in line


def test_retrain_settings_are_not_checked_when_retraining_is_off(stand_in_run, tmp_path):
  with pytest.raises(ReachedTheRun):
    cli.main(["search", "--config", DARTS, "--workdir", str(tmp_path / "run"),
              "--config.retrain.enabled=false", "--config.retrain.epochs=0"])


def test_a_refused_run_leaves_an_existing_workdir_byte_identical(stand_in_run, tmp_path, capsys):
  wd = tmp_path / "run"
  wd.mkdir()
  (wd / "config.json").write_text('{"seed": 0}\n')
  (wd / "metrics.jsonl").write_text('{"step": 1}\n')
  _refused(capsys, ["search", "--config", DARTS, "--workdir", str(wd),
                    "--config.search.epochs=0"], watch=wd)


# ---------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------

CONFIG_FILES = [
    # (body of get_config, text the error must contain)
    ("return {}", "the config is empty"),
    ("return ml_collections.ConfigDict()", "the config is empty"),
    ("return None", "returned NoneType"),
    ("return [1, 2]", "returned list"),
    ("return {'data': {'name': 'mnist1d'}}", "no 'search' section"),
    ("return {'search': 5}", "search=5 must be a section"),
    # A ConfigDict refuses a value of another type; a plain dict takes anything.
    ("c = base(); c.search.epochs = 'ten'; return c", "field 'epochs'"),
    ("d = base().to_dict(); d['search']['epochs'] = 'ten'; return d", "search.epochs='ten'"),
    ("d = base().to_dict(); d['search']['epochs'] = 10.0; return d", "search.epochs=10.0"),
    ("d = base().to_dict(); d['search']['w_lr'] = True; return d", "search.w_lr=True"),
    ("d = base().to_dict(); d['retrain']['enabled'] = 'yes'; return d", "retrain.enabled='yes'"),
    ("d = base().to_dict(); d['space']['primitives'] = ('none', 'none'); return d",
     "space.primitives"),
    ("d = base().to_dict(); d['search']['w_lr'] = 1e999; return d", "search.w_lr=inf"),
    ("raise RuntimeError('boom')", "RuntimeError: boom"),
]


@pytest.mark.parametrize("body,expect", CONFIG_FILES, ids=[b for b, _ in CONFIG_FILES])
def test_search_refuses_bad_config_files(stand_in_run, tmp_path, capsys, body, expect):
  path = tmp_path / "bad_config.py"
  path.write_text(textwrap.dedent(f"""
      import sys
      import ml_collections
      sys.path.insert(0, {str(ROOT / 'experiments')!r})
      from darts_mnist1d import get_config as base

      def get_config():
        {body}
      """))
  wd = tmp_path / "run"
  line = _refused(capsys, ["search", "--config", str(path), "--workdir", str(wd)], watch=wd)
  assert expect in line


def test_a_key_the_run_reads_is_missing(tmp_path, capsys, monkeypatch):
  """The CLI's validation does not require keys (a hand-made config may lack keys a stand-in run
  never reads); a real run that looks one up gets one line naming it."""
  from jnas.config import load_config

  def search(config, workdir):
    return config.space.name

  _failing_run(monkeypatch, search)
  path = tmp_path / "no_space.py"
  path.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(ROOT / 'experiments')!r})
      from darts_mnist1d import get_config as base

      def get_config():
        d = base().to_dict()
        del d["space"]
        return d
      """))
  assert "space" not in load_config(str(path))
  line = _refused(capsys, ["search", "--config", str(path), "--workdir", str(tmp_path / "w")])
  assert "lacks the key 'space'" in line


# ---------------------------------------------------------------------------
# Work directories and output files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["search", "train"])
@pytest.mark.parametrize("where", ["file", "under_file", "deep_under_file"])
def test_workdir_that_cannot_be_one(stand_in_run, tmp_path, capsys, command, where):
  f = tmp_path / "a_file"
  f.write_text("x")
  wd = {"file": f, "under_file": f / "run", "deep_under_file": f / "a" / "b"}[where]
  line = _refused(capsys, [command, "--config", DARTS, "--workdir", str(wd)], watch=tmp_path)
  assert str(f) in line


def test_read_only_workdir(stand_in_run, tmp_path, capsys, monkeypatch):
  wd = tmp_path / "ro"
  wd.mkdir()
  real_access = os.access
  # chmod does not stop root (the CI user here), so the refusal is simulated at os.access.
  monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == wd
                      else real_access(p, mode))
  line = _refused(capsys, ["search", "--config", DARTS, "--workdir", str(wd)], watch=tmp_path)
  assert str(wd) in line and "not writable" in line
  line = _refused(capsys, ["search", "--config", DARTS, "--workdir", str(wd / "new")],
                  watch=tmp_path)
  assert "not writable" in line


# ---------------------------------------------------------------------------
# Genotypes (jnas train, jnas info)
# ---------------------------------------------------------------------------


def _darts_genotype(change) -> dict:
  from jnas.spaces.darts import GENOTYPES, DartsSpace

  g = DartsSpace().genotype_to_json(GENOTYPES["DARTS_V2"])
  change(g)
  return g


GENOTYPE_PROBES = [
    ("input_1.7", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", 1.7]), "1.7"),
    ("input_string", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", "1"]), "'1'"),
    ("input_bool", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", True]), "True"),
    ("input_out_of_range", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", 9]), "9"),
    ("input_twice", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", 0]), "twice"),
    ("all_none", lambda g: g.__setitem__("reduce", [["none", i % 2] for i in range(8)]),
     "only 'none' ops"),
    ("empty_concat", lambda g: g.__setitem__("normal_concat", []), "normal_concat is empty"),
    ("concat_twice", lambda g: g.__setitem__("reduce_concat", [2, 2]), "twice"),
    ("pair_as_string", lambda g: g["normal"].__setitem__(1, "s1"), "'s1'"),
    ("triple", lambda g: g["normal"].__setitem__(1, ["sep_conv_3x3", 0, 1]), "pair"),
    ("unknown_op", lambda g: g["normal"].__setitem__(1, ["conv_9x9", 1]), "conv_9x9"),
    ("cell_not_list", lambda g: g.__setitem__("normal", 3), "'normal'"),
    ("too_few", lambda g: g.__setitem__("normal", g["normal"][:3]), "pairs"),
    ("other_space", lambda g: g.__setitem__("space", "nb201"), "nb201"),
]


@pytest.mark.parametrize("name,change,expect", GENOTYPE_PROBES,
                         ids=[n for n, _, _ in GENOTYPE_PROBES])
def test_train_and_info_refuse_bad_darts_genotypes(stand_in_run, tmp_path, capsys, name, change,
                                                   expect):
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps(_darts_genotype(change)))
  wd = tmp_path / "run"
  line = _refused(capsys, ["train", "--config", DARTS, "--workdir", str(wd),
                           "--genotype", str(path)], watch=wd)
  assert expect in line
  line = _refused(capsys, ["info", "--config", DARTS, "--genotype", str(path)])
  assert expect in line


OTHER_GENOTYPES = [
    # (config, genotype argument, or a file's text; text the error must contain)
    (DARTS, "NOT_A_NAME", "unknown genotype"),
    (DARTS, ("g.json", "{not json"), "not valid JSON"),
    (DARTS, ("g.json", "[" * 100_000), "nested too deeply"),
    (DARTS, ("g.json", b"\xff\xfe"), "g.json"),
    (DARTS, "missing.json", "missing.json"),
    (DARTS, ("dir.json", None), "dir.json"),
    (NB201, "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|", "node 3"),
    (NB201, "|nor_conv_3x3~0|+|none~0|none~1|", "node groups"),
    (NB201, "|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "reads input"),
    (NB201, ("g.json", '{"arch": 5}'), "must be a str"),
]


@pytest.mark.parametrize("config,genotype,expect", OTHER_GENOTYPES,
                         ids=[f"{Path(c).stem}-{i}" for i, (c, _, _) in enumerate(OTHER_GENOTYPES)])
def test_train_refuses_other_bad_genotypes(stand_in_run, tmp_path, capsys, config, genotype,
                                           expect):
  if isinstance(genotype, tuple):
    name, text = genotype
    path = tmp_path / name
    if text is None:
      path.mkdir()
    elif isinstance(text, bytes):
      path.write_bytes(text)
    else:
      path.write_text(text)
    genotype = str(path)
  wd = tmp_path / "run"
  line = _refused(capsys, ["train", "--config", config, "--workdir", str(wd),
                           "--genotype", genotype], watch=wd)
  assert expect in line


# ---------------------------------------------------------------------------
# jnas tabular and jnas compare
# ---------------------------------------------------------------------------

TABULAR = ["tabular", "--arch-column", "arch_str", "--signal-column", "val_acc",
           "--report-column", "test_acc", "--cost-column", "train_seconds"]


@pytest.mark.parametrize("extra,expect", [
    (["--out", "{tmp}"], "is a directory"),
    (["--out", "{tmp}/a_file/out.json"], "is a file"),
    (["--runs", "0"], "--runs 0"),
    (["--budget", "nan"], "--budget nan"),
    (["--cost-scale", "-1"], "--cost-scale"),
])
def test_tabular_refuses_before_replaying(tmp_path, capsys, extra, expect):
  (tmp_path / "a_file").write_text("x")
  table = _nb201_table(tmp_path / "t" / "table.csv")
  argv = TABULAR + ["--table", str(table)] + [e.format(tmp=tmp_path) for e in extra]
  line = _refused(capsys, argv, watch=tmp_path)
  assert expect in line


@pytest.mark.parametrize("extra,expect", [
    (["--seeds", "0"], "--seeds 0"),
    (["--strategies", "darts,bogus"], "bogus"),
    (["--strategies", ","], "no strategy"),
    (["--config.search.epochs=0"], "search.epochs=0"),
])
def test_compare_refuses_before_any_run(stand_in_run, tmp_path, capsys, extra, expect):
  wd = tmp_path / "cmp"
  line = _refused(capsys, ["compare", "--config", DARTS, "--workdir", str(wd)] + extra, watch=wd)
  assert expect in line


# ---------------------------------------------------------------------------
# jnas bench: damaged tables and work directories
# ---------------------------------------------------------------------------

_HEADER = ["arch_str", "canonical", "val_acc", "test_acc", "train_seconds"]


def _nb201_table(path: Path, rows: list[list[str]] | None = None) -> Path:
  """A small table of three cells (a partial table is allowed: bench notes its coverage)."""
  from jnas.spaces.nb201 import NB201Space

  space = NB201Space()
  if rows is None:
    rows = [[space.format(space.decode_indices([k] * 6)), str(k), f"0.{k + 5}", f"0.{k + 4}",
             "1.0"] for k in range(3)]
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(_HEADER)
    w.writerows(rows)
  (path.parent / "protocol.json").write_text(json.dumps({"dataset": "mnist1d"}))
  return path


@pytest.fixture
def nb201_workdir(tmp_path) -> Path:
  """A finished-looking NB201 work directory (config, genotype, supernet weights), no training."""
  from jnas.config import config_to_dict, load_config
  from jnas.spaces.nb201 import NB201Space

  wd = tmp_path / "nb201_run"
  wd.mkdir()
  (wd / "config.json").write_text(json.dumps(config_to_dict(
      load_config(str(ROOT / "experiments/nb201_table_search.py")))))
  space = NB201Space()
  (wd / "genotype.json").write_text(space.genotype_dumps(space.decode_indices([1] * 6)))
  np.savez(wd / "supernet.npz", **{"['params']['w']": np.ones((64, 64), np.float32)})
  return wd


def _bench(capsys, wd: Path, table: Path, *extra: str) -> str:
  return _refused(capsys, ["bench", str(wd), "--table", str(table), *extra], watch=wd.parent)


def test_bench_refuses_a_table_cut_mid_row(nb201_workdir, tmp_path, capsys):
  table = _nb201_table(tmp_path / "cut" / "table.csv")
  text = table.read_text()
  table.write_text(text[:len(text) - 12])
  line = _bench(capsys, nb201_workdir, table)
  assert "line 4" in line and "fields" in line


def test_bench_refuses_a_short_row_and_a_long_row(nb201_workdir, tmp_path, capsys):
  good = _nb201_table(tmp_path / "good" / "table.csv")
  rows = list(csv.reader(good.open()))[1:]
  short = _nb201_table(tmp_path / "short" / "table.csv", [rows[0], rows[1][:3], rows[2]])
  assert "line 3" in _bench(capsys, nb201_workdir, short)
  long = _nb201_table(tmp_path / "long" / "table.csv", [rows[0], rows[1] + ["x"], rows[2]])
  assert "line 3" in _bench(capsys, nb201_workdir, long)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "", "abc"])
def test_bench_refuses_accuracies_that_are_not_numbers(nb201_workdir, tmp_path, capsys, value):
  good = _nb201_table(tmp_path / "good" / "table.csv")
  rows = list(csv.reader(good.open()))[1:]
  rows[1][3] = value
  table = _nb201_table(tmp_path / "nan" / "table.csv", rows)
  line = _bench(capsys, nb201_workdir, table)
  assert "line 3" in line and "test_acc" in line and "not a finite number" in line


def test_bench_refuses_bad_samples(nb201_workdir, tmp_path, capsys):
  table = _nb201_table(tmp_path / "t" / "table.csv")
  assert "--sample -5" in _bench(capsys, nb201_workdir, table, "--sample", "-5")
  line = _bench(capsys, nb201_workdir, table, "--sample", "4")
  assert "sample=4" in line and "3 unique cells" in line


def test_bench_refuses_a_truncated_supernet(nb201_workdir, tmp_path, capsys):
  table = _nb201_table(tmp_path / "t" / "table.csv")
  data = (nb201_workdir / "supernet.npz").read_bytes()
  (nb201_workdir / "supernet.npz").write_bytes(data[:len(data) // 2])
  line = _bench(capsys, nb201_workdir, table, "--sample", "2")
  assert "supernet.npz" in line and "truncated or damaged" in line


def test_bench_refuses_damaged_work_directory_files(nb201_workdir, tmp_path, capsys):
  table = _nb201_table(tmp_path / "t" / "table.csv")
  assert "does not exist" in _bench(capsys, tmp_path / "nowhere", table)
  (nb201_workdir / "genotype.json").write_text('{"arch": "|none~0|+|')
  assert "genotype.json" in _bench(capsys, nb201_workdir, table, "--sample", "0")
  (nb201_workdir / "config.json").write_text("{")
  assert "config.json" in _bench(capsys, nb201_workdir, table, "--sample", "0")
  assert "is a directory" in _bench(capsys, nb201_workdir, table.parent)


# ---------------------------------------------------------------------------
# Errors from inside a run: divergence, the file system, damaged archives
# ---------------------------------------------------------------------------


def _failing_run(monkeypatch, search):
  import jnas

  fake = types.ModuleType("jnas.run")
  fake.search = fake.train = search
  monkeypatch.setitem(sys.modules, "jnas.run", fake)
  monkeypatch.setattr(jnas, "run", fake, raising=False)  # unset until jnas.run is imported


def test_divergence_names_the_last_good_epoch_and_its_checkpoint(tmp_path, capsys, monkeypatch):
  wd = tmp_path / "run"

  def search(config, workdir):
    (wd / "checkpoints" / "search" / "62").mkdir(parents=True)
    with open(wd / "metrics.jsonl", "w") as f:
      for epoch in (1, 2):
        f.write(json.dumps({"step": 31 * epoch, "phase": "search", "epoch": epoch}) + "\n")
    raise FloatingPointError("search diverged in search epoch 3/10: train loss is NaN/inf")

  _failing_run(monkeypatch, search)
  rc = cli.main(["search", "--config", DARTS, "--workdir", str(wd)])
  lines = capsys.readouterr().err.splitlines()
  assert rc == 2 and len(lines) == 1, lines
  assert lines[0].startswith("jnas: error: search diverged in search epoch 3/10")
  assert "last good search epoch is 2" in lines[0]
  assert f"{wd / 'checkpoints' / 'search' / '62'} is kept" in lines[0]


def test_divergence_of_the_retraining_and_of_a_first_epoch(tmp_path, capsys, monkeypatch):
  wd = tmp_path / "run"

  def train(config, workdir, genotype=None):
    wd.mkdir(exist_ok=True)
    if (wd / "metrics.jsonl").exists():
      (wd / "checkpoints" / "retrain" / "4").mkdir(parents=True)
      with open(wd / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "phase": "retrain", "retrain_loss": 1.0}) + "\n")
      raise FloatingPointError("retraining diverged at epoch 4: loss is NaN/inf")
    (wd / "metrics.jsonl").write_text("")
    raise FloatingPointError("search diverged in search epoch 1/10: train loss is NaN/inf")

  _failing_run(monkeypatch, train)
  assert cli.main(["search", "--config", DARTS, "--workdir", str(wd)]) == 2
  line = capsys.readouterr().err.strip()
  assert "no search epoch finished, so nothing is kept" in line and "\n" not in line
  assert cli.main(["search", "--config", DARTS, "--workdir", str(wd)]) == 2
  line = capsys.readouterr().err.strip()
  assert "last good retrain epoch is 4" in line and "checkpoints/retrain/4 is kept" in line


@pytest.mark.parametrize("error,expect", [
    (PermissionError(13, "Permission denied", "/x/run/metrics.jsonl"),
     "/x/run/metrics.jsonl: Permission denied"),
    (OSError(28, "No space left on device", "/x/run/ckpt"), "/x/run/ckpt: No space left"),
    (IsADirectoryError(21, "Is a directory", "/x/run/genotype.json"), "/x/run/genotype.json"),
    (__import__("zipfile").BadZipFile("File is not a zip file"), "not a readable .npz"),
])
def test_file_system_errors_are_one_line_naming_the_path(tmp_path, capsys, monkeypatch, error,
                                                         expect):
  def search(config, workdir):
    raise error

  _failing_run(monkeypatch, search)
  rc = cli.main(["search", "--config", DARTS, "--workdir", str(tmp_path / "run")])
  lines = capsys.readouterr().err.splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("jnas: error: "), lines
  assert expect in lines[0]


# ---------------------------------------------------------------------------
# What the checks rely on
# ---------------------------------------------------------------------------


def test_spos_on_a_darts_config_gets_spos_settings(tmp_path, capsys, monkeypatch):
  """``--config.search.strategy=spos`` on a DARTS config: the locked config once refused SPOS's
  defaults; the search must receive a complete config that its own defaults leave unchanged."""
  from jnas.config import config_hash
  from jnas.search.spos import add_spos_defaults

  got = {}

  def search(config, workdir):
    got["config"] = config
    return {}

  _failing_run(monkeypatch, search)
  assert cli.main(["search", "--config", DARTS, "--workdir", str(tmp_path / "run"),
                   "--config.search.strategy=spos"]) == 0
  config = got["config"]
  assert config.search.pool_size == 4096 and config.evolution.population == 50
  assert config.is_locked
  again = copy.deepcopy(config)
  add_spos_defaults(again)  # what jnas.search.dispatch does: must not touch a complete config
  assert config_hash(again) == config_hash(config)
  # SPOS's settings can be overridden on that config too, and are validated.
  assert cli.main(["search", "--config", DARTS, "--workdir", str(tmp_path / "run"),
                   "--config.search.strategy=spos", "--config.evolution.top_k=3",
                   "--config.search.pool_size=16"]) == 0
  assert got["config"].evolution.top_k == 3 and got["config"].search.pool_size == 16
  line = _refused(capsys, ["search", "--config", DARTS, "--workdir", str(tmp_path / "run"),
                           "--config.search.strategy=spos", "--config.evolution.top_k=0"])
  assert "evolution.top_k=0" in line
  # Without SPOS the section is not there to override.
  assert "unknown config key 'evolution.top_k'" in _refused(
      capsys, ["search", "--config", DARTS, "--workdir", str(tmp_path / "run"),
               "--config.evolution.top_k=3"])


def test_dataset_sizes_match_the_datasets():
  from jnas.data import load_dataset
  from jnas.validate import dataset_train_size

  for name in ("digits", "mnist1d"):
    assert dataset_train_size(name) == len(load_dataset(name).x_train), name


def test_gradient_strategy_names_match_the_registry():
  from jnas import validate
  from jnas.strategies.registry import GRADIENT_STRATEGIES

  assert validate._GRADIENT_STRATEGIES == GRADIENT_STRATEGIES


@pytest.mark.parametrize("config", [DARTS, NB201, FBNET, SPOS,
                                    str(ROOT / "experiments/gdas_mnist1d.py"),
                                    str(ROOT / "experiments/darts_cifar10.py"),
                                    str(ROOT / "experiments/nb201_table_search.py")])
def test_the_shipped_configs_pass_strict_validation(config):
  from jnas.config import load_config
  from jnas.validate import validate_config

  cfg = load_config(config)
  for command in ("search", "train", "info"):
    validate_config(cfg, command, strict=True)


def test_strict_validation_requires_what_every_run_reads():
  import ml_collections

  from jnas.config import ConfigError
  from jnas.validate import validate_config

  cfg = ml_collections.ConfigDict({"search": {"epochs": 3}})
  validate_config(cfg, strict=False)
  with pytest.raises(ConfigError, match="lacks space.name, data.name, search.strategy"):
    validate_config(cfg)


def test_metrics_jsonl_is_strict_json(tmp_path):
  from jnas.utils.metrics import MetricWriter, read_metrics, replace_phase

  def strict(text):
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in {line}"))
            for line in text.splitlines()]

  with MetricWriter(str(tmp_path)) as w:
    record = w.write(1, phase="search", val_loss=float("nan"), lat=float("inf"), acc=0.5)
  assert record["val_loss"] is None and record["lat"] is None and record["acc"] == 0.5
  assert strict((tmp_path / "metrics.jsonl").read_text())[0]["val_loss"] is None
  replace_phase(str(tmp_path), "search", [{"step": 1, "phase": "search", "x": float("-inf")}])
  assert strict((tmp_path / "metrics.jsonl").read_text()) == read_metrics(str(tmp_path))
