"""Output files that appear whole or not at all.

A writer gets a temporary name beside the target (same folder, so the final rename is atomic); the
file is renamed into place only when the writer finishes, with the mode the umask asks for (0644
by default; ``tempfile.mkstemp`` alone would leave 0600). On any failure, Ctrl-C or SIGTERM the
temporary file is removed. An existing file is replaced only when ``overwrite`` is given, so an
input is never clobbered by default.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputExistsError


def check_target(path: str | Path, overwrite: bool = False) -> Path:
    """``path`` if a file can be written there, else an :class:`InputError` saying why.

    Refused: an existing file without ``overwrite``, a folder, and a location whose nearest existing
    folder is not writable (missing folders are created by :func:`atomic_output`).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected the name of a file to write")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass --overwrite "
                                "(inputs are never overwritten)")
    folder = next(p for p in path.absolute().parents if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: {folder} is not a writable folder")
    return path


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it becomes ``path`` when the block ends.

    The temporary file keeps ``path``'s suffix (writers such as PyAV pick the format from it) and is
    hidden (``.name.XXXX.suffix``). Raises :class:`~lipforcing_core.errors.OutputExistsError` up
    front when ``path`` exists and ``overwrite`` is false.
    """
    path = check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=path.suffix, prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with _sigterm_as_exit():
            yield tmp
            os.chmod(tmp, _umask_mode())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while a file is written, so cleanup runs (Ctrl-C already raises
    ``KeyboardInterrupt``). Only in the main thread and only over Python's default handler, so a host
    application's own handler (ComfyUI's server) is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
