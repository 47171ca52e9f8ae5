"""Append-only JSON-lines metrics and atomic JSON files for run directories.

Example:
    >>> import tempfile
    >>> workdir = tempfile.mkdtemp()
    >>> with MetricWriter(workdir) as w:
    ...     w.write(1, loss=0.5)
    >>> read_metrics(workdir)[0]["loss"]
    0.5
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

__all__ = ["METRICS_FILENAME", "MetricWriter", "read_metrics", "write_json_atomic"]

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"
_RESERVED = ("step", "time")


def _to_python(value: Any, name: str) -> bool | int | float | str | None:
    """Convert a scalar (Python, numpy, jax, size-1 array) to a JSON scalar."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "size", 1) == 1:
        # .item() on a jax array blocks until it is computed; that is the
        # intended sync point, so metrics are only written for finished steps.
        out = item()
        if isinstance(out, (bool, int, float, str)):
            return out
    raise TypeError(
        f"metric {name!r} must be a scalar (number, bool, str or size-1 array), "
        f"got {type(value).__name__}"
    )


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


class MetricWriter:
    """Append one JSON object per ``write`` call to ``workdir/metrics.jsonl``.

    Each line is flushed as soon as it is written, so killing the process
    loses at most the line being written. Reopening a workdir appends, which
    is what a resumed run wants; ``read_metrics`` tolerates the torn line a
    kill can leave behind.

    Args:
        workdir: run directory; created if missing.

    Example:
        >>> import tempfile
        >>> with MetricWriter(tempfile.mkdtemp()) as w:
        ...     w.write(10, loss=0.25, acc=0.9)
    """

    def __init__(self, workdir: str) -> None:
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, METRICS_FILENAME)
        # A previous run killed mid-line leaves no trailing newline; start on
        # a fresh line so that torn fragment does not swallow our first record.
        needs_newline = False
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    needs_newline = f.read(1) != b"\n"
        except FileNotFoundError:
            pass
        self._file = open(self.path, "a", encoding="utf-8")
        if needs_newline:
            self._file.write("\n")
            self._file.flush()

    def write(self, step: int, **scalars: Any) -> None:
        """Append ``{"step": step, "time": <unix time>, **scalars}`` as one line.

        Args:
            step: training step (converted to int).
            **scalars: numbers, bools, strings, or numpy/jax size-1 arrays.

        Example:
            >>> import tempfile
            >>> w = MetricWriter(tempfile.mkdtemp())
            >>> w.write(0, loss=1.0); w.close()
        """
        for key in _RESERVED:
            if key in scalars:
                raise ValueError(f"metric name {key!r} is reserved")
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        for name, value in scalars.items():
            record[name] = _to_python(value, name)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def flush(self) -> None:
        """Flush buffered data (``write`` already flushes every line)."""
        self._file.flush()

    def close(self) -> None:
        """Close the file; further ``write`` calls raise ValueError."""
        if not self._file.closed:
            self._file.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` has been called."""
        return self._file.closed

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def read_metrics(workdir: str) -> list[dict]:
    """Read all records of ``workdir/metrics.jsonl`` (``[]`` if it is missing).

    Lines that are not valid JSON (a line torn by a kill) are skipped with a
    warning instead of failing.

    Example:
        >>> import tempfile
        >>> read_metrics(tempfile.mkdtemp())
        []
    """
    path = os.path.join(workdir, METRICS_FILENAME)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    records: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            is_last = all(not rest.strip() for rest in lines[lineno:])
            logger.warning(
                "%s:%d: skipping %s line", path, lineno,
                "truncated last" if is_last else "malformed",
            )
            continue
        records.append(record)
    return records


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON so readers never see a partial file.

    The data goes to a temporary file in the same directory, is fsynced, and
    then replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows).
    numpy/jax arrays and scalars are converted with ``tolist``/``item``.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "genotype.json")
        >>> write_json_atomic(p, {"normal": [["sep_conv_3x3", 0]]})
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; keep an existing file's mode, else use
        # the usual 0644 so the result is as readable as a normally written one.
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
