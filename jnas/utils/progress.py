"""Progress reporting that suits both terminals and CI logs.

On a terminal ``progress`` draws a tqdm bar. Elsewhere (CI, pipes, files) a
bar would fill the log with carriage-return noise, so it writes one plain line
at the start, at most one every ~10 s, and one at the end. ``JNAS_PROGRESS``
(``bar``, ``lines`` or ``off``) forces a mode.

Example:
    >>> with progress(total=3, desc="search") as p:   # doctest: +SKIP
    ...     for _ in range(3):
    ...         p.update(1)
    ...         p.set_postfix(loss=0.5)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Progress", "progress", "ENV_VAR"]

logger = logging.getLogger(__name__)

ENV_VAR = "JNAS_PROGRESS"
_MODES = ("bar", "lines", "off")
_LINE_INTERVAL_S = 10.0
# Postfix values are often jax arrays; formatting them forces a device sync,
# so the bar only re-reads them this often rather than on every step.
_BAR_POSTFIX_INTERVAL_S = 0.5

_warned_bad_env = False


def _format_scalar(value: Any) -> str:
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "size", 1) == 1:
        value = item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_postfix(postfix: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_format_scalar(v)}" for k, v in postfix.items())


def _resolve_mode() -> str:
    global _warned_bad_env
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in _MODES:
        return forced
    if forced and not _warned_bad_env:
        _warned_bad_env = True
        logger.warning("ignoring %s=%r (expected one of %s)", ENV_VAR, forced, "|".join(_MODES))
    stream = sys.stderr
    try:
        is_tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        is_tty = False
    return "bar" if is_tty else "lines"


class Progress:
    """Progress over an optional iterable; returned by :func:`progress`.

    Usable as an iterator (when built from an iterable), through ``update``,
    and as a context manager that closes it. ``n`` counts completed units.

    Example:
        >>> p = Progress(range(2), total=None, desc="x", unit="it", mode="off")
        >>> [i for i in p], p.n
        ([0, 1], 2)
    """

    def __init__(
        self,
        iterable: Iterable | None,
        *,
        total: int | None,
        desc: str,
        unit: str,
        mode: str,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.mode = mode
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.closed = False
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar = None
        self._postfix_dirty = False
        self._last_postfix_push = 0.0
        if mode == "bar":
            from tqdm.auto import tqdm  # imported lazily: only terminals need it

            self._bar = tqdm(
                total=total, desc=desc or None, unit=unit, file=sys.stderr, dynamic_ncols=True
            )
        elif mode == "lines":
            self._emit_line()

    # -- reporting ----------------------------------------------------------

    def _line(self, final: bool, interrupted: bool) -> str:
        elapsed = time.monotonic() - self._start
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            pct = 100.0 * self.n / self.total
            count = f"{self.n}/{self.total} ({pct:.0f}%)"
        else:
            count = f"{self.n} {self.unit}"
        parts = [f"{head}{count} {elapsed:.1f}s elapsed"]
        if final and elapsed > 0 and self.n:
            parts.append(f"{self.n / elapsed:.3g} {self.unit}/s")
        if self.postfix:
            parts.append(_format_postfix(self.postfix))
        line = ", ".join(parts)
        if interrupted:
            line += " (stopped)"
        elif final:
            line += " (done)"
        return line

    def _emit_line(self, final: bool = False, interrupted: bool = False) -> None:
        self._last_line = time.monotonic()
        stream = sys.stderr
        if stream is None:
            return
        # Plain stream writes, not logging: this is user-facing output that
        # must show even when the host program never configured logging.
        stream.write(self._line(final, interrupted) + "\n")
        stream.flush()

    def _push_postfix(self, force: bool = False) -> None:
        if self._bar is None or not self._postfix_dirty:
            return
        now = time.monotonic()
        if force or now - self._last_postfix_push >= _BAR_POSTFIX_INTERVAL_S:
            self._bar.set_postfix_str(_format_postfix(self.postfix), refresh=False)
            self._postfix_dirty = False
            self._last_postfix_push = now

    # -- public API ---------------------------------------------------------

    def update(self, n: int = 1) -> None:
        """Record ``n`` more completed units.

        Example:
            >>> p = Progress(None, total=4, desc="", unit="it", mode="off")
            >>> p.update(3); p.n
            3
        """
        self.n += n
        if self.mode == "bar" and self._bar is not None:
            self._push_postfix()
            self._bar.update(n)
        elif self.mode == "lines":
            if time.monotonic() - self._last_line >= _LINE_INTERVAL_S:
                self._emit_line()

    def set_postfix(self, **kwargs: Any) -> None:
        """Set the ``key=value`` items shown after the count (replaces old ones).

        Values may be jax/numpy scalars; they are only converted when shown.

        Example:
            >>> p = Progress(None, total=1, desc="", unit="it", mode="off")
            >>> p.set_postfix(loss=0.5)
        """
        self.postfix = dict(kwargs)
        self._postfix_dirty = True

    def close(self, interrupted: bool = False) -> None:
        """Finish: close the bar or print the final line. Idempotent.

        Example:
            >>> Progress(None, total=1, desc="", unit="it", mode="off").close()
        """
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._push_postfix(force=True)
            self._bar.close()
        elif self.mode == "lines":
            self._emit_line(final=True, interrupted=interrupted)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress() was created without an iterable; use update()")
        finished = False
        try:
            for item in self.iterable:
                yield item
                self.update(1)
            finished = True
        finally:
            self.close(interrupted=not finished and self.total is not None
                       and self.n < self.total)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(interrupted=exc_type is not None)


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
) -> Progress:
    """Return a progress reporter: a tqdm bar on a TTY, periodic lines otherwise.

    The mode is ``bar`` if ``sys.stderr`` is a terminal and ``lines``
    otherwise; ``JNAS_PROGRESS=bar|lines|off`` overrides it. In ``lines`` mode
    a line like ``search: 120/400 (30%) 12.3s elapsed, loss=0.51`` goes to
    stderr at the start, at most every ~10 s, and at the end.

    Args:
        iterable: optional iterable to wrap; ``total`` defaults to its length.
        total: expected number of units, if known.
        desc: label printed before the count.
        unit: name of one unit (``"it"``, ``"step"``, ``"epoch"``).

    Example:
        >>> for batch in progress(range(3), desc="train", unit="step"):  # doctest: +SKIP
        ...     pass
        >>> with progress(total=10, desc="search") as p:                  # doctest: +SKIP
        ...     p.update(1); p.set_postfix(loss=0.51)
    """
    return Progress(iterable, total=total, desc=desc, unit=unit, mode=_resolve_mode())
