"""Trace files: record, read back, replay, summarise; and every way a damaged or hostile file is refused
in one line naming the byte offset. Real files in tmp_path throughout."""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

from cluster.cli import main
from core import events as E
from core.errors import StreamError
from core.events import EVENT, Stream
from core.machine import get_machine
from core.policy import get_policy
from core.sim import run
from core.units import format_size
from workloads.config import resolve, run_config
from workloads.trace import (
    EVENT_LAYOUT,
    EVENT_LE,
    MAX_BATCH,
    MAX_HANDLES,
    MAX_OBJECT_BYTES,
    TraceError,
    open_trace,
    read_header,
    trace_info,
    trace_workload,
    write_trace,
)

SMALL = {"events": 20000, "processes": 4, "shm": "16MiB", "batch": 4096}  # 5 batches


def config(machine: str = "x86-pae-64g", policy: str = "stock", **extra: object) -> dict[str, object]:
    return {"machine": machine, "policy": policy, "workload": "mixed", "seed": 3, "set": {**SMALL, **extra}}


def record(path: Path, machine: str = "x86-pae-64g") -> dict[str, object]:
    return write_trace(str(path), resolve(config(machine)).stream, seed=3)


def replay(path: Path, machine: str, policy: str, events: int = 0) -> dict[str, object]:
    """What workloads.config.resolve does for `--workload trace:PATH` (machine facts injected)."""
    m = get_machine(machine)
    workload = trace_workload(str(path))
    params = {**workload.resolve({"events": events}), "cpus": m.cpus, "stack_order": m.kernel_stack_order}
    identity = {"machine": m.name, "policy": policy, "workload": workload.name, "seed": 0}
    return run(m, get_policy(policy, m), workload.build(params, 0), identity)


def offsets(data: bytes) -> list[int]:
    """Start offset of every msgpack object in data, and its end: header, batches, end marker, EOF."""
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False)
    out = [0]
    for _ in unpacker:
        out.append(unpacker.tell())
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[int]]:
    path = tmp_path_factory.mktemp("good") / "mixed.trace"
    record(path)
    data = path.read_bytes()
    return path, data, offsets(data)


def header(**changes: object) -> dict[str, object]:
    head = {"format": "zonesim-trace", "version": 1, "source": "test", "params": {}, "seed": None,
            "dtype": EVENT_LAYOUT, "max_handles": 10}
    head.update(changes)
    return {k: v for k, v in head.items() if v != "DROP"}


def batch_obj(rows: list[tuple], n: int | None = None, crc: int | None = None) -> dict[str, object]:
    payload = E.make_batch(rows).astype(EVENT_LE).tobytes()
    return {"n": len(rows) if n is None else n, "crc": zlib.crc32(payload) if crc is None else crc,
            "events": payload}


def craft(path: Path, *objs: object, raw: bytes = b"") -> Path:
    path.write_bytes(b"".join(msgpack.packb(o) for o in objs) + raw)
    return path


ONE = [E.ev(E.K_ALLOC_ANON, 3), E.ev(E.K_FREE, 3)]
END1 = {"end": True, "events": 2, "batches": 1}


# -- round trip ------------------------------------------------------------------------------------


def test_recorded_batches_read_back_identical(good):
    path, data, offs = good
    stream = resolve(config()).stream
    expected = list(stream)
    got = list(open_trace(str(path)))
    assert [len(b) for b in got] == [4096, 4096, 4096, 4096, 3616]
    assert all(b.dtype == EVENT and np.array_equal(b, e) for b, e in zip(got, expected, strict=True))
    assert len(offs) == 1 + 1 + 5 + 1  # header, 5 batches, end marker, EOF
    assert offs[-1] == len(data)


def test_header_and_summary(good):
    path, data, _ = good
    stream = resolve(config()).stream
    head = read_header(str(path))
    assert head["source"] == stream.source and head["seed"] == 3 and head["version"] == 1
    assert head["params"] == stream.params
    assert head["params"]["processes"] == 4 and head["params"]["cpus"] == 8 and head["params"]["shm"] == 16 << 20
    info = trace_info(str(path))
    every = np.concatenate(list(open_trace(str(path))))
    used = every["handle"][E.NEEDS_HANDLE[every["kind"]]]
    assert info["events"] == 20000 and info["batches"] == 5 and info["file_bytes"] == len(data)
    assert info["max_handle"] == int(used.max()) and info["handles"] == len(np.unique(used))
    assert head["max_handles"] == info["max_handle"] + 1 <= stream.max_handles  # the tight bound
    assert info["kinds"] == {name: int((every["kind"] == k).sum()) for k, name in enumerate(E.KIND_NAMES)}
    assert sum(info["kinds"].values()) == 20000 and info["kinds"]["fork"] > 0
    assert info["cpus_used"] == len(np.unique(every["cpu"])) and info["max_cpu"] == int(every["cpu"].max())


