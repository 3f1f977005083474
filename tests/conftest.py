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


def pids_titled(title: bytes) -> list[int]:
    """Pids of the processes whose command line starts with ``title``: Ray titles a worker running
    a task ``ray::FUNCTION`` and an actor's process ``ray::CLASS``."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(title):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids
