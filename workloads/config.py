"""A simulation config: plain data naming a machine, a policy, a workload, a seed and overrides.

``resolve`` turns it into built objects, routing each ``--set`` key to the one place that owns it
(machine field, policy parameter, workload parameter) and refusing unknown keys with the full list;
``run_config`` runs it. A run is a pure function of its config: the seed is the only randomness.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass

from core import machine as machines
from core import policy as policies
from core.errors import ConfigError
from core.events import Stream
from core.machine import Machine
from core.policy import Policy
from core.sim import run
from workloads import get_workload

DEFAULTS: dict[str, object] = {"machine": "x86-pae-64g", "policy": "stock", "workload": "mixed", "seed": 0,
                               "engine": "fast", "set": {}}
CONFIG_KEYS = tuple(DEFAULTS)


def _installed_version() -> str:
    try:
        return importlib.metadata.version("zonesim")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


ZONESIM_VERSION = _installed_version()  # part of every simulation's identity: a new model is a new key


# -- identity: what a store keys a simulation by, and what aggregation groups on -------------------


def plain_value(value: object) -> object:
    """numpy scalars as Python ones (json and msgpack's default hook); anything else refused."""
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not plain data: {type(value).__name__}")


def full_config(config: dict[str, object]) -> dict[str, object]:
    """The config with DEFAULTS filling what it leaves out (values kept as given)."""
    return {**DEFAULTS, **config}


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, ASCII: the same text for the same data whatever the dict order."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=plain_value)
    except (TypeError, ValueError) as err:
        raise ConfigError("config", f"plain data (numbers, strings, booleans, lists, tables): {err}") from None


def config_key(config: dict[str, object]) -> str:
    """The simulation's identity: 32 hex digits of the SHA-256 of the full config and ZONESIM_VERSION.

    Missing config keys take ``DEFAULTS`` (so ``{}`` and the spelled-out default config are one
    simulation); values are hashed exactly as given: ``"4KiB"`` and ``4096`` are different keys, so a
    spec should write its values consistently.
    """
    text = canonical_json({"config": full_config(config), "zonesim": ZONESIM_VERSION})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Resolved:
    machine: Machine
    policy: Policy
    stream: Stream
    identity: dict[str, object]
    engine: str


def split_overrides(overrides: dict[str, object], workload_params: set[str]) -> tuple[dict, dict, dict]:
    """Route each key to machine, policy or workload; unknown keys are refused naming all three."""
    m, p, w = {}, {}, {}
    for key, value in overrides.items():
        if machines.owns(key):
            m[key] = value
        elif policies.owns(key):
            p[key] = value
        elif key in workload_params:
            w[key] = value
        else:
            allowed = [*sorted(machines.FIELD_HELP), "cost.NAME", *sorted(policies.PARAM_HELP),
                       *sorted(workload_params)]
            raise ConfigError(key, "a setting of the machine, policy or workload: " + ", ".join(allowed))
    return m, p, w


def resolve(config: dict[str, object]) -> Resolved:
    """Build machine, policy and stream from a config dict (missing keys take DEFAULTS)."""
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], "a config key: " + ", ".join(CONFIG_KEYS))
    cfg = {**DEFAULTS, **config}
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", "an integer >= 0", seed)
    overrides = cfg["set"]
    if not isinstance(overrides, dict):
        raise ConfigError("set", "a table of name = value")
    workload = get_workload(str(cfg["workload"]))
    m_set, p_set, w_set = split_overrides(overrides, {q.name for q in workload.params})
    machine = machines.with_overrides(machines.get_machine(str(cfg["machine"])), m_set)
    policy = policies.get_policy(str(cfg["policy"]), machine, p_set)
    # facts of the machine the stream must agree with, not settings of the workload
    params = {**workload.resolve(w_set), "cpus": machine.cpus, "stack_order": machine.kernel_stack_order}
    stream = workload.build(params, seed)
    identity = {"machine": machine.name, "policy": policy.name, "workload": workload.name, "seed": seed}
    return Resolved(machine, policy, stream, identity, str(cfg["engine"]))


def inside_setup(r: Resolved) -> tuple[int, int] | None:
    """(events, set-up events) when the stream ends inside its workload's prologue (no episode
    runs, so every seed gives the same record), else None."""
    events = int(r.stream.params.get("events", 0) or 0)
    return (events, r.stream.setup_events) if 0 < events <= r.stream.setup_events else None


def run_config(config: dict[str, object], check: bool = True, on_batch=None) -> dict[str, object]:
    """The plain worker function: config in, flat record out (``on_batch``: see core.sim.simulate)."""
    r = resolve(config)
    return run(r.machine, r.policy, r.stream, r.identity, engine=r.engine, check=check, on_batch=on_batch)