def test_write_summary_and_no_tmp_left(tmp_path):
    summary = record(tmp_path / "t.trace")
    assert summary["events"] == 20000 and summary["batches"] == 5
    assert summary["bytes"] == os.path.getsize(tmp_path / "t.trace")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.trace"]


@pytest.mark.parametrize("machine, policy", [("x86-pae-64g", "stock"), ("x86-pae-64g", "unmapped"),
                                             ("pa8800", "stock"), ("pa8800", "unmapped")])
def test_replay_gives_the_same_record(tmp_path, machine, policy):
    path = tmp_path / "t.trace"
    record(path, machine)
    original = run_config(config(machine, policy))
    replayed = replay(path, machine, policy)
    assert replayed["workload"] == f"trace:{path}" and original["workload"] == "mixed"
    assert {**replayed, "workload": "mixed", "seed": 3} == original
    assert replayed["events"] == 20000


def test_events_limit_and_reiteration(good):
    path = str(good[0])
    stream = open_trace(path, events=5000)
    first = [len(b) for b in stream]
    assert first == [4096, 904] and [len(b) for b in stream] == first  # a second pass reads the file again
    assert stream.source == f"trace:{path}" and stream.params["processes"] == 4
    assert replay(Path(path), "x86-pae-64g", "stock", events=5000)["events"] == 5000


def eight_cpu_stream(pages: int = 64) -> Stream:
    """Each page faulted in, kmapped, copied, freed on CPU page % 8."""
    rows = []
    for h in range(pages):
        cpu = h % 8
        rows += [E.ev(E.K_SYSCALL, cpu=cpu), E.ev(E.K_ALLOC_ANON, h, cpu=cpu, addr=h),
                 E.ev(E.K_KMAP_ATOMIC, h, cpu=cpu), E.ev(E.K_COPY, h, cpu=cpu)]
    rows += [E.ev(E.K_FREE, h, cpu=7 - h % 8) for h in range(pages)]
    return Stream([E.make_batch(rows[:100]), E.make_batch(rows[100:])], max_handles=1000, source="test")


def test_cpus_fold_onto_a_smaller_machine(tmp_path):
    path = str(tmp_path / "cpus.trace")
    assert write_trace(path, eight_cpu_stream())["max_handles"] == 64
    assert get_machine("pa8800").cpus == 4 and get_machine("x86-pae-64g").cpus == 8
    original = np.concatenate(list(open_trace(path)))
    folded = np.concatenate(list(open_trace(path, cpus=4)))
    assert int(original["cpu"].max()) == 7 and len(original) == 320
    assert np.array_equal(folded["cpu"], original["cpu"] % 4)
    others = ["kind", "order", "handle", "addr"]
    assert np.array_equal(folded[others], original[others])
    m = get_machine("pa8800")
    with pytest.raises(StreamError, match=r"batch 0 \(events 0..99\): cpu 7 does not exist \(machine has 4\)$"):
        run(m, get_policy("stock", m), open_trace(path), {})
    for machine in ("pa8800", "x86-pae-64g"):
        rec = replay(Path(path), machine, "stock")
        assert (rec["events"], rec["allocs"], rec["frees"], rec["kmap_atomic_calls"]) == (320, 64, 64, 64)


def test_large_batches_are_split(tmp_path):
    big = np.zeros(MAX_BATCH + 3, dtype=EVENT)  # syscalls on cpu 0
    big["addr"] = np.arange(MAX_BATCH + 3)
    summary = write_trace(str(tmp_path / "big.trace"), Stream([big], max_handles=0, source="test"))
    assert (summary["events"], summary["batches"], summary["max_handles"]) == (MAX_BATCH + 3, 2, 0)
    back = list(open_trace(str(tmp_path / "big.trace")))
    assert [len(b) for b in back] == [MAX_BATCH, 3]
    assert np.array_equal(np.concatenate(back), big)


