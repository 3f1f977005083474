"""The results store: one directory per sweep, holding its spec and a SQLite database of its records.

A store directory holds:

  ``spec.toml``       the sweep spec's text, as given;
  ``spec.json``       ``{"digest": ..., "zonesim": VERSION, "created": ISO time}``; written last, so a
                      directory with ``spec.json`` has a complete spec (both are written atomically:
                      a temporary file, fsync, ``os.replace``);
  ``records.sqlite``  the records, a SQLite database in WAL mode, with ``-wal`` and ``-shm`` beside it
                      while a writer has it open, after a writer was killed (the next open recovers
                      them) or after a read-only reader (which may not delete them);
  ``store.lock``      what a writer holds ``fcntl.flock`` on, holding the writer's pid: SQLite's own
                      locks would keep a second writer out too, but could not say who holds the store;
  ``records.msgpack.imported``  a legacy log, once imported (see below).

The database has ``PRAGMA user_version`` = ``SCHEMA_VERSION`` and one table, ``SCHEMA``: a row per
simulation, ``key`` (``config_key(config)``, its identity) unique, and ``seq`` (the rowid) the order
in which keys first appeared. The columns are an entry's keys, ``ENTRY_KEYS``:

  ``key``       ``config_key(config)``;
  ``status``    "ok" or "failed";
  ``config``    the simulation config (``workloads.config``) as JSON text;
  ``record``    the flat record (``core.record``) as JSON text if ok, else NULL;
  ``error``     the one-line error message if failed (at most ``MAX_ERROR_CHARS`` characters), else NULL;
  ``attempts``  how many times the simulation was tried (integer >= 0);
  ``seconds``   how long the last attempt took (real >= 0).

JSON is Python's ``json`` with numpy scalars turned into Python ones: ints read back as ints, floats
exactly (shortest repr), and NaN and infinities (a ratio over nothing) as themselves.

Writing: ``Store.append`` writes a batch of entries in one transaction (``synchronous=FULL``: on
disk at commit), so a killed driver loses at most the batch under way. One writer at a time:
``Store.open`` takes an exclusive ``flock`` on ``store.lock``. An entry whose key is already recorded
ok is not written again (a retried task that finished twice); a failed entry may be followed by an
ok one for the same key (a retry that succeeded): the row is updated in place, keeping its ``seq``,
and the key counts as ok. A later failure replaces an earlier one. ``Store.read`` needs no lock: a
WAL reader sees the last committed batch while a sweep appends.

A damaged database is a one-line ``StoreError`` naming the file, as is a row that is no entry.
The directory around the records (the spec files, the lock, the refusal of a directory that is no
store or of another spec, and what ``--force`` moves aside) is ``cluster.store_dir``.

Legacy stores: zonesim once kept its records in ``records.msgpack``, a log with CRCs
(``cluster.store_legacy`` reads it, bounded). ``Store.open`` imports such a log in one transaction
(a torn last entry is left out, and ``recovered`` says so; damage elsewhere is refused with its byte
offset), then renames it ``records.msgpack.imported``. The import skips keys already ok, so a crash
between the commit and the rename only repeats it harmlessly. ``Store.read`` of a store not yet
imported reads the log in memory and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from cluster import store_dir as files
from cluster.store_dir import DB, IMPORTED, LEGACY_LOG, LOCK, SPEC_JSON, SPEC_TOML, StoreError
from core.units import is_int
from workloads.config import config_key, plain_value

ENTRY_KEYS = ("key", "status", "config", "record", "error", "attempts", "seconds")
STATUSES = ("ok", "failed")
MAX_ERROR_CHARS = 1 << 14  # longer error messages are cut on append

SCHEMA_VERSION = 1
SCHEMA = """CREATE TABLE records (
    seq      INTEGER PRIMARY KEY,
    key      TEXT NOT NULL UNIQUE,
    status   TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    config   TEXT NOT NULL,
    record   TEXT,
    error    TEXT,
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    seconds  REAL NOT NULL CHECK (seconds >= 0)
)"""
_UPSERT = """INSERT INTO records (key, status, config, record, error, attempts, seconds) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET status = excluded.status, config = excluded.config, record = excluded.record,
    error = excluded.error, attempts = excluded.attempts, seconds = excluded.seconds
