"""Locks and leases under ``<graphroot>/locks/``: extraction without the store lock.

A layer is extracted while no store lock is held, so readers never wait for a
pull (containers/storage holds its lock for the whole ``ApplyDiff``). Three kinds
of file make that safe:

``layer-<id>.lock``
    ``flock`` held exclusively by the one process creating layer ``<id>``, from
    before it looks for the layer until its record is written. A second pull of
    the same layer waits on it and then finds the layer; :func:`check` and
    :func:`repair` leave a layer directory without a record alone while its lock
    is held (it is being created, not debris). The holder unlinks the file
    before letting go; a waiter that then gets the lock on the unlinked file
    notices (its inode is no longer the path's) and opens it again.
``staging.lock``
    held shared by every extraction while it writes under ``<graphroot>/staging``
    (and, for overlay, adds a link to ``l/``). A writer that gets it exclusively
    without waiting knows no extraction is running anywhere, so what staging holds
    is debris, which it removes.
``lease-<id>-<pid>``
    a lease: process ``<pid>`` got layer ``<id>`` from :meth:`Store.put_layer` (or
    builds on it) and has not yet recorded the image or container that will use
    it. Deleting an image spares leased layers, and so does :func:`gc`, so two
    pulls and a delete of one image in three processes cannot pull a layer from
    under a pull. A lease ends when an image or container records the layer,
    when it is ``lease_seconds`` old, when its process ends, or at
    :meth:`Store.close`. Within a process, leases are per thread: a thread's own
    leases do not stop its own deletes.

Lock order: a process may wait for the store lock while holding these; while it
holds the store lock it only ever *tries* them (``LOCK_NB``), so no two
processes can wait for each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from criolib.storage._errors import LockTimeout
from criolib.storage._records import metadata_error

__all__ = ["DEFAULT_LEASE_SECONDS", "Locks"]

log = logging.getLogger("criolib.storage")

#: How long a lease lasts without an image or container recording the layer.
DEFAULT_LEASE_SECONDS = 300.0
_POLL = (0.005, 0.1)  # first and longest sleep while waiting with a timeout


class Locks:
    """The per-layer locks, the staging lock and the leases of one graphroot."""

    def __init__(self, graphroot: Path, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
                 ) -> None:
        self.dir = graphroot / "locks"
        self.lease_seconds = lease_seconds
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._leases: dict[str, dict[int, float]] = {}  # layer -> thread -> expiry

    def ensure_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise metadata_error(exc, self.dir, "make the lock directory") from exc

    # -- the lock of one layer being created -----------------------------------------

    def layer_lock_path(self, layer_id: str) -> Path:
        return self.dir / f"layer-{layer_id}.lock"

    @contextlib.contextmanager
    def creating(self, layer_id: str, *, timeout: float | None,
                 wait: bool = True) -> Iterator[None]:
        """Hold layer ``layer_id``'s creation lock; the file is removed on the way out.

        ``wait=False`` (for callers holding the store lock) raises
        :class:`LockTimeout` at once when another process holds it.
        """
        path = self.layer_lock_path(layer_id)
        fd = _lock_file(path, fcntl.LOCK_EX, timeout=timeout if wait else 0.0,
                        what=f"layer {layer_id} is being created by another process")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while held: a waiter sees the inode change and retries
            os.close(fd)

    def being_created(self, layer_id: str) -> bool:
        """Whether a live process holds layer ``layer_id``'s creation lock."""
        return _held(self.layer_lock_path(layer_id))

    # -- the staging lock ------------------------------------------------------------

    @contextlib.contextmanager
    def extracting(self, *, timeout: float | None) -> Iterator[None]:
        """Hold the staging lock shared while writing under ``staging/``."""
        fd = _lock_file(self.dir / "staging.lock", fcntl.LOCK_SH, timeout=timeout,
                        what="the staging directory is being cleaned", keep=True)
        try:
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging_idle(self) -> Iterator[bool]:
        """Whether no extraction runs anywhere; held (so none starts) for the block."""
        path = self.dir / "staging.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- leases ------------------------------------------------------------------------

    def _lease_path(self, layer_id: str, pid: int) -> Path:
        return self.dir / f"lease-{layer_id}-{pid}"

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._leases = os.getpid(), {}

    def take(self, layer_ids: Iterable[str]) -> None:
        """Lease these layers for the calling thread (take before checking they exist)."""
        me = threading.get_ident()
        with self._mutex:
            self._after_fork()
            expiry = time.monotonic() + self.lease_seconds
            for layer_id in layer_ids:
                self._leases.setdefault(layer_id, {})[me] = expiry
                path = self._lease_path(layer_id, self._pid)
                try:
                    with open(path, "ab"):
                        pass
                    os.utime(path)
                except OSError as exc:
                    raise metadata_error(exc, path, f"lease layer {layer_id}") from exc

    def release(self, layer_ids: Iterable[str], *, everyone: bool = True) -> None:
        """End this process's leases on these layers (``everyone=False``: this thread's)."""
        me = threading.get_ident()
        with self._mutex:
            self._after_fork()
            for layer_id in layer_ids:
                holders = self._leases.get(layer_id)
                if holders is None:
                    continue
                if everyone:
                    holders.clear()
                else:
                    holders.pop(me, None)
                if not holders:
                    del self._leases[layer_id]
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._lease_path(layer_id, self._pid))

    def release_all(self) -> None:
        """End every lease of this process (at :meth:`Store.close`)."""
        with self._mutex:
            ids = list(self._leases) if self._pid == os.getpid() else []
        self.release(ids)

    def leased_by_others(self) -> dict[str, str]:
        """Layers leased by another process or another thread of this one -> by whom."""
        me = threading.get_ident()
        now = time.monotonic()
        out: dict[str, str] = {}
        with self._mutex:
            self._after_fork()
            for layer_id, holders in list(self._leases.items()):
                for thread, expiry in list(holders.items()):
                    if expiry <= now:
                        del holders[thread]
                    elif thread != me:
                        out[layer_id] = f"thread {thread} of this process"
        for layer_id, pid, age in self._lease_files():
            if pid != self._pid and age < self.lease_seconds and _alive(pid):
                out.setdefault(layer_id, f"process {pid}")
        return out

    def _lease_files(self) -> Iterator[tuple[str, int, float]]:
        """(layer id, pid, age in seconds) of every lease file."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        now = time.time()
        for name in names:
            if not name.startswith("lease-"):
                continue
            layer_id, _, pid_text = name.removeprefix("lease-").rpartition("-")
            try:
                pid = int(pid_text)
                age = now - os.stat(self.dir / name).st_mtime
            except (ValueError, OSError):
                continue
            yield layer_id, pid, age

    # -- cleaning --------------------------------------------------------------------

    def clean(self) -> list[Path]:
        """Remove lease files of ended processes or past their time, and free layer locks.

        For a writer holding the store lock; returns what it removed.
        """
        removed = []
        with self._mutex:
            mine = set(self._leases) if self._pid == os.getpid() else set()
        for layer_id, pid, age in list(self._lease_files()):
            path = self._lease_path(layer_id, pid)
            ours = pid == self._pid and layer_id in mine
            if not ours and (age >= self.lease_seconds or not _alive(pid)
                             or pid == self._pid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
        try:
            names = os.listdir(self.dir)
        except OSError:
            return removed
        for name in names:
            if name.startswith("layer-") and name.endswith(".lock"):
                path = self.dir / name
                if _unlink_if_free(path):
                    removed.append(path)
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_file(path: Path, how: int, *, timeout: float | None, what: str,
               keep: bool = False) -> int:
    """A descriptor of ``path`` holding ``flock(how)``; :class:`LockTimeout` after ``timeout``.

    Unless ``keep``, the file may be unlinked by its holder: after getting the
    lock, the descriptor must still be the file at ``path``, else it starts again.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _POLL[0]
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise metadata_error(exc, path, "open a lock file") from exc
        try:
            if deadline is None:
                fcntl.flock(fd, how)
            else:
                while True:
                    try:
                        fcntl.flock(fd, how | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                            raise
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockTimeout(f"{path}: {what} (gave up after {timeout:g}s)",
                                          path=path)
                    time.sleep(min(delay, left))
                    delay = min(delay * 2, _POLL[1])
            if keep:
                return fd
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


def _held(path: Path) -> bool:
    """Whether some open file description holds a lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _unlink_if_free(path: Path) -> bool:
    """Remove a lock file nobody holds (holding it meanwhile); whether it went."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
