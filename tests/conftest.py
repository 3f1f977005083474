"""Shared fixtures: running the command line as a user would, in a fresh interpreter."""

from __future__ import annotations

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
