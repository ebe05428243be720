"""An exclusive, non-blocking lease shared by the processes of one host: an ``flock``.

The background drains of a journal that several worker processes share (the outbox's
replayer, the spool's uploader, cache coherence's reconcile) take this lease for each
drain, so one process drains at a time and the others skip their turn. The kernel ends
the lease when its holder's file is closed, even when the process is killed with
``kill -9``: no lease timeout to wait out, no stale claim to take over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

__all__ = ["FileLease"]


class FileLease:
    """``try_acquire()`` -> whether this process now holds ``path``'s lease; ``release()``.

    Each instance opens the file on its own (an ``flock`` belongs to an open file),
    so two instances conflict even in one process: tests stand in for two workers
    with two instances. Not re-entrant.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "drain.lease")
    >>> a, b = FileLease(path), FileLease(path)
    >>> a.try_acquire(), b.try_acquire()
    (True, False)
    >>> a.release(); b.try_acquire()
    True
    >>> a.close(); b.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held = False
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this instance holds the lease."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lease if no one holds it; never waits."""
        with self._guard:
            if self._fd is None:
                raise ValueError(f"lease {self.path} is closed")
            if self._held:
                return False
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            self._held = True
            return True

    def release(self) -> None:
        """Give the lease back (no-op when not held)."""
        with self._guard:
            if self._held and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False

    def close(self) -> None:
        """Release and close the file."""
        with self._guard:
            fd, self._fd = self._fd, None
            self._held = False
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileLease {str(self.path)!r} held={self._held}>"
