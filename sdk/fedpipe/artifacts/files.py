"""Files that a killed process leaves whole: the old content or the new, never a torn one.

Client agents, their protocol state and the coordinator's replay floor are rewritten
while the process may be SIGKILLed at any moment; a truncated file would stop the
restarted process from starting (or make it forget what it must not repeat)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write to a temporary file in the same folder, flush it to disk, rename it over
    `path` (a rename within a folder is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
