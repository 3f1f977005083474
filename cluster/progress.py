"""The sweep's progress for people: a redrawn bar on a terminal, plain periodic lines otherwise
(a log file or ``ray job logs`` should not fill with carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A driver listener: done / total, rate, ETA and failures."""

    def __init__(self, name: str, stream: TextIO | None = None, every_s: float = 10.0,
                 tty: bool | None = None) -> None:
        self.name = name
        self.out = stream or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self.total = self.done = self.failed = self.already = 0
        self.start_t = self.last_line = 0.0

    def start(self, total: int, already: int) -> None:
        self.total, self.already, self.done = total, already, already
        self.start_t = self.last_line = time.monotonic()
        resumed = f", {already} already recorded" if already else ""
        print(f"sweep {self.name}: {total} simulations{resumed}", file=self.out, flush=True)

    def update(self, entries: list[dict]) -> None:
        self.done += len(entries)
        self.failed += sum(1 for e in entries if e["status"] != "ok")

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start_t
        ran = self.done - self.already
        rate = ran / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        return (f"{self.done}/{self.total} done, {rate:.1f}/s, ETA {eta}, "
                f"{self.failed} failed, elapsed {_clock(elapsed)}")

    def tick(self) -> None:
        now = time.monotonic()
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total) if self.total else width
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {self._line()}", end="", file=self.out, flush=True)
        elif now - self.last_line >= self.every_s:
            print(self._line(), file=self.out, flush=True)
            self.last_line = now

    def finish(self, outcome) -> None:
        if self.tty:
            print(file=self.out)
        state = "cancelled" if outcome.cancelled else "finished"
        print(f"sweep {self.name} {state}: {self._line()}", file=self.out, flush=True)
