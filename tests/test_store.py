"""The results store: create, append, resume; torn tails recovered at every byte; damage in the middle,
hostile lengths, a changed spec and a second writer refused with one line. Real files in tmp_path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import msgpack
import pytest

from cluster.store import (
    ENTRY_KEYS,
    LOG,
    MAX_ENTRY_BYTES,
    MAX_ERROR_CHARS,
    SIGNATURE,
    Store,
    StoreError,
)
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


def offsets(log: Path) -> list[int]:
    """Byte offset where each entry starts, plus the file size."""
    unpacker = msgpack.Unpacker(io.BytesIO(log.read_bytes()), raw=False)
    out = [0]
    for _ in unpacker:
        out.append(unpacker.tell())
    return out


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


def test_store_error_is_a_stream_error_for_the_cli():
    assert issubclass(StoreError, StreamError)


# -- create, append, reopen ----------------------------------------------------------------------


def test_create_append_reopen(tmp_path):
    d = tmp_path / "sweep"
    with opened(d) as store:
        assert store.recovered is None and len(store) == 0 and store.done() == set()
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
        assert tuple(entries[0]) == ENTRY_KEYS[:-1]


def test_every_entry_is_written_as_documented(tmp_path):
    """The crc is CRC-32 of the msgpack of the map without crc, keys in order; every entry starts with SIGNATURE."""
    write(tmp_path, [ok(0), failed(1)])
    data = (tmp_path / LOG).read_bytes()
    entries = list(msgpack.Unpacker(io.BytesIO(data), raw=False))
    assert len(entries) == 2
    for entry in entries:
        assert tuple(entry) == ENTRY_KEYS
        body = {k: v for k, v in entry.items() if k != "crc"}
        assert entry["crc"] == zlib.crc32(msgpack.packb(body, use_bin_type=True))
    for start in offsets(tmp_path / LOG)[:-1]:
        assert data[start:start + len(SIGNATURE)] == SIGNATURE


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


def test_duplicate_keys_are_ignored(tmp_path):
    write(tmp_path, [ok(0)])
    size = (tmp_path / LOG).stat().st_size
    with opened(tmp_path) as store:
        assert store.append([ok(0, events=5), failed(0)]) == 0  # a retried task that finished twice
        assert (tmp_path / LOG).stat().st_size == size
        assert store.append([ok(1), ok(1, events=7)]) == 1  # duplicates within one batch too
    with opened(tmp_path) as store:
        assert len(store) == 2
        assert [e["record"]["events"] for e in store.entries()] == [1000, 1000]


def test_repeated_failures_keep_the_latest(tmp_path):
    write(tmp_path, [failed(0, "first"), failed(0, "second")])
    with Store.read(str(tmp_path)) as store:
        assert [e["error"] for e in store.failed().values()] == ["second"]


def test_bad_entries_are_refused_before_writing(tmp_path):
    with opened(tmp_path) as store:
        bad = [{**ok(0), "status": "maybe"}, {**ok(0), "record": None}, {**failed(0), "record": {"x": 1}},
               {**ok(0), "seconds": float("nan")}, {**ok(0), "key": "0" * 32}, {**ok(0), "colour": "red"},
               {**ok(0), "record": {"events": object()}}]
        for entry in bad:
            with pytest.raises(StoreError):
                store.append([ok(1), entry])
        assert len(store) == 0
    assert (tmp_path / LOG).stat().st_size == 0


def test_long_errors_are_cut_and_numpy_values_packed(tmp_path):
    np = pytest.importorskip("numpy")
    entry = ok(0)
    entry["record"]["events"] = np.int64(5)
    write(tmp_path, [entry, failed(1, "x" * 200_000)])
    with Store.read(str(tmp_path)) as store:
        a, b = store.entries()
        assert a["record"]["events"] == 5 and type(a["record"]["events"]) is int
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


# -- torn tails and damage -----------------------------------------------------------------------


def test_torn_tail_is_recovered_at_every_byte_offset(tmp_path):
    src = tmp_path / "src"
    write(src, [ok(0), failed(1), ok(2)])
    data = (src / LOG).read_bytes()
    *_, prev_end, full = offsets(src / LOG)
    assert full == len(data)
    for cut in range(prev_end, full + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        for name in ("spec.toml", "spec.json"):
            (d / name).write_bytes((src / name).read_bytes())
        (d / LOG).write_bytes(data[:cut])
        with opened(d) as store:
            seeds = [e["config"]["seed"] for e in store.entries()]
            if cut == full:
                assert seeds == [0, 1, 2] and store.recovered is None
                continue
            assert seeds == [0, 1], cut
            if cut == prev_end:
                assert store.recovered is None
            else:
                assert store.recovered == (f"dropped a torn record of {cut - prev_end} bytes at byte {prev_end} "
                                           f"(incomplete entry ({cut - prev_end} bytes to the end of the file))")
            assert (d / LOG).stat().st_size == prev_end  # truncated to the last good entry
            assert store.append([ok(2), ok(3)]) == 2
        with opened(d) as store:
            assert store.recovered is None
            assert [e["config"]["seed"] for e in store.entries()] == [0, 1, 2, 3]


def test_read_only_ignores_a_torn_tail_without_truncating(tmp_path):
    write(tmp_path, [ok(0), ok(1)])
    log = tmp_path / LOG
    data = log.read_bytes()
    log.write_bytes(data[:-7])
    store = Store.read(str(tmp_path))
    assert len(store) == 1 and store.recovered.startswith("ignored a torn record of")
    assert log.read_bytes() == data[:-7]


@pytest.mark.parametrize("where", ["record value", "error text", "crc"])
def test_flipped_byte_in_the_last_entry_drops_it(tmp_path, where):
    write(tmp_path, [ok(0), ok(1), failed(2, "a message long enough to hit")])
    log = tmp_path / LOG
    data = bytearray(log.read_bytes())
    *_, prev_end, full = offsets(log)
    last = bytes(data[prev_end:])
    at = prev_end + {"record value": last.find(b"\xcb") + 3 if b"\xcb" in last else len(last) // 2,
                     "error text": last.find(b"long"), "crc": len(last) - 2}[where]
    assert prev_end + len(SIGNATURE) <= at < full
    data[at] ^= 0x20
    log.write_bytes(bytes(data))
    with opened(tmp_path) as store:
        assert len(store) == 2 and store.recovered.startswith(f"dropped a torn record of {full - prev_end} bytes")
        assert "crc mismatch" in store.recovered
    assert log.stat().st_size == prev_end


@pytest.mark.parametrize("reader", ["open", "read"])
def test_flipped_byte_in_a_middle_entry_is_refused_with_its_offset(tmp_path, reader):
    write(tmp_path, [ok(0), ok(1), ok(2)])
    log = tmp_path / LOG
    data = bytearray(log.read_bytes())
    bounds = offsets(log)
    data[data.find(b"seconds", bounds[1]) + 10] ^= 0x01  # inside the float after it
    log.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"corrupt entry at byte {bounds[1]}: crc mismatch; a good entry follows "
                                         f"at byte {bounds[2]}"):
        opened(tmp_path) if reader == "open" else Store.read(str(tmp_path))
    assert log.read_bytes() == bytes(data)  # nothing dropped


def test_a_length_that_swallows_the_following_entries_is_refused(tmp_path):
    write(tmp_path, [failed(0, "e" * 40), ok(1), ok(2)])
    log = tmp_path / LOG
    data = bytearray(log.read_bytes())
    at = data.find(b"\xd9\x28" + b"e" * 40)  # str8 of 40: claim 255, eating into the next entries
    data[at + 1] = 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt entry at byte 0: .*a good entry follows at byte"):
        opened(tmp_path)


def test_garbage_that_is_no_entry_is_refused(tmp_path):
    write(tmp_path, [ok(0)])
    log = tmp_path / LOG
    size = log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"\x01\x02\x03")
    with pytest.raises(StoreError, match=f"corrupt entry at byte {size}: .*truncate the file to {size} bytes"):
        opened(tmp_path)


HOSTILE = {
    "map of 2**31 entries": b"\xdf\x80\x00\x00\x00" + b"\x00" * 64,
    "str of 2**31 bytes": b"\xdb\x80\x00\x00\x00" + b"a" * 64,
    "bin of 2**31 bytes": b"\xc6\x80\x00\x00\x00",
    "array of 2**31 items": b"\xdd\x80\x00\x00\x00" + b"\xc0" * 64,
    "map of 2**31 entries in an entry": SIGNATURE + b"\xdf\x80\x00\x00\x00",
    "str of 2**31 bytes in an entry": SIGNATURE + b"\xdb\x80\x00\x00\x00" + b"a" * 64,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("after", [False, True])
def test_hostile_lengths_fail_fast_without_allocating(tmp_path, name, after):
    write(tmp_path, [ok(0)])
    log = tmp_path / LOG
    size = log.stat().st_size
    good = log.read_bytes()
    with open(log, "ab") as f:
        f.write(HOSTILE[name] + (good if after else b""))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        store = Store.read(str(tmp_path))
    except StoreError as err:
        assert f"corrupt entry at byte {size}" in str(err)
        assert after or not name.endswith("in an entry")
        assert "\n" not in str(err)
    else:  # inside something that starts like an entry and nothing good after it: a torn last entry
        assert name.endswith("in an entry") and not after
        assert len(store) == 1 and store.recovered.startswith("ignored a torn record")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 4 << 20


def test_a_hostile_file_alone_is_refused(tmp_path):
    write(tmp_path, [])
    (tmp_path / LOG).write_bytes(HOSTILE["map of 2**31 entries"])
    with pytest.raises(StoreError, match=r"corrupt entry at byte 0: 2147483648 exceeds max_map_len"):
        opened(tmp_path)


def test_an_oversized_object_fails_at_the_buffer_limit(tmp_path):
    write(tmp_path, [])
    item = b"\xdc\x0f\xff" + b"\x90" * 0xFFF  # an array of 4095 empty arrays: 4 KiB that unpack to 230 KiB
    count = 4095
    (tmp_path / LOG).write_bytes(b"\xdc" + count.to_bytes(2, "big") + item * count)  # 16 MiB, 900 MiB unpacked
    assert (tmp_path / LOG).stat().st_size > 8 * MAX_ENTRY_BYTES
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


def test_force_moves_the_old_log_aside(tmp_path):
    write(tmp_path, [ok(0)])
    old_log = (tmp_path / LOG).read_bytes()
    with opened(tmp_path, spec="new = 1\n", digest="d2", force=True) as store:
        assert len(store) == 0
        assert [Path(p).name.split(".")[0] for p in store.moved_aside] == ["records", "spec", "spec"]
        store.append([ok(1)])
    baks = sorted(tmp_path.glob("records.*.bak"))
    assert len(baks) == 1 and baks[0].read_bytes() == old_log
    assert len(list(tmp_path.glob("spec.*.toml.bak"))) == 1
    assert (tmp_path / "spec.toml").read_text() == "new = 1\n"
    assert json.loads((tmp_path / "spec.json").read_text())["digest"] == "d2"
    with opened(tmp_path, spec="new = 1\n", digest="d2") as store:
        assert [e["config"]["seed"] for e in store.entries()] == [1]
    with opened(tmp_path, spec=SPEC, digest="d1", force=True):  # a second force in the same second
        pass
    assert len(list(tmp_path.glob("records.*.bak"))) == 2


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


def test_a_log_without_its_spec_needs_force(tmp_path):
    write(tmp_path, [ok(0)])
    (tmp_path / "spec.json").unlink()
    with pytest.raises(StoreError, match="spec is unknown; use --force"):
        opened(tmp_path)
    with opened(tmp_path, force=True) as store:
        assert len(store) == 0 and len(store.moved_aside) == 2


def test_a_damaged_spec_json_needs_force(tmp_path):
    write(tmp_path, [ok(0)])
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(StoreError, match="spec.json is damaged"):
        opened(tmp_path)
    with opened(tmp_path, force=True) as store:
        assert len(store) == 0


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


def test_killing_a_writer_then_resuming_records_every_simulation_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(ROOT / "tests")], stdout=subprocess.PIPE,
                          text=True, cwd=ROOT, env=env) as writer:
        assert writer.stdout.readline().strip() == "open"
        deadline = time.monotonic() + 30
        while (not (tmp_path / LOG).exists() or (tmp_path / LOG).stat().st_size < 50_000) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        writer.kill()
    with opened(tmp_path, spec="spec") as store:
        done = store.done()
        assert len(done) >= 50
        wanted = [s for s in range(len(done) + 20) if config_key(config(s)) not in done]
        assert len(wanted) == 20
        store.append([ok(s) for s in range(len(done) + 20)])  # a resume that reruns everything: no duplicates
    with opened(tmp_path, spec="spec") as store:
        assert store.recovered is None
        assert len(store) == len(done) + 20
    keys = [e["key"] for e in msgpack.Unpacker(io.BytesIO((tmp_path / LOG).read_bytes()), raw=False)]
    assert len(keys) == len(set(keys)) == len(done) + 20


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
