"""The store lock: ``fcntl`` shared/exclusive, reentrant per thread, with a write generation.

containers/storage ``pkg/lockfile``: readers hold the lock shared, writers
exclusive; the lock file's content is the "last write" token a writer replaces,
so a reader in another process can tell its cached metadata is stale and reload.

Here the token is a generation: ``"<counter> <nonce>"``, rewritten in place (never
renamed: a rename would give other processes a different inode to lock) by
:meth:`StoreLock.bump`. The nonce is drawn when the file is created, so a store
removed and made again never repeats a generation a reader has cached.

``flock(2)`` locks belong to an open file description and die with the process,
so a killed writer leaves no stale lock. Within one process the lock is also a
readers-writer lock between threads: a thread may re-enter what it holds, and a
writer may take the shared lock (it already excludes everyone), but a reader may
not upgrade to exclusive (two upgrading readers would deadlock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from criolib.storage._errors import LockTimeout

__all__ = ["StoreLock"]

_TOKEN_SIZE = 64  # fixed width, so a rewrite never leaves a tail of the old token


class StoreLock:
    """A cross-process, per-thread reentrant readers-writer lock on ``path``.

    ``timeout`` (seconds, ``None`` = wait forever) is the default for
    :meth:`shared` and :meth:`exclusive`; running out raises :class:`LockTimeout`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._cond = threading.Condition(threading.Lock())
        self._writer: int | None = None  # thread ident holding exclusive
        self._writer_depth = 0
        self._readers: dict[int, int] = {}  # thread ident -> depth
        self._fd: int | None = None
        self._pid = 0
        self._flock = 0  # what this process holds: 0, LOCK_SH or LOCK_EX
        self._acquiring = False  # a thread is waiting for the file lock

    # -- public ---------------------------------------------------------------------

    @contextlib.contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock shared (or re-enter what this thread holds) for the block."""
        self._acquire(exclusive=False, timeout=self._timeout(timeout))
        try:
            yield
        finally:
            self._release(exclusive=False)

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock exclusively for the block; re-entrant for its holder."""
        self._acquire(exclusive=True, timeout=self._timeout(timeout))
        try:
            yield
        finally:
            self._release(exclusive=True)

    @property
    def held_exclusive(self) -> bool:
        """Whether the calling thread holds the lock exclusively."""
        return self._writer == threading.get_ident()

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the lock at all."""
        me = threading.get_ident()
        return self._writer == me or me in self._readers

    def generation(self) -> str:
        """The current write generation (opaque); call while holding the lock."""
        if not self.held:
            raise RuntimeError(f"{self.path}: generation() needs the lock held")
        raw = os.pread(self._open(), _TOKEN_SIZE, 0)
        return raw.rstrip(b"\0 \n").decode("ascii", "replace")

    def bump(self) -> str:
        """Start a new write generation and return it; needs the exclusive lock."""
        if not self.held_exclusive:
            raise RuntimeError(f"{self.path}: bump() needs the exclusive lock")
        current = self.generation()
        counter_text, _, nonce = current.partition(" ")
        try:
            counter = int(counter_text)
        except ValueError:
            counter = 0
        if not nonce:
            nonce = secrets.token_hex(8)
        token = f"{counter + 1} {nonce}"
        os.pwrite(self._open(), token.encode().ljust(_TOKEN_SIZE, b" "), 0)
        return token

    def close(self) -> None:
        """Close the lock file; the lock must not be held."""
        with self._cond:
            if self._writer is not None or self._readers:
                raise RuntimeError(f"{self.path}: close() while the lock is held")
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"StoreLock({str(self.path)!r})"

    # -- internals ------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _open(self) -> int:
        """The lock file's descriptor, reopened in a forked child.

        A child shares its parent's open file description, and so its flock: a
        child unlocking would unlock the parent. A new open gives it its own.
        """
        if self._fd is None or self._pid != os.getpid():
            if self._pid != os.getpid():
                self._reset_after_fork()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd, self._pid = fd, os.getpid()
        return self._fd

    def _reset_after_fork(self) -> None:
        # Only the forking thread survives a fork; what other threads held is gone.
        self._writer, self._writer_depth, self._readers, self._flock = None, 0, {}, 0
        self._fd = None

    def _acquire(self, *, exclusive: bool, timeout: float | None) -> None:
        me = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._pid != os.getpid():
                self._reset_after_fork()
            if self._writer == me:
                if exclusive:
                    self._writer_depth += 1
                else:
                    self._readers[me] = self._readers.get(me, 0) + 1
                return
            if me in self._readers:
                if exclusive:
                    raise RuntimeError(
                        f"{self.path}: cannot upgrade a shared lock to exclusive; "
                        "take the exclusive lock first")
                self._readers[me] += 1
                return
            # Wait for the other threads of this process.
            while (self._writer is not None or (exclusive and self._readers)
                   or self._acquiring):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._timed_out(exclusive, timeout)
                self._cond.wait(remaining)
            want = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            if self._flock == want:  # other threads here already read under it
                self._readers[me] = 1
                return
            # Wait for other processes without holding the condition, so that this
            # process's other threads can still time out meanwhile.
            self._acquiring = True
        try:
            self._flock_wait(want, deadline, timeout)
        finally:
            with self._cond:
                self._acquiring = False
                self._cond.notify_all()
        with self._cond:
            self._flock = want
            if exclusive:
                self._writer, self._writer_depth = me, 1
            else:
                self._readers[me] = 1

    def _flock_wait(self, want: int, deadline: float | None, timeout: float | None) -> None:
        """Take the file lock, blocking in the kernel (which wakes waiters when it frees).

        Polling with ``LOCK_NB`` would starve a waiter whenever another process
        takes the lock again quickly. With a timeout, the blocking ``flock`` runs
        in a helper thread on a private open file description: on giving up, that
        description is closed when (if ever) the helper gets the lock, so nothing
        stays locked; on success it becomes this lock's descriptor.
        """
        fd = self._open()
        try:
            fcntl.flock(fd, want | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if deadline is None:
            fcntl.flock(fd, want)
            return
        private = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        got = threading.Event()
        guard = threading.Lock()
        abandoned = False

        def wait() -> None:
            try:
                fcntl.flock(private, want)
            except OSError:
                os.close(private)
                return
            with guard:
                if abandoned:
                    os.close(private)  # releases the lock nobody waits for any more
                else:
                    got.set()

        threading.Thread(target=wait, name="criolib-storage-lock", daemon=True).start()
        got.wait(max(0.0, deadline - time.monotonic()))
        with guard:
            if not got.is_set():
                abandoned = True
                raise self._timed_out(want == fcntl.LOCK_EX, timeout)
        # This process held nothing on the old descriptor: swap in the locked one.
        os.close(fd)
        self._fd = private

    def _release(self, *, exclusive: bool) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._pid != os.getpid():
                return  # acquired before a fork; the child holds nothing
            if exclusive:
                if self._writer != me:
                    raise RuntimeError(f"{self.path}: released an exclusive lock not held")
                self._writer_depth -= 1
                if self._writer_depth:
                    return
                self._writer = None
                if me in self._readers:
                    # Still reading inside its own write: keep the file lock shared.
                    self._downgrade()
                else:
                    self._unlock_file()
            else:
                depth = self._readers.get(me, 0)
                if depth <= 0:
                    raise RuntimeError(f"{self.path}: released a shared lock not held")
                if depth > 1:
                    self._readers[me] = depth - 1
                    return
                del self._readers[me]
                if self._writer is None and not self._readers:
                    self._unlock_file()
            self._cond.notify_all()

    def _downgrade(self) -> None:
        # flock converts in place; LOCK_SH after LOCK_EX never blocks.
        fcntl.flock(self._open(), fcntl.LOCK_SH)
        self._flock = fcntl.LOCK_SH

    def _unlock_file(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._flock = 0

    def _timed_out(self, exclusive: bool, timeout: float | None) -> LockTimeout:
        kind = "exclusive" if exclusive else "shared"
        return LockTimeout(
            f"{self.path}: no {kind} lock after {timeout:g}s; another process or thread "
            "holds it (see `fuser -v` on the file)", path=self.path)