def test_a_failed_record_leaves_no_file(tmp_path):
    path = tmp_path / "t.trace"
    path.write_bytes(b"old")
    bad = Stream([E.make_batch(ONE), E.make_batch([E.ev(99)])], max_handles=10, source="test")
    with pytest.raises(StreamError, match=r"^event kind 99 is unknown"):
        write_trace(str(path), bad)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.trace"]
    with pytest.raises(TraceError, match=r"cannot record: params: x must be a number"):
        write_trace(str(path), Stream([], 1, params={"x": [1]}))
    huge = E.make_batch([E.ev(E.K_ALLOC_ANON, MAX_HANDLES)])
    with pytest.raises(TraceError, match=rf"cannot record: handle {MAX_HANDLES} is beyond the format's limit"):
        write_trace(str(path), Stream([huge], MAX_HANDLES + 1))
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.trace"]
    with pytest.raises(TraceError, match=r"^\S+/nodir/t.trace: cannot write: No such file or directory$"):
        write_trace(str(tmp_path / "nodir" / "t.trace"), Stream([], 1))


# -- damaged files -------------------------------------------------------------------------------


def cut_at(tmp_path: Path, data: bytes, n: int) -> str:
    path = tmp_path / "cut.trace"
    path.write_bytes(data[:n])
    return str(path)


def refused(path: str) -> str:
    """The message both readers give: trace_info and a full replay agree on it."""
    with pytest.raises(TraceError) as err:
        trace_info(path)
    with pytest.raises(TraceError) as again:
        list(open_trace(path))
    assert str(again.value) == str(err.value) and "\n" not in str(err.value)
    return str(err.value)


def test_truncated_anywhere(tmp_path, good):
    _, data, offs = good
    header_end, batch2, end_marker = offs[1], offs[2], offs[-2]
    p = cut_at(tmp_path, data, 10)
    assert refused(p) == f"{p}: truncated at byte 10 (incomplete header starting at byte 0)"
    assert refused(cut_at(tmp_path, data, header_end)) == \
        f"{p}: truncated at byte {header_end} (no end marker: the file ends after batch 0)"
    assert refused(cut_at(tmp_path, data, batch2 + 100)) == \
        f"{p}: truncated at byte {batch2 + 100} (incomplete batch 2 starting at byte {batch2})"
    assert refused(cut_at(tmp_path, data, batch2 - 1)) == \
        f"{p}: truncated at byte {batch2 - 1} (incomplete batch 1 starting at byte {header_end})"
    assert refused(cut_at(tmp_path, data, end_marker)) == \
        f"{p}: truncated at byte {end_marker} (no end marker: the file ends after batch 5)"
    assert refused(cut_at(tmp_path, data, len(data) - 1)) == \
        f"{p}: truncated at byte {len(data) - 1} (incomplete batch 6 starting at byte {end_marker})"


def test_every_cut_is_refused(tmp_path, good):
    _, data, offs = good
    cuts = {*range(0, 64), *offs[1:-1], *(o + d for o in offs[1:-1] for d in (-2, -1, 1, 7, 20))}
    assert max(cuts) < len(data)
    for n in sorted(cuts):
        message = refused(cut_at(tmp_path, data, n))
        assert message.startswith(f"{tmp_path / 'cut.trace'}: "), message
        assert ("truncated at byte" in message) or n == 0, message
    assert refused(cut_at(tmp_path, data, 0)).endswith(": not a zonesim trace (empty file)")


def test_a_flipped_payload_byte_is_a_crc_mismatch(tmp_path, good):
    _, data, offs = good
    spoiled = bytearray(data)
    spoiled[offs[3] - 5] ^= 0x40  # inside batch 2's payload, which ends the batch map
    p = tmp_path / "flip.trace"
    p.write_bytes(bytes(spoiled))
    assert refused(str(p)) == f"{p}: corrupt batch 2 at byte {offs[2]}: crc mismatch"
    stream = open_trace(str(p))  # the header is fine, so opening works; the damage shows when read
    with pytest.raises(TraceError, match="crc mismatch"):
        list(stream)


