"""Sweeps on a real, embedded single-node Ray, run as a user would (``python -m cluster sweep``):
records, resume, refusal of a changed spec, failures, determinism across worker counts, and fault
injection (a worker process killed by its pid; the driver killed, then resumed)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, pids_titled, run_cli

from cluster.store import DB, Store, StoreError

pytestmark = pytest.mark.ray

SMALL = """
[base]
machine = "pa8800"
workload = "io"
[base.set]
events = 20000
processes = 4
anon_pages = 16
pagecache = "32MiB"
io_size = "64KiB"
"""
# about a quarter of a second each on the reference engine: long enough to kill something mid-sweep
SLOW = """
[base]
machine = "x86-pae-64g"
workload = "mixed"
engine = "reference"
[base.set]
events = 40000
processes = 4
anon_pages = 16
shm = "8MiB"
pagecache = "8MiB"
files = 256
"""
# every simulation on Ray's workers: without --ray-start now these small sweeps would run in the
# driver's process, since they cost less than Ray's start-up (test_embedded_ray.py tests that)
ON_RAY = ("--no-metrics", "--ray-start", "now")


def spec(tmp_path: Path, name: str, body: str, seeds: int = 2, grid: str = 'policy = ["stock", "unmapped"]',
         baseline: str = "stock") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nseeds = {seeds}\nbaseline = "{baseline}"\n{body}\n[grid]\n{grid}\n')
    return str(path)


def results(directory: Path) -> list[dict]:
    out = run_cli("results", str(directory), "--format", "json", "--keys", "all")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["cells"]


def logged_keys(directory: Path) -> Counter:
    """How many rows each key has in the database (not deduplicated, unlike Store.entries)."""
    with contextlib.closing(sqlite3.connect(directory / DB)) as db:
        return Counter(key for key, in db.execute("SELECT key FROM records"))


def stored(directory: Path) -> int:
    try:
        return len(Store.read(str(directory)))
    except StoreError:  # not created yet
        return 0


def sweep_process(spec_path: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cluster", "sweep", spec_path, "--out", str(out), *ON_RAY, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the embedded Ray goes with it


def test_a_sweep_records_everything_and_a_rerun_runs_nothing(tmp_path) -> None:
    s = spec(tmp_path, "small", SMALL)
    out = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "small"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "4 of 4 simulations ok (0 from before, 4 run now" in out.stdout
    cells = results(tmp_path / "small")
    assert [(c["config"]["policy"], c["n"]) for c in cells] == [("stock", 2), ("unmapped", 2)]
    unmapped = cells[1]
    assert unmapped["stats"]["alias_violations"]["max"] == 0
    assert unmapped["ratios"]["cache_flush_all"] == 0.0  # the paper's kernel never flushes the whole cache
    again = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "small"), "--resume", timeout=300)
    assert again.returncode == 0 and "(4 from before, 0 run now" in again.stdout
    changed = spec(tmp_path, "small", SMALL, seeds=3)
    refused = run_cli("sweep", *ON_RAY, changed, "--out", str(tmp_path / "small"))
    assert refused.returncode == 2 and "--force" in refused.stderr and refused.stderr.count("\n") == 1
    assert logged_keys(tmp_path / "small").total() == 4  # the refusal touched nothing


def test_a_simulation_that_fails_is_recorded_and_the_exit_code_says_so(tmp_path) -> None:
    trace = tmp_path / "t.trace"
    made = run_cli("trace", "record", "io", "-o", str(trace), "--events", "20000", "--machine", "pa8800",
                   "--set", "processes=4", "--set", "anon_pages=16", "--set", "pagecache=32MiB")
    assert made.returncode == 0, made.stderr
    s = spec(tmp_path, "broken", f'[base]\nmachine = "pa8800"\nworkload = "trace:{trace}"\n', seeds=1)
    with open(trace, "r+b") as f:  # valid when the spec is checked, cut short before it runs
        f.truncate(trace.stat().st_size - 100)
    out = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "broken"), timeout=300)
    assert out.returncode == 1
    assert "0 of 2 simulations ok" in out.stdout and "TraceError" in out.stderr and "truncated" in out.stderr
    cells = results(tmp_path / "broken")
    assert [c["failures"] for c in cells] == [1, 1]


def test_one_worker_and_two_give_identical_aggregates(tmp_path) -> None:
    s = spec(tmp_path, "det", SMALL, seeds=3)
    one = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "one"), "--num-cpus", "1", timeout=300)
    two = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "two"), "--num-cpus", "2", "--max-in-flight", "8",
                  timeout=300)
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert results(tmp_path / "one") == results(tmp_path / "two")


def _wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_mid_sweep_is_retried_and_every_simulation_recorded_once(tmp_path) -> None:
    s = spec(tmp_path, "kill", SLOW, seeds=6)
    p = sweep_process(s, tmp_path / "kill", "--num-cpus", "2")
    _wait_for(lambda: pids_titled(b"ray::run_batch") or p.poll() is not None)
    victim = pids_titled(b"ray::run_batch")[0]
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr
    retried = int(stdout.split(" re-run after a worker died")[0].rsplit(", ", 1)[1])
    assert retried >= 1
    logged = logged_keys(tmp_path / "kill")
    assert len(logged) == 12 and set(logged.values()) == {1}
    clean = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "clean"), timeout=300)
    assert clean.returncode == 0
    assert results(tmp_path / "kill") == results(tmp_path / "clean")


def test_a_killed_driver_resumes_with_only_the_missing_simulations(tmp_path) -> None:
    s = spec(tmp_path, "resume", SLOW, seeds=6)
    p = sweep_process(s, tmp_path / "resume", "--num-cpus", "2", "--max-in-flight", "2")
    _wait_for(lambda: stored(tmp_path / "resume") > 0 or p.poll() is not None)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and its embedded Ray, mid-sweep
    p.communicate()
    before = logged_keys(tmp_path / "resume")
    assert 0 < len(before) < 12
    out = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "resume"), "--resume", timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"({len(before)} from before, {12 - len(before)} run now" in out.stdout
    logged = logged_keys(tmp_path / "resume")
    assert len(logged) == 12 and set(logged.values()) == {1}
    clean = run_cli("sweep", *ON_RAY, s, "--out", str(tmp_path / "clean"), timeout=300)
    assert clean.returncode == 0
    assert results(tmp_path / "resume") == results(tmp_path / "clean")
