"""The sweep service's coordinator in-process, with the local executor: queueing, status, cancel,
and a restart resuming from the stores. The real detached actor is in tests/test_cluster_ray.py."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time

import pytest

from cluster.executor import LocalExecutor
from cluster.service import STATE, Coordinator
from cluster.spec import SpecError
from cluster.store import DB, Store, StoreError

SPEC = """name = "{name}"
seeds = {seeds}
[base]
machine = "pa8800"
policy = "unmapped"
workload = "mixed"
[base.set]
events = 2000
processes = 4
anon_pages = 8
shm = "4MiB"
pagecache = "8MiB"
files = 256
"""


def wait(c: Coordinator, name: str, states: tuple[str, ...] = ("finished", "failed", "cancelled")) -> dict:
    end = time.monotonic() + 60
    while (status := c.status(name)[0])["state"] not in states:
        assert time.monotonic() < end, status
        time.sleep(0.02)
    return status


def test_submitted_sweeps_run_in_order_and_report_their_counts(tmp_path) -> None:
    c = Coordinator(str(tmp_path), executor=LocalExecutor)
    first = c.submit(SPEC.format(name="a", seeds=3))
    assert first["state"] == "queued" and first["total"] == 3
    c.submit(SPEC.format(name="b", seeds=2))
    a, b = wait(c, "a"), wait(c, "b")
    assert (a["state"], a["done"], a["failed"]) == ("finished", 3, 0)
    assert (b["state"], b["done"]) == ("finished", 2)
    assert b["started"] >= a["finished"]  # one after another
    assert [s["name"] for s in c.status()] == ["a", "b"]
    with open(tmp_path / "a" / STATE) as f:
        assert json.load(f)["state"] == "finished"


def test_bad_specs_and_unknown_names_are_the_callers_errors(tmp_path) -> None:
    c = Coordinator(str(tmp_path), executor=LocalExecutor)
    with pytest.raises(SpecError, match=r"^x\.toml: base\.machine: "):
        c.submit('name = "x"\nseeds = 1\n[base]\nmachine = "nosuch"\n', "x.toml")
    with pytest.raises(StoreError, match="no sweep named y"):
        c.status("y")
    assert c.status() == []


def test_a_restarted_coordinator_resumes_what_was_running(tmp_path) -> None:
    c = Coordinator(str(tmp_path), executor=LocalExecutor)
    c.submit(SPEC.format(name="r", seeds=4))
    wait(c, "r")
    # as if the actor died mid-sweep: two records never written, the state file still says running
    keep = list(Store.read(str(tmp_path / "r")).entries())[:2]
    status = json.loads((tmp_path / "r" / STATE).read_text())
    (tmp_path / "r" / STATE).write_text(json.dumps({**status, "state": "running"}))
    (tmp_path / "r" / DB).unlink()
    digest = json.loads((tmp_path / "r" / "spec.json").read_text())["digest"]
    with Store.open(str(tmp_path / "r"), (tmp_path / "r" / "spec.toml").read_text(), digest) as s:
        s.append(keep)
    restarted = Coordinator(str(tmp_path), executor=LocalExecutor)
    done = wait(restarted, "r")
    assert (done["state"], done["done"], done["total"]) == ("finished", 4, 4)
    with contextlib.closing(sqlite3.connect(tmp_path / "r" / DB)) as db:  # the two kept, then only the two missing
        logged = [key for key, in db.execute("SELECT key FROM records ORDER BY seq")]
    assert logged[:2] == [e["key"] for e in keep] and len(logged) == len(set(logged)) == 4


def test_cancel_of_a_queued_sweep_takes_it_off_the_queue(tmp_path) -> None:
    class Slow(LocalExecutor):
        def submit(self, configs):
            time.sleep(0.2)
            return super().submit(configs)

    c = Coordinator(str(tmp_path), executor=Slow)
    c.submit(SPEC.format(name="long", seeds=20))
    c.submit(SPEC.format(name="next", seeds=1))
    assert c.cancel("next")["state"] == "cancelled"
    end = time.monotonic() + 60
    while c.status("long")[0]["done"] == 0:  # running, and something recorded
        assert time.monotonic() < end
        time.sleep(0.02)
    c.cancel("long")
    long = wait(c, "long")
    assert long["state"] == "cancelled" and 0 < long["done"] < 20
    assert c.status("next")[0]["state"] == "cancelled"


def test_a_sweep_whose_directory_vanished_fails_and_says_so(tmp_path, caplog) -> None:
    """Its state cannot be written: the sweep is failed (not left "running"), the service's log
    says why in one line, and the queue goes on to the next."""
    import shutil

    c = Coordinator(str(tmp_path), executor=LocalExecutor)
    c.submit(SPEC.format(name="a", seeds=4))
    c.submit(SPEC.format(name="b", seeds=1))
    c.submit(SPEC.format(name="c", seeds=1))
    shutil.rmtree(tmp_path / "b")  # while "a" runs, "b" is queued
    with caplog.at_level("ERROR", logger="zonesim.service"):
        b = wait(c, "b")
        assert wait(c, "c")["state"] == "finished"
    assert b["state"] == "failed" and "cannot record sweep b's state" in b["error"]
    assert [r.getMessage() for r in caplog.records if "sweep b" in r.getMessage()]


def old_sweep(root, name: str, seeds: int) -> tuple[str, str]:
    """A sweep directory an old zonesim left: its spec files and a records.msgpack of two entries,
    the second torn; its path and spec text."""
    from test_store import legacy_bytes, ok

    from cluster.spec import spec_from_text
    from cluster.store import LEGACY_LOG
    from workloads.config import ZONESIM_VERSION

    text = SPEC.format(name=name, seeds=seeds)
    directory = root / name
    directory.mkdir()
    (directory / "spec.toml").write_text(text)
    (directory / "spec.json").write_text(json.dumps({"digest": spec_from_text(text).digest(),
                                                     "zonesim": ZONESIM_VERSION, "created": "then"}))
    data = legacy_bytes([ok(0), ok(1)])
    (directory / LEGACY_LOG).write_bytes(data[:-3])
    return str(directory), text


def test_submit_passes_on_what_the_store_did_with_a_legacy_log(tmp_path) -> None:
    from test_store import legacy_bytes, ok

    directory, text = old_sweep(tmp_path, "old", 1)
    c = Coordinator(str(tmp_path), executor=LocalExecutor)
    reply = c.submit(text)
    assert reply["state"] == "queued"
    at, torn = len(legacy_bytes([ok(0)])), len(legacy_bytes([ok(1)])) - 3
    assert reply["notes"] == [f"{directory}: imported 1 records of the old records.msgpack",
                              f"{directory}: dropped a torn record of {torn} bytes at byte {at} (incomplete entry "
                              f"({torn} bytes to the end of the file)) from records.msgpack (kept whole as "
                              "records.msgpack.imported)"]
    assert "notes" not in c.status("old")[0]  # said once, to the submitter; not part of the state
    wait(c, "old")


def test_run_spec_tells_its_caller_what_the_store_did_with_a_legacy_log(tmp_path) -> None:
    """The path of ``zonesim paper``: each sweep's notes go to ``note`` (the command says them)."""
    from cluster.spec import spec_from_text
    from cluster.sweep import run_spec

    directory, text = old_sweep(tmp_path, "old", 1)
    said: list[str] = []
    out = run_spec(spec_from_text(text), directory, LocalExecutor(), note=said.append)
    assert out.ran == 1 and len(said) == 2
    assert said[0] == f"{directory}: imported 1 records of the old records.msgpack"
    assert said[1].startswith(f"{directory}: dropped a torn record of ")