def test_hostile_lengths_fail_fast_within_the_limits(tmp_path):
    head = msgpack.packb(header())
    start = len(head)
    bin32 = b"\x83\xa1n\x01\xa3crc\x00\xa6events\xc6" + struct.pack(">I", 0xFFFFFFF0)  # a 4 GiB payload
    short = tmp_path / "short.trace"
    short.write_bytes(head + bin32 + b"x" * 100)
    assert refused(str(short)) == \
        f"{short}: truncated at byte {start + len(bin32) + 100} (incomplete batch 1 starting at byte {start})"
    long = tmp_path / "long.trace"
    long.write_bytes(head + bin32 + bytes(MAX_OBJECT_BYTES + (1 << 20)))
    began = time.perf_counter()
    assert refused(str(long)) == (f"{long}: corrupt batch 1 at byte {start}: an object larger than the "
                                  f"reader's limit of {MAX_OBJECT_BYTES} bytes")
    assert time.perf_counter() - began < 5
    over = craft(tmp_path / "over.trace", header(), {"n": 1, "crc": 0, "events": bytes(MAX_BATCH * 12 + 1)})
    assert refused(str(over)) == \
        f"{over}: corrupt batch 1 at byte {start}: {MAX_BATCH * 12 + 1} exceeds max_bin_len({MAX_BATCH * 12})"
    arr = tmp_path / "arr.trace"
    arr.write_bytes(b"\xdd" + struct.pack(">I", 0xFFFFFFF0))
    assert refused(str(arr)) == f"{arr}: not a zonesim trace (4294967280 exceeds max_array_len(1024) at byte 0)"
    deep = tmp_path / "deep.trace"
    deep.write_bytes(head + b"\x91" * 5000)
    assert refused(str(deep)) == f"{deep}: corrupt batch 1 at byte {start}: objects nested too deeply"


@pytest.mark.parametrize("head, message", [
    (header(version=2), "trace format version 2 is not supported (this zonesim reads 1)"),
    (header(version="1"), "trace format version '1' is not supported (this zonesim reads 1)"),
    ([1, 2], "not a zonesim trace (it starts with a list, not the header)"),
    ({"format": "other"}, "not a zonesim trace (it starts with a map without format: zonesim-trace, not the header)"),
    (header(seed="x"), "corrupt header at byte 0: seed must be an integer >= 0 or nil (got 'x')"),
    (header(seed=-1), "corrupt header at byte 0: seed must be an integer >= 0 or nil (got -1)"),
    (header(max_handles=-1), f"corrupt header at byte 0: max_handles must be an integer 0..{MAX_HANDLES} (got -1)"),
    (header(max_handles=MAX_HANDLES + 1),
     f"corrupt header at byte 0: max_handles must be an integer 0..{MAX_HANDLES} (got {MAX_HANDLES + 1})"),
    (header(max_handles=True), f"corrupt header at byte 0: max_handles must be an integer 0..{MAX_HANDLES} (got True)"),
    (header(params=[1]), "corrupt header at byte 0: params must be a map (got list)"),
    (header(params={"a": {"b": 1}}),
     "corrupt header at byte 0: params: a must be a number, string, bool or nil (got dict)"),
    (header(source=""), "corrupt header at byte 0: source must be a non-empty string (got '')"),
    (header(dtype=">u1 kind"), f"corrupt header at byte 0: dtype must be {EVENT_LAYOUT!r} (got '>u1 kind')"),
    (header(seed="DROP", dtype="DROP"), "corrupt header at byte 0: no seed, dtype"),
])
def test_bad_headers(tmp_path, head, message):
    p = craft(tmp_path / "h.trace", head, batch_obj(ONE), END1)
    assert refused(str(p)) == f"{p}: {message}"
    with pytest.raises(TraceError, match="^" + str(p)):
        open_trace(str(p))  # header errors surface when the trace is opened, before any batch


@pytest.mark.parametrize("raw, message", [
    (b"\xc1garbage", "not a zonesim trace (not msgpack at byte 0)"),
    (b"hello, world\n", "not a zonesim trace (it starts with an int, not the header)"),
    (b"\x81\x01\x02", "not a zonesim trace (int is not allowed for map key when strict_map_key=True at byte 0)"),
    (b"\xd4\x01\x02", "not a zonesim trace (2 exceeds max_ext_len(0) at byte 0)"),
])
def test_garbage_files(tmp_path, raw, message):
    p = tmp_path / "g.trace"
    p.write_bytes(raw)
    assert refused(str(p)) == f"{p}: {message}"


def test_a_missing_file(tmp_path):
    p = tmp_path / "nothing.trace"
    assert refused(str(p)) == f"{p}: cannot read: No such file or directory"


