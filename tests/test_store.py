"""The results store: create, append, resume, values back exactly as given; a damaged database, a
changed spec and a second writer refused with one line; legacy msgpack logs imported once, torn
tails recovered at every byte, damage and hostile lengths refused. Real files in tmp_path."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import msgpack
import pytest

from cluster.cli import main
from cluster.store import DB, ENTRY_KEYS, IMPORTED, LEGACY_LOG, MAX_ERROR_CHARS, Store, StoreError
from cluster.store_legacy import MAX_ENTRY_BYTES, SIGNATURE
from core.errors import StreamError
from workloads.config import ZONESIM_VERSION, config_key

ROOT = Path(__file__).resolve().parent.parent
SPEC = 'machine = "x86-pae-64g"\npolicy = ["stock", "4g4g"]\nseeds = 3\n'


def config(seed: int = 0, policy: str = "stock", **sets: object) -> dict[str, object]:
    return {"machine": "x86-pae-64g", "policy": policy, "workload": "mixed", "seed": seed, "engine": "fast",
            "set": {"events": 1000, **sets}}


def ok(seed: int = 0, policy: str = "stock", events: int = 1000, **extra: object) -> dict[str, object]:
    cfg = config(seed, policy)
    record = {"machine": "x86-pae-64g", "policy": policy, "workload": "mixed", "seed": seed, "engine": "fast",
              "events": events, "alloc_failures": seed, "flushes_per_io": 0.5 * seed}
    return {"config": cfg, "status": "ok", "record": record, "attempts": 1, "seconds": 0.25, **extra}


def failed(seed: int = 0, message: str = "boom") -> dict[str, object]:
    return {"config": config(seed), "status": "failed", "error": message, "attempts": 1, "seconds": 0.5}


def opened(path: Path, spec: str = SPEC, digest: str = "d1", force: bool = False) -> Store:
    return Store.open(str(path), spec, digest, force=force)


def write(path: Path, entries: list[dict], digest: str = "d1") -> None:
    with opened(path, digest=digest) as store:
        store.append(entries)


def sql(db: Path, statement: str) -> list[tuple]:
    """``statement`` run on the database, committed, the connection closed (a test's own, beside the store's)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement).fetchall()


def rows(db: Path) -> list[tuple]:
    """The records table as SQLite holds it, in seq order."""
    return sql(db, "SELECT * FROM records ORDER BY seq")


# -- keys ----------------------------------------------------------------------------------------


def test_config_key_is_stable_across_dict_order():
    a = config(3)
    b = {"set": {"events": 1000}, "engine": "fast", "seed": 3, "workload": "mixed", "policy": "stock",
         "machine": "x86-pae-64g"}
    assert config_key(a) == config_key(b)
    assert len(config_key(a)) == 32 and int(config_key(a), 16) >= 0


def test_config_key_differs_by_seed_policy_and_set_value():
    keys = {config_key(config(0)), config_key(config(1)), config_key(config(0, "4g4g")),
            config_key(config(0, shm="16MiB")), config_key(config(0, shm=16 << 20))}
    assert len(keys) == 5  # values are hashed exactly as given: "16MiB" is not 16777216


def test_config_key_fills_defaults_and_includes_the_version(monkeypatch):
    assert config_key({}) == config_key({"seed": 0}) == config_key(
        {"machine": "x86-pae-64g", "policy": "stock", "workload": "mixed", "seed": 0, "engine": "fast", "set": {}})
    before = config_key(config(0))
    monkeypatch.setattr("workloads.config.ZONESIM_VERSION", "9.9.9")
    assert config_key(config(0)) != before
    assert ZONESIM_VERSION != "9.9.9"


