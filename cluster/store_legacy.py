"""The results store's legacy log, ``records.msgpack`` (zonesim's store before SQLite): read once, to import.

The log is a sequence of msgpack maps, one per finished simulation, each with the keys ``ENTRY_KEYS``
in this order; ``crc`` is the CRC-32 (``zlib.crc32``, unsigned) of the map without its ``crc`` key,
re-packed with ``msgpack.packb(map, use_bin_type=True)``. Because of that order every entry starts
with the same five bytes, ``SIGNATURE`` (a fixmap of 8, then the fixstr "key"), which tells a torn
write from other damage.

Reading never trusts the file: it goes through ``workloads.msgpack_io.Bounded`` (every str, bin, array
and map length is bounded) and no entry may span more than ``MAX_ENTRY_BYTES`` (the reader's buffer,
and how far it may read from where an entry starts), so a hostile length or a huge object fails
after reading at most that much. A bad entry that is the tail of the file, looks like the start of
an entry and is followed by no good entry is a torn last write: it is left out, and the caller says
so. Anything else is a ``StoreError`` naming the byte offset: good records are never discarded
silently. What each field may hold is checked by the
store when it imports the entry (``store.make_entry``).
"""

from __future__ import annotations

import io
import os
import zlib
from typing import BinaryIO

import msgpack

from cluster.store_dir import LEGACY_LOG as LOG
from cluster.store_dir import StoreError
from workloads.config import plain_value
from workloads.msgpack_io import Bounded

ENTRY_KEYS = ("key", "status", "config", "record", "error", "attempts", "seconds", "crc")
SIGNATURE = b"\x88\xa3key"

MAX_ENTRY_BYTES = 1 << 20  # a real entry is a few KiB
MAX_STR = 1 << 18
MAX_ITEMS = 4096  # entries of any map or array (a record has under 100 keys)
MAX_SCAN_CANDIDATES = 4096  # looking for a good entry after a bad one gives up (refuses) after this many
_READ_SIZE = 1 << 16


def crc(entry: dict) -> int:
    body = {name: value for name, value in entry.items() if name != "crc"}
    return zlib.crc32(msgpack.packb(body, use_bin_type=True, default=plain_value))


def _entry_problem(obj: object) -> str | None:
    """Why ``obj`` (as unpacked) is not an entry with a matching crc, or None."""
    if not isinstance(obj, dict):
        return f"expected a map, got {type(obj).__name__}"
    if tuple(obj) != ENTRY_KEYS:
        got = ", ".join(map(str, list(obj)[:10])) + (", ..." if len(obj) > 10 else "")
        return f"expected the keys {', '.join(ENTRY_KEYS)} in this order (got {got:.200})"
    if not isinstance(obj["crc"], int) or crc(obj) != obj["crc"]:
        return "crc mismatch"
    return None


class _Budget:
    """The log as the unpacker reads it: never past ``end``, the furthest an entry starting where the
    unpacker is may reach. The unpacker bounds only its raw buffer, not the objects it builds, so
    without this one hostile object of small containers could grow with the file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.end, self.hit = f, MAX_ENTRY_BYTES, False

    def read(self, n: int) -> bytes:
        left = self.end - self.f.tell()
        if left <= 0:
            self.hit = True  # the unpacker now sees the end of the file: reading stops here
            return b""
        return self.f.read(min(n, left))


def _reader(source: object, read_size: int = _READ_SIZE) -> Bounded:
    return Bounded(source, MAX_ENTRY_BYTES, MAX_STR, MAX_STR, MAX_ITEMS, read_size)


def read_log(path: str) -> tuple[list[tuple[int, dict]], str | None]:
    """The log's entries as (byte offset, entry without crc), and what torn last entry was left out
    (``"a torn record of N bytes at byte B (why)"``) or None; ``StoreError`` for any other damage."""
    entries = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        budget = _Budget(f)
        reader = _reader(budget)
        while True:
            start = reader.tell()
            budget.end = start + MAX_ENTRY_BYTES
            try:
                obj, problem = reader.next()
            except msgpack.OutOfData:
                if start >= size:
                    return entries, None
                obj, problem = None, f"incomplete entry ({size - start} bytes to the end of the file)"
                if budget.hit:
                    problem = f"an entry larger than the reader's limit of {MAX_ENTRY_BYTES} bytes"
            problem = problem or _entry_problem(obj)
            if problem:
                return entries, _torn_tail(f, start, size, problem)
            entries.append((start, {name: value for name, value in obj.items() if name != "crc"}))


def _torn_tail(f: BinaryIO, start: int, size: int, problem: str) -> str:
    """What the bad entry at ``start`` is if it is a torn last write; else StoreError."""
    at = f"{LOG}: corrupt entry at byte {start}: {problem}"
    f.seek(start)
    tail = f.read(min(size - start, MAX_ENTRY_BYTES + 1))
    if size - start > MAX_ENTRY_BYTES or tail[:len(SIGNATURE)] != SIGNATURE[:len(tail)]:
        raise StoreError(f"{at} (not a torn last entry: truncate the file to {start} bytes to drop "
                         "everything from there)")
    good = _find_entry(tail, 1)
    if good == _GAVE_UP:
        raise StoreError(f"{at} (too many possible entry starts after it to tell a torn last entry from "
                         f"damage: truncate the file to {start} bytes to drop everything from there)")
    if good is not None:
        raise StoreError(f"{at}; a good entry follows at byte {start + good}: refusing to drop good "
                         "records (move the log aside to start over)")
    return f"a torn record of {size - start} bytes at byte {start} ({problem})"


_GAVE_UP = -1


def _find_entry(data: bytes, begin: int) -> int | None:
    """Offset in ``data`` (>= begin) of the first complete entry with a matching crc, or None;
    ``_GAVE_UP`` after ``MAX_SCAN_CANDIDATES`` possible starts."""
    buffer = io.BytesIO(data)
    at, tried = data.find(SIGNATURE, begin), 0
    while at != -1:
        tried += 1
        if tried > MAX_SCAN_CANDIDATES:
            return _GAVE_UP
        buffer.seek(at)
        try:
            obj, problem = _reader(buffer, read_size=4096).next()
        except msgpack.OutOfData:
            obj, problem = None, "incomplete"
        if not problem and not _entry_problem(obj):
            return at
        at = data.find(SIGNATURE, at + 1)
    return None
