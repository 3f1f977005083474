"""Event traces: a recorded stream in a versioned msgpack file, replayed with bounded memory.

A trace is a sequence of msgpack objects (the README's "Trace format" section is the spec):

  1. the header, a map: ``format`` ("zonesim-trace"), ``version`` (1), ``source`` (the generator's
     name, or where the events came from), ``params`` (a flat map of the generator's parameters),
     ``seed`` (int or nil), ``dtype`` (the event record layout, ``EVENT_LAYOUT``) and
     ``max_handles`` (the largest handle any event uses + 1);
  2. one map per batch: ``n`` (events), ``crc`` (CRC-32 of the payload), ``events`` (bin: the batch
     as ``n`` packed little-endian 12-byte records);
  3. the end marker, a map: ``end`` (true), ``events`` and ``batches`` (the totals), so a file cut
     exactly between two batches is still seen to be truncated.

The reader never trusts the file: the unpacker's buffer and every string, bin, array and map length
are bounded (a hostile length fails after at most ``MAX_OBJECT_BYTES`` have been read, never by
allocating it), every field's type and range is checked, payloads are checked against their CRC and
their events against ``core.events.check_batch``, and each failure is a ``TraceError`` naming the
file and the byte offset where the bad object starts.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import msgpack
import numpy as np

from core.errors import StreamError
from core.events import EVENT, KIND_NAMES, NEEDS_HANDLE, NKINDS, Stream, check_batch
from core.units import is_int
from workloads.base import Param, Workload
from workloads.errors import TraceError
from workloads.msgpack_io import Bounded

FORMAT = "zonesim-trace"
VERSION = 1
EVENT_LE = np.dtype([("kind", "<u1"), ("order", "<u1"), ("cpu", "<u2"), ("handle", "<i4"), ("addr", "<u4")])
EVENT_LAYOUT = "<u1 kind,<u1 order,<u2 cpu,<i4 handle,<u4 addr"
RECORD_BYTES = EVENT_LE.itemsize  # 12

MAX_BATCH = 1 << 20  # events per batch object (12 MiB of payload); the writer splits larger batches
MAX_HANDLES = 1 << 26  # replay keeps an 8-byte slot per handle: at most 512 MiB
MAX_OBJECT_BYTES = MAX_BATCH * RECORD_BYTES + (1 << 16)  # unpacker buffer: one batch plus its keys
MAX_STR = 1 << 16  # source, parameter names and values
MAX_ITEMS = 1024  # entries of a map or array (header and params)
ALL_CPUS = 1 << 16  # the cpu field is u2: any value is a CPU some machine could have

HEADER_KEYS = ("format", "version", "source", "params", "seed", "dtype", "max_handles")
BATCH_KEYS = frozenset({"n", "crc", "events"})
END_KEYS = frozenset({"end", "events", "batches"})
_PLACEHOLDER = 0xFFFFFFFF  # packs as a fixed-width uint32 (0xce + 4 bytes) that the writer patches


def _a(value: object) -> str:
    """'an int', 'a list': the msgpack value's Python type with its article."""
    name = type(value).__name__
    return ("an " if name[0] in "aeiou" else "a ") + name


def _check_params(params: object) -> str | None:
    """Why ``params`` is not a flat map of name -> scalar, or None."""
    if not isinstance(params, dict):
        return f"params must be a map (got {type(params).__name__})"
    for name, value in params.items():
        if not isinstance(name, str):
            return f"params: name {name!r} is not a string"
        if value is not None and not isinstance(value, bool | int | float | str):
            return f"params: {name} must be a number, string, bool or nil (got {type(value).__name__})"
    return None


# -- writing -------------------------------------------------------------------------------------