def test_a_store_error_is_one_line_and_exit_2_from_the_cli(tmp_path, capsys):
    assert not issubclass(StoreError, StreamError)  # its own error, caught by the CLI by name
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "spec.json").write_text('{"digest": "d1"}')
    (tmp_path / "garbage" / DB).write_bytes(b"not sqlite " * 100)
    for where, says in [("nothing", "no such results store"), ("garbage", f"{DB}: file is not a database")]:
        assert main(["results", str(tmp_path / where)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"zonesim: error: {tmp_path / where}: ") and says in err and err.count("\n") == 1


# -- create, append, reopen ----------------------------------------------------------------------


def test_create_append_reopen(tmp_path):
    d = tmp_path / "sweep"
    with opened(d) as store:
        assert store.recovered is None and store.imported is None and len(store) == 0 and store.done() == set()
        assert store.append([ok(0), ok(1), failed(2)]) == 3
    assert (d / "spec.toml").read_text() == SPEC
    meta = json.loads((d / "spec.json").read_text())
    assert meta["digest"] == "d1" and meta["zonesim"] == ZONESIM_VERSION and meta["created"]
    with opened(d) as store:
        assert store.done() == {config_key(config(0)), config_key(config(1))}
        assert set(store.failed()) == {config_key(config(2))}
        entries = list(store.entries())
        assert [e["config"]["seed"] for e in entries] == [0, 1, 2]
        assert entries[0] == {"key": config_key(config(0)), **ok(0), "error": None}
        assert entries[2]["record"] is None and entries[2]["error"] == "boom"
        assert tuple(entries[0]) == ENTRY_KEYS


def test_every_entry_is_written_as_documented(tmp_path):
    """One row per key in WAL mode, schema version 1; config and record as JSON text, seq the order."""
    write(tmp_path, [ok(0), failed(1)])
    assert sql(tmp_path / DB, "PRAGMA journal_mode") == [("wal",)]
    assert sql(tmp_path / DB, "PRAGMA user_version") == [(1,)]
    columns = [c[1] for c in sql(tmp_path / DB, "PRAGMA table_info(records)")]
    assert columns == ["seq", *ENTRY_KEYS]
    (s0, *first), (s1, *second) = rows(tmp_path / DB)
    assert s0 < s1
    assert first == [config_key(config(0)), "ok", json.dumps(config(0), separators=(",", ":")),
                     json.dumps(ok(0)["record"], separators=(",", ":")), None, 1, 0.25]
    assert second == [config_key(config(1)), "failed", json.dumps(config(1), separators=(",", ":")), None, "boom",
                      1, 0.5]


def test_values_read_back_exactly_as_given(tmp_path):
    values = {"int": 7, "big": 2**62 + 1, "huge": 10**30, "neg": -3, "float": 0.1, "third": 1 / 3,
              "tiny": 5e-324, "whole": 2.0, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
              "true": True, "false": False, "none": None, "text": "ü ✓ \"q\"\n"}
    entry = ok(0)
    entry["record"].update(values)
    write(tmp_path, [entry])
    [got] = Store.read(str(tmp_path)).entries()
    for name, value in values.items():
        back = got["record"][name]
        assert type(back) is type(value), name
        assert back == value or (math.isnan(back) and math.isnan(value)), name
    assert got["config"] == entry["config"]


def test_resume_sees_done_keys_and_retry_after_failure_counts_as_ok(tmp_path):
    write(tmp_path, [ok(0), failed(1)])
    with opened(tmp_path) as store:
        todo = [s for s in range(3) if config_key(config(s)) not in store.done()]
        assert todo == [1, 2]
        store.append([ok(1, attempts=2), ok(2)])
    with opened(tmp_path) as store:
        assert store.done() == {config_key(config(s)) for s in range(3)}
        assert store.failed() == {}
        assert [e["status"] for e in store.entries()] == ["ok"] * 3
        assert next(e for e in store.entries() if e["config"]["seed"] == 1)["attempts"] == 2
    assert [r[1] for r in rows(tmp_path / DB)] == [config_key(config(s)) for s in range(3)]  # kept its place


def test_duplicate_keys_are_ignored(tmp_path):
    write(tmp_path, [ok(0)])
    before = rows(tmp_path / DB)
    with opened(tmp_path) as store:
        assert store.append([ok(0, events=5), failed(0)]) == 0  # a retried task that finished twice
        assert rows(tmp_path / DB) == before
        assert store.append([ok(1), ok(1, events=7)]) == 1  # duplicates within one batch too
    with opened(tmp_path) as store:
        assert len(store) == 2
        assert [e["record"]["events"] for e in store.entries()] == [1000, 1000]


def test_repeated_failures_keep_the_latest(tmp_path):
    write(tmp_path, [failed(0, "first"), failed(0, "second")])
    with Store.read(str(tmp_path)) as store:
        assert [e["error"] for e in store.failed().values()] == ["second"]
    assert len(rows(tmp_path / DB)) == 1


def test_bad_entries_are_refused_before_writing(tmp_path):
    with opened(tmp_path) as store:
        bad = [{**ok(0), "status": "maybe"}, {**ok(0), "record": None}, {**failed(0), "record": {"x": 1}},
               {**ok(0), "seconds": float("nan")}, {**ok(0), "key": "0" * 32}, {**ok(0), "colour": "red"},
               {**ok(0), "record": {"events": object()}}, {**ok(0), "record": {"events": [1, 2]}},
               {**ok(0), "attempts": 2**70}]
        for entry in bad:
            with pytest.raises(StoreError):
                store.append([ok(1), entry])
        assert len(store) == 0
    assert rows(tmp_path / DB) == []


def test_long_errors_are_cut_and_numpy_values_packed(tmp_path):
    np = pytest.importorskip("numpy")
    entry = ok(0)
    entry["record"]["events"] = np.int64(5)
    entry["record"]["flushes_per_io"] = np.float64(0.1)
    write(tmp_path, [entry, failed(1, "x" * 200_000)])
    with Store.read(str(tmp_path)) as store:
        a, b = store.entries()
        assert a["record"]["events"] == 5 and type(a["record"]["events"]) is int
        assert a["record"]["flushes_per_io"] == 0.1 and type(a["record"]["flushes_per_io"]) is float
        assert len(b["error"]) == MAX_ERROR_CHARS and b["error"].endswith("...")


def test_read_only_store(tmp_path):
    write(tmp_path, [ok(0)])
    store = Store.read(str(tmp_path))
    assert store.spec["digest"] == "d1" and store.spec_text == SPEC and not store.writable
    with pytest.raises(StoreError, match="read-only"):
        store.append([ok(1)])
    with pytest.raises(StoreError, match="no such results store"):
        Store.read(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no spec.json"):
        Store.read(str(tmp_path / "empty"))


def test_read_does_not_need_the_lock(tmp_path):
    with opened(tmp_path) as store:
        store.append([ok(0)])
        assert len(Store.read(str(tmp_path))) == 1
        store.append([ok(1)])
        assert len(Store.read(str(tmp_path))) == 2  # each committed batch, while the writer holds the store


# -- a damaged database --------------------------------------------------------------------------


def test_a_corrupt_database_is_one_line_naming_the_file(tmp_path):
    write(tmp_path, [ok(s) for s in range(200)])
    db = tmp_path / DB
    data = bytearray(db.read_bytes())
    data[4096:8192] = b"\xa5" * 4096  # a page of the table's b-tree
    db.write_bytes(bytes(data))
    for attempt in (lambda: Store.read(str(tmp_path)), lambda: opened(tmp_path)):
        with pytest.raises(StoreError, match=f"^{tmp_path}: {DB}: database disk image is malformed") as err:
            attempt()
        assert "\n" not in str(err.value)
    db.write_bytes(b"garbage " * 512)
    for attempt in (lambda: Store.read(str(tmp_path)), lambda: opened(tmp_path)):
        with pytest.raises(StoreError, match=f"{DB}: file is not a database .*move it aside"):
            attempt()


def test_a_database_that_is_not_ours_or_a_row_that_is_no_entry_is_refused(tmp_path):
    write(tmp_path, [ok(0)])
    sql(tmp_path / DB, "UPDATE records SET config = '{not json'")
    with pytest.raises(StoreError, match=f"{DB}: the row of key '{config_key(config(0))}' is no entry: not JSON"):
        Store.read(str(tmp_path))
    sql(tmp_path / DB, "PRAGMA user_version = 7")
    with pytest.raises(StoreError, match=f"{DB} is not a zonesim records database of schema 1 .user_version 7"):
        opened(tmp_path)


WRITER = """
import sys
from cluster.store import Store
sys.path.insert(0, sys.argv[2])
from test_store import ok
store = Store.open(sys.argv[1], "spec", "d1")
print("open", flush=True)
for start in range(0, 100_000, 7):
    store.append([ok(s) for s in range(start, start + 7)])
"""


def killed_writer(directory: Path, at_least: int) -> None:
    """A writer appending batches of 7, SIGKILLed once the store holds ``at_least`` records."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(ROOT / "tests")],
                          stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env) as writer:
        assert writer.stdout.readline().strip() == "open"
        deadline = time.monotonic() + 30
        while len(Store.read(str(directory))) < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.send_signal(signal.SIGKILL)


def test_killing_a_writer_then_resuming_records_every_simulation_once(tmp_path):
    killed_writer(tmp_path, 50)
    with opened(tmp_path, spec="spec") as store:
        done = store.done()
        assert len(done) >= 50 and len(done) % 7 == 0  # whole batches only
        wanted = [s for s in range(len(done) + 20) if config_key(config(s)) not in done]
        assert len(wanted) == 20
        store.append([ok(s) for s in range(len(done) + 20)])  # a resume that reruns everything: no duplicates
    with opened(tmp_path, spec="spec") as store:
        assert store.recovered is None
        assert len(store) == len(done) + 20
    keys = [r[1] for r in rows(tmp_path / DB)]
    assert keys == [config_key(config(s)) for s in range(len(done) + 20)]


def test_force_after_a_killed_writer_keeps_its_wal_with_the_records(tmp_path):
    killed_writer(tmp_path, 7)
    assert (tmp_path / f"{DB}-wal").stat().st_size > 0  # the committed batches, not yet checkpointed
    with opened(tmp_path, spec="new = 1\n", digest="d2", force=True) as store:
        assert len(store) == 0
    [bak] = tmp_path.glob("records.*.sqlite.bak")
    assert (tmp_path / f"{bak.name}-wal").exists()
    assert len(rows(bak)) >= 7


# -- the legacy msgpack log ----------------------------------------------------------------------


def legacy_bytes(entries: list[dict]) -> bytes:
    """Entries as the old store wrote them: a msgpack map per entry, keys in order, crc last."""
    out = b""
    for e in entries:
        body = {"key": e.get("key", config_key(e["config"])), "status": e["status"], "config": e["config"],
                "record": e.get("record"), "error": e.get("error"), "attempts": e.get("attempts", 1),
                "seconds": e.get("seconds", 0.0)}
        body["crc"] = zlib.crc32(msgpack.packb(body, use_bin_type=True))
        out += msgpack.packb(body, use_bin_type=True)
    return out


def legacy_store(path: Path, data: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "spec.toml").write_text(SPEC)
    (path / "spec.json").write_text(json.dumps({"digest": "d1", "zonesim": ZONESIM_VERSION, "created": "then"}))
    (path / LEGACY_LOG).write_bytes(data)
    return path


def starts(data: bytes) -> list[int]:
    """Byte offset where each entry starts, plus the size."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    out = [0]
    for _ in unpacker:
        out.append(unpacker.tell())
    return out


def test_a_legacy_log_is_imported_once(tmp_path):
    data = legacy_bytes([ok(0), failed(1, "first"), failed(2), ok(1, attempts=2), failed(2, "latest")])
    legacy_store(tmp_path, data)
    with Store.read(str(tmp_path)) as store:  # before the import: read in memory, nothing changed
        read = list(store.entries())
    assert (tmp_path / LEGACY_LOG).read_bytes() == data and not (tmp_path / DB).exists()
    with opened(tmp_path) as store:
        assert store.imported == 5 and store.recovered is None
        assert list(store.entries()) == read
        assert [(e["config"]["seed"], e["status"]) for e in read] == [(0, "ok"), (1, "ok"), (2, "failed")]
        assert store.failed()[config_key(config(2))]["error"] == "latest"
    assert not (tmp_path / LEGACY_LOG).exists() and (tmp_path / IMPORTED).read_bytes() == data
    with opened(tmp_path) as store:
        assert store.imported is None and list(store.entries()) == read
        store.append([ok(3)])
    (tmp_path / LEGACY_LOG).write_bytes(data)  # as if the import's rename never happened: done again, harmlessly
    with opened(tmp_path) as store:
        assert store.imported == 5 and [e["config"]["seed"] for e in store.entries()] == [0, 1, 2, 3]
    assert len(rows(tmp_path / DB)) == 4


def test_a_torn_legacy_tail_is_left_out_at_every_byte_offset(tmp_path):
    data = legacy_bytes([ok(0), failed(1), ok(2)])
    *_, prev_end, full = starts(data)
    for cut in range(prev_end, full + 1):
        d = legacy_store(tmp_path / f"cut{cut}", data[:cut])
        with opened(d) as store:
            seeds = [e["config"]["seed"] for e in store.entries()]
            if cut in (prev_end, full):
                assert seeds == [0, 1, 2][:3 if cut == full else 2] and store.recovered is None
                continue
            assert seeds == [0, 1], cut
            assert store.recovered == (f"dropped a torn record of {cut - prev_end} bytes at byte {prev_end} "
                                       f"(incomplete entry ({cut - prev_end} bytes to the end of the file)) "
                                       f"from {LEGACY_LOG} (kept whole as {IMPORTED})")
            assert (d / IMPORTED).read_bytes() == data[:cut]
            assert store.append([ok(2), ok(3)]) == 2
        with opened(d) as store:
            assert store.recovered is None
            assert [e["config"]["seed"] for e in store.entries()] == [0, 1, 2, 3]


def test_zonesim_results_says_on_stderr_that_it_ignored_a_torn_legacy_tail(tmp_path, capsys):
    data = legacy_bytes([ok(0), ok(1)])
    legacy_store(tmp_path, data[:-3])
    assert main(["results", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    at = len(legacy_bytes([ok(0)]))
    assert err == (f"zonesim: {tmp_path}: ignored a torn record of {len(data) - 3 - at} bytes at byte {at} "
                   f"(incomplete entry ({len(data) - 3 - at} bytes to the end of the file)); the store was not "
                   "changed\n")
    assert "n=1" in out and (tmp_path / LEGACY_LOG).exists()


@pytest.mark.parametrize("where", ["record value", "error text", "crc"])
def test_a_flipped_byte_in_the_last_legacy_entry_drops_it(tmp_path, where):
    data = bytearray(legacy_bytes([ok(0), ok(1), failed(2, "a message long enough to hit")]))
    *_, prev_end, full = starts(bytes(data))
    last = bytes(data[prev_end:])
    at = prev_end + {"record value": last.find(b"\xcb") + 3 if b"\xcb" in last else len(last) // 2,
                     "error text": last.find(b"long"), "crc": len(last) - 2}[where]
    assert prev_end + len(SIGNATURE) <= at < full
    data[at] ^= 0x20
    legacy_store(tmp_path, bytes(data))
    store = Store.read(str(tmp_path))
    assert len(store) == 2 and store.recovered.startswith(f"ignored a torn record of {full - prev_end} bytes")
    assert "crc mismatch" in store.recovered and store.recovered.endswith("; the store was not changed")
    with opened(tmp_path) as store:
        assert len(store) == 2 and store.recovered.startswith(f"dropped a torn record of {full - prev_end} bytes")


@pytest.mark.parametrize("reader", ["open", "read"])
def test_a_flipped_byte_in_a_middle_legacy_entry_is_refused_with_its_offset(tmp_path, reader):
    data = bytearray(legacy_bytes([ok(0), ok(1), ok(2)]))
    bounds = starts(bytes(data))
    data[data.find(b"seconds", bounds[1]) + 10] ^= 0x01  # inside the float after it
    legacy_store(tmp_path, bytes(data))
    with pytest.raises(StoreError, match=f"corrupt entry at byte {bounds[1]}: crc mismatch; a good entry follows "
                                         f"at byte {bounds[2]}"):
        opened(tmp_path) if reader == "open" else Store.read(str(tmp_path))
    assert (tmp_path / LEGACY_LOG).read_bytes() == bytes(data) and not (tmp_path / DB).exists()  # nothing imported


def test_legacy_garbage_or_an_invalid_entry_is_refused_with_its_offset(tmp_path):
    good = legacy_bytes([ok(0)])
    legacy_store(tmp_path, good + b"\x01\x02\x03")
    with pytest.raises(StoreError, match=f"corrupt entry at byte {len(good)}: .*truncate the file to {len(good)}"):
        opened(tmp_path)
    at = f"{tmp_path}: {LEGACY_LOG}: corrupt entry at byte {len(good)}: "  # said once, not "...: entry KEY: "
    legacy_store(tmp_path, good + legacy_bytes([{**ok(1), "status": "maybe"}]))  # a valid crc over a bad field
    with pytest.raises(StoreError) as err:
        opened(tmp_path)
    assert str(err.value) == at + "status must be ok or failed (got 'maybe')"
    legacy_store(tmp_path, good + legacy_bytes([{**ok(1), "key": "0" * 32}]))
    with pytest.raises(StoreError) as err:
        Store.read(str(tmp_path))
    assert str(err.value) == at + f"key '{'0' * 32}' is not the config's key {config_key(ok(1)['config'])}"


HOSTILE = {
    "map of 2**31 entries": b"\xdf\x80\x00\x00\x00" + b"\x00" * 64,
    "str of 2**31 bytes": b"\xdb\x80\x00\x00\x00" + b"a" * 64,
    "array of 2**31 items": b"\xdd\x80\x00\x00\x00" + b"\xc0" * 64,
    "str of 2**31 bytes in an entry": SIGNATURE + b"\xdb\x80\x00\x00\x00" + b"a" * 64,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("after", [False, True])
def test_hostile_legacy_lengths_fail_fast_without_allocating(tmp_path, name, after):
    good = legacy_bytes([ok(0)])
    legacy_store(tmp_path, good + HOSTILE[name] + (good if after else b""))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        store = Store.read(str(tmp_path))
    except StoreError as err:
        assert f"corrupt entry at byte {len(good)}" in str(err) and "\n" not in str(err)
        assert after or not name.endswith("in an entry")
    else:  # inside something that starts like an entry and nothing good after it: a torn last entry
        assert name.endswith("in an entry") and not after
        assert len(store) == 1 and store.recovered.startswith("ignored a torn record")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 4 << 20


def test_an_oversized_legacy_object_fails_at_the_buffer_limit(tmp_path):
    item = b"\xdc\x0f\xff" + b"\x90" * 0xFFF  # an array of 4095 empty arrays: 4 KiB that unpack to 230 KiB
    count = 4095
    legacy_store(tmp_path, b"\xdc" + count.to_bytes(2, "big") + item * count)  # 16 MiB, 900 MiB unpacked
    assert (tmp_path / LEGACY_LOG).stat().st_size > 8 * MAX_ENTRY_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(StoreError, match="an entry larger than the reader's limit"):
            Store.read(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 128 << 20


# -- specs ---------------------------------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "store.lock"}


def test_a_changed_spec_is_refused_and_the_store_left_alone(tmp_path):
    write(tmp_path, [ok(0)])
    before = snapshot(tmp_path)
    with pytest.raises(StoreError) as err:
        opened(tmp_path, spec=SPEC.replace("3", "5"), digest="d2")
    message = str(err.value)
    assert "d1" in message and "d2" in message and "use --force to start over" in message
    assert "line 3" in message and "'seeds = 3' became 'seeds = 5'" in message and "\n" not in message
    assert snapshot(tmp_path) == before


def test_force_moves_the_old_records_aside(tmp_path):
    write(tmp_path, [ok(0)])
    old_rows = rows(tmp_path / DB)
    with opened(tmp_path, spec="new = 1\n", digest="d2", force=True) as store:
        assert len(store) == 0
        assert [Path(p).name.split(".")[0] for p in store.moved_aside] == ["records", "spec", "spec"]
        store.append([ok(1)])
    baks = sorted(tmp_path.glob("records.*.sqlite.bak"))
    assert len(baks) == 1 and rows(baks[0]) == old_rows
    assert len(list(tmp_path.glob("spec.*.toml.bak"))) == 1
    assert (tmp_path / "spec.toml").read_text() == "new = 1\n"
    assert json.loads((tmp_path / "spec.json").read_text())["digest"] == "d2"
    with opened(tmp_path, spec="new = 1\n", digest="d2") as store:
        assert [e["config"]["seed"] for e in store.entries()] == [1]
    with opened(tmp_path, spec=SPEC, digest="d1", force=True):  # a second force in the same second
        pass
    assert len(list(tmp_path.glob("records.*.sqlite.bak"))) == 2


def test_same_spec_under_another_zonesim_version_is_refused(tmp_path, monkeypatch):
    write(tmp_path, [ok(0)])
    monkeypatch.setattr("workloads.config.ZONESIM_VERSION", "9.9.9")
    with pytest.raises(StoreError, match="made by zonesim .* this is zonesim 9.9.9; use --force"):
        opened(tmp_path)


def test_a_directory_that_is_no_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(StoreError, match="not a zonesim results store .*notes.txt"):
            opened(tmp_path, force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_records_without_their_spec_need_force(tmp_path):
    write(tmp_path, [ok(0)])
    (tmp_path / "spec.json").unlink()
    with pytest.raises(StoreError, match=f"{DB} exists but spec.json does not: the records' spec is unknown; "
                                         "use --force"):
        opened(tmp_path)
    with opened(tmp_path, force=True) as store:
        assert len(store) == 0 and len(store.moved_aside) == 2
    legacy_store(tmp_path / "old", legacy_bytes([ok(0)]))
    (tmp_path / "old" / "spec.json").unlink()
    with pytest.raises(StoreError, match=f"{LEGACY_LOG} exists but spec.json does not"):
        opened(tmp_path / "old")


def test_a_damaged_spec_json_needs_force(tmp_path):
    write(tmp_path, [ok(0)])
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(StoreError, match="spec.json is damaged"):
        opened(tmp_path)
    with opened(tmp_path, force=True) as store:
        assert len(store) == 0


# -- one writer ----------------------------------------------------------------------------------


HOLDER = """
import sys
from cluster.store import Store
store = Store.open(sys.argv[1], "spec", "d1")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    write(tmp_path, [], digest="d1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(StoreError, match=f"store in use by pid {holder.pid}"):
                opened(tmp_path, spec="spec")
            assert len(Store.read(str(tmp_path))) == 0  # readers are not locked out
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
    with opened(tmp_path, spec="spec"):  # released when the holder exits
        pass


def test_the_lock_is_released_on_close(tmp_path):
    store = opened(tmp_path)
    with pytest.raises(StoreError, match=f"store in use by pid {os.getpid()}"):
        opened(tmp_path)
    store.close()
    opened(tmp_path).close()
