"""A real two-node Ray cluster on this machine: a head started with ``ray start --head`` and a second
node joined with ``ray start --address``, token authentication on (Ray 2.60's default). Sweeps
join it with ``--address``, go through ``ray job submit``, and through the sweep service
(``zonesim serve / submit / status / cancel``)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, pids_titled

pytestmark = pytest.mark.ray

SPEC = """name = "{name}"
seeds = {seeds}
baseline = "stock"
[base]
machine = "pa8800"
workload = "io"
engine = "{engine}"
[base.set]
events = {events}
processes = 4
anon_pages = 16
pagecache = "32MiB"
io_size = "64KiB"
[grid]
policy = ["stock", "unmapped"]
"""


TOKEN = secrets.token_hex(32)


def env() -> dict[str, str]:
    """Token authentication on, with this module's own token for the head, the worker node and every
    client: a fresh machine has no ~/.ray/auth_token for `ray start --head` to find."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


def ray_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ray", *args], capture_output=True, text=True, timeout=timeout, env=env(), check=False)


def zonesim(*args: str, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env(), check=False)


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU, dashboard for the job API) plus a second node (1 CPU); stopped afterwards."""
    port, dash = free_port(), free_port()
    head = ray_cli("start", "--head", f"--port={port}", "--num-cpus=1", f"--dashboard-port={dash}",
                   "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--disable-usage-stats")
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        worker = ray_cli("start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        end = time.monotonic() + 60
        while "2.0 CPU" not in (status := ray_cli("status", f"--address=127.0.0.1:{port}")).stdout:
            assert time.monotonic() < end, status.stdout + status.stderr
            time.sleep(1)
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}"}
    finally:
        ray_cli("stop", "--force")


def spec(tmp_path: Path, name: str, seeds: int = 2, events: int = 20000, engine: str = "fast") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, seeds=seeds, events=events, engine=engine))
    return path


def cells(directory: Path) -> list[dict]:
    out = zonesim("results", str(directory), "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["cells"]


def test_a_sweep_joins_the_two_node_cluster(cluster, tmp_path) -> None:
    out = zonesim("sweep", str(spec(tmp_path, "joined")), "--address", cluster["address"], "--out",
                  str(tmp_path / "joined"), "--no-metrics")
    assert out.returncode == 0, out.stderr
    assert "4 of 4 simulations ok" in out.stdout
    assert [c["n"] for c in cells(tmp_path / "joined")] == [2, 2]


def test_ray_job_submit_runs_the_same_command(cluster, tmp_path) -> None:
    """`ray job submit --working-dir . -- zonesim sweep SPEC`, as the README says; the store goes to
    an absolute --out, since the job runs in a copy of the working directory."""
    work = tmp_path / "job"
    work.mkdir()
    spec(work, "viajob")
    out = subprocess.run(["ray", "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(work),
                          "--", "zonesim", "sweep", "viajob.toml", "--out", str(tmp_path / "viajob"), "--no-metrics"],
                         capture_output=True, text=True, timeout=300, env=env(), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout + out.stderr
    assert [c["n"] for c in cells(tmp_path / "viajob")] == [2, 2]


def test_the_service_queues_reports_and_cancels(cluster, tmp_path) -> None:
    root = tmp_path / "service"
    served = zonesim("serve", "--address", cluster["address"], "--root", str(root))
    assert served.returncode == 0, served.stderr
    other = zonesim("serve", "--address", cluster["address"], "--root", str(tmp_path / "elsewhere"))
    assert other.returncode == 2 and "already runs in this cluster" in other.stderr  # one service per cluster
    quick = zonesim("submit", str(spec(tmp_path, "quick")), "--address", cluster["address"])
    assert quick.returncode == 0, quick.stderr
    slow = zonesim("submit", str(spec(tmp_path, "slow", seeds=40, events=30000, engine="reference")),
                   "--address", cluster["address"])
    assert slow.returncode == 0, slow.stderr

    def status(name: str) -> dict:
        out = zonesim("status", name, "--address", cluster["address"], "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)[0]

    end = time.monotonic() + 240
    while not (status("slow")["state"] == "running" and status("slow")["done"] > 0):
        assert time.monotonic() < end
        time.sleep(1)
    assert status("quick") | {"finished": 0, "started": 0, "submitted": 0} == {
        "name": "quick", "state": "finished", "directory": str(root / "quick"), "total": 4, "done": 4, "failed": 0,
        "error": None, "finished": 0, "started": 0, "submitted": 0}
    with urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=10) as response:  # the service's endpoint
        scraped = response.read().decode()
    assert 'zonesim_sweep_simulations{state="ok",sweep="quick"} 4.0' in scraped
    cancelled = zonesim("cancel", "slow", "--address", cluster["address"])
    assert cancelled.returncode == 0, cancelled.stderr
    while status("slow")["state"] == "running":
        assert time.monotonic() < end
        time.sleep(0.5)
    final = status("slow")
    assert final["state"] == "cancelled" and 0 < final["done"] < 80
    assert sum(c["n"] for c in cells(root / "slow")) == final["done"]  # what ran is kept
    unknown = zonesim("status", "nosuch", "--address", cluster["address"])
    assert unknown.returncode == 2 and unknown.stderr.startswith("zonesim: error: no sweep named nosuch")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nseeds = 1\n[base]\nmachine = "nosuch"\n')
    refused = zonesim("submit", str(bad), "--address", cluster["address"])
    assert refused.returncode == 2 and "base.machine" in refused.stderr and refused.stderr.count("\n") == 1


def test_a_killed_service_actor_restarts_and_resumes_its_sweep(cluster, tmp_path) -> None:
    root = tmp_path / "restart"
    served = zonesim("serve", "--address", cluster["address"], "--root", str(root))
    # a service from an earlier test may be the one running: its root is where the sweep goes
    assert served.returncode == 0 or "already runs in this cluster" in served.stderr, served.stderr
    submitted = zonesim("submit", str(spec(tmp_path, "survivor", seeds=12, events=30000, engine="reference")),
                        "--address", cluster["address"])
    assert submitted.returncode == 0, submitted.stderr
    where = Path(submitted.stdout.split()[-1])

    def status() -> dict | None:
        out = zonesim("status", "survivor", "--address", cluster["address"], "--json")
        return json.loads(out.stdout)[0] if out.returncode == 0 else None

    end = time.monotonic() + 240
    while not ((s := status()) and s["state"] == "running" and s["done"] > 0):
        assert time.monotonic() < end
        time.sleep(0.5)
    [pid] = pids_titled(b"ray::Coordinator")
    os.kill(pid, 9)
    while not ((s := status()) and s["state"] == "finished"):
        assert time.monotonic() < end, s
        time.sleep(1)
    assert pids_titled(b"ray::Coordinator") and pids_titled(b"ray::Coordinator") != [pid]  # Ray restarted it
    assert s["done"] == s["total"] == 24
    with contextlib.closing(sqlite3.connect(where / "records.sqlite")) as db:
        logged = [key for key, in db.execute("SELECT key FROM records")]
    assert len(logged) == len(set(logged)) == 24  # nothing run twice: the store resumed the sweep