def write_trace(path: str, stream: Stream, seed: int | None = None) -> dict[str, object]:
    """Record ``stream`` to ``path``; returns path, events, batches, bytes and max_handles.

    The file is written as ``path + ".tmp"`` and renamed when complete, so a failed record never
    leaves a partial trace under the final name. Every batch is checked with ``check_batch``
    (against the stream's ``max_handles``) and batches over ``MAX_BATCH`` events are split. The
    header's ``max_handles`` is the largest handle used + 1, patched in after the last batch.
    """
    problem = _check_params(stream.params)
    if problem or not (seed is None or (is_int(seed) and seed >= 0)):
        raise TraceError(f"{path}: cannot record: {problem or f'seed must be an integer >= 0 (got {seed!r})'}")
    header = {"format": FORMAT, "version": VERSION, "source": str(stream.source), "params": dict(stream.params),
              "seed": seed, "dtype": EVENT_LAYOUT, "max_handles": _PLACEHOLDER}  # max_handles last: patched
    head = msgpack.packb(header, use_bin_type=True)
    slot = len(head) - 4
    assert head[slot - 1:] == b"\xce\xff\xff\xff\xff"
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            events, batches, top = _write_batches(f, path, stream)
            f.write(msgpack.packb({"end": True, "events": events, "batches": batches}))
            size = f.tell()
            f.seek(slot)
            f.write(struct.pack(">I", top))
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise TraceError(f"{path}: cannot write: {err.strerror or err}") from None
    except BaseException:
        _remove(tmp)
        raise
    return {"path": path, "events": events, "batches": batches, "bytes": size, "max_handles": top}


def _write_batches(f: BinaryIO, path: str, stream: Stream) -> tuple[int, int, int]:
    """Write the stream's batches; returns events, batches and the largest handle used + 1."""
    packer = msgpack.Packer(use_bin_type=True)
    events = batches = top = 0
    for batch in stream:
        check_batch(batch, stream.max_handles, ALL_CPUS)
        for start in range(0, len(batch), MAX_BATCH):
            part = batch[start:start + MAX_BATCH]
            handles = part["handle"][NEEDS_HANDLE[part["kind"]]]
            if handles.size:
                top = max(top, int(handles.max()) + 1)
                if top > MAX_HANDLES:
                    raise TraceError(f"{path}: cannot record: handle {top - 1} is beyond the format's limit "
                                     f"of {MAX_HANDLES} handles")
            payload = part.astype(EVENT_LE).tobytes()
            f.write(packer.pack({"n": len(part), "crc": zlib.crc32(payload), "events": payload}))
            events += len(part)
            batches += 1
    return events, batches, top


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# -- reading -------------------------------------------------------------------------------------


_EOF = object()


