"""``jnas bench``: a NAS-Bench-201 search's work directory scored on an exhaustive table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jnas import run
from jnas.cli import main
from jnas.config import apply_overrides, load_config
from jnas.nb201_table import (bench_workdir, format_bench, genotype_at, load_nb201_table,
                                         rank_correlation, sample_cells, unique_cells)
from jnas.search.workdir import load_supernet
from jnas.spaces.nb201 import NB201Space
from jnas.strategies.mitigations import skip_connect_stop

SPACE = NB201Space()


def _write_table(path: Path, dataset: str = "mnist1d") -> Path:
  """A complete synthetic table: every string, one accuracy per unique cell (more convs, higher)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  rows = []
  for key, members in sorted(unique_cells(SPACE).items()):
    ops = genotype_at(members[0], SPACE).ops
    acc = 0.5 + 0.05 * sum(op.startswith("nor_conv") for op in ops) + 0.01 * rng.random()
    rows += [(SPACE.format(genotype_at(n, SPACE)), key, acc) for n in members]
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arch_str", "canonical", "val_acc", "test_acc", "train_seconds", "params"])
    for arch, key, acc in sorted(rows):
      w.writerow([arch, key, f"{acc - 0.01:.4f}", f"{acc:.4f}", "0.5", "100"])
  (path.parent / "protocol.json").write_text(json.dumps({"dataset": dataset}))
  return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
  return _write_table(tmp_path_factory.mktemp("table") / "t" / "table.csv")


def _tiny(strategy: str, epochs: int = 1):
  cfg = load_config("experiments/nb201_table_search.py")
  return apply_overrides(cfg, [
      f"search.strategy={strategy}", f"search.epochs={epochs}", "search.batch_size=256",
      "search.channels=4", "search.pool_size=16", "evolution.population=4",
      "evolution.top_k=2", "evolution.evals=8", "evolution.calib_batches=1",
      "evolution.val_batches=1"])


@pytest.fixture(scope="module")
def spos_run(tmp_path_factory) -> Path:
  wd = tmp_path_factory.mktemp("spos") / "run"
  run.search(_tiny("spos"), str(wd))
  return wd


def test_rank_correlation_and_sample():
  assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == {
      "cells": 4, "kendall_tau": 1.0, "spearman_rho": pytest.approx(1.0)}
  assert rank_correlation([1, 2, 3], [3, 2, 1])["kendall_tau"] == pytest.approx(-1.0)
  assert rank_correlation([1, 1, 1], [1, 2, 3])["kendall_tau"] is None


def test_table_loads_and_samples_distinct_cells(table):
  t = load_nb201_table(table)
  assert len(t.arch) == SPACE.num_architectures and t.dataset == "mnist1d"
  cells = sample_cells(t, 50, seed=3)
  assert cells == sample_cells(t, 50, seed=3) and len(cells) == 50
  assert len({t.canonical[t.row[c]] for c in cells}) == 50


def test_bench_scores_a_spos_search(spos_run, table):
  t = load_nb201_table(table)
  r = bench_workdir(spos_run, t, sample=60)
  arch = json.loads((spos_run / "genotype.json").read_text())["arch"]
  assert r["arch"] == arch and r["strategy"] == "spos"
  found = t.test_acc[t.row[arch]]
  assert r["test_acc"] == pytest.approx(found)
  unique = t.unique_test_acc()
  assert r["rank"] == 1 + sum(v > found for v in unique.values())
  assert r["percentile"] == pytest.approx(100 * np.mean(t.test_acc < found))
  assert r["regret"] == pytest.approx(t.test_acc.max() - found)
  shared = r["correlation"]["shared_weights"]
  assert shared["cells"] == 60 and -1 <= shared["kendall_tau"] <= 1
  assert "alpha" not in r["correlation"]  # SPOS has no continuous alpha
  text = format_bench(r)
  assert arch in text and "Kendall tau" in text


