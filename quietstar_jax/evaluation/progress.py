"""One progress line with an ETA.

    bar = Progress("gsm8k authors (think)", total=200)
    bar.update(8)        # after each batch
    bar.close()          # "gsm8k authors (think)  200/200  100%  1m12s"

On a terminal the line is redrawn in place; into a file or pipe (CI logs) it is written at most every
`every_s` seconds and once at the end, as whole lines, so logs get a few lines, not a bar per batch.
The ETA counts from the first update (the first batch includes compilation, so early ETAs run high).
"""

from __future__ import annotations

import sys
import time


def fmt_secs(s: float) -> str:
    if s != s or s < 0:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, label: str, total: int, stream=None, every_s: float = 30.0, enabled: bool = True):
        self.label, self.total, self.done = label, max(int(total), 0), 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s, self.enabled = every_s, enabled
        self.t0 = time.time()
        self.t_first = None  # time of the first update: rates are measured from it (excludes compile)
        self.done_first = 0
        self.last_write = self.t0

    def line(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        pct = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = now - self.t0
        if self.done >= self.total:
            tail = f"in {fmt_secs(elapsed)}"
        elif self.t_first is not None and self.done > self.done_first and now > self.t_first:
            rate = (self.done - self.done_first) / (now - self.t_first)
            tail = f"{fmt_secs(elapsed)} elapsed, ETA {fmt_secs((self.total - self.done) / rate)}"
        else:
            tail = f"{fmt_secs(elapsed)} elapsed, ETA ?"
        width = 20
        fill = int(width * self.done / self.total) if self.total else width
        return f"{self.label}  [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {pct:3.0f}%  {tail}"

    def update(self, n: int = 1) -> None:
        now = time.time()
        if self.t_first is None:
            self.t_first, self.done_first = now, n
        self.done = min(self.total, self.done + n)
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self.line(now))
            self.stream.flush()
        elif now - self.last_write >= self.every_s and self.done < self.total:
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self.last_write = now

    def close(self) -> None:
        if not self.enabled:
            return
        self.done = self.total if self.done >= self.total else self.done
        self.stream.write(("\r\033[K" if self.tty else "") + self.line() + "\n")
        self.stream.flush()
