"""The results store: one directory per sweep, holding its spec and an append-only log of records.

A store directory holds:

  ``spec.toml``        the sweep spec's text, as given;
  ``spec.json``        ``{"digest": ..., "zonesim": VERSION, "created": ISO time}``; written last, so a
                       directory with ``spec.json`` has a complete spec (both are written atomically:
                       a temporary file, fsync, ``os.replace``);
  ``records.msgpack``  the log: a sequence of msgpack maps, one per finished simulation;
  ``store.lock``       what a writer holds ``fcntl.flock`` on (it also holds the writer's pid).

Each log entry is a map with these keys, in this order:

  ``key``       ``config_key(config)``: the simulation's identity;
  ``status``    "ok" or "failed";
  ``config``    the simulation config (``workloads.config``: machine, policy, workload, seed, engine, set);
  ``record``    the flat record (``core.record``) if ok, else nil;
  ``error``     the one-line error message if failed (at most ``MAX_ERROR_CHARS`` characters), else nil;
  ``attempts``  how many times the simulation was tried (int >= 0);
  ``seconds``   how long the last attempt took (number >= 0);
  ``crc``       CRC-32 (``zlib.crc32``, unsigned) of the msgpack encoding of the same map without its
                ``crc`` key: the other seven keys in the order above, packed with
                ``msgpack.packb(map, use_bin_type=True)`` (strings as str, the smallest encoding of each
                int, floats as float64). A reader recomputes it by re-packing what it unpacked.

Because of that order every entry starts with the same five bytes, ``SIGNATURE`` (a fixmap of 8,
then the fixstr "key"), which recovery uses to tell a torn write from other damage.

Writing: ``Store.append`` writes a batch of entries with one ``write`` to the log, opened O_APPEND,
then flushes and fsyncs once per call (callers batch several records per call to keep fsyncs rare).
One writer at a time: ``Store.open`` takes an exclusive ``flock`` on ``store.lock``. An entry whose key
is already recorded ok is not written again (a retried task that finished twice); a failed entry may be
followed by an ok one for the same key (a retry that succeeded), and then the key counts as ok.

Reading never trusts the file: every str, bin, array and map length is bounded (``MAX_STR`` and
friends) and no entry may span more than ``MAX_ENTRY_BYTES`` of the file (the unpacker's buffer, and
how far it may read from where an entry starts), so a hostile length or a huge object fails after
reading at most ``MAX_ENTRY_BYTES`` rather than by allocating it; every entry's types and CRC are checked. When an entry
is bad:

  * if it is the tail of the file, looks like the start of an entry (``SIGNATURE``, or a prefix of it),
    is no longer than one entry can be, and no good entry follows it, it is a torn or damaged last write:
    it is dropped, and a writer truncates the log to the end of the last good entry
    (``store.recovered`` says what was dropped and where);
  * anything else (damage followed by good entries, or bytes that are no entry at all) is a
    ``StoreError`` naming the byte offset: good records are never discarded silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import BinaryIO

import msgpack

from core.errors import StreamError
from core.units import is_int
from workloads import config as identity
from workloads.config import config_key, plain_value

SPEC_TOML = "spec.toml"
SPEC_JSON = "spec.json"
LOG = "records.msgpack"
LOCK = "store.lock"

ENTRY_KEYS = ("key", "status", "config", "record", "error", "attempts", "seconds", "crc")
STATUSES = ("ok", "failed")
SIGNATURE = b"\x88\xa3key"  # fixmap of 8 entries, then fixstr "key": how every entry starts

MAX_ENTRY_BYTES = 1 << 20  # no entry may be larger (a real one is a few KiB); bounds what one read holds
MAX_STR = 1 << 18  # any string: config values, record keys, error messages
MAX_BIN = 1 << 16  # entries hold no bin; bounded all the same
MAX_ITEMS = 4096  # entries of any map or array (a record has under 100 keys)
MAX_ERROR_CHARS = 1 << 14  # longer error messages are cut on append
MAX_SPEC_JSON = 1 << 20
MAX_SCAN_CANDIDATES = 4096  # recovery gives up (refuses) after trying this many possible entry starts
_READ_SIZE = 1 << 16


class StoreError(StreamError):
    """A results store that cannot be opened, read or written; one line naming the store and the cause."""


# -- entries -------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entry_problem(obj: object) -> str | None:
    """Why ``obj`` (as unpacked) is not a valid entry with a matching crc, or None."""
    if not isinstance(obj, dict):
        return f"expected a map, got {type(obj).__name__}"
    if tuple(obj) != ENTRY_KEYS:
        got = ", ".join(map(str, list(obj)[:10])) + (", ..." if len(obj) > 10 else "")
        return f"expected the keys {', '.join(ENTRY_KEYS)} in this order (got {got:.200})"
    key, status, config, record, error = obj["key"], obj["status"], obj["config"], obj["record"], obj["error"]
    if not isinstance(key, str) or not 0 < len(key) <= 128:
        return f"key must be a non-empty string (got {key!r:.80})"
    if status not in STATUSES:
        return f"status must be ok or failed (got {status!r:.80})"
    if not isinstance(config, dict):
        return f"config must be a map (got {type(config).__name__})"
    if status == "ok":
        if not isinstance(record, dict):
            return f"an ok entry needs a record map (got {type(record).__name__})"
        for name, value in record.items():
            if value is not None and not isinstance(value, bool | int | float | str):
                return f"record: {name} must be a number, string, bool or nil (got {type(value).__name__})"
    elif record is not None:
        return "a failed entry has no record"
    if error is not None and not isinstance(error, str):
        return f"error must be a string or nil (got {type(error).__name__})"
    if not is_int(obj["attempts"]) or obj["attempts"] < 0:
        return f"attempts must be an integer >= 0 (got {obj['attempts']!r:.80})"
    seconds = obj["seconds"]
    if not _is_number(seconds) or not (seconds >= 0 and math.isfinite(seconds)):
        return f"seconds must be a finite number >= 0 (got {seconds!r:.80})"
    crc = obj["crc"]
    if not is_int(crc) or not 0 <= crc < 1 << 32:
        return f"crc must be an integer 0..2**32-1 (got {crc!r:.80})"
    if _crc(obj) != crc:
        return "crc mismatch"
    return None


def _crc(entry: dict) -> int:
    body = {name: value for name, value in entry.items() if name != "crc"}
    return zlib.crc32(msgpack.packb(body, use_bin_type=True, default=plain_value))


class _Budget:
    """The log as the unpacker reads it: never past ``end``, the furthest a valid entry that starts
    where the unpacker is can reach. The unpacker builds nested objects as it goes and only bounds its
    raw buffer, so without this one hostile object of small containers could grow with the file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.end = MAX_ENTRY_BYTES
        self.hit = False

    def read(self, n: int) -> bytes:
        left = self.end - self.f.tell()
        if left <= 0:
            self.hit = True  # the unpacker now sees the end of the file: reading stops here
            return b""
        return self.f.read(min(n, left))


