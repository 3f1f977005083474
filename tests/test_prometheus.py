"""A real Prometheus, started from the repository's ``deploy/prometheus/prometheus.yml``, scrapes a
real sweep as a user would run it (``zonesim sweep SPEC``, metrics on 127.0.0.1:9464): progress
shows while the sweep runs, and every PromQL expression of the Grafana dashboard (its variables
and macros substituted) returns data as of the moment the sweep is seen finished."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from test_deploy import dashboard_queries

pytestmark = pytest.mark.ray

SPEC = """name = "watched"
seeds = 8
baseline = "stock"
[base]
machine = "pa8800"
workload = "io"
engine = "reference"  # about 2 s a simulation: the sweep outlasts several 5 s scrapes
[base.set]
events = 300000
processes = 4
anon_pages = 16
pagecache = "32MiB"
io_size = "64KiB"
[grid]
policy = ["stock", "unmapped"]
"""


def query(base: str, expr: str, at: float | None = None) -> list[dict]:
    """An instant query, now or at Prometheus time ``at``."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, **({"time": at} if at else {})})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(tmp_path):
    """Prometheus with the repository's config, its UI and API on a free loopback port."""
    port = free_port()
    p = subprocess.Popen(["prometheus", f"--config.file={ROOT / 'deploy/prometheus/prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < end and p.poll() is None
                time.sleep(0.2)
        yield base
    finally:
        p.terminate()
        p.wait(20)


def test_prometheus_sees_a_running_sweep_and_every_dashboard_query_has_data(prometheus, tmp_path: Path) -> None:
    spec = tmp_path / "watched.toml"
    spec.write_text(SPEC)
    sweep = subprocess.Popen([sys.executable, "-m", "cluster", "sweep", str(spec), "--out", str(tmp_path / "out"),
                              "--num-cpus", "2", "--max-in-flight", "2", "--metrics-grace", "12"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # while it runs: some simulations done, some not; then all done, during the grace period
    end = time.monotonic() + 240
    seen_running, done_at = False, None
    while sweep.poll() is None and time.monotonic() < end:
        ok = query(prometheus, 'zonesim_sweep_simulations{sweep="watched",state="ok"}')
        if ok:
            seen_running |= 0 < float(ok[0]["value"][1]) < 16
            if float(ok[0]["value"][1]) == 16:
                done_at = ok[0]["value"][0]  # the query's evaluation time, in Prometheus's clock
                break
        time.sleep(0.5)
    assert seen_running, "Prometheus never saw the sweep part done"
    assert done_at is not None, "Prometheus never saw the sweep finish"
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err
    # every panel's query as of the moment the sweep was seen finished: once the exporter is gone,
    # Prometheus's next failed scrape marks its series stale and a query at a later time is empty
    empty = [q for q in dashboard_queries(sweep="watched") if not query(prometheus, q, at=done_at)]
    assert empty == [], f"dashboard queries without data: {empty}"
    unmapped = query(prometheus, 'zonesim_result_alias_violations{sweep="watched",policy="unmapped"}', at=done_at)
    assert float(unmapped[0]["value"][1]) == 0
