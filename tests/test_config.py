"""Config validation at the library level: each refusal names its field (the CLI tests cover the
same through the command line)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.machine import PA8800, X86_PAE_64G, with_overrides
from core.policy import get_policy
from workloads.config import run_config


def test_4g4g_needs_an_x86_machine() -> None:
    with pytest.raises(ConfigError, match=r"^policy: 4g4g needs an x86 machine"):
        get_policy("4g4g", PA8800)
    get_policy("stock", X86_PAE_64G)  # the same call on x86 is fine


@pytest.mark.parametrize("override, field", [
    ({"memory": "65GiB"}, "memory"),  # beyond PAE's 36-bit physical addresses
    ({"struct_page": 64}, "memory"),  # mem_map no longer fits in lowmem: cannot boot
    ({"dma_zone": "5MiB"}, "dma_zone"),  # zones start on max-order boundaries
    ({"kernel_stack_order": 3}, "kernel_stack_order"),
    ({"cost.nosuch": 1}, "cost.nosuch"),
])
def test_impossible_machines_name_their_field(override: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        run_config({"set": {**override, "events": 10}})
    assert err.value.field == field


def test_unknown_config_key_and_bad_seed() -> None:
    with pytest.raises(ConfigError, match=r"^nosuch: a config key"):
        run_config({"nosuch": 1})
    with pytest.raises(ConfigError, match=r"^seed: "):
        run_config({"seed": -1})


def test_overrides_apply() -> None:
    m = with_overrides(X86_PAE_64G, {"memory": "16GiB", "last_pkmap": "1024"})
    assert (m.memory, m.frames, m.last_pkmap) == (16 << 30, 4 << 20, 1024)
