"""The project's own error type.

Library code raises :class:`SamplewiseError` for anything a user can fix (an unknown name, a bad
value, a missing or corrupt file). The CLI prints its message on one line and exits with status 2;
any other exception is a bug and keeps its traceback.
"""


class SamplewiseError(Exception):
    """A user-facing error with a one-line message."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`SamplewiseError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SamplewiseError(message)
