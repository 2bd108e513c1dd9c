"""One writer at a time: an advisory lock on a sweep store folder.

A running sweep (or a save, or a repair) holds ``.sprint-lab.lock`` inside the store folder with
an exclusive ``flock``; the file records who holds it (pid, host, command, since when). A second
writer, in another process or another thread of the same process, gets a
:class:`StoreLockedError` naming the holder instead of interleaving its rows with the first
one's. The kernel drops an ``flock`` when its process dies, so a lock left by a process killed
with ``kill -9`` is free again: the next writer takes it over and notes the dead holder.

On file systems without ``flock`` (some network mounts) the lock falls back to an exclusive
create of the lock file, and a lock whose pid no longer runs on this host is taken over.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with StoreLock(folder) as lock:
    ...     try:
    ...         StoreLock(folder).acquire()
    ...     except StoreLockedError as error:
    ...         print("refused:", "in progress by pid" in str(error))
    refused: True
    >>> lock.held
    False
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sprint_lab.core.errors import SetupError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "StoreLock", "StoreLockedError"]

LOCK_FILE = ".sprint-lab.lock"


class StoreLockedError(SetupError):
    """Another live writer holds the store's lock (the message names its pid and start time)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """An exclusive, advisory lock on a store folder (a context manager).

    Args:
        folder: the store folder (created if missing).
        purpose: what the holder is doing, recorded for whoever is refused.

    Attributes:
        took_over: the record of a dead holder whose lock was taken over, else ``None``.
    """

    def __init__(self, folder: str | os.PathLike, purpose: str = "sweep") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.purpose = purpose
        self.took_over: dict[str, Any] | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """The recorded holder (``{}`` when the lock file is missing or unreadable)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict[str, Any]) -> StoreLockedError:
        since = holder.get("since", "an unknown time")
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        doing = holder.get("purpose", "sweep")
        return StoreLockedError(
            f"{self.folder}: {doing} in progress by {who} since {since}; wait for it to finish, "
            "stop it, or use another folder"
        )

    def _record(self) -> bytes:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "purpose": self.purpose,
            "command": " ".join(sys.argv[:4]),
        }
        return json.dumps(record).encode()

    def acquire(self) -> StoreLock:
        """Take the lock or raise :class:`StoreLockedError` (never waits)."""
        if self.held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_by_create()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._refuse(self.holder()) from None
            if error.errno == errno.ENOLCK:
                return self._acquire_by_create()
            raise
        previous = self.holder()
        if previous.get("pid") not in (None, os.getpid()):
            self.took_over = previous  # its process died without releasing: the kernel did
        os.ftruncate(fd, 0)
        os.write(fd, self._record())
        self._fd = fd
        return self

    def _acquire_by_create(self) -> StoreLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self.holder()
            same_host = holder.get("host") == socket.gethostname()
            dead = same_host and not _pid_alive(int(holder.get("pid", 0) or 0))
            if not holder or dead:  # an emptied file was released; a dead pid is stale
                self.took_over = holder or None
                self.path.unlink(missing_ok=True)
                return self._acquire_by_create()
            raise self._refuse(holder) from None
        os.write(fd, self._record())
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays, emptied, for the next writer)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        if fcntl is None:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
