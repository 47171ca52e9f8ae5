"""Issue 27's remaining measurements on the v2 table, as one resumable pipeline on two cores.

  python benchmarks/nb201_v2_pipeline.py             # run or resume everything (SIGTERM stops it)
  python benchmarks/nb201_v2_pipeline.py --status    # what is done, and each job's last line

Every job is a command that resumes by itself (the table build appends cell by cell, the pilot
and the comparison keep finished runs), so stopping the pipeline anywhere loses at most the
cell or search in flight. A job that exits 0 is marked in ``runs/v2_pipeline/done/``; its output
goes to ``runs/v2_pipeline/logs/JOB.log``. One worker per core (``--cores``) takes the first job
in the list below whose dependencies are done and runs it pinned to its core (``taskset``):

==================  ==============================================  ==================
job                 what                                            waits for
==================  ==============================================  ==================
build-0of2, ...     the v2 table build: shard 0/2, then 1/2 in      --
                    sixteenths (1/16, 3/16, ..., 15/16)
table               ``expand``, ``summary``: ``table.csv``,         every build job
                    ``summary.txt``
zero-cost           item 5: the proxies' tau and rho on the table   table
d40-0, d40-1        the pilot at twice the epochs (item 1: has      --
                    the ranking settled at 20 epochs?)
compare-a/-b        item 6's comparison at 75, 150, 300, 600 s,     table
                    the methods split in two halves of equal time
pilot-report        ``pilot.md`` with D40                           d40-0, d40-1
compare-research    the SPOS and few-shot runs' supernets searched  compare-a, -b
                    again with SPOS's own evolution size (``src3``)
compare-research-2  the same for the ``spos_unique`` runs           compare-research,
                                                                    compare-unique
compare-report      ``runs/compare_v2/budgets.{md,json,png}``        compare-a, compare-b
publish-compare     the reports and every run's small files (not    compare-report
                    checkpoints or weights) copied to
                    ``benchmarks/results/nb201_compare_v2/``
holdout-spos,       the 150 s SPOS runs and their search again for  compare-research
holdout-research    seeds 5-14: a held-out test of the best method
                    at 600 s (``nb201_holdout.py``)
tau30-spos          the comparison's SPOS at 1800 s, 3 seeds        table
                    (item 3's curve to 30 min)
compare-unique      the comparison for SPOS with paths drawn per    table
                    function (``spos_unique``), from ``src2``
compare-report-2    the report again, with ``spos_unique`` and the   compare-report,
                    re-searched supernets                           compare-unique,
                                                                    compare-research-2
tau-report          item 3's curve from the comparison's SPOS runs  compare-report,
                                                                    tau30-spos
publish             the same copy again, with the 30 min runs       tau-report,
                                                                    compare-report-2
==================  ==============================================  ==================

The jobs run a frozen copy of the code (``runs/v2_pipeline/src``: ``jnas``, ``benchmarks`` and
``experiments`` exported from git's HEAD when the pipeline first starts, its commit in
``src/COMMIT``), so that work on the library while the comparison runs across sessions cannot make
its later seeds differ from its earlier ones. The reports run the working tree. ``--refreeze`` exports HEAD again (only between
jobs that do not need to match each other). Jobs added after the comparison started run a second
copy, ``src2``, frozen when it was first needed (its commit in ``src2/COMMIT``), and those added in
stop 45 a third, ``src3``.

About 8 CPU hours of build were left at the start of stop 41, then 2.7 for D40 and 13 for the
comparison: several sessions on two cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
V2 = "benchmarks/results/nb201_mnist1d_v2"
TABLE = f"{V2}/table.csv"
COMPARE = "runs/compare_v2"
BUDGETS = "75,150,300,600"
# Equal halves of the comparison's time: six gradient methods and one single-path method each.
HALVES = ("darts1,darts2,gdas,snas,fairdarts,drnas,spos,rea_synflow",
          "darts_minus,beta_decay,sdarts_rs,pruning,darts_plus,pc_darts,spos_few_shot,rea_params")


class Job(NamedTuple):
  """A named list of commands run in order, after the jobs named in ``after`` are done."""

  name: str
  commands: list[list[str]]
  after: tuple[str, ...] = ()
  #: Runs the working tree instead of the frozen copy: the reports, which only read what the
  #: frozen runs wrote, so that a report improved since the freeze is the one that runs.
  live: bool = False
  #: A frozen copy of its own (``src2``): a job added after the first freeze, whose code the
  #: first copy lacks, without changing what the other jobs run.
  src: Path | None = None


def freeze(state: Path, again: bool = False, name: str = "src") -> Path:
  """The frozen copy of the code the jobs run (exported from git's HEAD if missing or ``again``);
  ``name="src2"``: the second copy, for the jobs added later (:attr:`Job.src`)."""
  import shutil

  src = state / name
  if (src / "COMMIT").exists() and not again:
    return src
  commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, text=True,
                          capture_output=True).stdout.strip()
  shutil.rmtree(src, ignore_errors=True)
  src.mkdir(parents=True)
  archive = subprocess.run(["git", "archive", "--format=tar", commit, "jnas", "benchmarks",
                            "experiments"], cwd=ROOT, check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
  (src / "COMMIT").write_text(commit + "\n")
  return src


def jobs(python: str, src: Path | None = None, src2: Path | None = None,
         src3: Path | None = None) -> list[Job]:
  """The pipeline, in the order workers take jobs (scripts from ``src``, the frozen copy, or
  ``src2`` and ``src3``, the copies frozen for jobs added later)."""
  scripts = (src or ROOT) / "benchmarks"

  def py(script: str, *args: str) -> list[str]:
    return [python, str(scripts / script), *args]

  def live(script: str, *args: str) -> list[str]:
    return [python, str(ROOT / "benchmarks" / script), *args]

  builds = [Job("build-0of2", [py("nb201_mnist1d_table.py", "build", "--preset", "v2", "--out", V2,
                                  "--shard", "0/2")])]
  builds += [Job(f"build-{k}of16", [py("nb201_mnist1d_table.py", "build", "--preset", "v2",
                                       "--out", V2, "--shard", f"{k}/16")])
             for k in range(1, 16, 2)]
  publish_cmd = [python, str(ROOT / "benchmarks" / "nb201_v2_pipeline.py"), "--publish"]
  # SPOS with paths drawn per function, added in stop 44 from the second frozen copy, at every
  # budget and seed; reported by compare-report-2 (compare-report does not wait for it).
  unique = Job("compare-unique", [[python, str((src2 or ROOT) / "benchmarks" / "nb201_compare.py"),
                                   "run", "--table", TABLE, "--budgets", BUDGETS, "--anytime",
                                   "--out", COMPARE, "--methods", "spos_unique"]],
               after=("table",), src=src2)
  compare = [Job(f"compare-{half}", [py("nb201_compare.py", "run", "--table", TABLE, "--budgets",
                                        BUDGETS, "--anytime", "--out", COMPARE, "--methods",
                                        methods)], after=("table",))
             for half, methods in zip("ab", HALVES)]
  return [
      *builds,
      # summary.txt beside the table, as v1 has (the summary prints to stdout).
      Job("table", [py("nb201_mnist1d_table.py", "expand", "--out", V2),
                    ["sh", "-c", " ".join(py("nb201_mnist1d_table.py", "summary", "--out", V2))
                     + f" > {V2}/summary.txt"]],
          after=tuple(b.name for b in builds)),
      # Item 5: every proxy's Kendall and Spearman on the new table (3 weight/minibatch seeds).
      Job("zero-cost", [py("zero_cost.py", "--table", TABLE, "--sample", "500", "--out",
                           "benchmarks/results/zero_cost/nb201_mnist1d_v2.json")]
          + [py("zero_cost.py", "--table", TABLE, "--sample", "500", "--seed", str(seed),
                "--proxies", "synflow,naswot,snip,grad_norm", "--out",
                f"benchmarks/results/zero_cost/nb201_mnist1d_v2_seed{seed}.json")
             for seed in (1, 2)],
          after=("table",)),
      Job("d40-0", [py("nb201_table_v2_pilot.py", "run", "--candidate", "D40", "--shard", "0/2")]),
      Job("d40-1", [py("nb201_table_v2_pilot.py", "run", "--candidate", "D40", "--shard", "1/2")]),
      *compare,
      # Added in stop 45 from a third frozen copy: every single-path run's trained supernet
      # searched again with SPOS's own evolution size; compare-report-2 reports it. Stop 46 split
      # it in two, ahead of compare-unique: the first searches the SPOS and few-shot runs as soon
      # as compare-a and -b end (the 600 s ``+top`` figures need them); the second, the same
      # resumable command, adds the ``spos_unique`` runs finished later.
      *[Job(name, [[python, str((src3 or ROOT) / "benchmarks" / "nb201_compare.py"),
                    "research", "--budgets", BUDGETS, "--out", COMPARE]], after=after, src=src3)
        for name, after in (("compare-research", tuple(c.name for c in compare)),
                            ("compare-research-2", ("compare-research", "compare-unique")))],
      Job("pilot-report", [live("nb201_table_v2_pilot.py", "report")], after=("d40-0", "d40-1"),
          live=True),
      Job("compare-report", [live("nb201_compare.py", "report", "--table", TABLE, "--budgets",
                                  BUDGETS, "--out", COMPARE)],
          after=tuple(c.name for c in compare), live=True),
      # Before the 30 min runs in the list: a worker done with the report publishes it first.
      Job("publish-compare", [publish_cmd], after=("compare-report",), live=True),
      # Stop 46: the best weight-sharing method at 600 s on seeds 0-4, spos@e1000+top(1/4) (the
      # 150 s SPOS runs searched again, their best candidates queried in the other 450 s), was
      # chosen among about a dozen variants, so it is tested again on seeds it was not chosen
      # on: the same frozen code and plan, seeds 5-14 (``nb201_holdout.py`` reports them).
      Job("holdout-spos", [py("nb201_compare.py", "run", "--table", TABLE, "--budget", "150",
                              "--seeds", "15", "--methods", "spos", "--out", f"{COMPARE}/b150")],
          after=("compare-research",)),
      Job("holdout-research", [[python, str((src3 or ROOT) / "benchmarks" / "nb201_compare.py"),
                                "research", "--budgets", "150", "--seeds", "15", "--out",
                                f"{COMPARE}/b150"]], after=("holdout-spos",), src=src3),
      # Item 3's curve to 30 min (the comparison stops at 10): the comparison's SPOS at 1800 s,
      # 3 seeds, in COMPARE/b1800 where the tau report finds it. Before compare-unique, an
      # extra, since stop 46.
      Job("tau30-spos", [py("nb201_compare.py", "run", "--table", TABLE, "--budget", "1800",
                            "--seeds", "3", "--methods", "spos", "--out", f"{COMPARE}/b1800")],
          after=("table",)),
      unique,
      Job("compare-report-2", [live("nb201_compare.py", "report", "--table", TABLE, "--budgets",
                                    BUDGETS, "--out", COMPARE)],
          after=("compare-report", "compare-unique", "compare-research-2"), live=True),
      Job("tau-report", [live("spos_tau_curve.py", "report", "--table", TABLE, "--compare",
                              COMPARE, "--out", "benchmarks/results/spos_tau_curve/v2")],
          after=("compare-report", "tau30-spos"), live=True),
      Job("publish", [publish_cmd], after=("tau-report", "compare-report-2"), live=True),
  ]


#: What ``--publish`` copies of each run: what the reports read, not checkpoints or weights.
RUN_FILES = ("alpha_history.npz", "arch_params.npz", "bench.json", "config.json", "genotype.json",
             "metrics.jsonl", "summary.json", "evolution.json")
PUBLISHED = "benchmarks/results/nb201_compare_v2"


def publish(compare: Path = ROOT / COMPARE, dest: Path = ROOT / PUBLISHED) -> int:
  """Copies the comparison's reports, plans and every run's :data:`RUN_FILES` to ``dest``
  (the layout of ``compare``); returns the number of files copied."""
  import shutil

  n = 0
  for src in sorted(compare.rglob("*")):
    rel = src.relative_to(compare)
    in_run = len(rel.parts) == 5 and rel.parts[1] == "runs"  # bB/runs/METHOD/seed_S/FILE
    top = len(rel.parts) <= 2 and (src.name.startswith(("budgets.", "compare.")) or
                                   src.name == "plan.json")
    if src.is_file() and ((in_run and src.name in RUN_FILES) or top):
      (dest / rel).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dest / rel)
      n += 1
  print(f"copied {n} files from {compare} to {dest}")
  return n


class Pipeline:
  """Workers that take jobs in order once their dependencies are done; SIGTERM stops them."""

  def __init__(self, state: Path, job_list: list[Job], cores: list[int], poll_s: float = 20.0,
               src: Path | None = None):
    self.state, self.jobs, self.cores, self.poll_s = state, job_list, cores, poll_s
    # The frozen package first on the path: the editable install would import the working tree.
    self.env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    self.job_env = {j.name: {**os.environ, "PYTHONPATH": str(j.src)} for j in job_list if j.src}
    (state / "done").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    self.lock = threading.Lock()
    self.taken: set[str] = set()
    self.failed: set[str] = set()
    self.children: dict[int, subprocess.Popen] = {}
    self.stopping = False
    self.lock_fd: int | None = None

  def done(self, name: str) -> bool:
    return (self.state / "done" / name).exists()

  def _next(self) -> Job | None | bool:
    """The next job to run, None if nothing is left that can run, False if one must wait."""
    with self.lock:
      waiting = False
      for job in self.jobs:
        if job.name in self.taken or self.done(job.name):
          continue
        if any(d in self.failed for d in job.after):
          self.failed.add(job.name)  # waits for a job that failed in this run: never runs
          continue
        if all(self.done(d) for d in job.after):
          self.taken.add(job.name)
          return job
        waiting = True
      return False if waiting else None

  def _run(self, job: Job, core: int) -> bool:
    with open(self.state / "logs" / f"{job.name}.log", "a") as log:
      for cmd in job.commands:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} core {core}: {' '.join(cmd)}\n")
        log.flush()
        # The job inherits the pipeline's lock: a job left running by a killed pipeline keeps
        # the next one from starting the same job twice.
        proc = subprocess.Popen(["taskset", "-c", str(core), *cmd], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=None if job.live else self.job_env.get(job.name, self.env),
                                pass_fds=(self.lock_fd,) if self.lock_fd is not None else ())
        self.children[core] = proc
        rc = proc.wait()
        self.children.pop(core, None)
        if rc != 0 or self.stopping:
          log.write(f"# exit {rc}{' (stopped)' if self.stopping else ''}\n")
          return False
    (self.state / "done" / job.name).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return True

  def worker(self, core: int) -> None:
    while not self.stopping:
      job = self._next()
      if job is None:
        return
      if job is False:
        time.sleep(self.poll_s)
        continue
      print(f"core {core}: {job.name} started", flush=True)
      ok = self._run(job, core)
      if not ok:
        with self.lock:
          self.failed.add(job.name)
      print(f"core {core}: {job.name} {'done' if ok else 'FAILED or stopped'} (log: "
            f"{self.state / 'logs' / (job.name + '.log')})", flush=True)

  def stop(self, *_) -> None:
    self.stopping = True
    for proc in list(self.children.values()):
      proc.send_signal(signal.SIGTERM)

  def run(self) -> int:
    import fcntl

    self.lock_fd = os.open(self.state / "pipeline.lock", os.O_CREAT | os.O_RDWR)
    try:
      fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(self.lock_fd)
      raise SystemExit(f"{self.state}: another pipeline, or a job a killed one left running, "
                       f"holds {self.state / 'pipeline.lock'} (see: fuser -v that file)") from None
    signal.signal(signal.SIGTERM, self.stop)
    signal.signal(signal.SIGINT, self.stop)
    threads = [threading.Thread(target=self.worker, args=(c,)) for c in self.cores]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    os.close(self.lock_fd)  # every job has ended: the lock goes with this descriptor
    left = [j.name for j in self.jobs if not self.done(j.name)]
    print("all done" if not left else f"not done: {', '.join(left)}", flush=True)
    return 0 if not left else 1


def status(state: Path, job_list: list[Job]) -> str:
  """One line per job: done (when), or the last line of its log."""
  lines = []
  for job in job_list:
    mark = state / "done" / job.name
    if mark.exists():
      lines.append(f"{job.name:15s} done {mark.read_text().strip()}")
      continue
    log = state / "logs" / f"{job.name}.log"
    last = next((x for x in reversed(log.read_text().splitlines()) if x.strip()), "") if (
        log.exists()) else ""
    lines.append(f"{job.name:15s} {last[-100:] or 'not started'}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--cores", default="0,1", help="one worker per core (0,1)")
  p.add_argument("--state", default=str(ROOT / "runs" / "v2_pipeline"))
  p.add_argument("--status", action="store_true", help="print each job's state and exit")
  p.add_argument("--publish", action="store_true",
                 help=f"copy the comparison's reports and runs' small files to {PUBLISHED}")
  p.add_argument("--refreeze", action="store_true",
                 help="export git's HEAD again as the code the jobs run")
  args = p.parse_args(argv)
  state = Path(args.state)
  if args.publish:
    return 0 if publish() else 1
  if args.status:
    src = state / "src"
    frozen = (src / "COMMIT").read_text().strip()[:10] if (src / "COMMIT").exists() else "none"
    print(f"code: {src} (commit {frozen})")
    print(status(state, jobs(sys.executable, src, state / "src2", state / "src3")))
    return 0
  src = freeze(state, again=args.refreeze)
  job_list = jobs(sys.executable, src, freeze(state, name="src2"), freeze(state, name="src3"))
  try:
    cores = [int(c) for c in args.cores.split(",")]
  except ValueError:
    raise SystemExit(f"--cores wants comma-separated core numbers, got {args.cores!r}") from None
  allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(cores)
  if not cores or any(c not in allowed for c in cores):
    raise SystemExit(f"--cores {args.cores}: this process may use cores {sorted(allowed)}")
  return Pipeline(state, job_list, cores, src=src).run()


if __name__ == "__main__":
  sys.exit(main())
