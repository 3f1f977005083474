"""The one size-bounded msgpack reader: trace files (``workloads.trace``) and the results store's
legacy log (``cluster.store_legacy``) are read through it.

Neither kind of file is trusted. ``Bounded`` bounds the unpacker's buffer and every string, bin,
array and map length, and refuses ext types, so a hostile length fails after at most
``max_object_bytes`` have been read instead of by allocating it; ``Bounded.next`` turns each way an
object can be bad into one short reason for the caller's one-line error (the caller adds which
file and where).
"""

from __future__ import annotations

import msgpack


class Bounded:
    """A streaming msgpack reader over ``source`` (a binary file) within these bounds."""

    def __init__(self, source: object, max_object_bytes: int, max_str: int, max_bin: int, max_items: int,
                 read_size: int = 1 << 16) -> None:
        self.limit = max_object_bytes
        self.unpacker = msgpack.Unpacker(
            source, raw=False, read_size=min(read_size, max_object_bytes), max_buffer_size=max_object_bytes,
            max_str_len=max_str, max_bin_len=max_bin, max_array_len=max_items, max_map_len=max_items,
            max_ext_len=0)

    def tell(self) -> int:
        """The offset in the input where the next object starts."""
        return self.unpacker.tell()

    def next(self) -> tuple[object, str | None]:
        """(the next object, None), or (None, why it is not one). ``msgpack.OutOfData`` (the end of
        the input, maybe inside an object) passes through: only the caller knows if that end is clean."""
        try:
            return self.unpacker.unpack(), None
        except msgpack.OutOfData:
            raise
        except msgpack.BufferFull:
            return None, f"an object larger than the reader's limit of {self.limit} bytes"
        except msgpack.StackError:
            return None, "objects nested too deeply"
        except msgpack.FormatError:
            return None, "not msgpack"
        except (ValueError, TypeError) as err:  # a length over its limit, a non-string key, bad UTF-8
            return None, str(err)
