"""The errors of reading recorded input: trace files and strace logs.

They are not ``core.errors.StreamError``: that one means an event stream asks the kernel for
something it would BUG() on, while these mean a file could not be read or written at all, and a
caller that handles one (the CLI, a sweep spec's check of its cells) names it on its own. Each
message is one line naming the file (and the byte or line), because the CLI prints ``str(err)``
as the whole message.
"""


class TraceError(Exception):
    """A trace file that cannot be read or written; the message names the file and the byte offset."""


class StraceError(TraceError):
    """A strace log the converter cannot read: ``<log>:<lineno>: <what>``, one line."""
