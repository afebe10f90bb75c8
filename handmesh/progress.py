"""Progress that suits where it goes: a live tqdm bar on a terminal; plain lines in a log file or CI.

tqdm redraws its bar with carriage returns, which a log file keeps in full (megabytes of redraws). When the stream is
not a terminal, `progress_bar` returns a tqdm that writes one complete line each time another LINE_FRACTION of the
total is done or LINE_EVERY_S seconds have passed, and one at the end:

    for batch in progress_bar(loader, desc="predict", unit="batch"):
        ...
    with progress_bar(total=n, desc="synth", unit="sample") as bar:
        bar.update(k)
"""

from __future__ import annotations

import math
import sys

from tqdm import tqdm

LINE_FRACTION = 0.1  # a line each time another tenth of the total is done ...
LINE_EVERY_S = 30.0  # ... or after this many seconds without one
_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal (where redrawing a bar in place works)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable=None, file=None, **kwargs) -> tqdm:
    """A tqdm over `iterable` (or with `total=`) writing to `file` (default: stderr): live on a terminal, else a
    `LineProgress`. The keyword arguments are tqdm's (desc, total, unit, disable, leave, ...)."""
    file = sys.stderr if file is None else file
    kind = tqdm if is_terminal(file) else LineProgress
    return kind(iterable, file=file, **kwargs)


class LineProgress(tqdm):
    """tqdm that writes whole lines, no redraws: when another `line_fraction` of the total is done, after
    `every_s` seconds without a line (also when the total is unknown), and once when closed. Like tqdm, nothing
    before `delay` seconds (tqdm's argument): a job done sooner writes no line at all."""

    def __init__(self, *args, line_fraction: float = LINE_FRACTION, every_s: float = LINE_EVERY_S, **kwargs):
        self._line_fraction, self._every_s = line_fraction, every_s
        self._next_fraction = line_fraction
        self._last_line_s: float | None = None
        self._last_line_n = 0
        kwargs.setdefault("mininterval", 0.5)  # how often tqdm asks to display; the lines are rarer
        super().__init__(*args, **kwargs)
        if not self.disable:
            self._last_line_s = self._started_s = self._time()
        if "bar_format" not in kwargs:
            self.bar_format = _LINE_FORMAT if self.total else _LINE_FORMAT_NO_TOTAL

    def display(self, msg=None, pos=None) -> bool:
        if msg is not None or self._last_line_s is None:  # tqdm clearing the bar, or the call from its __init__
            return False
        now = self._time()
        if now - self._started_s < self.delay:
            return True
        fraction = self.n / self.total if self.total else None
        if (fraction is not None and fraction >= self._next_fraction) or now - self._last_line_s >= self._every_s:
            self._write_line(now, fraction)
        return True

    def close(self) -> None:
        if (not self.disable and self._last_line_s is not None and self.n != self._last_line_n
                and self._time() - self._started_s >= self.delay):
            self._write_line(self._time(), None)
        self.leave = False  # the final line is written: tqdm's own close would only redraw it
        super().close()

    def _write_line(self, now: float, fraction: float | None) -> None:
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        self._last_line_s, self._last_line_n = now, self.n
        if fraction is not None:
            self._next_fraction = (math.floor(fraction / self._line_fraction + 1e-9) + 1) * self._line_fraction
