"""Blob downloads that verify digest and size while streaming, and resume with ``Range``.

distribution-spec v1.1 spec.md "Pulling blobs" (``GET /v2/<name>/blobs/<digest>``,
redirects followed, ``Range: bytes=<start>-`` answered with 206 and
``Content-Range``), RFC 9110 §14 (range requests), image-spec v1.1 descriptor.md
"Digests" (verify before use).

A dropped connection or a body shorter than the blob is resumed from the last byte
handed out: with ``Range`` when the registry answers 206, else by reading the
whole blob again and skipping what was already handed out (safe: the digest is
computed over the bytes handed out, whatever answer they came from). Resumes
are bounded like containers/image's bodyReader: up to ``retries`` in a row that
bring less than 1 MiB of progress.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from criolib.image._errors import (
    CopyCancelled,
    DigestMismatch,
    InvalidResponse,
    RegistryError,
    RegistryUnavailable,
)
from criolib.image._registry_http import Operation, Session, raw_chunks

__all__ = ["BlobInfo", "BlobStream", "head_blob", "open_blob"]

log = logging.getLogger("criolib.image")

#: A resume that brought at least this many bytes resets the resume budget.
MIN_PROGRESS = 1 << 20
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_READ_CHUNK = 1 << 16
_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")


@attrs.frozen
class BlobInfo:
    """What a ``HEAD`` says about a blob or manifest: digest, size, media type."""

    digest: str
    size: int
    media_type: str | None = None


def hasher_for(digest: str) -> Any:
    """A hashlib object for ``digest``'s algorithm (sha256 or sha512)."""
    return hashlib.new(digest.partition(":")[0])


class _BlobRaw(io.RawIOBase):
    """The raw side of :class:`BlobStream`: one response at a time, resumed on failure."""

    def __init__(self, session: Session, repository: str, digest: str, size: int,
                 scopes: tuple[str, ...]) -> None:
        super().__init__()
        self._session = session
        self._op = Operation("pull blob", repository, digest, kind="blob")
        self._url = session.url(f"/v2/{repository}/blobs/{digest}")
        self._scopes = scopes
        self.digest = digest
        self.size = size
        self.position = 0
        self.resumes = 0
        self.verified = False
        self._hash = hasher_for(digest)
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""
        self._end: int | None = None  # where the current response's body should end
        self._failed: BaseException | None = None
        self._since_progress = 0
        self._resume_start = 0
        self._cancelled = False
        self._open(0)

    @property
    def name(self) -> str:
        return f"{self._session.host}/{self._op.repository}@{self.digest}"

    def readable(self) -> bool:
        return True

    def _open(self, start: int) -> None:
        headers = {"Range": f"bytes={start}-"} if start else None
        resp, _ = self._session.exchange(
            "GET", self._url, op=self._op, scopes=self._scopes, headers=headers,
            follow_redirects=True,
        )
        skip = 0
        if resp.status_code == 206 and start:
            match = _CONTENT_RANGE_RE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != start or (
                    self.size >= 0 and match.group(3) not in ("*", str(self.size))):
                resp.close()
                raise InvalidResponse(
                    f"{self._op.describe(self._session.host)}: asked for bytes {start}- and got "
                    f"Content-Range {resp.headers.get('Content-Range')!r}",
                    host=self._session.host, repository=self._op.repository,
                    reference=self.digest, status=206)
            begin = start
        elif resp.status_code == 200:
            begin, skip = 0, start  # no range support: read it again, skip what we have
            if start:
                log.debug("%s: no Range support, skipping %d bytes", self.name, start)
        else:
            self._session.fail(resp, self._op)
        length = resp.headers.get("Content-Length", "")
        self._end = begin + int(length) if length.isdigit() else None
        self._response = resp
        self._chunks = raw_chunks(resp)
        self._pending = b""
        self._skip(skip)

    def _skip(self, count: int) -> None:
        while count > 0:
            chunk = self._next_chunk()
            if chunk is None:
                raise InvalidResponse(
                    f"{self._op.describe(self._session.host)}: the blob ended while re-reading "
                    f"the {count} bytes already handed out", host=self._session.host,
                    repository=self._op.repository, reference=self.digest)
            if len(chunk) > count:
                self._pending = chunk[count:]
            count -= len(chunk)

    def _next_chunk(self) -> bytes | None:
        """The next bytes of the current response; None at its end; network errors raise."""
        if self._pending:
            chunk, self._pending = self._pending, b""
            return chunk
        assert self._chunks is not None
        for chunk in self._chunks:
            if chunk:
                return chunk
        return None

    def readinto(self, buffer: Any) -> int:
        if self._failed is not None:
            raise self._failed
        if self.verified:
            return 0
        try:
            return self._readinto(memoryview(buffer).cast("B"))
        except (RegistryError, DigestMismatch) as exc:
            self._failed = exc
            self._close_response()
            raise
        except Exception as exc:
            if self._cancelled:  # the response closed under a read: httpx says so its way
                raise CopyCancelled(f"{self.name}: download cancelled") from exc
            raise

    def _readinto(self, view: memoryview) -> int:
        while True:
            self._check_cancelled()
            try:
                chunk = self._next_chunk()
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                self._resume(f"{type(exc).__name__}: {exc or 'connection closed'}", exc)
                continue
            except httpx.HTTPError as exc:
                raise RegistryError(
                    f"{self._op.describe(self._session.host)}: {type(exc).__name__}: {exc}",
                    host=self._session.host, repository=self._op.repository,
                    reference=self.digest) from exc
            if chunk is None:
                if self._short():
                    self._resume(f"the body ended at byte {self.position} of "
                                 f"{self.size if self.size >= 0 else self._end}", None)
                    continue
                self._verify()
                return 0
            if len(chunk) > len(view):
                chunk, self._pending = chunk[:len(view)], chunk[len(view):]
            self.position += len(chunk)
            self._hash.update(chunk)
            if self.size >= 0 and self.position > self.size:
                self._mismatch(f"more than the expected {self.size} bytes")
            if self.position == self.size:
                # Verify before handing out the last byte: whoever reads exactly `size`
                # bytes never holds a whole unverified blob.
                self._verify()
            view[:len(chunk)] = chunk
            return len(chunk)

    def _short(self) -> bool:
        if self.size >= 0:
            return self.position < self.size
        return self._end is not None and self.position < self._end

    def _resume(self, cause: str, exc: BaseException | None) -> None:
        self._close_response()
        if self.position - self._resume_start >= MIN_PROGRESS:
            self._since_progress = 0
        if self._since_progress >= self._session.retries:
            raise RegistryUnavailable(
                f"{self._op.describe(self._session.host)}: {cause}; gave up after "
                f"{self.resumes} resumes", host=self._session.host,
                repository=self._op.repository, reference=self.digest, cause=cause) from exc
        self._check_cancelled()  # no new request for a copy that gave up
        self._since_progress += 1
        self.resumes += 1
        self._resume_start = self.position
        log.debug("%s: %s; resuming at byte %d", self.name, cause, self.position)
        self._open(self.position)

    def _verify(self) -> None:
        if self.size >= 0 and self.position != self.size:
            self._mismatch(f"{self.position} bytes, expected {self.size}")
        actual = f"{self.digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if actual != self.digest:
            self._mismatch(f"the bytes have digest {actual}", actual)
        self.verified = True
        self._close_response()

    def _mismatch(self, why: str, actual: str = "") -> None:
        raise DigestMismatch(
            f"{self.name}: {why}; the blob is corrupt (or the registry sent the wrong one)",
            what=self.name, expected=self.digest, actual=actual, expected_size=self.size,
            actual_size=self.position)

    def cancel(self) -> None:
        """Stop from another thread: close the response; reads and resumes fail from now."""
        self._cancelled = True
        response = self._response
        if response is not None:
            response.close()

    def _check_cancelled(self) -> None:
        if self._cancelled:
            raise CopyCancelled(f"{self.name}: download cancelled")

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
            self._chunks = None

    def close(self) -> None:
        self._close_response()
        super().close()


