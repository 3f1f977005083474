"""Values and tables for people, shared by the CLI and the results formatter."""

from __future__ import annotations

from collections.abc import Sequence

from core.units import format_size

# How `list` shows values: byte sizes also in binary units, addresses in hex. Field names of
# core.machine.Machine and core.policy.Policy; a name missing here is shown as it is.
SIZE_NAMES = {"memory", "page_size", "vmalloc_reserve", "dma_zone", "kernel_image", "congruence_stride",
              "cache_line", "l1d_size", "kernel_window"}
ADDRESS_NAMES = {"page_offset"}


def show_value(name: str, value: object, size: bool = False) -> str:
    """A value for people: bools as --set takes them, sizes also in binary units, addresses in hex.

    ``name`` is a record key, machine field or parameter; byte counts are recognised by name
    (``*_bytes*``, SIZE_NAMES) or by ``size=True``.
    """
    if isinstance(value, bool):
        return str(value).lower()
    if name in ADDRESS_NAMES and isinstance(value, int):
        return f"{value:#x}"
    if not isinstance(value, int | float) or not (size or name in SIZE_NAMES or "bytes" in name.split("_")):
        return str(value)
    text = str(int(value)) if float(value).is_integer() else f"{value:.1f}"  # a mean may be fractional
    return f"{text} ({format_size(value)})"


def table(rows: Sequence[Sequence[str]], indent: int = 0) -> list[str]:
    """Rows as lines with every column but the last padded to its widest cell."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    pad = " " * indent
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append((pad + "  ".join(cells)).rstrip())
    return lines
