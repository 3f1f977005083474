"""A sweep from spec to store: the one code path behind ``zonesim sweep`` and the sweep service.

``run_spec`` opens (or resumes) the spec's store, runs the driver loop over the configs that have
no ok record yet, and closes the store; the caller brings the executor (an embedded or joined Ray,
or the in-process one in tests), the listeners and, for the service, a ``stop`` callable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from cluster.driver import Options, Outcome, run_sweep
from cluster.spec import Spec, load_spec, tomllib
from cluster.store import LEGACY_LOG, Store, StoreError

DEFAULT_ROOT = "sweeps"  # sweep directories go to ./sweeps/NAME unless --out says otherwise


def default_dir(spec: Spec) -> str:
    return os.path.join(DEFAULT_ROOT, spec.name)


def open_store(spec: Spec, directory: str, resume: bool = False, force: bool = False) -> Store:
    """The sweep's store; ``resume`` insists that it exists already (a typo in --out is then an
    error, not a fresh sweep)."""
    if resume and not os.path.exists(os.path.join(directory, "spec.json")):
        raise StoreError(f"{directory}: --resume, but no sweep has been stored there")
    return Store.open(directory, spec.text, spec.digest(), force=force)


def store_notes(store: Store) -> list[str]:
    """What opening (or reading) the store did with a legacy log, a line each, naming the store:
    how many records it imported, and the torn last entry it left out. Said on stderr, not an error."""
    notes = [f"imported {store.imported} records of the old {LEGACY_LOG}"] if store.imported is not None else []
    return [f"{store.directory}: {note}" for note in notes + ([store.recovered] if store.recovered else [])]


def run_spec(spec: Spec, directory: str, executor, options: Options | None = None, listeners: Sequence = (),
             stop: Callable[[], bool] = lambda: False, resume: bool = False, force: bool = False,
             note: Callable[[str], None] = lambda line: None) -> Outcome:
    """Open the spec's store (``note`` gets its ``store_notes``), run what it has no ok record of, close it."""
    store = open_store(spec, directory, resume, force)
    try:
        for line in store_notes(store):
            note(line)
        return run_sweep(spec.configs(), store, executor, options, listeners, stop)
    finally:
        store.close()


def stored_baseline(store: Store) -> str | None:
    """The baseline policy of the spec a store was written for (the ratios' reference). Only that
    key is read: the spec was validated when the sweep ran, and its trace files may be gone."""
    try:
        baseline = tomllib.loads(store.spec_text).get("baseline")
    except tomllib.TOMLDecodeError:
        return None
    return baseline if isinstance(baseline, str) else None


__all__ = ["default_dir", "load_spec", "open_store", "run_spec", "store_notes", "stored_baseline"]
