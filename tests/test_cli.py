"""The command line end to end, in a subprocess: what it prints, and how it refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_bench_runs_both_engines_on_both_machines_and_they_agree(zonesim):
    out = zonesim("bench", "--json", "--events", "2000", "--policy", "stock")
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)["machines"]
    assert [r["machine"] for r in reports] == ["x86-pae-64g", "pa8800"]
    for report in reports:
        assert report["events"] == 2000
        [line] = report["results"]
        assert line["policy"] == "stock" and line["mismatch"] == []
        assert line["fast_events_per_s"] > 0 and line["reference_events_per_s"] > 0
        # a whole zonesim run process includes the check it is compared with
        assert line["command_s"] > line["check_s"] > 0
        assert line["check_command_share"] == pytest.approx(line["check_s"] / line["command_s"])


def test_bench_repeats_and_keeps_the_best_time(zonesim):
    out = zonesim("bench", "--json", "--events", "500", "--machine", "pa8800", "--policy", "unmapped",
                  "--repeat", "2")
    assert out.returncode == 0, out.stderr
    [report] = json.loads(out.stdout)["machines"]
    assert report["repeat"] == 2 and report["results"][0]["mismatch"] == []
    bad = zonesim("bench", "--events", "500", "--repeat", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("zonesim: error: repeat")


def test_bench_times_the_generators(zonesim):
    out = zonesim("bench", "--generators", "--json", "--events", "30000", "--workload", "io", "--workload", "kalloc")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["generators"]
    assert [(r["workload"], r["events"]) for r in rows] == [("io", 30000), ("kalloc", 30000)]
    assert all(r["events_per_s"] > 0 for r in rows)
    bad = zonesim("bench", "--generators", "--workload", "nosuch")
    assert bad.returncode == 2 and bad.stderr.startswith("zonesim: error: workload")


def test_bench_refuses_a_policy_the_machine_cannot_run(zonesim):
    out = zonesim("bench", "--events", "100", "--policy", "4g4g")  # before benching x86 with it
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith("zonesim: error: policy: 4g4g needs an x86 machine")


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
    (["--machine", "pa8800", "--set", "congruence_stride=12KiB"], "congruence_stride"),  # 3 pages: not 2**n
    (["--machine", "pa8800", "--set", "congruence_stride=2KiB"], "congruence_stride"),  # below a page
    (["--machine", "pa8800", "--set", "cache_line=8KiB"], "cache_line"),  # larger than a page
    (["--machine", "pa8800", "--set", "cache_line=96"], "cache_line"),
    (["--set", "congruence_stride=4MiB"], "congruence_stride"),  # x86 caches are physically indexed
    (["--machine", "pa8800", "--policy", "unmapped", "--set", "kernel_window=6MiB"], "kernel_window"),
    (["--machine", "pa8800", "--set", "congruent_kmap=false"], "congruent_kmap"),  # not a stock switch
    (["--set", "flush_dcache_page=false"], "flush_dcache_page"),  # not on x86
    (["--set", "unmapped_kmap_share=0.25"], "unmapped_kmap_share"),  # not a stock setting
    (["--machine", "pa8800", "--policy", "unmapped", "--set", "unmap_flush_batch=8"], "unmap_flush_batch"),
    (["--machine", "pa8800", "--policy", "unmapped", "--set", "kernel_window=4MiB"], "kernel_window"),
    (["--machine", "pa8800", "--policy", "4g4g"], "policy"),
])
def test_bad_input_is_one_line_and_exit_2(zonesim, args, field):
    out = zonesim("run", "--events", "100", *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"zonesim: error: {field}")


EDGE_LOG = str(Path(__file__).parent / "data" / "strace_edge.log")


def test_trace_from_strace_writes_a_replayable_trace(zonesim, tmp_path):
    out = zonesim("trace", "from-strace", EDGE_LOG, "-o", str(tmp_path / "edge.trace"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("converted 39 lines") and "1 malformed skipped" in out.stdout
    [warning] = out.stderr.splitlines()
    assert warning.startswith(f"zonesim: warning: {EDGE_LOG}:22: skipped")
    run = zonesim("run", "--json", "--machine", "pa8800", "--workload", f"trace:{tmp_path / 'edge.trace'}")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["forks"] >= 1


def test_trace_from_strace_strict_names_the_malformed_line(zonesim, tmp_path):
    out = zonesim("trace", "from-strace", EDGE_LOG, "-o", str(tmp_path / "edge.trace"), "--strict")
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith(f"zonesim: error: {EDGE_LOG}:22: cannot parse:")
    assert not (tmp_path / "edge.trace").exists()


@pytest.mark.parametrize("args, start", [
    (("trace", "from-strace", "{d}/nope.log", "-o", "{d}/x.trace"), "{d}/nope.log: cannot read: No such file"),
    (("trace", "from-strace", "{d}/junk.log", "-o", "{d}/x.trace"), "{d}/junk.log:1: not an strace log"),
    (("run", "--workload", "trace:{d}/junk.trace"), "{d}/junk.trace: not a zonesim trace"),
], ids=["missing log", "not a log", "not a trace"])
def test_a_bad_trace_or_log_is_one_line_and_exit_2(zonesim, tmp_path, args, start):
    """TraceError and StraceError are no StreamError: the CLI still catches them by name."""
    (tmp_path / "junk.log").write_text("hello world\n")
    (tmp_path / "junk.trace").write_bytes(b"hello, world\n")
    out = zonesim(*(a.format(d=tmp_path) for a in args))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith("zonesim: error: " + start.format(d=tmp_path)), line
    assert not (tmp_path / "x.trace").exists()


def test_bench_times_the_strace_importer_on_a_given_log(zonesim):
    out = zonesim("bench", "--strace", EDGE_LOG, "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)["strace"]
    assert r["lines"] == 39 and r["lines_per_s"] > 0 and r["log"] == EDGE_LOG


@pytest.mark.parametrize("args, field", [
    (["sweep", "SPEC", "--metrics-port", "99999", "--out", "STORE"], "metrics-port"),
    (["paper", "--out", "/proc/zonesim-cannot", "--no-metrics"], "out"),
    (["serve", "--parallel", "0"], "parallel"),
])
def test_sweep_paper_and_serve_refuse_bad_options_before_doing_anything(zonesim, tmp_path, args, field):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nseeds = 1\n[base]\nmachine = "pa8800"\n')
    places = {"SPEC": str(spec), "STORE": str(tmp_path / "store")}
    out = zonesim(*[places.get(a, a) for a in args])
    assert out.returncode == 2, out.stdout + out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"zonesim: error: {field}:")
    assert not (tmp_path / "store").exists()  # nothing written


def test_the_metrics_flags_are_one_declaration_with_the_exporters_ports():
    from cluster.cli import build_parser
    from cluster.cli_base import SERVICE_PORT, SWEEP_PORT

    parser = build_parser()
    for argv, port in ((["sweep", "s.toml"], SWEEP_PORT), (["paper"], SWEEP_PORT), (["serve"], SERVICE_PORT)):
        args = parser.parse_args(argv)
        assert (args.metrics_host, args.metrics_port, args.no_metrics) == ("127.0.0.1", port, False), argv
    assert parser.parse_args(["paper", "--metrics-grace", "2"]).metrics_grace == 2.0
    assert not hasattr(parser.parse_args(["serve"]), "metrics_grace")  # the service's endpoint outlives sweeps


def test_the_command_line_imports_the_exporter_only_for_a_command_that_serves_metrics():
    """prometheus_client costs every command some 20 ms; ``zonesim list`` and the parser need none of it."""
    import subprocess
    import sys

    code = "import sys, cluster.cli; cluster.cli.build_parser(); print(sorted(m for m in sys.modules if " \
           "m.startswith(('prometheus_client', 'cluster.metrics'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n", out.stdout
