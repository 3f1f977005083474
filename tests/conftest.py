"""Shared fixtures: running the command line as a user would, in a fresh interpreter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m cluster ARGS`` from the repository root, output captured as text."""
    return subprocess.run([sys.executable, "-m", "cluster", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def zonesim() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes():
    """(pid, parent pid, state, command line) of every process this machine runs, from /proc
    (one that exits while it is read is left out)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        yield int(entry), int(ppid), state, cmdline


def pids_titled(title: bytes) -> list[int]:
    """Pids of the processes whose command line starts with ``title``: Ray titles a worker running
    a task ``ray::FUNCTION`` and an actor's process ``ray::CLASS``."""
    return [pid for pid, _, _, cmdline in _processes() if cmdline.startswith(title)]


def children(parent: int) -> dict[int, str]:
    """The live (not zombie) processes whose parent is ``parent``, with their command lines."""
    return {pid: cmdline.replace(b"\0", b" ").decode() for pid, ppid, state, cmdline in _processes()
            if ppid == parent and state != "Z"}