def test_supernet_weights_round_trip(spos_run):
  from jnas.data import load_dataset
  from jnas.search.common import build_space, build_supernet
  from jnas.supernet.functional import split_model

  cfg = _tiny("spos")
  space = build_space(cfg)
  fresh = split_model(build_supernet(cfg, space, load_dataset("mnist1d", seed=42)))
  params, stats = load_supernet(spos_run, fresh.params, fresh.state)
  with np.load(spos_run / "supernet.npz") as f:
    assert len(f.files) == len(jax.tree.leaves(params)) + len(jax.tree.leaves(stats))
  bigger = split_model(build_supernet(apply_overrides(cfg, ["search.channels=8"]), space,
                                      load_dataset("mnist1d", seed=42)))
  with pytest.raises(ValueError, match="has shape"):
    load_supernet(spos_run, bigger.params, bigger.state)


def test_cli_bench_prints_and_refuses_in_one_line(spos_run, table, tmp_path, capsys):
  assert main(["bench", str(spos_run), "--table", str(table), "--sample", "0", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["arch"] == json.loads((spos_run / "genotype.json").read_text())["arch"]

  # A work directory of another space.
  other = tmp_path / "darts_run"
  other.mkdir()
  cfg = json.loads((spos_run / "config.json").read_text())
  cfg["space"] = {"name": "darts", "num_nodes": 4}
  (other / "config.json").write_text(json.dumps(cfg))
  assert main(["bench", str(other), "--table", str(table)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "'darts' space" in err

  # A table of another space (DARTS-style op names).
  bad = tmp_path / "bad" / "table.csv"
  bad.parent.mkdir()
  bad.write_text("arch_str,canonical,val_acc,test_acc,train_seconds\n"
                 "|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,x,0.5,0.5,1\n")
  assert main(["bench", str(spos_run), "--table", str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "not a cell of this NAS-Bench-201 space" in err

  # A table of another dataset.
  digits = _write_table(tmp_path / "digits" / "table.csv", dataset="digits")
  assert main(["bench", str(spos_run), "--table", str(digits), "--sample", "0"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "'digits'" in err


def test_skip_connect_stop_counts_nb201_edges():
  stop = skip_connect_stop(SPACE, max_skips=2)
  enc = lambda ops: SPACE.genotype_to_encoding(SPACE.parse(
      "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)))
  assert not stop(enc(["skip_connect"] + ["nor_conv_3x3"] * 5))
  assert stop(enc(["skip_connect"] * 2 + ["nor_conv_3x3"] * 4))


def test_darts_plus_early_stop_ends_the_search(tmp_path, monkeypatch):
  """The gradient loop asks the stop predicate after every epoch and ends the search there."""
  import jnas.search.gradient as gradient
  from tiny_search import CONFIG, TINY

  calls = []
  monkeypatch.setattr(gradient, "build_early_stop",
                      lambda sc, space: lambda alpha: calls.append(1) or len(calls) >= 1)
  wd = tmp_path / "run"
  assert main(["search", "--config", CONFIG, "--workdir", str(wd), *TINY]) == 0
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["search_epochs"] == 1 and len(calls) == 1
  epochs = [json.loads(l)["epoch"] for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1]
  # Rerunning the finished search changes nothing.
  assert main(["search", "--config", CONFIG, "--workdir", str(wd), *TINY]) == 0
  shutil.rmtree(wd / "checkpoints", ignore_errors=True)


def test_alpha_scores_rank_cells_by_their_log_probabilities(tmp_path):
  from jnas.nb201_table.bench import _alpha_scores

  alpha = np.zeros((6, 5), np.float32)
  alpha[:, SPACE.ops.index("nor_conv_3x3")] = 2.0
  np.savez(tmp_path / "arch_params.npz", cell=alpha)
  cells = ["|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*(["nor_conv_3x3"] * k + ["none"] * (6 - k)))
           for k in range(7)]
  scores = _alpha_scores(tmp_path, SPACE, cells)
  assert np.all(np.diff(scores) > 0)
  logp = alpha[0] - np.log(np.exp(alpha[0]).sum())
  assert scores[6] == pytest.approx(6 * logp[SPACE.ops.index("nor_conv_3x3")])


def test_yardsticks_give_the_noise_ceiling_and_free_baselines(tmp_path):
  from jnas.nb201_table.yardsticks import yardsticks

  # Two seeds: seed 1 is seed 0 plus noise, so the ceiling is what rank_correlation says of them.
  path = _write_table(tmp_path / "t" / "table.csv")
  rows = list(csv.DictReader(open(path, newline="")))
  rng = np.random.default_rng(1)
  noisy = {}
  for r in rows:
    noisy.setdefault(r["canonical"], float(r["test_acc"]) + 0.05 * rng.standard_normal())
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(rows[0]) + ["test_acc_s0", "test_acc_s1"])
    for r in rows:
      w.writerow(list(r.values()) + [r["test_acc"], f"{noisy[r['canonical']]:.4f}"])
  t = load_nb201_table(path)
  cells = sample_cells(t, 80, seed=2)
  y = yardsticks(path, cells, baselines=("params", "flops"))
  s0 = [float(t.test_acc[t.row[c]]) for c in cells]
  s1 = [round(noisy[t.canonical[t.row[c]]], 4) for c in cells]
  assert y["noise_ceiling"]["kendall_tau"] == pytest.approx(rank_correlation(s0, s1)["kendall_tau"])
  assert y["noise_ceiling"]["seeds"] == [0, 1]
  # The synthetic accuracy grows with the number of convolutions, and so do params and FLOPs.
  assert y["baselines"]["params"]["kendall_tau"] > 0.5
  assert y["baselines"]["flops"]["kendall_tau"] > 0.5
  # Cached beside the table: a second call reads the file.
  cached = list(path.parent.glob("yardsticks-*.json"))
  assert len(cached) == 1
  assert yardsticks(path, cells, baselines=("params", "flops")) == json.loads(cached[0].read_text())
  with pytest.raises(ValueError, match="not in the table"):
    yardsticks(path, ["|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|bogus~2|"],
               baselines=())


def test_format_bench_prints_yardsticks_beside_the_taus():
  r = {"workdir": "w", "strategy": "spos", "mitigations": "", "seed": 0, "arch": "a",
       "test_acc": 0.8, "val_acc": 0.8, "rank": 3, "unique_cells": 10, "percentile": 70.0,
       "regret": 0.01, "table_best_test_acc": 0.81, "table_best_arch": "b", "table_coverage": 1.0,
       "correlation": {"shared_weights": {"cells": 5, "kendall_tau": 0.2, "spearman_rho": 0.3}},
       "yardsticks": {"noise_ceiling": {"kendall_tau": 0.6, "spearman_rho": 0.8, "cells": 5,
                                        "seeds": [0, 1]},
                      "baselines": {"params": {"cells": 5, "kendall_tau": 0.3,
                                               "spearman_rho": 0.4}}}}
  text = format_bench(r)
  assert "noise ceiling (seed vs seed of the table): Kendall tau 0.600" in text
  assert "free baseline params:" in text and "0.300" in text


def test_bench_on_a_partial_table_reports_correlations_without_the_found_cell(spos_run, tmp_path):
  full = _write_table(tmp_path / "full" / "table.csv")
  arch = json.loads((spos_run / "genotype.json").read_text())["arch"]
  rows = list(csv.DictReader(open(full, newline="")))
  gone = next(r["canonical"] for r in rows if r["arch_str"] == arch)
  part = tmp_path / "part" / "table.csv"
  part.parent.mkdir()
  with open(part, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(r for r in rows if r["canonical"] != gone)  # a build still in progress
  shutil.copy(full.parent / "protocol.json", part.parent / "protocol.json")
  r = bench_workdir(spos_run, part, sample=20, yardsticks=False)
  assert r["test_acc"] is None and r["rank"] is None and r["table_coverage"] < 1
  assert r["correlation"]["shared_weights"]["cells"] == 20
  assert "not in this partial table" in format_bench(r)
