"""The one exception type that carries a user-facing, one-line message."""


class ClbenchError(Exception):
    """A user error: the CLI prints its message as one line and exits non-zero, no traceback."""