def _unpacker(f: object, read_size: int = _READ_SIZE) -> msgpack.Unpacker:
    return msgpack.Unpacker(f, raw=False, read_size=read_size, max_buffer_size=MAX_ENTRY_BYTES,
                            max_str_len=MAX_STR, max_bin_len=MAX_BIN, max_array_len=MAX_ITEMS,
                            max_map_len=MAX_ITEMS, max_ext_len=0)


def _unpack(unpacker: msgpack.Unpacker) -> tuple[object, str | None]:
    """(object, None), or (None, what went wrong). ``msgpack.OutOfData`` passes through."""
    try:
        return unpacker.unpack(), None
    except msgpack.OutOfData:
        raise
    except msgpack.BufferFull:
        return None, f"an object larger than the reader's limit of {MAX_ENTRY_BYTES} bytes"
    except msgpack.StackError:
        return None, "objects nested too deeply"
    except msgpack.FormatError:
        return None, "not msgpack"
    except (ValueError, TypeError) as err:  # a length over its limit, a non-string key, bad UTF-8
        return None, str(err)


def make_entry(entry: dict[str, object]) -> tuple[dict[str, object], bytes]:
    """The complete entry (key computed when missing, crc added) and its bytes; StoreError if invalid.

    Accepted keys: ``config`` and ``status`` (required), ``key`` (checked against the config),
    ``record``, ``error``, ``attempts`` (default 1), ``seconds`` (default 0.0).
    """
    unknown = set(entry) - set(ENTRY_KEYS) - {"crc"}
    if unknown:
        raise StoreError(f"entry: unknown keys {', '.join(sorted(unknown))}")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise StoreError(f"entry: config must be a dict (got {type(config).__name__})")
    key = config_key(config)
    if entry.get("key", key) != key:
        raise StoreError(f"entry: key {entry['key']!r} is not the config's key {key}")
    error = entry.get("error")
    if isinstance(error, str) and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS - 3] + "..."
    body = {"key": key, "status": entry.get("status"), "config": config, "record": entry.get("record"),
            "error": error, "attempts": entry.get("attempts", 1), "seconds": entry.get("seconds", 0.0)}
    try:
        body["crc"] = zlib.crc32(msgpack.packb(body, use_bin_type=True, default=plain_value))
        data = msgpack.packb(body, use_bin_type=True, default=plain_value)
    except (TypeError, ValueError, OverflowError) as err:
        raise StoreError(f"entry {key}: cannot pack: {err}") from None
    # read it back as a reader would: whatever is written can be read under the reader's limits
    unpacker = _unpacker(None)
    if len(data) > MAX_ENTRY_BYTES:
        raise StoreError(f"entry {key}: {len(data)} bytes is over the limit of {MAX_ENTRY_BYTES}")
    unpacker.feed(data)
    try:
        obj, problem = _unpack(unpacker)
    except msgpack.OutOfData:  # cannot happen for packb output
        obj, problem = None, "incomplete"
    problem = problem or _entry_problem(obj)
    if problem or not data.startswith(SIGNATURE):
        raise StoreError(f"entry {key}: {problem or 'does not start with the entry signature'}")
    return obj, data


