"""The one error type for inputs a user can fix: a wrong file, a bad value, an output in the way.

Every expected failure of the library raises :class:`InputError` (or a subclass such as
``CheckpointError``) whose message names the input and says what was expected. Front ends turn it
into one line: the command line prints ``error: <message>`` and exits with code 2, the ComfyUI
nodes re-raise it naming the node input. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """An input that cannot be used; the message names it and what was expected."""


class OutputExistsError(InputError, FileExistsError):
    """The output file exists and replacing it was not asked for (inputs are never overwritten)."""


@contextmanager
def about(name: str) -> Iterator[None]:
    """Prefix the message of an :class:`InputError` raised inside with ``name`` (e.g. ``--video``),
    so the shared message of the library is told against the option or node input that gave it."""
    try:
        yield
    except InputError as err:
        err.args = (f"{name} {err}",)
        raise
