"""Atomic file writes: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def replace_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` for a fresh temporary file beside ``path``, then rename it
    into place; if anything fails, remove the temporary file and re-raise.

    A reader (or an interrupted run) never sees a half-written file, and one
    still open on the old file keeps reading the old file. The temporary name,
    ``.<name>.<random>.tmp``, is fresh and unique (not mkstemp's 0600 file), so
    the result gets the umask's mode. The folder must exist.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
