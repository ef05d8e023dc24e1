"""Progress of long loops: a tqdm bar on a terminal or in a notebook, periodic lines in a log.

The C++ loops report through ``fewstep::ProgressBar`` (``include/fewstep/core/progress_bar.h``)
with the same policy: when stderr is a file or a pipe (CI, ``tee``, ``nohup``) a redrawn bar
would be one endless line, so one plain line is printed every ``FEWSTEP_PROGRESS_INTERVAL``
seconds (30 by default; 0 prints a line at every update) plus a last one when the loop ends. A loop shorter
than the interval prints nothing.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Optional, TextIO

__all__ = ["progress_bar", "progress_interval"]

_LINE_FORMAT = "{desc} {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LINE_FORMAT_OPEN = "{desc} {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def progress_interval() -> float:
    """Seconds between two progress lines in a log: ``FEWSTEP_PROGRESS_INTERVAL`` or 30."""
    text = os.environ.get("FEWSTEP_PROGRESS_INTERVAL")
    if text is not None:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    return 30.0


class LineProgress:
    """The tqdm calls fewstep's loops make (``update``, ``set_postfix``, ``close``), printed as
    one line every ``interval`` seconds instead of a redrawn bar."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", initial: int = 0,
                 interval: Optional[float] = None, file: Optional[TextIO] = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.initial = initial
        self.n = initial
        self.interval = progress_interval() if interval is None else float(interval)
        self.file = file
        self.lines = 0
        self._postfix = ""
        self._closed = False
        self._start = self._last = time.monotonic()

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self._closed and now - self._last >= self.interval:
            self._last = now
            self._print(now, "")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.lines:
            now = time.monotonic()
            from tqdm import tqdm

            self._print(now, f" (done in {tqdm.format_interval(now - self._start)})")

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self, elapsed: float) -> str:
        """The text of one progress line after ``elapsed`` seconds."""
        from tqdm import tqdm

        return tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                 postfix=self._postfix or None, initial=self.initial,
                                 bar_format=_LINE_FORMAT if self.total else _LINE_FORMAT_OPEN)

    def _print(self, now: float, suffix: str) -> None:
        self.lines += 1
        out = self.file if self.file is not None else sys.stderr
        print(self.line(now - self._start) + suffix, file=out, flush=True)


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (the test tqdm.autonotebook makes)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an IPython too old or too new for this probe: not a notebook we know
        return False


def progress_bar(total: Optional[int], desc: str, unit: str = "step", initial: int = 0) -> Any:
    """A tqdm bar in a notebook or on a terminal (stderr is a TTY), else a :class:`LineProgress`."""
    stream = sys.stderr
    if _in_notebook() or (stream is not None and hasattr(stream, "isatty") and stream.isatty()):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, desc, unit=unit, initial=initial)
