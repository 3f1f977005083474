"""Every NumPy array a kernel holds, by name: what ``zonesim bench`` reports as simulator state.

The walk starts at the ``Kernel`` and follows attributes, lists, tuples and dicts into every
object of ``core`` (mem_map, the zones, the pkmap pool, the parisc state, its cache and colour
pools), so an array added anywhere under the kernel is counted without anyone listing it. An
array reached twice (or a view of one already counted) is counted once, under its first name.
"""

from __future__ import annotations

import numpy as np


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def state_arrays(root: object, name: str = "kernel") -> dict[str, int]:
    """name -> bytes of every array reachable from ``root`` through core objects."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object]] = [(name, root)]
    while stack:
        path, obj = stack.pop()
        if isinstance(obj, np.ndarray):
            base = _owner(obj)
            if id(base) not in seen:
                seen.add(id(base))
                out[path] = base.nbytes
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack += [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        elif type(obj).__module__.startswith("core.") and hasattr(obj, "__dict__"):
            stack += [(f"{path}.{k}", v) for k, v in vars(obj).items()]
    return dict(sorted(out.items()))


def state_bytes(root: object) -> int:
    return sum(state_arrays(root).values())
