"""The three ways a simulation can refuse to go on.

Each error names what is wrong in one line, because the CLI prints ``str(err)`` as the whole
message (no traceback) and users fix their input from it.
"""


class ConfigError(ValueError):
    """A machine, policy or workload setting is unknown or impossible.

    ``field`` is the setting's name as the user typed it, ``allowed`` says what would be accepted.
    """

    def __init__(self, field: str, allowed: str, got: object = None) -> None:
        self.field = field
        self.allowed = allowed
        self.got = got
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"{field}: {allowed}{shown}")


class StreamError(ValueError):
    """An event stream asks for something the kernel would BUG() on (free of a free page, ...)."""


class InvariantError(AssertionError):
    """Simulator state is inconsistent: a bug in zonesim, never in the user's input."""
