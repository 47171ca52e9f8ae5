"""The ``jnas`` command line: ``search``, ``train``, ``info``, ``plot``, ``compare``, ``tabular``,
``bench`` and ``score``.

Config fields can be overridden with ``--config.KEY=VALUE`` (or
``--config.KEY VALUE``), e.g.::

    jnas search --config configs/darts_digits.py --workdir runs/d1 \\
        --config.search.epochs=4 --config.retrain.enabled=false

Heavy modules (jax, the run functions) are imported inside the handlers so
that ``jnas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
import zipfile
from typing import Any

from jnas import cli_support as report
from jnas.cli_support import split_overrides

__all__ = ["main", "build_parser", "split_overrides"]

logger = logging.getLogger("jnas.cli")

PROG = report.PROG
_EXIT_USAGE = 2
_EXIT_INTERNAL = 1
_EXIT_INTERRUPTED = 130

_EPILOG = (
    "Override config fields with --config.KEY=VALUE (or --config.KEY VALUE), "
    "e.g. --config.search.epochs=4 --config.retrain.enabled=false."
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Build the argument parser; returns it and its subparsers by name.

    Example:
        >>> parser, subs = build_parser()
        >>> sorted(subs)
        ['bench', 'compare', 'info', 'plot', 'score', 'search', 'tabular', 'train']
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Neural architecture search in JAX.",
        epilog="Run 'jnas COMMAND --help' for a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subs: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            # Abbreviations would let "--conf" silently mean "--config" and
            # make typos in override names harder to diagnose.
            allow_abbrev=False,
        )
        sub.add_argument(
            "--config", required=True, metavar="FILE",
            help="Python config file defining get_config() (FILE.py or FILE.py:ARG)",
        )
        subs[name] = sub
        return sub

    search = add("search", "Run an architecture search.")
    search.add_argument("--workdir", required=True, metavar="DIR",
                        help="run directory for checkpoints, metrics and results")

    train = add("train", "Retrain a genotype from scratch.")
    train.add_argument("--workdir", required=True, metavar="DIR",
                       help="run directory for checkpoints, metrics and results")
    train.add_argument("--genotype", default=None, metavar="NAME_OR_FILE",
                       help="genotype name or JSON file (default: chosen by the run)")

    info = add("info", "Describe a genotype under a config (size, cost, ...).")
    info.add_argument("--genotype", required=True, metavar="NAME_OR_FILE",
                      help="genotype name or JSON file")
    info.add_argument("--json", action="store_true", help="print the result as JSON")
    plot = subparsers.add_parser(
        "plot", help="Draw a search's work directory as PNG files.",
        description="Draw alpha over epochs, the derived cell, the learning curves and "
                    "(when there is a pareto.json) the Pareto front of a finished or running "
                    "search.", allow_abbrev=False)
    plot.add_argument("workdir", metavar="WORKDIR", help="the search's --workdir")
    plot.add_argument("--out", default=None, metavar="DIR",
                      help="where to write the PNG files (default: WORKDIR/plots)")
    subs["plot"] = plot

    cmp_ = add("compare", "Run several strategies with several seeds on one config and "
                          "tabulate the retrained results (Markdown, JSON, PNG).")
    cmp_.add_argument("--workdir", required=True, metavar="DIR",
                      help="one sub-directory per run, and compare.{json,md,png}")
    cmp_.add_argument("--strategies", default="darts,darts2,gdas,snas",
                      help="comma-separated: darts, darts2, gdas, snas, spos (cell-space "
                           "configs), fbnet (chain-space configs), or a sample-based strategy "
                           "as STRATEGY:ESTIMATOR (rea:supernet, reinforce:scratch, rea:table); "
                           "default darts,darts2,gdas,snas")
    cmp_.add_argument("--seeds", type=int, default=3,
                      help="runs per strategy, seeds config.seed + 0, 1, ... (default 3)")

    tab = subparsers.add_parser(
        "tabular", help="Replay a search strategy on a NAS-Bench-201 table (CSV).",
        description="Run a strategy many times on a benchmark table under a simulated time "
                    "budget (the NAS-Bench-201 protocol) and report the mean and std of the "
                    "reported metric of the architectures it returns.", allow_abbrev=False)
    tab.add_argument("--table", required=True, metavar="FILE", help="benchmark CSV file")
    tab.add_argument("--arch-column", required=True, help="column with the NB201 arch string")
    tab.add_argument("--signal-column", required=True, help="column the search sees")
    tab.add_argument("--report-column", required=True, help="column reported for the result")
    tab.add_argument("--cost-column", required=True, help="column with a query's cost (s)")
    tab.add_argument("--cost-scale", type=float, default=1.0,
                     help="each query costs cost * cost_scale simulated seconds")
    tab.add_argument("--strategy", default="rea",
                     help="random, rea, topk, reinforce or pnas (default: rea); with "
                          "--objective: nsga2, dpp_net, random, rea or reinforce")
    tab.add_argument("--budget", type=float, default=12000.0,
                     help="simulated seconds per run (default 12000)")
    tab.add_argument("--runs", type=int, default=500, help="runs (default 500)")
    tab.add_argument("--seed", type=int, default=0, help="run i uses fold_in(key(seed), i)")
    tab.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a strategy setting, e.g. --set population_size=20 (repeatable)")
    tab.add_argument("--out", default=None, metavar="FILE", help="write the result JSON here")
    tab.add_argument("--objective", default=None, metavar="COLUMN",
                     help="a second column to minimise (latency, cost): replay for a Pareto "
                          "front and report its hypervolume ratio to the table's front")
    tab.add_argument("--max-objective", type=float, default=None, metavar="VALUE",
                     help="hard limit on --objective (REINFORCE: its reward's target)")
    subs["tabular"] = tab

    bench = subparsers.add_parser(
        "bench", help="Score a NAS-Bench-201 search's work directory on an exhaustive table.",
        description="Look up the cell a NAS-Bench-201 search found in a table made by "
                    "benchmarks/nb201_mnist1d_table.py: its table accuracy, rank, percentile "
                    "and regret, and (weight-sharing searches) the Kendall tau and Spearman rho "
                    "between the supernet's scores of a fixed sample of cells and the table.",
        allow_abbrev=False)
    bench.add_argument("workdir", metavar="WORKDIR", help="the search's --workdir")
    bench.add_argument("--table", required=True, metavar="FILE",
                       help="table.csv, e.g. benchmarks/results/nb201_mnist1d/table.csv")
    bench.add_argument("--sample", type=int, default=200,
                       help="unique cells scored for the rank correlations (default 200, 0: none)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--no-yardsticks", action="store_true",
                       help="skip the noise ceiling and free baselines (params, FLOPs, synflow, snip, "
                            "NASWOT) printed beside the correlations")
    subs["bench"] = bench

    from jnas import score_cli  # noqa: PLC0415 (imports no JAX)

    score_cli.add_arguments(add("score", "Score NAS-Bench-201 cells (one string per line) with a "
                                         "zero-cost proxy; writes arch,score CSV."))
    return parser, subs


def _load(args: argparse.Namespace, overrides: list[str], command: str | None = None):
    """The config with its overrides; for a run command, completed and validated.

    Validation comes before the run module is called, so a refused run leaves
    its work directory as it was (not created, nothing written).
    """
    from jnas.config import apply_overrides, config_hash, load_config

    config = load_config(args.config)
    if command is not None:
        # Before the overrides, so that --config.evolution.top_k=... can change them.
        config = _with_strategy_defaults(config, strategy=_overridden_strategy(config, overrides))
    config = apply_overrides(config, overrides)
    if command is not None:
        from jnas.validate import validate_config

        # Not strict: the run itself names a key that a hand-made config lacks.
        validate_config(config, command, strict=False)
    logger.info("config: %s (hash %s)%s", args.config, config_hash(config),
                f", overrides: {' '.join(overrides)}" if overrides else "")
    return config


def _overridden_strategy(config, overrides: list[str]) -> Any:
    """``search.strategy`` after the overrides (the last one wins), without applying them."""
    search = config.get("search") if hasattr(config, "get") else None
    strategy = search.get("strategy") if hasattr(search, "get") else None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "search.strategy":
            strategy = value.strip()
    return strategy


def _with_strategy_defaults(config, force: bool = False, strategy: Any = None):
    """SPOS's settings added to a config written for another strategy (``strategy``: the one
    that will run, default ``search.strategy``).

    ``apply_overrides`` returns a locked config, and a locked ConfigDict refuses
    new keys, so ``--config.search.strategy=spos`` on a DARTS config failed when
    the search added SPOS's ``pool_size`` and ``evolution`` section. They are
    added here, to a copy, before the overrides (which may then change them);
    the search finds the config complete (it adds only what is missing, so
    config.json and its hash are the same). ``force`` adds them whatever the
    strategy (``jnas compare`` makes its SPOS runs from copies of one config).
    """
    search = config.get("search")
    if not hasattr(search, "get"):
        return config
    if strategy is None:
        strategy = search.get("strategy")
    if strategy != "spos" and not force:
        return config
    if "pool_size" in search and "evolution" in config:
        return config
    import copy

    from jnas.search.spos import add_spos_defaults

    locked = config.is_locked
    config = copy.deepcopy(config)
    with config.unlocked():
        add_spos_defaults(config)
    if locked:
        config.lock()
    return config


def _run_module():
    import jnas.run as run

    return run


def _cmd_search(args: argparse.Namespace, overrides: list[str]) -> int:
    from jnas.validate import check_workdir_path

    config = _load(args, overrides, "search")
    check_workdir_path(args.workdir)
    result = _run_module().search(config, args.workdir)
    report.print_items(result)
    return 0


def _check_genotype(run, config, genotype: str | None, workdir: str) -> None:
    """Resolves the genotype as ``train`` will, so a bad one is refused before the workdir exists.

    Goes through the run module's own ``resolve_architecture``; a
    stand-in run module without them (tests) is not second-guessed.
    """
    resolve = getattr(run, "resolve_architecture", None)
    if resolve is None:
        return
    try:
        resolve(config, genotype, workdir)
    except UnicodeDecodeError:
        # Its own message names a byte, not the file.
        raise ValueError(f"genotype {genotype or os.path.join(workdir, 'genotype.json')} is not "
                         f"a UTF-8 text file") from None


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from jnas.validate import check_workdir_path

    config = _load(args, overrides, "train")
    check_workdir_path(args.workdir)
    run = _run_module()
    _check_genotype(run, config, args.genotype, args.workdir)
    result = run.train(config, args.workdir, args.genotype)
    report.print_items(result)
    return 0


def _cmd_info(args: argparse.Namespace, overrides: list[str]) -> int:
    config = _load(args, overrides)
    result = _run_module().info(config, args.genotype)
    if args.json:
        print(json.dumps(result, indent=2, default=report.json_default))
    else:
        report.print_items(result)
    return 0


def _cmd_plot(args: argparse.Namespace, overrides: list[str]) -> int:
    if overrides:
        raise ValueError("jnas plot takes no --config.KEY overrides")
    from jnas.plot import plot_workdir

    made, skipped = plot_workdir(args.workdir, args.out)
    for path in made:
        print(path)
    for reason in skipped:
        sys.stderr.write(f"{PROG} plot: skipped {reason}\n")
    return 0


def _cmd_tabular(args: argparse.Namespace, overrides: list[str]) -> int:
    if overrides:
        raise ValueError("jnas tabular takes no --config.KEY overrides (use --set KEY=VALUE)")
    from jnas.search.tabular import load_table, parse_settings, replay_many
    from jnas.utils.metrics import write_json_atomic
    from jnas.validate import check_output_file

    # Before the replay: a result that cannot be written would be lost.
    if args.out:
        check_output_file(args.out)
    if args.runs < 1:
        raise ValueError(f"--runs {args.runs} must be >= 1")
    for flag, value in (("--budget", args.budget), ("--cost-scale", args.cost_scale)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{flag} {value:g} must be a finite number > 0")
    if args.objective is not None or args.max_objective is not None:
        return _tabular_front(args)
    bench = load_table(args.table, arch_column=args.arch_column,
                       signal_column=args.signal_column, report_column=args.report_column,
                       cost_column=args.cost_column)
    result = replay_many(args.strategy, bench, budget=args.budget, runs=args.runs,
                         seed=args.seed, cost_scale=args.cost_scale,
                         settings=parse_settings(args.set))
    if args.out:
        write_json_atomic(args.out, result)
    print(f"{result['strategy']}: {result['mean']:.4f} +- {result['std']:.4f} "
          f"({result['report_column']}, {result['runs']} runs, budget {result['budget']:g} s, "
          f"{result['mean_queries']:.1f} queries per run)")
    return 0


def _tabular_front(args: argparse.Namespace) -> int:
    # jnas tabular --objective: the multi-objective replays (jnas.search.tabular_front).
    import math

    from jnas.search.tabular import load_table, parse_settings
    from jnas.search.tabular_front import replay_front_many
    from jnas.utils.metrics import write_json_atomic

    if args.objective is None:
        raise ValueError("--max-objective needs --objective COLUMN (the column it limits)")
    if args.max_objective is not None and not math.isfinite(args.max_objective):
        raise ValueError(f"--max-objective {args.max_objective:g} must be a finite number")
    if not math.isfinite(args.budget) or args.budget <= 0:
        raise ValueError(f"--budget {args.budget:g} must be a finite number > 0")
    bench = load_table(args.table, arch_column=args.arch_column,
                       signal_column=args.signal_column, report_column=args.report_column,
                       cost_column=args.cost_column, objective_column=args.objective)
    result = replay_front_many(args.strategy, bench, budget=args.budget, runs=args.runs,
                               seed=args.seed, cost_scale=args.cost_scale,
                               max_objective=args.max_objective,
                               settings=parse_settings(args.set))
    if args.out:
        write_json_atomic(args.out, result)
    limit = "" if args.max_objective is None else f" <= {args.max_objective:g}"
    print(f"{result['strategy']}: hypervolume ratio {result['hv_ratio_mean']:.4f} +- "
          f"{result['hv_ratio_std']:.4f} ({result['report_column']} up, "
          f"{result['objective_column']}{limit} down; {result['runs']} runs, budget "
          f"{result['budget']:g} s, {result['mean_queries']:.1f} queries per run)")
    return 0


def _cmd_compare(args: argparse.Namespace, overrides: list[str]) -> int:
    from jnas.compare import compare, strategy_config
    from jnas.validate import check_workdir_path, validate_config

    config = _load(args, overrides, "compare")
    strategies = [s for s in args.strategies.split(",") if s]
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds} must be >= 1")
    if not strategies:
        raise ValueError("--strategies names no strategy")
    if "spos" in strategies:
        # Every run's copy then has SPOS's settings (see _with_strategy_defaults).
        config = _with_strategy_defaults(config, force=True)
    # Each run's own config, checked before the first (long) run starts.
    for name in strategies:
        validate_config(strategy_config(config, name, int(config.seed)), "search", strict=False)
    check_workdir_path(args.workdir)
    result = compare(config, args.workdir, strategies, args.seeds)
    print(result["table"])
    for kind, path in result["files"].items():
        print(f"{kind}: {path}")
    return 0


def _cmd_bench(args: argparse.Namespace, overrides: list[str]) -> int:
    if overrides:
        raise ValueError("jnas bench takes no --config.KEY overrides (it reads WORKDIR/config.json)")
    from jnas.nb201_table.bench import bench_workdir, format_bench

    if args.sample < 0:
        raise ValueError(f"--sample {args.sample} must be >= 0 (0: no rank correlations)")
    result = bench_workdir(args.workdir, args.table, sample=args.sample,
                           yardsticks=not args.no_yardsticks)
    print(json.dumps(result, indent=2, default=report.json_default) if args.json
          else format_bench(result))
    return 0


def _cmd_score(args: argparse.Namespace, overrides: list[str]) -> int:
    from jnas import score_cli

    return score_cli.run(_load(args, overrides), args)


_COMMANDS = {"search": _cmd_search, "train": _cmd_train, "info": _cmd_info, "plot": _cmd_plot,
             "tabular": _cmd_tabular, "compare": _cmd_compare, "bench": _cmd_bench,
             "score": _cmd_score}


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # orbax logs every checkpoint step at INFO through absl, and JAX logs its backend probing
    # ("Unable to initialize backend 'tpu'") at INFO: keep their warnings only.
    for name in ("absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the ``jnas`` command line and return the process exit code.

    Exit codes: 0 success, 2 usage/config/run errors (``ValueError``, any
    ``OSError`` naming its path, a damaged ``.npz``, and divergence, a
    ``FloatingPointError``, which also says which epoch was the last good one
    and which checkpoint is kept; one line on stderr, traceback only with
    ``JNAS_DEBUG=1``), 1 when ``jnas.run`` is missing, 130 on Ctrl-C.
    ``search``, ``train`` and ``compare`` validate the whole config
    (:func:`jnas.validate.validate_config`) and the work directory path before
    the run starts, so a refused run leaves the directory as it was.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` if None.

    Example:
        >>> main(["info", "--config", "configs/darts_digits.py",
        ...       "--genotype", "darts_v2", "--json"])     # doctest: +SKIP
        0
    """
    _configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subs = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        overrides, unknown = split_overrides(extras)
        if unknown:
            subs[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:
        # argparse exits for --help and usage errors; main returns codes instead.
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else _EXIT_USAGE)

    try:
        return _COMMANDS[args.command](args, overrides)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return _EXIT_INTERRUPTED
    except ModuleNotFoundError as e:
        if e.name not in ("jnas.run",):
            raise
        if report.debug():
            traceback.print_exc()
        report.error(f"cannot import {e.name}: {e}")
        return _EXIT_INTERNAL
    except AttributeError as e:
        # A key the run reads is missing from a hand-made config (validation is not strict
        # about missing keys, see _load); any other AttributeError is a bug: traceback.
        if not report.is_missing_config_key(e):
            raise
        if report.debug():
            traceback.print_exc()
        report.error(f"the config lacks the key {e.name!r}, which `jnas {args.command}` reads "
               f"(the configs in experiments/ list every key)")
        return _EXIT_USAGE
    except FloatingPointError as e:
        # Divergence: a NaN/inf loss stopped the run at an epoch boundary; say what is kept.
        if report.debug():
            traceback.print_exc()
        report.error(f"{e}; {report.after_divergence(getattr(args, 'workdir', None), str(e))}")
        return _EXIT_USAGE
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        if report.debug():
            traceback.print_exc()
        report.error(report.describe(e))
        return _EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
