"""What a run needs from the file system: writable directories, and one clear error when a write fails.

A run directory or recovery directory that cannot be created or written stops the run before it starts, with the
path and the reason. A write that fails during the run (a full disk: ``ENOSPC``) stops it with the file's path; the
recovery store is SQLite, whose transactions are atomic, so it holds the last complete snapshot and a restart
resumes from there.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def exception_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the exceptions it wraps (``__cause__``, else ``__context__``): Bytewax wraps a step's exception in
    its own, so what stopped a run is found down this chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


class ResourceError(RuntimeError):
    """A directory or file the run needs cannot be written (permissions, a full disk, a read-only mount)."""

    @staticmethod
    def within(error: BaseException) -> ResourceError | None:
        """A ResourceError for the first OSError in ``error``'s chain, if any."""
        for link in exception_chain(error):
            if isinstance(link, OSError):
                where = f"{link.filename}: " if link.filename else ""
                return ResourceError(f"cannot write {where}{link.strerror or link} (errno {link.errno}); the run "
                                     "stopped. Make room or fix the path and start it again: with a recovery "
                                     "directory it resumes from the last snapshot")
        return None


def writable_directory(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove it writable (a probe file written, synced and removed), or say which."""
    probe = path / ".vigil-write-probe"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as error:
        raise ResourceError(f"the {what} {path} is not writable: {error.strerror or error}") from None
    return path
