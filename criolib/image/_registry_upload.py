"""Blob uploads: monolithic, chunked, and cross-repository mounts.

distribution-spec v1.1 spec.md "Pushing blobs": ``POST /v2/<name>/blobs/uploads/``
answers 202 with a ``Location``; a monolithic upload then ``PUT``s the whole body
to ``<location>?digest=<digest>``; a chunked one ``PATCH``es each chunk with
``Content-Range: <start>-<end>`` (inclusive) and ``Content-Length``, following each
202's new ``Location`` and checking its ``Range: 0-<end>``, then closes with an empty
``PUT ?digest=``. "Mounting a blob from another repository": ``POST
?mount=<digest>&from=<repo>`` answers 201 (mounted) or 202 (an upload started
instead, which is cancelled with ``DELETE``).

Bytes are hashed and counted as they go up; a stream whose bytes do not match the
digest or size raises :class:`~criolib.image.DigestMismatch` *before* the request
that would commit the blob completes, so nothing unverified is stored.

An upload that fails in a retryable way (5xx, a dropped connection) is cancelled
and started again from the first byte, when the stream can seek back there:
registries do not agree on resuming a broken upload session (distribution 2.8
ignores ``Content-Range`` and refuses stale upload state).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import IO

import httpx

from criolib.image._errors import DigestMismatch, InvalidResponse, RegistryUnavailable
from criolib.image._registry_blobs import hasher_for
from criolib.image._registry_http import Body, Operation, Session

__all__ = ["DEFAULT_CHUNK_SIZE", "cancel_upload", "mount_blob", "upload_blob"]

log = logging.getLogger("criolib.image")

#: Streams of unknown size, or larger than this, go up in chunks of this size.
DEFAULT_CHUNK_SIZE = 32 << 20
_IO_CHUNK = 1 << 16


class _Verifier:
    """Hashes and counts bytes going up; raises DigestMismatch as soon as they are wrong."""

    def __init__(self, what: str, digest: str, size: int) -> None:
        self.what = what
        self.digest = digest
        self.size = size
        self.count = 0
        self._hash = hasher_for(digest)

    def reset(self) -> None:
        self.count = 0
        self._hash = hasher_for(self.digest)

    def update(self, data: bytes) -> None:
        self.count += len(data)
        if self.size >= 0 and self.count > self.size:
            self._fail(f"the stream holds more than the {self.size} bytes given")
        self._hash.update(data)

    def check(self) -> None:
        if self.size >= 0 and self.count != self.size:
            self._fail(f"the stream holds {self.count} bytes, not the {self.size} given")
        actual = f"{self.digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if actual != self.digest:
            self._fail(f"the stream's bytes have digest {actual}", actual)

    def _fail(self, why: str, actual: str = "") -> None:
        raise DigestMismatch(f"{self.what}: {why}; nothing was committed", what=self.what,
                             expected=self.digest, actual=actual, expected_size=self.size,
                             actual_size=self.count)


class _Source:
    """The caller's stream, rewound for each attempt when it can seek."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.start: int | None = None
        try:
            if stream.seekable():
                self.start = stream.tell()
        except (OSError, ValueError):
            self.start = None

    @property
    def rewindable(self) -> bool:
        return self.start is not None

    def rewind(self) -> None:
        if self.start is not None:
            self.stream.seek(self.start)

    def read_full(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at EOF (pipes and sockets return short reads)."""
        parts = []
        want = n
        while want > 0:
            data = self.stream.read(want)
            if not data:
                break
            parts.append(data)
            want -= len(data)
        return b"".join(parts)


class _MonolithicBody(Body):
    """The whole stream as one PUT body; the last chunk waits until the digest checks out.

    Iterable again (httpx re-sends a body after an auth challenge) when the stream
    can seek back to where it started; the bytes are then counted and hashed anew.
    """

    def __init__(self, source: _Source, verifier: _Verifier, op: Operation,
                 session: Session) -> None:
        super().__init__()
        self._source = source
        self._verifier = verifier
        self._op = op
        self._session = session
        self._started = False

    @property
    def replayable(self) -> bool:
        return False  # retried by upload_blob with a new upload session, not in place

    def fresh(self) -> Iterable[bytes]:
        return self

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            if not self._source.rewindable:
                cause = "the body had to be sent again and the stream cannot seek back"
                raise RegistryUnavailable(f"{self._op.describe(self._session.host)}: {cause}",
                                          host=self._session.host,
                                          repository=self._op.repository,
                                          reference=self._op.reference, cause=cause)
            self._source.rewind()
            self._verifier.reset()
        self._started = True
        held = b""
        while data := self._source.read_full(_IO_CHUNK):
            self._verifier.update(data)
            if held:
                yield held
            held = data
        self._verifier.check()  # raising here aborts the PUT before its last byte
        if held:
            yield held


def _location(resp: httpx.Response, op: Operation, session: Session) -> httpx.URL:
    location = resp.headers.get("Location")
    if not location:
        raise InvalidResponse(f"{op.describe(session.host)}: HTTP {resp.status_code} without "
                              "a Location", host=session.host, repository=op.repository,
                              reference=op.reference, status=resp.status_code)
    return resp.url.join(location)


def cancel_upload(session: Session, location: httpx.URL, op: Operation,
                  scopes: tuple[str, ...]) -> None:
    """``DELETE`` an upload session (spec.md "Canceling an upload"); failures are only logged."""
    try:
        resp, _ = session.exchange("DELETE", location, op=op, scopes=scopes, read_limit=1 << 16,
                                   retries=0)
        if resp.status_code not in (204, 404):
            log.debug("cancel upload %s: HTTP %d", location, resp.status_code)
    except Exception as exc:  # best effort: the registry expires abandoned uploads anyway
        log.debug("cancel upload %s: %s", location, exc)


class _Upload:
    """One blob push into one repository: the requests of spec.md "Pushing blobs"."""

    def __init__(self, session: Session, repository: str, digest: str,
                 scopes: tuple[str, ...]) -> None:
        self.session = session
        self.repository = repository
        self.digest = digest
        self.scopes = scopes
        self.op = Operation("push blob", repository, digest, kind="upload")

    def _send(self, method: str, url: str | httpx.URL, ok: int, *, body: Body | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
        # No retries in place: a broken upload is started again by upload_blob.
        resp, data = self.session.exchange(
            method, url, op=self.op, scopes=self.scopes, body=body, headers=headers,
            read_limit=1 << 16, retries=0 if method != "POST" else None)
        if resp.status_code != ok:
            self.session.fail(resp, self.op, data)
        return resp

    def start(self) -> httpx.URL:
        url = self.session.url(f"/v2/{self.repository}/blobs/uploads/")
        resp = self._send("POST", url, 202, headers={"Content-Length": "0"})
        return _location(resp, self.op, self.session)

    def finish(self, location: httpx.URL, body: Body, length: int) -> None:
        resp = self._send(
            "PUT", location.copy_add_param("digest", self.digest), 201, body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)})
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != self.digest:
            raise InvalidResponse(f"{self.op.describe(self.session.host)}: the registry stored "
                                  f"it as {said}", host=self.session.host,
                                  repository=self.repository, reference=self.digest, status=201)

    def chunks(self, location: httpx.URL, source: _Source, verifier: _Verifier,
               chunk_size: int) -> httpx.URL:
        """PATCH the stream chunk by chunk; return the location to finish at."""
        offset = 0
        while data := source.read_full(chunk_size):
            verifier.update(data)
            end = offset + len(data) - 1
            resp = self._send(
                "PATCH", location, 202, body=Body(data),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{end}", "Content-Length": str(len(data))})
            have = resp.headers.get("Range")
            if have is not None and have.strip() != f"0-{end}":
                raise InvalidResponse(
                    f"{self.op.describe(self.session.host)}: after sending bytes {offset}-{end} "
                    f"the registry holds Range {have!r}", host=self.session.host,
                    repository=self.repository, reference=self.digest, status=202)
            location = _location(resp, self.op, self.session)
            offset = end + 1
        verifier.check()
        return location


def upload_blob(session: Session, repository: str, stream: IO[bytes], digest: str, size: int,
                *, chunk_size: int, scopes: tuple[str, ...]) -> None:
    """Push a blob: monolithic when ``0 <= size <= chunk_size``, else chunked (module doc)."""
    upload = _Upload(session, repository, digest, scopes)
    op = upload.op
    what = f"{session.host}/{repository}@{digest}"
    monolithic = 0 <= size <= chunk_size
    source = _Source(stream)
    attempt = 0
    delay = session.backoff
    while True:
        verifier = _Verifier(what, digest, size)
        location = upload.start()
        try:
            if monolithic:
                upload.finish(location, _MonolithicBody(source, verifier, op, session),
                              size)
            else:
                location = upload.chunks(location, source, verifier, chunk_size)
                upload.finish(location, Body(b""), 0)
            log.debug("pushed %s (%d bytes, %s)", what, verifier.count,
                      "monolithic" if monolithic else "chunked")
            return
        except RegistryUnavailable as exc:
            cancel_upload(session, location, op, scopes)
            if attempt >= session.retries or not source.rewindable:
                why = "" if source.rewindable else " (the stream cannot seek back to retry)"
                raise RegistryUnavailable(f"{op.describe(session.host)}: {exc.cause}{why}",
                                          host=session.host, repository=repository,
                                          reference=digest, status=exc.status,
                                          cause=exc.cause) from exc
            log.debug("%s: %s; starting the upload again", op.describe(session.host), exc.cause)
        except BaseException:
            cancel_upload(session, location, op, scopes)
            raise
        time.sleep(delay)
        delay *= 2
        attempt += 1
        source.rewind()


def mount_blob(session: Session, repository: str, digest: str, from_repository: str,
               scopes: tuple[str, ...]) -> bool:
    """Mount ``digest`` from ``from_repository``: True if mounted, False if it was not there."""
    op = Operation(f"mount blob from {from_repository} into", repository, digest, kind="upload")
    resp, data = session.exchange(
        "POST", session.url(f"/v2/{repository}/blobs/uploads/"), op=op, scopes=scopes,
        params={"mount": digest, "from": from_repository}, headers={"Content-Length": "0"},
        read_limit=1 << 16,
    )
    if resp.status_code == 201:
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise InvalidResponse(f"{op.describe(session.host)}: mounted {said} instead",
                                  host=session.host, repository=repository, reference=digest,
                                  status=201)
        return True
    if resp.status_code == 202:
        # The registry started an ordinary upload instead: the source lacks the blob, or
        # the caller may not read it. Cancel; the caller pushes the bytes.
        cancel_upload(session, _location(resp, op, session), op, scopes)
        return False
    session.fail(resp, op, data)
