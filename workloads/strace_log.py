"""Reading an ``strace -f -tt`` log: the shapes of its lines and of the values in them.

A line is a prefix (``PID `` or ``[pid PID] ``, then ``HH:MM:SS[.us] `` from -t/-tt or
``SECS.us `` from -ttt, each optional; no pid means pid "0") and one of
  ``name(args) = ret``          a complete call, handed to the syscall semantics (``strace_calls``);
  ``name(args <unfinished ...>`` a call another pid's line interrupted: kept in ``Pending`` until
  ``<... name resumed>rest``    completes it (or leaves it unfinished again);
  ``--- SIGxxx {...} ---``      a signal: not a syscall, skipped (the pid may first appear here);
  ``+++ exited with N +++``     the pid is gone (``+++ killed by SIG +++`` too): a call it left
                                unfinished is an exit completed, or a kernel entry that never returned;
  ``strace: ...``               strace's own notes (Process N attached), ignored.
A line of no known shape is malformed: skipped and listed, or ``StraceError`` with ``strict``.

Values are read only as far as the model needs: numbers in any base Python reads, ``NULL`` as 0,
``-y`` decorations (``3</etc/passwd>``) dropped, a return value up to its first space (``= 3
</etc/passwd>``, ``= 0x7f00 ...``), and quoted strings with backslash escapes (the bytes inside
are kept as printed, escapes not decoded: only paths are used, as identities). Where it simplifies:
a resumed call whose start is not in the log (it began before strace attached) is known by its
name alone, and a clone's pending text also tells which child it made (see ``Pending``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from workloads.errors import StraceError

if TYPE_CHECKING:
    from workloads.strace_calls import Syscalls

UNFINISHED = " <unfinished ...>"
CLONES = ("clone(", "clone3(", "fork(", "vfork(")

# "PID " or "[pid PID] ", then "HH:MM:SS[.us] " (-t/-tt) or "SECS.us " (-ttt), each optional
PREFIX = re.compile(r"(?:\[pid +(\d+)\] |(\d+) +)?(?:\d+:\d\d:\d\d(?:\.\d+)? +|\d+\.\d+ +)?")


class BadLine(Exception):
    """A line of no known shape (internal: becomes a skipped line or StraceError)."""


def num(s: str) -> int:
    """An argument as a number: decimal, 0x hex, 0 octal, ``NULL``, or an fd with a -y path."""
    try:
        return int(s)  # the common case: a decimal, maybe with spaces around it
    except ValueError:
        pass
    s = s.strip()
    if s == "NULL":
        return 0
    lt = s.find("<")  # -y decorations: 3</etc/passwd>
    if lt > 0:
        s = s[:lt]
    return int(s, 0)


def retval(ret: str) -> int:
    """A return value, without what strace prints after it (``-1 ENOENT (...)``, ``3</path>``)."""
    try:
        return int(ret)
    except ValueError:
        sp = ret.find(" ")
        return num(ret if sp < 0 else ret[:sp])


def quoted(args: str) -> tuple[str, str]:
    """The first quoted string in ``args`` and the text after it."""
    q = args.find('"')
    if q < 0:
        raise ValueError("no string")
    end = q + 1
    while True:
        end = args.find('"', end)
        if end < 0:
            raise ValueError("unterminated string")
        back = 0
        while args[end - 1 - back] == "\\":
            back += 1
        if back % 2 == 0:  # an even run of backslashes escapes itself, not the quote
            break
        end += 1
    return args[q + 1:end], args[end + 1:]


class Pending(dict):
    """Unfinished calls by pid, with the unclaimed clones among them kept apart: a new pid looks
    for its parent's clone there, so a log with many pids parked in other calls stays linear. A
    clone that has made its child is marked claimed by a trailing NUL on its text."""

    def __init__(self) -> None:
        super().__init__()
        self.clones: dict[str, str] = {}

    def __setitem__(self, pid: str, text: str) -> None:
        super().__setitem__(pid, text)
        if text.startswith(CLONES) and "\0" not in text:
            self.clones[pid] = text
        else:
            self.clones.pop(pid, None)

    def pop(self, pid: str, default: object = None) -> object:
        self.clones.pop(pid, None)
        return super().pop(pid, default)


class LogReader:
    """Reads the log line by line, joins unfinished calls to their ends, and hands each event of
    the log (a complete call, a pid's appearance or end) to the syscall semantics ``calls``."""

    def __init__(self, path: str, strict: bool, batch: int, calls: Syscalls, pending: Pending) -> None:
        self.path = path
        self.strict = strict
        self.batch = batch
        self.calls = calls
        self.pending = pending  # pid -> call text before " <unfinished ...>"
        self.skipped: list[tuple[int, str]] = []
        self.lines = 0
        self.ignored = 0  # blank lines and strace's own notes

    def call(self, pid: str, text: str) -> None:
        """A complete call ``name(args) = ret``; ``text`` starts at the name."""
        p = text.find("(")
        i = text.rfind(" = ")
        if p <= 0 or i < p:
            raise BadLine
        head = text[:i].rstrip()
        ret = text[i + 3:].lstrip()
        if head[-1] != ")" or not ret:
            raise BadLine
        self.calls.syscall(pid, text[:p], head[p + 1:-1], ret, text)

    def resumed(self, pid: str, rest: str) -> None:
        """``<... NAME resumed>REST``: completes the call the pid left unfinished."""
        gt = rest.find(" resumed>")
        if gt < 0:
            raise BadLine
        name = rest[5:gt]
        tail = rest[gt + 9:]
        text = self.pending.pop(pid, None)
        if text is not None:
            text = text.split("\0")[0]  # a clone whose child has appeared
        if tail.endswith(UNFINISHED):  # resumed and unfinished again
            self.pending[pid] = (text if text is not None else name + "(") + tail[:-len(UNFINISHED)]
            return
        if text is None or not text.startswith(name + "("):
            if " = " not in tail or not name.isidentifier():
                raise BadLine
            self.calls.orphan(pid, name)  # begun before the log (or its start lost)
            return
        self.call(pid, text + tail.lstrip() if text.endswith("(") else text + tail)

    def ended(self, pid: str) -> None:
        """``+++ exited with N +++``, ``+++ killed by SIG +++``: the task is gone if not already."""
        calls = self.calls
        if pid not in calls.tasks and pid in calls.cpus:  # its exit call came first
            return
        t = calls.task(pid)
        text = self.pending.pop(pid, None)
        if text is not None:
            text = text.split("\0")[0]
            if text.startswith(("exit(", "exit_group(")):
                self.call(pid, text.rstrip() + ") = ?")
                return
            calls.lost(t, text[:text.find("(")])
        calls.die(t, entry=False)

    def line(self, pid: str, rest: str) -> None:
        """One line after its prefix: a call, an unfinished or resumed call, a signal, an exit."""
        c = rest[0]
        if c == "<":
            if not rest.startswith("<... "):
                raise BadLine
            self.resumed(pid, rest)
        elif c == "-":  # a signal: not a syscall, but the pid's first appearance may be here
            if not (rest.startswith("--- ") and rest.endswith("---")):
                raise BadLine
            if pid not in self.calls.cpus:
                self.calls.task(pid)
        elif c == "+":
            if not (rest.startswith("+++ ") and rest.endswith("+++")):
                raise BadLine
            self.ended(pid)
        elif rest.endswith(UNFINISHED):
            p = rest.find("(")
            if p <= 0:
                raise BadLine
            self.calls.lookup(rest[:p])  # a name of no known shape is a bad line now, not at its end
            self.calls.task(pid)
            self.pending[pid] = rest[:-len(UNFINISHED)]
        else:
            self.call(pid, rest)

    def run(self) -> None:
        match = PREFIX.match
        size = self.batch * 5
        rows, flush = self.calls.rows, self.calls.flush
        call, line = self.call, self.line
        n = 0
        try:
            fh = open(self.path, encoding="utf-8", errors="replace")
        except OSError as err:
            raise StraceError(f"{self.path}: cannot read: {err.strerror}") from None
        with fh:
            for n, raw in enumerate(fh, 1):
                m = match(raw)
                end = m.end()
                rest = raw[end:].rstrip()
                if not rest:
                    if end:
                        self.bad(n, raw)
                    else:
                        self.ignored += 1
                    continue
                pid = m.group(2) or m.group(1) or "0"
                try:
                    # the common case first: a complete call
                    if rest[0].isalpha() and not rest.endswith(UNFINISHED):
                        call(pid, rest)
                    else:
                        line(pid, rest)
                except (BadLine, ValueError, IndexError):
                    if rest.startswith("strace: "):  # strace's own notes (Process N attached)
                        self.ignored += 1
                    else:
                        self.bad(n, raw)
                if len(rows) >= size:
                    flush()
        flush()
        self.lines = n

    def bad(self, lineno: int, raw: str) -> None:
        shown = "".join(c if c.isprintable() else "?" for c in raw.rstrip("\r\n")[:60])  # stays one line
        if self.strict:
            raise StraceError(f"{self.path}:{lineno}: cannot parse: {shown}")
        self.skipped.append((lineno, f"cannot parse: {shown}"))