WHERE records.status = 'failed'"""
_SELECT = "SELECT key, status, config, record, error, attempts, seconds FROM records ORDER BY seq"


# -- entries -------------------------------------------------------------------------------------


def _entry_problem(entry: dict) -> str | None:
    """Why ``entry`` (plain data, as a reader gets it) is not a valid entry, or None."""
    key, status, record, error, seconds = (entry[k] for k in ("key", "status", "record", "error", "seconds"))
    if not isinstance(key, str) or not 0 < len(key) <= 128:
        return f"key must be a non-empty string (got {key!r:.80})"
    if status not in STATUSES:
        return f"status must be ok or failed (got {status!r:.80})"
    if not isinstance(entry["config"], dict):
        return f"config must be a map (got {type(entry['config']).__name__})"
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
    if not is_int(entry["attempts"]) or entry["attempts"] < 0:
        return f"attempts must be an integer >= 0 (got {entry['attempts']!r:.80})"
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not (math.isfinite(seconds)
                                                                                 and seconds >= 0):
        return f"seconds must be a finite number >= 0 (got {seconds!r:.80})"
    return None


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=plain_value)


def make_entry(entry: dict[str, object], where: str | None = None) -> tuple[dict[str, object], tuple]:
    """The complete entry, as a reader will get it back, and its row; StoreError if invalid.

    Accepted keys: ``config`` and ``status`` (required), ``key`` (checked against the config),
    ``record``, ``error``, ``attempts`` (default 1), ``seconds`` (default 0.0). ``where`` names the
    entry in an error (by default "entry" and its key).
    """
    unknown = set(entry) - set(ENTRY_KEYS)
    if unknown:
        raise StoreError(f"{where or 'entry'}: unknown keys {', '.join(sorted(unknown))}")
    config = entry.get("config")
    if not isinstance(config, dict):
        raise StoreError(f"{where or 'entry'}: config must be a dict (got {type(config).__name__})")
    key = config_key(config)
    if entry.get("key", key) != key:
        raise StoreError(f"{where or 'entry'}: key {entry['key']!r} is not the config's key {key}")
    where = where or f"entry {key}"
    error = entry.get("error")
    if isinstance(error, str) and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS - 3] + "..."
    body = {"key": key, "status": entry.get("status"), "config": config, "record": entry.get("record"),
            "error": error, "attempts": entry.get("attempts", 1), "seconds": entry.get("seconds", 0.0)}
    try:  # through JSON and back: numpy scalars become what a reader will see
        body = json.loads(_dumps(body))
    except (TypeError, ValueError, OverflowError) as err:
        raise StoreError(f"{where}: cannot encode: {err}") from None
    problem = _entry_problem(body)
    if problem:
        raise StoreError(f"{where}: {problem}")
    record = None if body["record"] is None else _dumps(body["record"])
    body["seconds"] = float(body["seconds"])  # a REAL column: what a reader gets
    row = (key, body["status"], _dumps(body["config"]), record, body["error"], body["attempts"], body["seconds"])
    return body, row


class Store:
    """A results store directory: ``Store.open`` to write (and resume), ``Store.read`` to inspect.

    Attributes: ``directory``; ``spec`` (the spec.json map), ``spec_text``; ``recovered`` (None, or
    what torn last entry of a legacy log was left out); ``imported`` (None, or how many entries of a
    legacy log were imported); ``moved_aside`` (files ``--force`` moved aside); ``writable``.
    """

    def __init__(self, directory: str, writable: bool) -> None:
        self.directory = directory
        self.writable = writable
        self.db_path = os.path.join(directory, DB)
        self.spec: dict[str, object] = {}
        self.spec_text = ""
        self.recovered: str | None = None
        self.imported: int | None = None
        self.moved_aside: list[str] = []
        self._ok: dict[str, dict] = {}
        self._failed: dict[str, dict] = {}
        self._order: list[str] = []
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None

    def fail(self, message: str) -> StoreError:
        return files.fail(self.directory, message)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, spec_text: str, spec_digest: str, force: bool = False) -> Store:
        """Open ``directory`` for writing the sweep whose spec is ``spec_text`` (identified by ``spec_digest``).

        A missing or empty directory is created as a new store. A store of the same digest and zonesim
        version is resumed (importing a legacy log). A store of another spec (or another zonesim
        version) is refused, naming both, unless ``force``: then its records and spec are moved aside
        (``records.<UTC time>.sqlite.bak``, ``spec.<UTC time>.toml.bak``, ...) and the new spec is
        written. A directory holding anything else than a store is refused even with ``force``.
        """
        if not isinstance(spec_digest, str) or not spec_digest:
            raise StoreError(f"{directory}: the spec digest must be a non-empty string (got {spec_digest!r})")
        store = cls(directory, writable=True)
        files.refuse_foreign(directory)  # before the lock file: leave a directory that is no store untouched
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as err:
            raise store.fail(f"cannot create the store directory: {err.strerror or err}") from None
        if not os.path.isdir(directory):
            raise store.fail("not a directory")
        store._lock_fd = files.lock(directory)
        try:
            store.spec, store.spec_text, store.moved_aside = files.check_spec(directory, spec_text, spec_digest, force)
            legacy = store._read_legacy()
            with store._sqlite():
                store._db = sqlite3.connect(store.db_path, isolation_level=None, timeout=30)
                store._db.execute("PRAGMA journal_mode=WAL")
                store._db.execute("PRAGMA synchronous=FULL")
                if not store._schema(store._db):
                    store._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
                store._load(store._db)
            if legacy is not None:
                store._import(legacy)
        except OSError as err:
            store.close()
            raise store.fail(f"cannot open the store: {err.strerror or err}") from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def read(cls, directory: str) -> Store:
        """Open ``directory`` read-only, without the lock (a running sweep may be appending): its
        records are read at once and nothing stays open. A legacy log is read, not imported."""
        store = cls(directory, writable=False)
        if not os.path.isdir(directory):
            raise store.fail("no such results store (not a directory)")
        store.spec = files.read_spec_json(directory)
        if store.spec is None:
            raise store.fail(f"not a zonesim results store (no {SPEC_JSON})")
        try:
            with open(store._path(SPEC_TOML), encoding="utf-8") as f:
                store.spec_text = f.read()
        except FileNotFoundError:
            store.spec_text = ""
        except (OSError, UnicodeDecodeError) as err:
            raise store.fail(f"cannot read {SPEC_TOML}: {getattr(err, 'strerror', None) or err}") from None
        legacy = store._read_legacy()
        if os.path.exists(store.db_path):
            with store._sqlite(), contextlib.closing(sqlite3.connect(
                    f"file:{quote(store.db_path)}?mode=ro", uri=True, timeout=30)) as db:
                if store._schema(db):
                    store._load(db)
        for entry in legacy or ():
            store._add(entry)
        return store

    @contextlib.contextmanager
    def _sqlite(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            damaged = " (the database is damaged: move it aside to start over)" \
                if type(err) is sqlite3.DatabaseError else ""
            raise self.fail(f"{DB}: {err}{damaged}") from None

    def _schema(self, db: sqlite3.Connection) -> bool:
        """Whether ``db`` holds the records table; False for a new, empty database."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return True
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            return False
        raise self.fail(f"{DB} is not a zonesim records database of schema {SCHEMA_VERSION} "
                        f"(user_version {version})")

    # -- reading ---------------------------------------------------------------------------------

    def _load(self, db: sqlite3.Connection) -> None:
        for key, status, config, record, error, attempts, seconds in db.execute(_SELECT):
            try:
                entry = {"key": key, "status": status, "config": json.loads(config),
                         "record": None if record is None else json.loads(record), "error": error,
                         "attempts": attempts, "seconds": seconds}
                problem = _entry_problem(entry)
            except (TypeError, ValueError) as err:
                problem = f"not JSON ({err})"
            if problem:
                raise self.fail(f"{DB}: the row of key {key!r:.40} is no entry: {problem}")
            self._add(entry)

    def _read_legacy(self) -> list[dict] | None:
        """The entries of a legacy log not yet imported (validated as ``append`` would), or None."""
        path = self._path(LEGACY_LOG)
        if not os.path.exists(path):
            return None
        from cluster import store_legacy  # msgpack only for stores that still have a legacy log

        try:
            found, torn = store_legacy.read_log(path)
            entries = [make_entry(entry, f"{LEGACY_LOG}: corrupt entry at byte {offset}")[0] for offset, entry in found]
        except StoreError as err:
            raise self.fail(str(err)) from None
        except OSError as err:
            raise self.fail(f"cannot read {LEGACY_LOG}: {err.strerror or err}") from None
        if torn:
            self.recovered = (f"dropped {torn} from {LEGACY_LOG} (kept whole as {IMPORTED})" if self.writable
                              else f"ignored {torn}; the store was not changed")
        return entries

    def _import(self, entries: list[dict]) -> None:
        self.append(entries)
        os.replace(self._path(LEGACY_LOG), self._path(IMPORTED))
        files.fsync_dir(self.directory)
        self.imported = len(entries)

    def _add(self, entry: dict) -> None:
        key = entry["key"]
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
        """Write ``entries`` (see ``make_entry``) in one transaction; returns how many were written.

        Entries whose key is already recorded ok (in the store or earlier in the batch) are skipped.
        A failed write is rolled back whole: the store never holds half a batch.
        """
        if not self.writable or self._db is None:
            raise self.fail("the store is open read-only" if not self.writable else "the store is closed")
        made = []
        ok = set(self._ok)
        for entry in entries:
            body, row = make_entry(entry)
            if body["key"] in ok:
                continue
            if body["status"] == "ok":
                ok.add(body["key"])
            made.append((body, row))
        if not made:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_UPSERT, [row for _, row in made])
            self._db.execute("COMMIT")
        except (sqlite3.Error, OverflowError) as err:  # OverflowError: an int beyond SQLite's 64 bits
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise self.fail(f"cannot write {DB}: {err}") from None
        for body, _ in made:
            self._add(body)
        return len(made)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()  # the last connection: SQLite checkpoints the WAL into the database
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DB", "ENTRY_KEYS", "IMPORTED", "LEGACY_LOG", "LOCK", "MAX_ERROR_CHARS", "SPEC_JSON", "SPEC_TOML", "Store",
           "StoreError", "make_entry"]