class _Reader:
    """One pass over a trace file: ``header()`` then ``batches()``, every object checked."""

    def __init__(self, path: str, f: BinaryIO) -> None:
        self.path = path
        self.size = os.fstat(f.fileno()).st_size
        self.reader = Bounded(f, MAX_OBJECT_BYTES, MAX_STR, MAX_BATCH * RECORD_BYTES, MAX_ITEMS)
        self.max_handles = 0

    def fail(self, message: str) -> TraceError:
        return TraceError(f"{self.path}: {message}")

    def next(self, what: str, header: bool = False) -> tuple[int, object]:
        """(offset, object) of the next object, ``_EOF`` at a clean end of file.

        ``header``: a first object that is not msgpack means the file is not a trace at all.
        """
        start = self.reader.tell()
        try:
            obj, detail = self.reader.next()
        except msgpack.OutOfData:
            if start >= self.size:
                return start, _EOF
            raise self.fail(f"truncated at byte {self.size} (incomplete {what} starting at byte {start})") from None
        if detail is None:
            return start, obj
        if header:
            raise self.fail(f"not a zonesim trace ({detail} at byte {start})")
        raise self.fail(f"corrupt {what} at byte {start}: {detail}")

    def header(self) -> dict[str, object]:
        if self.size == 0:
            raise self.fail("not a zonesim trace (empty file)")
        start, head = self.next("header", header=True)
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            got = _a(head) if not isinstance(head, dict) else "a map without format: " + FORMAT
            raise self.fail(f"not a zonesim trace (it starts with {got}, not the header)")
        version = head.get("version")
        if version != VERSION or not is_int(version):
            raise self.fail(f"trace format version {version!r} is not supported (this zonesim reads {VERSION})")
        missing = [key for key in HEADER_KEYS if key not in head]
        if missing:
            raise self.fail(f"corrupt header at byte {start}: no {', '.join(missing)}")
        problem = _header_problem(head)
        if problem:
            raise self.fail(f"corrupt header at byte {start}: {problem}")
        self.max_handles = int(head["max_handles"])
        return {key: head[key] for key in HEADER_KEYS}

    def batches(self) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, batch) pairs up to the end marker, which must be followed by the end of the file."""
        events = count = 0
        while True:
            what = f"batch {count + 1}"
            start, obj = self.next(what)
            if obj is _EOF:
                raise self.fail(f"truncated at byte {start} (no end marker: the file ends after batch {count})")
            if isinstance(obj, dict) and "end" in obj:
                self.end(start, obj, events, count)
                return
            batch = self.batch(what, start, obj)
            events += len(batch)
            count += 1
            yield start, batch

    def batch(self, what: str, start: int, obj: object) -> np.ndarray:
        at = f"corrupt {what} at byte {start}"
        if not isinstance(obj, dict) or set(obj) != BATCH_KEYS:
            shown = sorted(obj) if isinstance(obj, dict) else _a(obj)
            raise self.fail(f"{at}: expected a map of {', '.join(sorted(BATCH_KEYS))} (got {shown})")
        n, crc, payload = obj["n"], obj["crc"], obj["events"]
        if not is_int(n) or not 0 <= n <= MAX_BATCH:
            raise self.fail(f"{at}: n must be an integer 0..{MAX_BATCH} (got {n!r})")
        if not is_int(crc) or not 0 <= crc < 1 << 32:
            raise self.fail(f"{at}: crc must be an integer 0..2**32-1 (got {crc!r})")
        if not isinstance(payload, bytes) or len(payload) != n * RECORD_BYTES:
            got = f"{len(payload)} bytes" if isinstance(payload, bytes) else _a(payload)
            raise self.fail(f"{at}: n = {n} needs {n * RECORD_BYTES} bytes of events (got {got})")
        if zlib.crc32(payload) != crc:
            raise self.fail(f"{at}: crc mismatch")
        batch = np.frombuffer(payload, dtype=EVENT_LE).astype(EVENT)
        try:
            check_batch(batch, self.max_handles, ALL_CPUS)
        except StreamError as err:
            raise self.fail(f"invalid {what} at byte {start}: {err}") from None
        return batch

    def end(self, start: int, obj: dict, events: int, count: int) -> None:
        totals_ok = all(is_int(obj.get(k)) for k in ("events", "batches"))  # False == 0 in Python: not here
        if (set(obj) != END_KEYS or obj["end"] is not True or not totals_ok or obj["events"] != events
                or obj["batches"] != count):
            raise self.fail(f"corrupt end marker at byte {start}: expected end = true, events = {events}, "
                            f"batches = {count} (got {obj!r:.200})")
        after = self.reader.tell()
        if after != self.size:
            raise self.fail(f"corrupt trace at byte {after}: {self.size - after} more bytes after the end marker")


def _header_problem(head: dict) -> str | None:
    """What is wrong with a version-1 header that has every key, or None."""
    source, seed, dtype, max_handles = head["source"], head["seed"], head["dtype"], head["max_handles"]
    if not isinstance(source, str) or not source:
        return f"source must be a non-empty string (got {source!r})"
    problem = _check_params(head["params"])
    if problem:
        return problem
    if seed is not None and (not is_int(seed) or seed < 0):
        return f"seed must be an integer >= 0 or nil (got {seed!r})"
    if dtype != EVENT_LAYOUT:
        return f"dtype must be {EVENT_LAYOUT!r} (got {dtype!r})"
    if not is_int(max_handles) or not 0 <= max_handles <= MAX_HANDLES:
        return f"max_handles must be an integer 0..{MAX_HANDLES} (got {max_handles!r})"
    return None


def _scan(path: str) -> Iterator[object]:
    """The header, then (offset, batch) pairs; the file is closed when the generator is."""
    try:
        f = open(path, "rb")  # closed by the with below, also when the generator is closed
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror or err}") from None
    with f:
        reader = _Reader(path, f)
        yield reader.header()
        yield from reader.batches()


def read_header(path: str) -> dict[str, object]:
    """The checked header of the trace at ``path`` (reads only the header)."""
    scan = _scan(path)
    try:
        return next(scan)
    finally:
        scan.close()


class _Batches:
    """The batches of a trace; each iteration reads the file afresh, one batch in memory at a time."""

    def __init__(self, path: str, header: dict[str, object], cpus: int | None, events: int) -> None:
        self.path, self.header, self.cpus, self.events = path, header, cpus, events

    def __iter__(self) -> Iterator[np.ndarray]:
        scan = _scan(self.path)
        try:
            if repr(next(scan)) != repr(self.header):
                raise TraceError(f"{self.path}: the header changed since the trace was opened")
            left = self.events if self.events > 0 else -1
            for _, batch in scan:
                if left == 0:
                    return
                if left > 0:
                    batch = batch[:left]
                    left -= len(batch)
                if self.cpus is not None:
                    batch["cpu"] %= self.cpus
                yield batch
        finally:
            scan.close()


def open_trace(path: str, cpus: int | None = None, events: int = 0) -> Stream:
    """The trace at ``path`` as a Stream; the header is checked now, batches are read as iterated.

    ``cpus``: fold each event's cpu to ``cpu % cpus``, so a trace recorded on a machine with more
    CPUs replays on one with fewer. ``events`` > 0 stops after that many events. The stream can be
    iterated more than once (each pass reads the file again).
    """
    if cpus is not None and (not is_int(cpus) or cpus < 1):
        raise TraceError(f"{path}: cpus must be an integer >= 1 (got {cpus!r})")
    if not is_int(events) or events < 0:
        raise TraceError(f"{path}: events must be an integer >= 0 (got {events!r})")
    header = read_header(path)
    return Stream(_Batches(path, header, cpus, events), int(header["max_handles"]), source=f"trace:{path}",
                  params=dict(header["params"]))


def trace_info(path: str) -> dict[str, object]:
    """Header fields and totals of a whole trace, read (and checked) one batch at a time."""
    scan = _scan(path)
    try:
        header = next(scan)
        max_handles = int(header["max_handles"])
        kinds = np.zeros(NKINDS, dtype=np.int64)
        used = np.zeros(max_handles, dtype=bool)
        cpus = np.zeros(ALL_CPUS, dtype=bool)
        events = batches = 0
        for _, batch in scan:
            events += len(batch)
            batches += 1
            kinds += np.bincount(batch["kind"], minlength=NKINDS)
            used[batch["handle"][NEEDS_HANDLE[batch["kind"]]]] = True
            cpus[batch["cpu"]] = True
    finally:
        scan.close()
    handles = np.flatnonzero(used)
    return {"path": path, "format": header["format"], "version": header["version"], "source": header["source"],
            "seed": header["seed"], "params": header["params"], "max_handles": max_handles,
            "file_bytes": os.path.getsize(path), "events": events, "batches": batches,
            "kinds": {name: int(count) for name, count in zip(KIND_NAMES, kinds, strict=True)},
            "handles": int(handles.size), "max_handle": int(handles[-1]) if handles.size else -1,
            "cpus_used": int(cpus.sum()), "max_cpu": int(np.flatnonzero(cpus)[-1]) if events else -1}


# -- the workload ----------------------------------------------------------------------------------


def trace_workload(path: str) -> Workload:
    """``trace:PATH``: replay a recorded trace; the machine's ``cpus`` folds the events' cpu field."""

    def build(params: dict[str, object], seed: int) -> Stream:  # the seed is the recording's, not ours
        cpus = params.get("cpus")
        return open_trace(path, cpus=None if cpus is None else int(cpus), events=int(params["events"]))

    params = (Param("events", 0, "replay only the first N events (0 = the whole trace)"),)
    return Workload(f"trace:{path}", f"replay the trace recorded in {path}", params, build)
