"""One jnas process per work directory: a second run is refused, a dead run's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jnas.cli import main
from jnas.search.workdir import LOCK_FILE, lock_workdir
from jnas.utils.metrics import read_metrics

from tiny_search import CONFIG, TINY

# A child that takes the lock, says so on stdout, and holds it until killed.
_HOLDER = ("import sys, time\n"
           "from jnas.search.workdir import lock_workdir\n"
           "with lock_workdir(sys.argv[1]):\n"
           "  print('held', flush=True)\n"
           "  time.sleep(600)\n")


def _holder(wd: Path) -> subprocess.Popen:
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(wd)], stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def _kill(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_second_process_is_refused_naming_the_holder(tmp_path, capsys):
  proc = _holder(tmp_path)
  try:
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
    with pytest.raises(ValueError) as err:
      with lock_workdir(tmp_path):
        pass
    msg = str(err.value)
    assert "\n" not in msg and "in use" in msg
    assert f"pid {proc.pid}" in msg and socket.gethostname() in msg and holder["started"] in msg
    # Through the CLI, `jnas search` and `jnas train` both: one line, exit code 2.
    for cmd in (["search", *TINY], ["train", "--genotype", "DARTS_V2"]):
      capsys.readouterr()
      assert main([*cmd, "--config", CONFIG, "--workdir", str(tmp_path)]) == 2
      err_line = capsys.readouterr().err.strip()
      assert err_line.count("\n") == 0 and err_line.startswith("jnas: error: ")
      assert f"pid {proc.pid}" in err_line, err_line
    assert not (tmp_path / "config.json").exists()  # refused before touching the run
  finally:
    _kill(proc)


def test_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  proc = _holder(tmp_path)
  _kill(proc)  # SIGKILL: no cleanup ran, the file stays, its flock went with the process
  assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid
  with caplog.at_level(logging.WARNING, logger="jnas.search.workdir"):
    with lock_workdir(tmp_path) as path:
      assert json.loads(path.read_text())["pid"] == os.getpid()
  assert any("taking over" in r.getMessage() and f"pid {proc.pid}" in r.getMessage()
             for r in caplog.records)
  assert not (tmp_path / LOCK_FILE).exists()


def test_stale_lock_file_without_flock_is_taken_over(tmp_path):
  # A lock file whose process is gone (an exited child's pid), no flock on it.
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (tmp_path / LOCK_FILE).write_text(json.dumps(
      {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}))
  with lock_workdir(tmp_path) as path:
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_free_lock_of_another_host_is_not_taken(tmp_path):
  """flock is not coherent across machines on every network file system: ask the user."""
  (tmp_path / LOCK_FILE).write_text(json.dumps(
      {"pid": 1, "host": "elsewhere.example", "started": "2020-01-01T00:00:00"}))
  with pytest.raises(ValueError, match="another machine.*elsewhere.example.*delete"):
    with lock_workdir(tmp_path):
      pass


def test_reentrant_and_released_on_exceptions(tmp_path):
  for exc in (RuntimeError, KeyboardInterrupt):
    with pytest.raises(exc):
      with lock_workdir(tmp_path) as path:
        with lock_workdir(tmp_path):  # jnas search retrains inside its own lock
          assert path.exists()
        assert path.exists()  # the inner release keeps the outer hold
        raise exc("stop")
    assert not path.exists()
  # Released for real: another process takes it at once.
  proc = _holder(tmp_path)
  _kill(proc)
  assert not list(tmp_path.glob(f".{LOCK_FILE}.*")), "temporary lock files left behind"


def test_concurrent_searches_one_refused_the_other_completes(tmp_path, capsys):
  wd = tmp_path / "run"
  cmd = [sys.executable, "-m", "jnas", "search", "--config", CONFIG, "--workdir", str(wd), *TINY]
  proc = subprocess.Popen(cmd, env={**os.environ, "JNAS_PROGRESS": "off"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not (wd / LOCK_FILE).exists():
      assert proc.poll() is None and time.time() < deadline, "the first search never locked"
      time.sleep(0.01)
    capsys.readouterr()
    assert main(["search", "--config", CONFIG, "--workdir", str(wd), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in use" in err and f"pid {proc.pid}" in err, err
    _, stderr = proc.communicate(timeout=600)
  finally:
    _kill(proc)
  assert proc.returncode == 0, stderr
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["search_epochs"] == 3 and (wd / "genotype.json").exists()
  assert [r["step"] for r in read_metrics(str(wd))] == [7, 14, 21]
  assert not (wd / LOCK_FILE).exists()
