"""The ``jnas`` command line's helpers: ``--config.KEY=VALUE`` overrides, results, one-line errors.

:mod:`jnas.cli` calls these: :func:`split_overrides` takes the config
overrides out of the arguments, :func:`print_items` prints a run's result as
``key: value`` lines, and an error is one line on stderr (``jnas: error:
...``), with, for a diverged run, what the work directory keeps
(:func:`after_divergence`). The benchmark scripts that split work between
processes parse ``--shard I/N`` with :func:`shard_arg`.

Example:
  >>> one_line("a   b  c")
  'a b c'
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import zipfile
from typing import Any

from jnas.utils.metrics import _json_default as _metrics_json_default

PROG = "jnas"
_OVERRIDE_PREFIX = "--config."


def split_overrides(extras: list[str]) -> tuple[list[str], list[str]]:
    """Split leftover argv into ``KEY=VALUE`` overrides and unrecognised args.

    Accepts ``--config.a.b=v`` and ``--config.a.b v``; the value of the second
    form may start with a single dash (``--config.optim.lr -0.1``).

    Example:
        >>> split_overrides(["--config.a.b=1", "--config.c", "x", "--bogus"])
        (['a.b=1', 'c=x'], ['--bogus'])
    """
    overrides: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(extras):
        arg = extras[i]
        if arg.startswith(_OVERRIDE_PREFIX) and len(arg) > len(_OVERRIDE_PREFIX):
            body = arg[len(_OVERRIDE_PREFIX):]
            if "=" in body:
                overrides.append(body)
            elif i + 1 < len(extras) and not extras[i + 1].startswith("--"):
                overrides.append(f"{body}={extras[i + 1]}")
                i += 1
            else:
                unknown.append(f"{arg} (missing value)")
        else:
            unknown.append(arg)
        i += 1
    return overrides, unknown


def format_value(value: Any) -> str:
    """A value as the command line prints it (floats to 6 digits, containers as JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=json_default)
    return str(value)


def json_default(obj: Any) -> Any:
    """``json.dumps``'s ``default`` for printing: the metrics encoder's form, else ``str``."""
    # Printing must never fail: anything the metrics encoder rejects is shown as text.
    try:
        return _metrics_json_default(obj)
    except TypeError:
        return str(obj)


def print_items(result: Any) -> None:
    """Prints a run's result dict as aligned ``key: value`` lines."""
    if result is None:
        return
    if not isinstance(result, dict):
        print(format_value(result))
        return
    if not result:
        return
    width = max(len(str(k)) for k in result)
    for key, value in result.items():
        print(f"{str(key) + ':':<{width + 1}} {format_value(value)}")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def error(message: str) -> None:
    """Writes ``jnas: error: MESSAGE`` as one line to stderr."""
    sys.stderr.write(f"{PROG}: error: {one_line(message)}\n")
    sys.stderr.flush()


def is_missing_config_key(e: AttributeError) -> bool:
    """Whether ``e`` is a ConfigDict's "no such key" (raised inside ml_collections)."""
    frames = traceback.extract_tb(e.__traceback__)
    return bool(frames) and "ml_collections" in frames[-1].filename and bool(
        getattr(e, "name", None))


def describe(e: BaseException) -> str:
    """One line for an error: OSErrors name their path(s), as ``str`` of one without does not."""
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename:
        paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
        return f"{paths}: {e.strerror or type(e).__name__}"
    if isinstance(e, zipfile.BadZipFile):
        return f"a file is not a readable .npz/.zip archive (truncated or damaged?): {e}"
    return str(e) or type(e).__name__


def after_divergence(workdir: str | None, message: str) -> str:
    """What a diverged run leaves: its last good epoch, and the checkpoint that is kept.

    Read from the work directory (``metrics.jsonl`` holds one record per
    finished epoch, the checkpoint folders one step per saved epoch), so it
    holds whichever loop raised.
    """
    advice = "lower the learning rate (or the rate that blew up) and use a new --workdir"
    if not workdir:
        return advice
    phase = "retrain" if "retrain" in message.lower() else "search"
    from jnas.utils.metrics import read_metrics

    try:
        records = [r for r in read_metrics(workdir) if r.get("phase", "search") == phase]
    except (OSError, ValueError):
        records = []
    last = records[-1].get("epoch", records[-1].get("step")) if records else None
    ckpt_dir = os.path.join(workdir, "checkpoints", phase)
    try:
        steps = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
    except OSError:
        steps = []
    if last is None:
        done = f"no {phase} epoch finished, so nothing is kept"
    elif steps:
        done = (f"the last good {phase} epoch is {last} and its checkpoint "
                f"{os.path.join(ckpt_dir, str(steps[-1]))} is kept (rerunning this command "
                f"resumes there, with the same settings)")
    else:
        done = f"the last good {phase} epoch is {last} (this search keeps no checkpoint)"
    return f"{done}; {advice}"


def debug() -> bool:
    """Whether ``JNAS_DEBUG`` asks for tracebacks."""
    return os.environ.get("JNAS_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def shard_arg(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (this process's share of work split ``N`` ways) for argparse's ``type=``.

    A bad value raises :class:`argparse.ArgumentTypeError`, which argparse
    prints as one line and exits 2.

    Example:
      >>> shard_arg("1/2")
      (1, 2)
    """
    import argparse  # noqa: PLC0415 (only the scripts that take --shard need it)

    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n