@pytest.mark.parametrize("objs, message", [
    ([batch_obj(ONE, n=3), END1], "corrupt batch 1 at byte {0}: n = 3 needs 36 bytes of events (got 24 bytes)"),
    ([batch_obj(ONE, crc=5), END1], "corrupt batch 1 at byte {0}: crc mismatch"),
    ([{**batch_obj(ONE), "x": 1}, END1], "corrupt batch 1 at byte {0}: expected a map of crc, events, n "
                                         "(got ['crc', 'events', 'n', 'x'])"),
    ([7, END1], "corrupt batch 1 at byte {0}: expected a map of crc, events, n (got an int)"),
    ([{**batch_obj(ONE), "n": -1}, END1], "corrupt batch 1 at byte {0}: n must be an integer 0..1048576 (got -1)"),
    ([{**batch_obj(ONE), "crc": 1 << 32}, END1],
     "corrupt batch 1 at byte {0}: crc must be an integer 0..2**32-1 (got 4294967296)"),
    ([{**batch_obj(ONE), "events": "text"}, END1],
     "corrupt batch 1 at byte {0}: n = 2 needs 24 bytes of events (got a str)"),
    ([batch_obj([E.ev(99)]), END1], "invalid batch 1 at byte {0}: event kind 99 is unknown (0..19)"),
    ([batch_obj([E.ev(E.K_ALLOC_ANON, 10)]), END1], "invalid batch 1 at byte {0}: handle out of range 0..9"),
    ([batch_obj(ONE), {"end": True, "events": 3, "batches": 1}],
     "corrupt end marker at byte {1}: expected end = true, events = 2, batches = 1 "
     "(got {{'end': True, 'events': 3, 'batches': 1}})"),
    ([batch_obj(ONE), END1, END1], "corrupt trace at byte {2}: 23 more bytes after the end marker"),
])
def test_bad_batches_and_end_markers(tmp_path, objs, message):
    p = craft(tmp_path / "b.trace", header(), *objs)
    offs = offsets(p.read_bytes())
    assert refused(str(p)) == f"{p}: " + message.format(*offs[1:])


# -- the command line ------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_record_and_info(tmp_path, capsys):
    p = tmp_path / "cli.trace"
    code, out, err = cli(capsys, "trace", "record", "mixed", "-o", str(p), "--machine", "pa8800", "--seed", "3",
                         "--events", "20000", "--set", "processes=4", "--set", "shm=16MiB", "--set", "batch=4096")
    size = p.stat().st_size
    assert (code, err) == (0, "")
    assert out == f"recorded 20000 events in 5 batches, {size} ({format_size(size)}) to {p}\n"
    assert list(open_trace(str(p))) and read_header(str(p))["params"]["cpus"] == 4
    code, out, err = cli(capsys, "trace", "info", str(p), "--json")
    info = json.loads(out)
    assert (code, err) == (0, "") and info == {**trace_info(str(p))}
    assert (info["events"], info["batches"], info["params"]["stack_order"]) == (20000, 5, 2) and info["max_cpu"] < 4
    code, out, err = cli(capsys, "trace", "info", str(p))
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and rows["events"] == "20000" and rows["params.processes"] == "4"
    assert rows["file_bytes"] == f"{size} ({format_size(size)})" and rows["kinds.fork"] == str(info["kinds"]["fork"])
    assert rows["version"] == "1" and rows["source"] == info["source"]
    assert rows["max_handles"] == str(info["max_handles"])


@pytest.mark.parametrize("args, start", [
    (("trace",), "zonesim: error: the following arguments are required: {{record,info,from-strace}}"),
    (("trace", "record", "mixed"), "zonesim: error: the following arguments are required: -o/--output"),
    (("trace", "record", "nosuch", "-o", "{d}/x"), "zonesim: error: workload: "),
    (("trace", "record", "mixed", "-o", "{d}/x", "--set", "bogus=1"), "zonesim: error: bogus: a setting of"),
    (("trace", "record", "mixed", "-o", "{d}/no/x", "--events", "10"),
     "zonesim: error: {d}/no/x: cannot write: No such file or directory"),
    (("trace", "info", "{d}/missing"), "zonesim: error: {d}/missing: cannot read: No such file or directory"),
    (("trace", "info", "{d}/cut.trace"), "zonesim: error: {d}/cut.trace: truncated at byte 100 (incomplete "),
    (("trace", "info", "{d}/bad.trace", "--json"),
     "zonesim: error: {d}/bad.trace: trace format version 9 is not supported (this zonesim reads 1)"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, good, args, start):
    (tmp_path / "cut.trace").write_bytes(good[1][:100])
    craft(tmp_path / "bad.trace", header(version=9))
    code, out, err = cli(capsys, *(a.format(d=tmp_path) for a in args))
    assert code == 2 and out == ""
    assert err.startswith(start.format(d=tmp_path)) and err.endswith("\n") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()
