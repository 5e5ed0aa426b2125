"""Atomic file writes (a temp file in the target folder, fsync, then rename), and reading user-given text files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def read_utf8(path: Path, what: str) -> str:
    """The text of a file a user or a suspect gave (a BOM is dropped); CharexError naming ``what`` and the byte
    offset when it is not UTF-8."""
    from .errors import CharexError

    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CharexError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Example:
        >>> atomic_write_bytes("/tmp/x.bin", b"abc")  # doctest: +SKIP
    """
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[object], object]) -> Path:
    """Call ``writer(fileobj)`` on a temp file next to ``path``, then rename it into place.

    On any exception the temp file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target
