"""A blob being downloaded into a temporary file, readable while it grows.

The copy engine (containers/image ``copy/blob.go``: digest and size are checked
on the way through, ``internal/imagedestination``: nothing unverified is
committed) downloads several layers at once but commits them in order. Each
download goes into a :class:`Spool`, an anonymous temporary file, while its
digest and size are computed; the destination reads the next layer in order
through :meth:`Spool.reader` at the same time, from the file, so a layer is
applied while it still downloads and memory stays bounded by the chunk size.

The reader returns end-of-file only once the whole blob is in and matched its
digest and size; otherwise it raises the download's error
(:class:`~criolib.image.DigestMismatch` for wrong bytes), so a destination
that reads to the end never commits bytes that were not verified.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from criolib.image._errors import CopyCancelled, DigestMismatch, ImageError

__all__ = ["Cancellable", "Spool", "hasher_for", "read_verified"]

CHUNK = 1 << 20


def hasher_for(digest: str) -> hashlib._Hash:
    """A new hash object for ``digest``'s algorithm (``sha256``, ``sha384``, ``sha512``)."""
    algorithm, sep, hex_ = digest.partition(":")
    if not sep or algorithm not in ("sha256", "sha384", "sha512") or not hex_:
        raise DigestMismatch(f"unsupported or malformed digest {digest!r}", expected=digest)
    return hashlib.new(algorithm)


def _check(what: str, digest: str, size: int, hasher: hashlib._Hash, got: int) -> None:
    actual = f"{digest.partition(':')[0]}:{hasher.hexdigest()}"
    if size >= 0 and got != size:
        raise DigestMismatch(f"{what} {digest}: got {got} bytes, expected {size}", what=what,
                             expected=digest, expected_size=size, actual_size=got)
    if actual != digest:
        raise DigestMismatch(f"{what} {digest}: the bytes have digest {actual}", what=what,
                             expected=digest, actual=actual, expected_size=size,
                             actual_size=got)


def read_verified(stream: BinaryIO, digest: str, size: int, *, what: str = "blob",
                  limit: int = 64 << 20) -> bytes:
    """The whole of a small blob (config, manifest), checked against digest and size."""
    hasher = hasher_for(digest)
    cap = size if size >= 0 else limit
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise DigestMismatch(f"{what} {digest}: more than {cap} bytes", what=what,
                             expected=digest, expected_size=size)
    hasher.update(data)
    _check(what, digest, size, hasher, len(data))
    return data


class Spool:
    """One blob's download into an anonymous file, with readers that follow it.

    ``directory`` is where the file lives (``None``: the temp directory); a
    layer's bytes never sit in memory beyond one chunk. :meth:`fill` runs in a
    download thread; :meth:`reader` may be called before or during it.
    """

    def __init__(self, digest: str, size: int, *, what: str = "blob",
                 directory: Path | None = None) -> None:
        self.digest = digest
        self.size = size
        self.what = what
        self._hasher = hasher_for(digest)
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed in close()
        self._fd = self._file.fileno()
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._skipped = False
        self._stream: Cancellable | None = None

    @property
    def skipped(self) -> bool:
        """Whether the download did not happen: the destination had the blob by then."""
        return self._skipped

    def skip(self) -> None:
        """End the spool unfilled because the destination holds the blob now."""
        self._skipped = True
        self._finish(CopyCancelled(f"{self.what} {self.digest}: stored meanwhile by "
                                   "another copy; not downloaded"))

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    @property
    def written(self) -> int:
        """Bytes downloaded so far."""
        return self._written

    def fill(self, stream: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> int:
        """Copy ``stream`` into the file, verifying it; return the byte count.

        A stream that can be cancelled (a registry blob) is cancelled by
        :meth:`cancel` from another thread, so a failed copy need not wait for it.
        """
        try:
            with self._cond:
                if isinstance(stream, Cancellable):
                    self._stream = stream
                if self._cancelled:
                    raise CopyCancelled(f"{self.what} {self.digest}: copy cancelled")
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                self._hasher.update(chunk)
                # Written under the lock, after checking for cancel: close() may have
                # closed the file (and its descriptor number be reused) meanwhile.
                with self._cond:
                    if self._cancelled:
                        raise CopyCancelled(f"{self.what} {self.digest}: copy cancelled")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self._fd, view):]
                    self._written += len(chunk)
                    self._cond.notify_all()
                if 0 <= self.size < self._written:
                    raise DigestMismatch(f"{self.what} {self.digest}: more than the "
                                         f"{self.size} bytes its descriptor gives",
                                         what=self.what, expected=self.digest,
                                         expected_size=self.size, actual_size=self._written)
                if on_bytes is not None:
                    on_bytes(self._written)
            _check(self.what, self.digest, self.size, self._hasher, self._written)
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)
        return self._written

    def fail(self, error: BaseException) -> None:
        """End the spool with ``error`` (the download could not even start)."""
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        with self._cond:
            self._error = error
            self._done = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Make :meth:`fill` stop at once (its stream is cancelled) and readers fail."""
        with self._cond:
            self._cancelled = True
            if not self._done:
                self._error = self._error or CopyCancelled(
                    f"{self.what} {self.digest}: copy cancelled")
            stream, self._stream = self._stream, None
            self._cond.notify_all()
        if stream is not None:
            stream.cancel()

    def wait(self) -> None:
        """Block until the download ended or was cancelled; raise its error if any."""
        with self._cond:
            while not self._done and not self._cancelled:
                self._cond.wait()
            self._raise_error()

    def _raise_error(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, DigestMismatch):
            raise DigestMismatch(str(error), what=error.what, expected=error.expected,
                                 actual=error.actual, expected_size=error.expected_size,
                                 actual_size=error.actual_size) from error
        if isinstance(error, ImageError):
            raise error
        raise ImageError(f"{self.what} {self.digest}: download failed: {error}") from error

    def _wait_for(self, offset: int) -> int:
        """Bytes readable at ``offset`` (0 at a verified end); raises a failed download's error."""
        with self._cond:
            while True:
                if self._error is not None and (self._cancelled or self._done):
                    self._raise_error()
                if self._written > offset:
                    return self._written - offset
                if self._done:
                    return 0
                self._cond.wait()

    def reader(self) -> BinaryIO:
        """A new stream of the blob from its start, following the download."""
        return io.BufferedReader(_SpoolReader(self), CHUNK)

    def close(self) -> None:
        """Remove the file (readers fail after this); a running :meth:`fill` stops."""
        self.cancel()
        with self._cond:
            self._file.close()


@runtime_checkable
class Cancellable(Protocol):
    """A stream another thread can stop (``BlobStream``): its reads then fail at once."""

    def cancel(self) -> None: ...


class _SpoolReader(io.RawIOBase):
    def __init__(self, spool: Spool) -> None:
        super().__init__()
        self._spool = spool
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = len(buffer)
        if want == 0:
            return 0
        available = self._spool._wait_for(self._offset)
        if available == 0:
            return 0
        data = os.pread(self._spool._fd, min(want, available), self._offset)
        n = len(data)
        buffer[:n] = data
        self._offset += n
        return n
