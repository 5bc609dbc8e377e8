"""What is wrong with a path that cannot be opened, as the end of a sentence (shared by the
CLI's structure files and the potential folders; imports no torch)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def broken_link(path: Path, loop_fix: str) -> str | None:
    """``path`` as a broken symlink: a loop (``loop_fix`` says what to do) or a link to nothing;
    None when ``path`` is not a broken link."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"is a symlink loop (its links lead back to themselves); {loop_fix}"
        if path.is_symlink():
            return f"is a symlink to {os.readlink(path)!r}, which does not exist"
    return None
