"""The dependency direction core <- workloads <- cluster, checked on the source with ``ast``.

core/ may import numpy, the standard library and itself, but none of the standard modules that
read the wall clock, draw unseeded randomness or reach outside the process (randomness comes
from numpy's seeded Generator), and it opens no files. workloads/ may add msgpack and core.
cluster/ may import anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = frozenset(sys.stdlib_module_names)
CORE_FORBIDDEN_STDLIB = frozenset({"time", "datetime", "socket", "random", "subprocess", "threading",
                                   "multiprocessing"})

ALLOWED = {
    "core": (STDLIB - CORE_FORBIDDEN_STDLIB) | {"numpy", "core"},
    "workloads": STDLIB | {"numpy", "msgpack", "core", "workloads"},
}


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every import anywhere in the tree; relative imports are the
    package itself and are skipped."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def violations(source: str, package: str) -> list[str]:
    """What a module of ``package`` does that its layer forbids, as 'line N: ...' strings."""
    tree = ast.parse(source)
    bad = [f"line {line}: imports {name}" for line, name in imported_roots(tree) if name not in ALLOWED[package]]
    if package == "core":
        bad += [f"line {node.lineno}: calls open()" for node in ast.walk(tree)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"]
    return bad


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    files = sources(package)
    assert files, f"no .py files under {package}/"
    found = {str(path.relative_to(ROOT)): violations(path.read_text(), package) for path in files}
    assert {path: bad for path, bad in found.items() if bad} == {}


@pytest.mark.parametrize("source, package", [
    ("import ray", "core"),
    ("from prometheus_client import Counter", "core"),
    ("import msgpack", "core"),
    ("from workloads import WORKLOADS", "core"),
    ("def now():\n    import time\n    return time.time()", "core"),
    ("from datetime import datetime", "core"),
    ("import numpy as np\nwith open('results.txt', 'w') as f:\n    pass", "core"),
    ("from cluster import cli", "workloads"),
    ("import ray.util", "workloads"),
])
def test_the_check_catches_a_forbidden_import(source, package):
    assert violations(source, package)


@pytest.mark.parametrize("source, package", [
    ("import numpy as np\nfrom numpy.random import default_rng", "core"),
    ("from __future__ import annotations\nimport dataclasses\nfrom collections.abc import Iterator", "core"),
    ("from core.errors import ConfigError\nfrom . import units", "core"),
    ("import msgpack\nfrom core import events\nfrom workloads.base import Param\nimport time", "workloads"),
])
def test_the_check_allows_what_the_layer_may_use(source, package):
    assert violations(source, package) == []
