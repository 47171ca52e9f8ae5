"""Append-only JSON-lines metrics, TensorBoard events and atomic JSON files for run directories.

``MetricWriter(workdir, tensorboard="search")`` also writes every numeric
metric as a TensorBoard scalar under ``workdir/tb/search`` (through
``tensorboardX``, which needs neither TensorFlow nor PyTorch).
``read_tensorboard_scalars`` parses those event files back (checking every
record's CRC), so tests and scripts can read them without TensorBoard.

Example:
    >>> import tempfile
    >>> workdir = tempfile.mkdtemp()
    >>> with MetricWriter(workdir) as w:
    ...     _ = w.write(1, loss=0.5)
    >>> read_metrics(workdir)[0]["loss"]
    0.5
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import struct
import tempfile
import time
from typing import Any

__all__ = [
    "METRICS_FILENAME",
    "TENSORBOARD_DIRNAME",
    "MetricWriter",
    "read_metrics",
    "read_tensorboard_scalars",
    "replace_phase",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"
TENSORBOARD_DIRNAME = "tb"
_RESERVED = ("step", "time")
# Records written before phases were tagged are search records.
_DEFAULT_PHASE = "search"


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


def _finite_or_none(value: Any) -> Any:
    """NaN and +-inf become ``None``: JSON has no such numbers, and strict parsers
    (``jq``, JavaScript, ``json.loads(..., parse_constant=...)``) reject Python's ``NaN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def _dumps_line(record: dict) -> str:
    """One strict-JSON line: non-finite numbers as ``null`` (``allow_nan=False`` proves it)."""
    return json.dumps(_strict(record), allow_nan=False)


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
        tensorboard: if given, numeric metrics also go to TensorBoard event
            files in ``workdir/tb/<tensorboard>`` (one TensorBoard "run" per
            phase, e.g. ``search`` and ``retrain``). When that directory has no
            event files yet, the records of that phase already in
            ``metrics.jsonl`` are written to it first.

    Example:
        >>> import tempfile
        >>> with MetricWriter(tempfile.mkdtemp(), tensorboard="search") as w:
        ...     _ = w.write(10, loss=0.25, acc=0.9)
    """

    def __init__(self, workdir: str, tensorboard: str | None = None) -> None:
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, METRICS_FILENAME)
        self._tb = None
        if tensorboard is not None:
            from tensorboardX import SummaryWriter  # lazy: only runs that log need it

            tb_dir = os.path.join(workdir, TENSORBOARD_DIRNAME, tensorboard)
            fresh = not glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))
            self._tb = SummaryWriter(logdir=tb_dir, flush_secs=10)
            if fresh:
                # The event files are a view of metrics.jsonl: a new (or deleted)
                # TensorBoard directory starts with the phase's records so far.
                for record in read_metrics(workdir):
                    if record.get("phase", _DEFAULT_PHASE) == tensorboard:
                        _tb_write(self._tb, record)
                self._tb.flush()
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

    def write(self, step: int, **scalars: Any) -> dict:
        """Append ``{"step": step, "time": <unix time>, **scalars}`` as one line; return it.

        The line is strict JSON: a NaN or infinite value (a diverged loss) is
        written, and returned, as ``None`` (``null``).

        Args:
            step: training step (converted to int).
            **scalars: numbers, bools, strings, or numpy/jax size-1 arrays.

        Example:
            >>> import tempfile
            >>> w = MetricWriter(tempfile.mkdtemp())
            >>> w.write(0, loss=1.0)["loss"]
            1.0
            >>> w.close()
        """
        for key in _RESERVED:
            if key in scalars:
                raise ValueError(f"metric name {key!r} is reserved")
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        for name, value in scalars.items():
            record[name] = _finite_or_none(_to_python(value, name))
        self._file.write(_dumps_line(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            _tb_write(self._tb, record)
            self._tb.flush()
        return record

    def flush(self) -> None:
        """Flush buffered data (``write`` already flushes every line)."""
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Close the file; further ``write`` calls raise ValueError."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

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


def _tb_write(writer: Any, record: dict) -> None:
    for name, value in record.items():
        if name in _RESERVED or isinstance(value, (bool, str)) or value is None:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(name, value, record["step"], walltime=record["time"])


def replace_phase(workdir: str, phase: str, records: list[dict]) -> None:
    """Make ``records`` the only records of ``phase`` in the workdir's metrics.

    Used when a run resumes from a checkpoint: lines written after that
    checkpoint (by the run that was killed) must not appear twice. Records of
    other phases are kept, in order, before ``records``; a record without a
    ``phase`` counts as ``search``. ``metrics.jsonl`` is replaced atomically
    and the phase's TensorBoard directory ``workdir/tb/<phase>`` is deleted:
    the next ``MetricWriter(workdir, tensorboard=phase)`` writes it anew,
    starting with these records.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with MetricWriter(d) as w:
        ...     _ = w.write(1, phase="search", loss=1.0); _ = w.write(2, phase="search", loss=0.5)
        >>> replace_phase(d, "search", read_metrics(d)[:1])
        >>> [r["step"] for r in read_metrics(d)]
        [1]
    """
    keep = [r for r in read_metrics(workdir) if r.get("phase", _DEFAULT_PHASE) != phase]
    lines = "".join(_dumps_line(r) + "\n" for r in keep + list(records))
    _write_text_atomic(os.path.join(workdir, METRICS_FILENAME), lines)
    # The next MetricWriter(workdir, tensorboard=phase) rebuilds it from the records.
    tb_dir = os.path.join(workdir, TENSORBOARD_DIRNAME, phase)
    if os.path.isdir(tb_dir):
        shutil.rmtree(tb_dir)


def _write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                    suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


# -- reading TensorBoard event files -----------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: list[int] = []


def _crc32c(data: bytes) -> int:
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_crc32c_table())
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_records(path: str) -> list[bytes]:
    """The payloads of a TFRecord file; raises ValueError on a bad CRC."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if _masked_crc(header) != len_crc:
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        end = pos + 12 + length
        if end + 4 > len(data):
            break  # a record torn by a kill: the rest of the file is unusable
        payload = data[pos + 12:end]
        (data_crc,) = struct.unpack("<I", data[end:end + 4])
        if _masked_crc(payload) != data_crc:
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        out.append(payload)
        pos = end + 4
    return out


def read_tensorboard_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the TensorBoard event files of ``logdir``: ``{tag: [(step, value)]}``.

    Parses the record framing (with its masked CRC32C checks) and the
    ``Event`` protobufs directly, so it needs neither TensorFlow nor
    TensorBoard. Files are read in name (= creation time) order.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with MetricWriter(d, tensorboard="search") as w:
        ...     _ = w.write(3, loss=0.5)
        >>> read_tensorboard_scalars(d + "/tb/search")["loss"]
        [(3, 0.5)]
    """
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for payload in _read_records(path):
            event = event_pb2.Event.FromString(payload)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((int(event.step), value.simple_value))
    return scalars
