"""Progress as log lines, for runs whose progress bars are off (``dvc repro`` passes ``--no-progress``).

``ProgressLog(total, desc)`` logs at INFO, every ``every_n`` items or every ``every_s`` seconds
(whichever comes first) and always on the last item, a line such as::

    preprocess: 120/888 (14%) elapsed 12m05s, ETA 1h17m, 0.165 scan/s

Use it next to a tqdm bar (the bar for a terminal, the lines for logs), or wrap an iterable with
:func:`track`::

    for scan in track(scans, "patches", unit="scan"):
        ...
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_log = logging.getLogger("pipeline.progress")


def format_duration(seconds: float) -> str:
    """``42s``, ``1m23s``, ``2h05m`` (rounded down to whole seconds / minutes)."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressLog:
    """Log ``"<desc>: <done>/<total> (<pct>%) elapsed 1m23s, ETA 4m56s, <rate>/s"`` lines.

    Args:
        total: number of items expected.
        desc: label at the start of each line (the stage name).
        every_n: log every this many items (None: only by time and on the last item).
        every_s: log when this many seconds passed since the last line (None: only by count).
        logger: where to log (INFO); default ``pipeline.progress``.
        clock: monotonic seconds (injectable for tests).
        unit: item name in the rate (``0.2 scan/s``); empty: ``0.2/s``.
        initial: items already done before this run (resumed training): counted in done/total,
            not in the rate / ETA.
    """

    def __init__(self, total: int, desc: str, every_n: int | None = None, every_s: float | None = 30.0,
                 logger: logging.Logger | None = None, *, clock: Callable[[], float] = time.monotonic,
                 unit: str = "", initial: int = 0):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.every_n = int(every_n) if every_n else None
        self.every_s = float(every_s) if every_s is not None else None
        self.logger = logger or _log
        self.clock = clock
        self.initial = self.done = int(initial)
        self.start = self._last_time = clock()
        self._last_done = self.done

    def line(self, extra: str = "") -> str:
        """The current progress line (without logging it)."""
        elapsed = self.clock() - self.start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        new = self.done - self.initial
        rate = new / elapsed if elapsed > 0 else 0.0
        if self.done >= self.total:
            eta = "0s"
        elif rate > 0:
            eta = format_duration((self.total - self.done) / rate)
        else:
            eta = "?"
        rate_s = f"{rate:.3g} {self.unit}/s" if self.unit else f"{rate:.3g}/s"
        text = (f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) elapsed {format_duration(elapsed)}, "
                f"ETA {eta}, {rate_s}")
        return f"{text}; {extra}" if extra else text

    def update(self, n: int = 1, extra: str = "", *, force: bool = False) -> str | None:
        """Count ``n`` more items; log (and return) a line when one is due, else return None.

        ``extra`` is appended to the line (``"train_loss=0.41 val_auc=0.88"``).
        """
        self.done += int(n)
        now = self.clock()
        due = (force or self.done >= self.total
               or (self.every_n is not None and self.done - self._last_done >= self.every_n)
               or (self.every_s is not None and now - self._last_time >= self.every_s))
        if not due:
            return None
        self._last_time, self._last_done = now, self.done
        text = self.line(extra)
        self.logger.info("%s", text)
        return text


def track(iterable: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    """Yield the items of ``iterable``, calling :meth:`ProgressLog.update` after each (kwargs as there)."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    plog = ProgressLog(total, desc, **kw)
    for item in iterable:
        yield item
        plog.update()
