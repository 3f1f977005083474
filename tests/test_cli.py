"""The command line end to end, in a subprocess: what it prints, and how it refuses bad input."""

from __future__ import annotations

import json

import pytest

from core.record import RECORD_KEYS
from core.units import MiB


def test_list_names_the_machine_policies_and_workload(zonesim):
    out = zonesim("list")
    assert out.returncode == 0, out.stderr
    for name in ("x86-pae-64g", "stock", "4g4g", "unmapped", "mixed"):
        assert name in out.stdout
    assert "REFERENCE s2" in out.stdout  # cost sources are shown with the costs


def test_run_json_gives_the_record(zonesim):
    out = zonesim("run", "--json", "--events", "20000")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert tuple(record) == RECORD_KEYS
    assert record["mem_map_bytes"] == 512 * MiB  # 16,777,216 frames x 32 B struct page
    assert record["events"] == 20000


def test_run_table_shows_byte_sizes_for_people(zonesim):
    out = zonesim("run", "--events", "1000", "--policy", "unmapped")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert set(lines) == set(RECORD_KEYS)
    assert lines["mem_map_bytes"].split(None, 1)[1] == "536870912 (512 MiB)"


def test_bench_runs_both_engines_and_they_agree(zonesim):
    out = zonesim("bench", "--json", "--events", "2000", "--policy", "stock")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["events"] == 2000
    [line] = report["results"]
    assert line["policy"] == "stock" and line["mismatch"] == []
    assert line["fast_events_per_s"] > 0 and line["reference_events_per_s"] > 0


@pytest.mark.parametrize("args, field", [
    (["--machine", "nosuch"], "machine"),
    (["--policy", "nosuch"], "policy"),
    (["--workload", "nosuch"], "workload"),
    (["--set", "memory=0"], "memory"),
    (["--set", "memory=-1GiB"], "memory"),
    (["--set", "page_size=3000"], "page_size"),
    (["--set", "last_pkmap=0"], "last_pkmap"),
    (["--set", "memory=lots"], "memory"),
    (["--set", "nosuchkey=1"], "nosuchkey"),
    (["--set", "noequals"], "--set"),
    (["--seed", "-1"], "seed"),
])
def test_bad_input_is_one_line_and_exit_2(zonesim, args, field):
    out = zonesim("run", "--events", "100", *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"zonesim: error: {field}")