if TYPE_CHECKING:
    _Buffered = io.BufferedReader[_BlobRaw]
else:
    _Buffered = io.BufferedReader


class BlobStream(_Buffered):
    """A blob being downloaded: a binary file that raises instead of returning bad bytes.

    ``read()`` hands out bytes as they arrive, hashing them; the read that would
    complete the blob (its ``size``-th byte, or EOF) first checks size and digest
    and raises :class:`~criolib.image.DigestMismatch` when they are off, so a
    consumer that reads to the end never takes a corrupt blob for a good one.
    Network failures are resumed (module docstring); a failure that cannot be
    resumed raises :class:`~criolib.image.RegistryError`. Close it (or use it as
    a context manager) to release the connection.
    """

    def __init__(self, raw: _BlobRaw) -> None:
        super().__init__(raw, buffer_size=_READ_CHUNK)

    @property
    def digest(self) -> str:
        """The digest the bytes must have."""
        return self.raw.digest

    @property
    def size(self) -> int:
        """The expected size, -1 when unknown."""
        return self.raw.size

    @property
    def bytes_read(self) -> int:
        """How many bytes came from the registry so far (some may sit in the buffer)."""
        return self.raw.position

    @property
    def resumes(self) -> int:
        """How many times the download was resumed after a failure."""
        return self.raw.resumes

    @property
    def verified(self) -> bool:
        """Whether every byte arrived and matched digest and size."""
        return self.raw.verified

    def cancel(self) -> None:
        """Stop the download from another thread (a copy that failed elsewhere).

        Closes the response without taking the buffer's lock, which a blocked
        ``read()`` holds; that read, and every later one, raises
        :class:`~criolib.image.CopyCancelled`, and no resume is tried.
        """
        self.raw.cancel()


def open_blob(session: Session, repository: str, digest: str, size: int,
              scopes: tuple[str, ...]) -> BlobStream:
    """Start downloading a blob; errors before the first byte raise here."""
    return BlobStream(_BlobRaw(session, repository, digest, size, scopes))


def head_blob(session: Session, repository: str, digest: str,
              scopes: tuple[str, ...]) -> BlobInfo:
    """``HEAD /v2/<name>/blobs/<digest>`` (spec.md "Checking if content exists")."""
    op = Operation("check blob", repository, digest, kind="blob")
    resp, data = session.exchange("HEAD", session.url(f"/v2/{repository}/blobs/{digest}"),
                                  op=op, scopes=scopes, follow_redirects=True, read_limit=0)
    if resp.status_code != 200:
        session.fail(resp, op, data)
    length = resp.headers.get("Content-Length", "")
    if not length.isdigit():
        raise InvalidResponse(f"{op.describe(session.host)}: HEAD answered without a "
                              "Content-Length", host=session.host, repository=repository,
                              reference=digest, status=200)
    said = resp.headers.get("Docker-Content-Digest")
    if said and said != digest:
        raise InvalidResponse(f"{op.describe(session.host)}: HEAD answered for digest {said}",
                              host=session.host, repository=repository, reference=digest,
                              status=200)
    return BlobInfo(digest, int(length), resp.headers.get("Content-Type"))
