"""Tests for jnas.config, jnas.utils.{metrics,progress} and jnas.cli."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from jnas import cli
from jnas.config import (
    ConfigError,
    apply_overrides,
    config_hash,
    config_to_dict,
    load_config,
)
from jnas.utils import metrics as metrics_mod
from jnas.utils import progress as progress_mod
from jnas.utils.metrics import MetricWriter, read_metrics, write_json_atomic
from jnas.utils.progress import progress

REPO_ROOT = Path(__file__).resolve().parents[1]

CONFIG_SRC = textwrap.dedent(
    """
    import ml_collections
    from ml_collections import config_dict

    from _jnas_test_base import base_lr


    def get_config():
        config = ml_collections.ConfigDict()
        config.search = ml_collections.ConfigDict()
        config.search.epochs = 50
        config.search.batch_size = 64
        config.retrain = ml_collections.ConfigDict()
        config.retrain.enabled = True
        config.optim = ml_collections.ConfigDict()
        config.optim.lr = base_lr()
        config.data = ml_collections.ConfigDict()
        config.data.name = "mnist1d"
        config.model = ml_collections.ConfigDict()
        config.model.shape = (1, 2, 3)
        config.model.ops = ("conv", "skip")
        config.model.widths = [8, 16]
        config.model.C = 8
        config.model.init = None
        config.model.seed = config_dict.placeholder(int)
        return config
    """
)


@pytest.fixture
def config_path(tmp_path: Path) -> str:
    # The sibling module checks that load_config lets configs import their
    # neighbours, as flax-example configs commonly do.
    (tmp_path / "_jnas_test_base.py").write_text("def base_lr():\n    return 0.025\n")
    path = tmp_path / "tiny.py"
    path.write_text(CONFIG_SRC)
    return str(path)


@pytest.fixture
def config(config_path: str) -> ml_collections.ConfigDict:
    return load_config(config_path)


# ---------------------------------------------------------------------------
# load_config
# ---------------------------------------------------------------------------


def test_load_config_reads_nested_fields(config):
    assert config.search.epochs == 50
    assert config.retrain.enabled is True
    assert config.optim.lr == pytest.approx(0.025)
    assert config.data.name == "mnist1d"
    assert config.model.shape == (1, 2, 3)


def test_load_config_does_not_leak_sys_path(config_path):
    before = list(sys.path)
    load_config(config_path)
    assert sys.path == before
    assert "_jnas_test_base" not in sys.modules


def test_load_config_with_argument(tmp_path):
    path = tmp_path / "witharg.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config(arg='a'):\n"
        "    return ml_collections.ConfigDict({'variant': arg})\n"
    )
    assert load_config(f"{path}:b").variant == "b"


def test_load_config_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    msg = str(info.value)
    assert "nope.py" in msg and "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_load_config_without_get_config(tmp_path):
    path = tmp_path / "empty_cfg.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="empty_cfg.py.*get_config"):
        load_config(str(path))


def test_load_config_import_error_is_config_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="broken.py") as info:
        load_config(str(path))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# apply_overrides
# ---------------------------------------------------------------------------


def test_override_int(config):
    new = apply_overrides(config, ["search.epochs=4"])
    assert new.search.epochs == 4 and isinstance(new.search.epochs, int)


@pytest.mark.parametrize(
    "text, expected",
    [("false", False), ("TRUE", True), ("0", False), ("1", True), ("no", False), ("Yes", True)],
)
def test_override_bool(config, text, expected):
    assert apply_overrides(config, [f"retrain.enabled={text}"]).retrain.enabled is expected


def test_override_float_accepts_int_and_float(config):
    assert apply_overrides(config, ["optim.lr=0.1"]).optim.lr == pytest.approx(0.1)
    new = apply_overrides(config, ["optim.lr=1"])
    assert new.optim.lr == 1.0 and isinstance(new.optim.lr, float)
    assert apply_overrides(config, ["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)


def test_override_str(config):
    assert apply_overrides(config, ["data.name=digits"]).data.name == "digits"
    # A str field keeps digits as text rather than turning them into an int.
    assert apply_overrides(config, ["data.name=123"]).data.name == "123"


@pytest.mark.parametrize("text", ["(4,5)", "4,5", "[4, 5]", " (4, 5) "])
def test_override_tuple(config, text):
    assert apply_overrides(config, [f"model.shape={text}"]).model.shape == (4, 5)


def test_override_tuple_of_bare_strings_and_list(config):
    new = apply_overrides(config, ["model.ops=conv,pool,skip", "model.widths=4,8,16"])
    assert new.model.ops == ("conv", "pool", "skip")
    assert new.model.widths == [4, 8, 16]


def test_override_none_able_fields(config):
    new = apply_overrides(config, ["model.init=he", "model.seed=3"])
    assert new.model.init == "he"
    assert new.model.seed == 3
    new = apply_overrides(config, ["model.seed=none", "model.init=null"])
    assert new.model.seed is None and new.model.init is None
    with pytest.raises(ConfigError, match="model.seed"):
        apply_overrides(config, ["model.seed=abc"])


def test_overrides_return_locked_copy(config):
    new = apply_overrides(config, ["search.epochs=4", "search.epochs=5"])
    assert new.search.epochs == 5
    assert config.search.epochs == 50
    assert new.is_locked
    with pytest.raises(AttributeError):
        new.search.new_field = 1


def test_override_propagates_through_field_reference():
    base = ml_collections.ConfigDict({"search": {"epochs": 50}, "retrain": {}})
    base.retrain.epochs = base.search.get_ref("epochs")
    new = apply_overrides(base, ["search.epochs=4"])
    assert new.retrain.epochs == 4
    assert base.retrain.epochs == 50


def test_unknown_key_suggests_close_match(config):
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, ["search.epoch=4"])
    msg = str(info.value)
    assert "\n" not in msg
    assert "'search.epoch'" in msg
    assert "did you mean 'search.epochs'?" in msg
    assert "batch_size, epochs" in msg


def test_unknown_top_level_key(config):
    with pytest.raises(ConfigError, match="did you mean 'search'.*top-level keys"):
        apply_overrides(config, ["serch.epochs=4"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("search.epochs=four", "int"),
        ("search.epochs=4.5", "int"),
        ("retrain.enabled=maybe", "bool"),
        ("optim.lr=fast", "float"),
        ("model.shape=1.5,2", "tuple of int"),
    ],
)
def test_bad_value(config, override, expected):
    key, value = override.split("=", 1)
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, [override])
    msg = str(info.value)
    assert "\n" not in msg
    assert key in msg and value in msg and expected in msg


def test_malformed_override_and_group_override(config):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(config, ["search.epochs"])
    with pytest.raises(ConfigError, match="is a group"):
        apply_overrides(config, ["search=1"])


def test_config_to_dict_and_hash(config):
    d = config_to_dict(config)
    assert d["model"]["shape"] == [1, 2, 3]
    json.dumps(d)  # must be serialisable
    h = config_hash(config)
    assert len(h) == 12 and int(h, 16) >= 0
    assert config_hash(apply_overrides(config, [])) == h
    assert config_hash(apply_overrides(config, ["search.epochs=4"])) != h


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def test_metric_writer_and_read_metrics(tmp_path):
    workdir = tmp_path / "run"
    with MetricWriter(str(workdir)) as w:
        w.write(1, loss=np.float32(0.5), acc=np.array(0.75), n=np.int64(3), ok=True)
        w.write(2, loss=0.25)
    recs = read_metrics(str(workdir))
    assert [r["step"] for r in recs] == [1, 2]
    assert recs[0]["loss"] == pytest.approx(0.5) and isinstance(recs[0]["loss"], float)
    assert recs[0]["n"] == 3 and isinstance(recs[0]["n"], int)
    assert recs[0]["ok"] is True
    assert isinstance(recs[0]["time"], float)


def test_metric_writer_flushes_each_line(tmp_path):
    w = MetricWriter(str(tmp_path))
    w.write(7, loss=1.0)
    # Read while the writer is still open, as after a kill.
    assert read_metrics(str(tmp_path))[0]["step"] == 7
    w.close()


def test_metric_writer_rejects_non_scalars(tmp_path):
    with MetricWriter(str(tmp_path)) as w:
        with pytest.raises(TypeError):
            w.write(0, loss=np.zeros(3))
        with pytest.raises(ValueError):
            w.write(0, time=1.0)


def test_read_metrics_skips_truncated_last_line(tmp_path):
    with MetricWriter(str(tmp_path)) as w:
        w.write(1, loss=0.5)
    path = tmp_path / metrics_mod.METRICS_FILENAME
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # a kill mid-write
    recs = read_metrics(str(tmp_path))
    assert [r["step"] for r in recs] == [1]
    # A resumed writer starts on a fresh line, so the torn line stays isolated.
    with MetricWriter(str(tmp_path)) as w:
        w.write(3, loss=0.1)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 3]


def test_read_metrics_missing_file(tmp_path):
    assert read_metrics(str(tmp_path)) == []


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "genotype.json"
    write_json_atomic(str(path), {"normal": [("sep_conv_3x3", 0)], "x": np.float32(1.5)})
    assert json.loads(path.read_text()) == {"normal": [["sep_conv_3x3", 0]], "x": 1.5}
    assert path.read_text().startswith('{\n  "normal"')
    write_json_atomic(str(path), {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(os.listdir(path.parent)) == ["genotype.json"]  # no temp files left


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic(str(path), {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["report.json"]


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------


def test_progress_lines_mode(monkeypatch, capsys):
    monkeypatch.setenv("JNAS_PROGRESS", "lines")
    monkeypatch.setattr(progress_mod, "_LINE_INTERVAL_S", 3600.0)
    with progress(total=400, desc="search", unit="step") as p:
        for _ in range(120):
            p.update(1)
        p.set_postfix(loss=np.float32(0.51))
    err = capsys.readouterr().err.strip().splitlines()
    # Only a start and an end line: the interval throttles the rest.
    assert len(err) == 2
    assert err[0].startswith("search: 0/400 (0%)")
    assert "search: 120/400 (30%)" in err[1] and "s elapsed" in err[1]
    assert "loss=0.51" in err[1]
    assert "stopped" not in err[1]


def test_progress_lines_mode_periodic_and_iterable(monkeypatch, capsys):
    monkeypatch.setenv("JNAS_PROGRESS", "lines")
    monkeypatch.setattr(progress_mod, "_LINE_INTERVAL_S", 0.0)
    items = list(progress(range(3), desc="train"))
    assert items == [0, 1, 2]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("train: 0/3")
    assert any(line.startswith("train: 2/3 (67%)") for line in err)
    assert err[-1].startswith("train: 3/3 (100%)") and "done" in err[-1]


def test_progress_off_mode(monkeypatch, capsys):
    monkeypatch.setenv("JNAS_PROGRESS", "off")
    p = progress(total=5, desc="quiet")
    with p:
        p.update(5)
        p.set_postfix(loss=1.0)
    assert p.n == 5
    assert list(progress([1, 2])) == [1, 2]
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_default_is_lines_when_not_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("JNAS_PROGRESS", raising=False)
    # capsys replaces stderr with a non-TTY stream, like CI.
    with progress(total=2, desc="ci") as p:
        p.update(2)
    err = capsys.readouterr().err
    assert "ci: 2/2 (100%)" in err


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


@pytest.fixture
def fake_run(monkeypatch):
    calls: dict = {}

    def search(config, workdir):
        calls["search"] = (config, workdir)
        return {"best_genotype": "g1", "val_acc": 0.91234567}

    def train(config, workdir, genotype):
        calls["train"] = (config, workdir, genotype)
        return {"test_acc": 0.9}

    def info(config, genotype):
        calls["info"] = (config, genotype)
        if genotype == "bad":
            raise ValueError("unknown genotype 'bad'\n(see jnas info --help)")
        return {"genotype": genotype, "params": 12345, "ops": ["conv", "skip"]}

    fake = types.ModuleType("jnas.run")
    fake.search, fake.train, fake.info = search, train, info
    monkeypatch.setitem(sys.modules, "jnas.run", fake)
    import jnas

    monkeypatch.setattr(jnas, "run", fake, raising=False)
    return calls


def test_cli_search_passes_overrides(config_path, tmp_path, fake_run, capsys):
    workdir = str(tmp_path / "w")
    rc = cli.main([
        "search", "--config", config_path, "--workdir", workdir,
        "--config.search.epochs=4", "--config.retrain.enabled", "false",
        "--config.optim.lr", "-0.5", "--config.model.shape=(2,2)",
    ])
    assert rc == 0
    config, got_workdir = fake_run["search"]
    assert got_workdir == workdir
    assert config.search.epochs == 4
    assert config.retrain.enabled is False
    assert config.optim.lr == pytest.approx(-0.5)
    assert config.model.shape == (2, 2)
    out = capsys.readouterr().out.splitlines()
    assert out == ["best_genotype: g1", "val_acc:       0.912346"]


def test_cli_train_genotype(config_path, tmp_path, fake_run):
    assert cli.main(["train", "--config", config_path, "--workdir", str(tmp_path)]) == 0
    assert fake_run["train"][2] is None
    args = ["train", "--config", config_path, "--workdir", str(tmp_path), "--genotype", "g.json"]
    assert cli.main(args) == 0
    assert fake_run["train"][2] == "g.json"


def test_cli_info_json(config_path, fake_run, capsys):
    rc = cli.main(["info", "--config", config_path, "--genotype", "darts_v2", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"genotype": "darts_v2", "params": 12345, "ops": ["conv", "skip"]}


def test_cli_info_text(config_path, fake_run, capsys):
    assert cli.main(["info", "--config", config_path, "--genotype", "g"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "genotype: g"
    assert out[1] == "params:   12345"
    assert out[2] == 'ops:      ["conv", "skip"]'


def test_cli_value_error_is_one_line(config_path, fake_run, capsys, monkeypatch):
    monkeypatch.delenv("JNAS_DEBUG", raising=False)
    rc = cli.main(["info", "--config", config_path, "--genotype", "bad"])
    assert rc == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("jnas:")]
    assert lines == ["jnas: error: unknown genotype 'bad' (see jnas info --help)"]
    assert "Traceback" not in err


def test_cli_config_errors(config_path, tmp_path, fake_run, capsys):
    rc = cli.main(["search", "--config", config_path, "--workdir", str(tmp_path),
                   "--config.search.epoch=4"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "jnas: error: unknown config key 'search.epoch'" in err
    assert "search" not in fake_run
    rc = cli.main(["search", "--config", str(tmp_path / "missing.py"), "--workdir", "w"])
    assert rc == 2
    assert "missing.py" in capsys.readouterr().err


def test_cli_unknown_argument_is_usage_error(config_path, fake_run, capsys):
    rc = cli.main(["search", "--config", config_path, "--workdir", "w", "--epochs", "3"])
    assert rc == 2
    assert "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    rc = cli.main(["search", "--config", config_path, "--workdir", "w", "--config.x"])
    assert rc == 2
    assert "missing value" in capsys.readouterr().err
    assert "search" not in fake_run


def test_cli_keyboard_interrupt(config_path, tmp_path, monkeypatch, capsys):
    def search(config, workdir):
        raise KeyboardInterrupt

    fake = types.ModuleType("jnas.run")
    fake.search = search
    monkeypatch.setitem(sys.modules, "jnas.run", fake)
    import jnas

    # `import jnas.run as run` reads the package attribute once jnas.run was
    # imported for real by an earlier test, so patch that too.
    monkeypatch.setattr(jnas, "run", fake, raising=False)
    rc = cli.main(["search", "--config", config_path, "--workdir", str(tmp_path)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err


def test_cli_help_exits_zero_without_jax():
    code = (
        "import sys\n"
        "from jnas.cli import main\n"
        "rc = main(['--help'])\n"
        "assert rc == 0, rc\n"
        "assert 'jax' not in sys.modules, 'jax imported for --help'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_python_m_jnas_help():
    proc = subprocess.run(
        [sys.executable, "-m", "jnas", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "search" in proc.stdout and "train" in proc.stdout and "info" in proc.stdout
