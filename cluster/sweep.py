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
from cluster.store import Store, StoreError

DEFAULT_ROOT = "sweeps"  # sweep directories go to ./sweeps/NAME unless --out says otherwise


def default_dir(spec: Spec) -> str:
    return os.path.join(DEFAULT_ROOT, spec.name)


def open_store(spec: Spec, directory: str, resume: bool = False, force: bool = False) -> Store:
    """The sweep's store; ``resume`` insists that it exists already (a typo in --out is then an
    error, not a fresh sweep)."""
    if resume and not os.path.exists(os.path.join(directory, "spec.json")):
        raise StoreError(f"{directory}: --resume, but no sweep has been stored there")
    return Store.open(directory, spec.text, spec.digest(), force=force)


def run_spec(spec: Spec, directory: str, executor, options: Options | None = None, listeners: Sequence = (),
             stop: Callable[[], bool] = lambda: False, resume: bool = False, force: bool = False) -> Outcome:
    store = open_store(spec, directory, resume, force)
    try:
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


__all__ = ["default_dir", "load_spec", "open_store", "run_spec", "stored_baseline"]
