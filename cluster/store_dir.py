"""The results store's directory around its records: the spec files, the writer's lock, the refusal of
a directory that is no store, and what ``--force`` moves aside. ``cluster.store`` describes the layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone

from workloads import config as identity

SPEC_TOML = "spec.toml"
SPEC_JSON = "spec.json"
DB = "records.sqlite"
LOCK = "store.lock"
LEGACY_LOG = "records.msgpack"
IMPORTED = LEGACY_LOG + ".imported"
OURS = {LOCK, SPEC_TOML, SPEC_JSON, DB, DB + "-wal", DB + "-shm", LEGACY_LOG, IMPORTED}
MAX_SPEC_JSON = 1 << 20


class StoreError(Exception):
    """A results store that cannot be opened, read or written; one line naming the store and the cause."""


def fail(directory: str, message: str) -> StoreError:
    return StoreError(f"{directory}: {message}")


def fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
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
    fsync_dir(os.path.dirname(path) or ".")


def lock(directory: str) -> int:
    """An exclusive ``flock`` on ``store.lock``, holding our pid; refused naming the holder's."""
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise fail(directory, f"cannot open {LOCK}: {err.strerror or err}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise fail(directory, f"store in use by pid {holder} (one writer at a time)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def read_spec_json(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, SPEC_JSON), "rb") as f:
            data = f.read(MAX_SPEC_JSON + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise fail(directory, f"cannot read {SPEC_JSON}: {err.strerror or err}") from None
    try:
        spec = json.loads(data) if len(data) <= MAX_SPEC_JSON else None
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or not isinstance(spec.get("digest"), str):
        raise fail(directory, f"{SPEC_JSON} is damaged (not a JSON map with a digest)")
    return spec


def read_spec_text(directory: str, default: str | None) -> str | None:
    try:
        with open(os.path.join(directory, SPEC_TOML), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return default


def _first_difference(old: str, new: str) -> str:
    """Where two spec texts first differ, for the refusal message."""
    a, b = old.splitlines(), new.splitlines()
    for number, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return f"first difference at line {number}: {x.strip()!r:.60} became {y.strip()!r:.60}"
    if len(a) != len(b):
        return f"first difference at line {min(len(a), len(b)) + 1}: the spec has {len(a)} lines, now {len(b)}"
    return "the texts differ only in line endings or the digest covers more than the text"


def check_spec(directory: str, spec_text: str, digest: str, force: bool) -> tuple[dict, str, list[str]]:
    """The store's spec map and text once ``spec_text`` may write to it, and what was moved aside:
    a new store gets the spec; one of another spec or version is refused unless ``force``."""
    try:
        spec = read_spec_json(directory)
    except StoreError:
        if not force:
            raise
        spec = {"digest": "(damaged spec.json)", "zonesim": None}
    if spec is None:
        refuse_foreign(directory)
        records = [name for name in (DB, LEGACY_LOG) if os.path.exists(os.path.join(directory, name))]
        if records and not force:
            raise fail(directory, f"{records[0]} exists but {SPEC_JSON} does not: the records' spec is unknown; "
                       "use --force to start over (the old records are kept aside)")
        moved = move_aside(directory) if records else []
        return write_spec(directory, spec_text, digest), spec_text, moved
    old_digest, old_version = spec["digest"], spec.get("zonesim")
    if old_digest == digest and old_version == identity.ZONESIM_VERSION:
        return spec, read_spec_text(directory, spec_text), []
    if old_digest != digest:
        reason = f"it holds results of spec {old_digest}, not of this spec {digest}"
        old_text = read_spec_text(directory, None)
        if old_text is not None:
            reason += f" ({_first_difference(old_text, spec_text)})"
    else:
        reason = f"its results were made by zonesim {old_version}, this is zonesim {identity.ZONESIM_VERSION}"
    if not force:
        raise fail(directory, f"{reason}; use --force to start over (the old records are kept aside)")
    moved = move_aside(directory)
    return write_spec(directory, spec_text, digest), spec_text, moved


def refuse_foreign(directory: str) -> None:
    """A directory without spec.json that holds other files than a store's is not ours to write."""
    if not os.path.isdir(directory) or os.path.exists(os.path.join(directory, SPEC_JSON)):
        return
    foreign = sorted(name for name in os.listdir(directory)
                     if name not in OURS and not name.endswith((".bak", ".bak-wal", ".tmp")))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise fail(directory, f"not a zonesim results store (no {SPEC_JSON}) and not empty (holds {shown}); "
                   "give a new or empty directory")


def move_aside(directory: str) -> list[str]:
    """The old records and spec, renamed with a UTC stamp (the database's WAL with it, named so
    SQLite finds it: it may hold the last batches of a killed writer); returns the new paths."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    names = [(DB, "records.{}.sqlite.bak"), (DB + "-wal", "records.{}.sqlite.bak-wal"),
             (LEGACY_LOG, "records.{}.msgpack.bak"), (IMPORTED, "records.{}.msgpack.imported.bak"),
             (SPEC_TOML, "spec.{}.toml.bak"), (SPEC_JSON, "spec.{}.json.bak")]
    suffix, n = stamp, 0
    while any(os.path.exists(os.path.join(directory, new.format(suffix))) for _, new in names):
        n += 1
        suffix = f"{stamp}-{n}"
    moved = []
    for old, new in names:  # the records first: once they are gone nothing can be added to the old spec
        src, dst = os.path.join(directory, old), os.path.join(directory, new.format(suffix))
        if os.path.exists(src):
            os.replace(src, dst)
            moved.append(dst)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, DB + "-shm"))  # an index of the WAL, rebuilt from it
    fsync_dir(directory)
    return moved


def write_spec(directory: str, spec_text: str, digest: str) -> dict:
    spec = {"digest": digest, "zonesim": identity.ZONESIM_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_atomic(os.path.join(directory, SPEC_TOML), spec_text.encode("utf-8"))
    _write_atomic(os.path.join(directory, SPEC_JSON), (json.dumps(spec, indent=2) + "\n").encode())
    return spec