# -- files ---------------------------------------------------------------------------------------


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _first_difference(old: str, new: str) -> str:
    """Where two spec texts first differ, for the refusal message."""
    a, b = old.splitlines(), new.splitlines()
    for number, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return f"first difference at line {number}: {x.strip()!r:.60} became {y.strip()!r:.60}"
    if len(a) != len(b):
        return f"first difference at line {min(len(a), len(b)) + 1}: the spec has {len(a)} lines, now {len(b)}"
    return "the texts differ only in line endings or the digest covers more than the text"


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class Store:
    """A results store directory: ``Store.open`` to write (and resume), ``Store.read`` to inspect.

    Attributes: ``directory``; ``spec`` (the spec.json map), ``spec_text``; ``recovered`` (None, or what
    was dropped from a torn tail); ``moved_aside`` (files ``--force`` moved aside); ``writable``.
    """

    def __init__(self, directory: str, writable: bool) -> None:
        self.directory = directory
        self.writable = writable
        self.log_path = os.path.join(directory, LOG)
        self.spec: dict[str, object] = {}
        self.spec_text = ""
        self.recovered: str | None = None
        self.moved_aside: list[str] = []
        self._ok: dict[str, dict] = {}
        self._failed: dict[str, dict] = {}
        self._order: list[str] = []
        self._lock_fd: int | None = None
        self._log: BinaryIO | None = None

    def fail(self, message: str) -> StoreError:
        return StoreError(f"{self.directory}: {message}")

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, spec_text: str, spec_digest: str, force: bool = False) -> Store:
        """Open ``directory`` for writing the sweep whose spec is ``spec_text`` (identified by ``spec_digest``).

        A missing or empty directory is created as a new store. A store of the same digest and zonesim
        version is resumed. A store of another spec (or another zonesim version) is refused, naming both,
        unless ``force``: then its log and spec are moved aside (``records.<UTC time>.bak``,
        ``spec.<UTC time>.toml.bak``, ``spec.<UTC time>.json.bak``) and the new spec is written. A
        directory holding anything else than a store is refused even with ``force``.
        """
        if not isinstance(spec_digest, str) or not spec_digest:
            raise StoreError(f"{directory}: the spec digest must be a non-empty string (got {spec_digest!r})")
        store = cls(directory, writable=True)
        store._refuse_foreign()  # before the lock file: leave a directory that is no store untouched
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise store.fail(f"cannot create the store directory: {err.strerror or err}") from None
        if not os.path.isdir(directory):
            raise store.fail("not a directory")
        store._lock()
        try:
            store._check_spec(spec_text, spec_digest, force)
            store._load()
            created = not os.path.exists(store.log_path)
            store._log = open(store.log_path, "ab")  # O_APPEND: every write goes to the end
            if created:
                _fsync_dir(directory)
        except OSError as err:
            store.close()
            raise store.fail(f"cannot open the store: {err.strerror or err}") from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def read(cls, directory: str) -> Store:
        """Open ``directory`` read-only (no lock: a running sweep may be appending). A torn tail is
        ignored in memory, never truncated; ``recovered`` says so."""
        store = cls(directory, writable=False)
        if not os.path.isdir(directory):
            raise store.fail("no such results store (not a directory)")
        store.spec = store._read_spec_json()
        if store.spec is None:
            raise store.fail(f"not a zonesim results store (no {SPEC_JSON})")
        try:
            with open(os.path.join(directory, SPEC_TOML), encoding="utf-8") as f:
                store.spec_text = f.read()
        except FileNotFoundError:
            store.spec_text = ""
        except (OSError, UnicodeDecodeError) as err:
            raise store.fail(f"cannot read {SPEC_TOML}: {getattr(err, 'strerror', None) or err}") from None
        store._load()
        return store

    def _lock(self) -> None:
        path = os.path.join(self.directory, LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise self.fail(f"cannot open {LOCK}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise self.fail(f"store in use by pid {holder} (one writer at a time)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _read_spec_json(self) -> dict | None:
        path = os.path.join(self.directory, SPEC_JSON)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SPEC_JSON + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self.fail(f"cannot read {SPEC_JSON}: {err.strerror or err}") from None
        try:
            spec = json.loads(data) if len(data) <= MAX_SPEC_JSON else None
        except ValueError:
            spec = None
        if not isinstance(spec, dict) or not isinstance(spec.get("digest"), str):
            raise self.fail(f"{SPEC_JSON} is damaged (not a JSON map with a digest)")
        return spec

    def _check_spec(self, spec_text: str, digest: str, force: bool) -> None:
        try:
            spec = self._read_spec_json()
        except StoreError:
            if not force:
                raise
            spec = {"digest": "(damaged spec.json)", "zonesim": None}
        if spec is None:
            self._refuse_foreign()
            if os.path.exists(self.log_path):
                if not force:
                    raise self.fail(f"{LOG} exists but {SPEC_JSON} does not: the records' spec is unknown; "
                                    "use --force to start over (the old records are kept aside)")
                self._move_aside()
            self._write_spec(spec_text, digest)
            return
        old_digest, old_version = spec["digest"], spec.get("zonesim")
        if old_digest == digest and old_version == identity.ZONESIM_VERSION:
            self.spec = spec
            self.spec_text = self._read_text_or(spec_text)
            return
        if old_digest != digest:
            reason = f"it holds results of spec {old_digest}, not of this spec {digest}"
            old_text = self._read_text_or(None)
            if old_text is not None:
                reason += f" ({_first_difference(old_text, spec_text)})"
        else:
            reason = f"its results were made by zonesim {old_version}, this is zonesim {identity.ZONESIM_VERSION}"
        if not force:
            raise self.fail(f"{reason}; use --force to start over (the old records are kept aside)")
        self._move_aside()
        self._write_spec(spec_text, digest)

    def _refuse_foreign(self) -> None:
        """A directory without spec.json that holds other files than a store's is not ours to write."""
        if not os.path.isdir(self.directory) or os.path.exists(os.path.join(self.directory, SPEC_JSON)):
            return
        ours = {LOCK, SPEC_TOML, SPEC_JSON, LOG}
        foreign = sorted(name for name in os.listdir(self.directory)
                         if name not in ours and not name.endswith((".bak", ".tmp")))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise self.fail(f"not a zonesim results store (no {SPEC_JSON}) and not empty (holds {shown}); "
                            "give a new or empty directory")

    def _read_text_or(self, default: str | None) -> str | None:
        try:
            with open(os.path.join(self.directory, SPEC_TOML), encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError):
            return default

    def _move_aside(self) -> None:
        stamp = _stamp()
        names = [(LOG, "records.{}.bak"), (SPEC_TOML, "spec.{}.toml.bak"), (SPEC_JSON, "spec.{}.json.bak")]
        suffix, n = stamp, 0
        while any(os.path.exists(os.path.join(self.directory, new.format(suffix))) for _, new in names):
            n += 1
            suffix = f"{stamp}-{n}"
        for old, new in names:  # the log first: once it is gone nothing can be appended to the old spec
            src, dst = os.path.join(self.directory, old), os.path.join(self.directory, new.format(suffix))
            if os.path.exists(src):
                os.replace(src, dst)
                self.moved_aside.append(dst)
        _fsync_dir(self.directory)

    def _write_spec(self, spec_text: str, digest: str) -> None:
        spec = {"digest": digest, "zonesim": identity.ZONESIM_VERSION,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_atomic(os.path.join(self.directory, SPEC_TOML), spec_text.encode("utf-8"))
        _write_atomic(os.path.join(self.directory, SPEC_JSON), (json.dumps(spec, indent=2) + "\n").encode())
        self.spec, self.spec_text = spec, spec_text

    # -- reading the log -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            f = open(self.log_path, "rb")
        except FileNotFoundError:
            return
        except OSError as err:
            raise self.fail(f"cannot read {LOG}: {err.strerror or err}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            budget = _Budget(f)
            unpacker = _unpacker(budget)
            while True:
                start = unpacker.tell()
                budget.end = start + MAX_ENTRY_BYTES
                try:
                    obj, problem = _unpack(unpacker)
                except msgpack.OutOfData:
                    if start >= size:
                        return
                    obj, problem = None, f"incomplete entry ({size - start} bytes to the end of the file)"
                    if budget.hit:
                        problem = f"an entry larger than the reader's limit of {MAX_ENTRY_BYTES} bytes"
                problem = problem or _entry_problem(obj)
                if problem:
                    self._bad_entry(f, start, size, problem)
                    return
                self._add(obj)

    def _bad_entry(self, f: BinaryIO, start: int, size: int, problem: str) -> None:
        """Drop a torn last entry, or refuse: see the module docstring."""
        at = f"{LOG}: corrupt entry at byte {start}: {problem}"
        f.seek(start)
        tail = f.read(min(size - start, MAX_ENTRY_BYTES + 1))
        if size - start > MAX_ENTRY_BYTES or tail[:len(SIGNATURE)] != SIGNATURE[:len(tail)]:
            raise self.fail(f"{at} (not a torn last entry: truncate the file to {start} bytes "
                            "to drop everything from there)")
        good = _find_entry(tail, 1)
        if good == _GAVE_UP:
            raise self.fail(f"{at} (too many possible entry starts after it to tell a torn last entry from "
                            f"damage: truncate the file to {start} bytes to drop everything from there)")
        if good is not None:
            raise self.fail(f"{at}; a good entry follows at byte {start + good}: refusing to drop good "
                            "records (move the log aside to start over)")
        dropped = f"a torn record of {size - start} bytes at byte {start} ({problem})"
        if not self.writable:
            self.recovered = f"ignored {dropped}; the store was not changed"
            return
        try:
            with open(self.log_path, "r+b") as w:
                w.truncate(start)
                w.flush()
                os.fsync(w.fileno())
        except OSError as err:
            raise self.fail(f"{at}: cannot truncate the torn record: {err.strerror or err}") from None
        self.recovered = f"dropped {dropped}"

    def _add(self, entry: dict) -> None:
        key = entry["key"]
        entry = {name: value for name, value in entry.items() if name != "crc"}
        if key in self._ok:
            return  # a duplicate: the first ok entry stands
        if key not in self._failed:
            self._order.append(key)
        if entry["status"] == "ok":
            self._failed.pop(key, None)
            self._ok[key] = entry
        else:
            self._failed[key] = entry

    # -- the API ---------------------------------------------------------------------------------

    def done(self) -> set[str]:
        """Keys recorded ok: what a resumed sweep need not run again."""
        return set(self._ok)

    def failed(self) -> dict[str, dict]:
        """Key -> the latest failed entry, for keys never recorded ok."""
        return dict(self._failed)

    def entries(self) -> Iterator[dict]:
        """One entry per key (its ok entry, else its latest failure), in the order keys first appear."""
        for key in self._order:
            yield self._ok.get(key) or self._failed[key]

    def __len__(self) -> int:
        return len(self._order)

    def append(self, entries: Iterable[dict]) -> int:
        """Write ``entries`` (see ``make_entry``), then flush and fsync once; returns how many were written.

        Entries whose key is already recorded ok (in the store or earlier in the batch) are skipped.
        On a failed write the log is cut back to where it was, so it never ends in half a batch.
        """
        if not self.writable or self._log is None:
            raise self.fail("the store is open read-only" if not self.writable else "the store is closed")
        made = []
        ok = set(self._ok)
        for entry in entries:
            obj, data = make_entry(entry)
            if obj["key"] in ok:
                continue
            if obj["status"] == "ok":
                ok.add(obj["key"])
            made.append((obj, data))
        if not made:
            return 0
        fd = self._log.fileno()
        before = os.fstat(fd).st_size
        try:
            self._log.write(b"".join(data for _, data in made))
            self._log.flush()
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                self._log.close()
            with contextlib.suppress(OSError):
                os.truncate(self.log_path, before)
            self._log = open(self.log_path, "ab")
            raise self.fail(f"cannot write {LOG}: {err.strerror or err}") from None
        for obj, _ in made:
            self._add(obj)
        return len(made)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_GAVE_UP = -1


def _find_entry(data: bytes, begin: int) -> int | None:
    """Offset in ``data`` (>= begin) of the first complete, valid entry, or None. Gives up (returning
    ``_GAVE_UP``, so the caller refuses) after ``MAX_SCAN_CANDIDATES`` possible starts."""
    buffer = io.BytesIO(data)
    at, tried = data.find(SIGNATURE, begin), 0
    while at != -1:
        tried += 1
        if tried > MAX_SCAN_CANDIDATES:
            return _GAVE_UP
        buffer.seek(at)
        try:
            obj, problem = _unpack(_unpacker(buffer, read_size=4096))
        except msgpack.OutOfData:
            obj, problem = None, "incomplete"
        if not problem and not _entry_problem(obj):
            return at
        at = data.find(SIGNATURE, at + 1)
    return None
