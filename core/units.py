"""Byte sizes as people write them ("16GiB", "896M", "0xC0000000") and back."""

import re

from core.errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def is_int(value: object) -> bool:
    """An integer and not a bool (bool is an int subclass; a config's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_size(field: str, text: str | int) -> int:
    """Parse a byte size; binary units throughout, as the kernel counts (1 GB = 2**30 bytes)."""
    if isinstance(text, bool):
        raise ConfigError(field, "a size such as 16GiB, 896MiB or 4096", text)
    if isinstance(text, int):
        return text
    if isinstance(text, str) and text.strip().lower().startswith("0x"):
        try:
            return int(text.strip(), 16)
        except ValueError:
            raise ConfigError(field, "a size such as 16GiB, 896MiB, 4096 or 0xC0000000", text) from None
    match = _SIZE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(field, "a size such as 16GiB, 896MiB, 4096 or 0xC0000000", text)
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value != int(value):
        raise ConfigError(field, "a whole number of bytes", text)
    return int(value)


def format_size(nbytes: int | float) -> str:
    """The largest binary unit that keeps the number readable: 536870912 -> '512 MiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(nbytes) >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.2f} {unit}"
    return f"{int(nbytes)} B"
