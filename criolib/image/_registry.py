"""``RegistryClient``: one registry host spoken to over the distribution API.

opencontainers/distribution-spec v1.1 spec.md: "Pulling manifests", "Pulling
blobs", "Pushing blobs", "Pushing Manifests", "Listing Tags" (with ``n`` and the
``Link`` header of RFC 8288), "Deleting Manifests"; auth per distribution
docs/spec/auth/token.md; behaviour after containers/image docker/docker_client.go
and docker_image_src.go (4 MiB manifest limit, Docker-Content-Digest checks).

The parts: :mod:`._registry_auth` (challenges, tokens), :mod:`._registry_http`
(ping, retries, error bodies), :mod:`._registry_blobs` (verified, resumable
downloads), :mod:`._registry_upload` (pushes and mounts).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Self

import attrs
import httpx

import criolib
from criolib.image._credentials import Credentials
from criolib.image._errors import (
    BlobUnknown,
    DigestMismatch,
    InvalidArgument,
    InvalidReference,
    InvalidResponse,
)
from criolib.image._manifest import detect_media_type, manifest_digest, validate_digest
from criolib.image._registry_auth import normalize_credentials, repository_scope
from criolib.image._registry_blobs import BlobInfo, BlobStream, head_blob, open_blob
from criolib.image._registry_http import Body, Operation, Session
from criolib.image._registry_upload import DEFAULT_CHUNK_SIZE, mount_blob, upload_blob

__all__ = [
    "DEFAULT_MANIFEST_ACCEPT",
    "MAX_MANIFEST_SIZE",
    "RawManifest",
    "RegistryClient",
]

log = logging.getLogger("criolib.image")

#: containers/image internal/iolimits ``MaxManifestBodySize``.
MAX_MANIFEST_SIZE = 4 << 20
#: Tag list pages are read up to this size each.
_MAX_TAGS_BODY = 8 << 20
#: The manifest types asked for by default, preferred first.
DEFAULT_MANIFEST_ACCEPT: tuple[str, ...] = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DEFAULT_USER_AGENT = f"criolib/{criolib.__version__}"
# distribution/reference regexp.go: the repository path, and a tag.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_MAX_TAG_PAGES = 10_000


@attrs.frozen
class RawManifest:
    """A manifest as the registry sent it: exact bytes, media type, and their digest."""

    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    media_type: str
    digest: str


def _check_repository(repository: str) -> str:
    if not isinstance(repository, str) or len(repository) > 255 or \
            not _REPOSITORY_RE.fullmatch(repository):
        raise InvalidReference(
            f"invalid repository name {repository!r}: want lowercase path components "
            "separated by '/' (distribution/reference)", reference=str(repository))
    return repository


def _check_reference(reference: str) -> str:
    """A tag or a digest, safe to put in a URL path."""
    if isinstance(reference, str) and ":" in reference:
        return validate_digest(reference)
    if not isinstance(reference, str) or not _TAG_RE.fullmatch(reference):
        raise InvalidReference(f"invalid tag {reference!r}: want [A-Za-z0-9_][A-Za-z0-9_.-]"
                               "{0,127}, or a digest", reference=str(reference))
    return reference


def _pull(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, ("pull",)),)


def _push(repository: str) -> tuple[str, ...]:
    return (repository_scope(repository, ("pull", "push")),)


class RegistryClient:
    """A client for one registry host: manifests, blobs, uploads, tags. Thread-safe.

    ``host`` is ``name[:port]`` as in image references. ``insecure`` (registries.conf
    ``insecure = true``) allows plain http after https fails and skips TLS
    verification. ``credentials`` are a ``(user, password)`` pair or a
    ``Credentials`` (``username``, ``password``, ``identity_token``); without them
    the client is anonymous (and still fetches anonymous tokens). Failed requests
    are retried ``retries`` times with exponential ``backoff`` (seconds, doubled
    each time, a ``Retry-After`` honoured up to ``max_delay``). ``transport``
    replaces httpx's (tests, proxies). One pooled connection set per client: share
    it between threads, :meth:`close` it when done.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | tuple[str, str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_delay: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if not isinstance(host, str) or not host or "/" in host or host != host.strip():
            raise InvalidReference(f"invalid registry host {host!r}: want name[:port]",
                                   reference=str(host))
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument(f"registry client for {host}: retries must be an int "
                                  f">= 0, not {retries!r}", argument="retries")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidArgument(f"registry client for {host}: chunk_size must be an int "
                                  f">= 1, not {chunk_size!r}", argument="chunk_size")
        self._chunk_size = chunk_size
        self._session = Session(
            host, insecure=insecure, credentials=normalize_credentials(credentials),
            timeout=timeout, retries=retries, backoff=backoff, max_delay=max_delay,
            transport=transport, user_agent=user_agent,
        )

    @property
    def host(self) -> str:
        """The registry, as given."""
        return self._session.host

    @property
    def tokens_fetched(self) -> int:
        """How many bearer tokens this client obtained (each scope set, each refresh)."""
        return self._session.auth.tokens_fetched

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r})"

    def ping(self) -> str:
        """``GET /v2/`` (spec.md "Determining Support"); returns the scheme that answered."""
        return self._session.ensure_pinged()

    # -- manifests ----------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str,
                     accept: Sequence[str] = DEFAULT_MANIFEST_ACCEPT) -> RawManifest:
        """Fetch a manifest or index by tag or digest (spec.md "Pulling manifests").

        The bytes are hashed: by digest they must match it, by tag they must match
        the ``Docker-Content-Digest`` the registry sends (if it does), else
        :class:`~criolib.image.DigestMismatch`. At most 4 MiB, and no fewer or more
        bytes than Content-Length (:class:`~criolib.image.InvalidResponse`).
        """
        repository, reference = _check_repository(repository), _check_reference(reference)
        op = Operation("pull manifest", repository, reference, kind="manifest")
        s = self._session
        resp, body = s.exchange(
            "GET", s.url(f"/v2/{repository}/manifests/{reference}"), op=op,
            scopes=_pull(repository), headers={"Accept": ", ".join(accept)},
            follow_redirects=True, read_limit=MAX_MANIFEST_SIZE,
        )
        if resp.status_code != 200:
            s.fail(resp, op, body)
        assert body is not None
        what = f"{self.host}/{repository}{'@' if ':' in reference else ':'}{reference}"
        expected = reference if ":" in reference else resp.headers.get("Docker-Content-Digest")
        if expected:
            expected = self._checked_digest(expected, op)
            actual = manifest_digest(body, expected.partition(":")[0])
            if actual != expected:
                raise DigestMismatch(
                    f"manifest {what}: {len(body)} bytes with digest {actual}, but "
                    f"{'asked for' if ':' in reference else 'the registry says'} {expected} "
                    "(a truncated or altered manifest)", what=what, expected=expected,
                    actual=actual, actual_size=len(body))
            digest = expected
        else:
            digest = manifest_digest(body)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type not in accept:
            # Registries serving files may say application/json or text/plain: trust
            # the document's own mediaType then (containers/image GuessMIMEType).
            media_type = detect_media_type(body) or media_type
        if not media_type:
            raise InvalidResponse(f"pull manifest {what}: no Content-Type and no mediaType "
                                  "in the document", host=self.host, repository=repository,
                                  reference=reference, status=200)
        return RawManifest(body, media_type, digest)

    def _checked_digest(self, digest: str, op: Operation) -> str:
        try:
            return validate_digest(digest)
        except ValueError:
            raise InvalidResponse(f"{op.describe(self.host)}: the registry sent the malformed "
                                  f"digest {digest!r}", host=self.host,
                                  repository=op.repository, reference=op.reference) from None

    def head_manifest(self, repository: str, reference: str,
                      accept: Sequence[str] = DEFAULT_MANIFEST_ACCEPT) -> BlobInfo:
        """``HEAD`` a manifest: its digest (Docker-Content-Digest), size and media type."""
        repository, reference = _check_repository(repository), _check_reference(reference)
        op = Operation("check manifest", repository, reference, kind="manifest")
        s = self._session
        resp, body = s.exchange(
            "HEAD", s.url(f"/v2/{repository}/manifests/{reference}"), op=op,
            scopes=_pull(repository), headers={"Accept": ", ".join(accept)},
            follow_redirects=True, read_limit=0,
        )
        if resp.status_code != 200:
            s.fail(resp, op, body)
        digest = resp.headers.get("Docker-Content-Digest") or (
            reference if ":" in reference else "")
        length = resp.headers.get("Content-Length", "")
        if not digest or not length.isdigit():
            raise InvalidResponse(f"{op.describe(self.host)}: HEAD answered without a digest "
                                  "or size; fetch the manifest instead", host=self.host,
                                  repository=repository, reference=reference, status=200)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return BlobInfo(self._checked_digest(digest, op), int(length), media_type or None)

    def put_manifest(self, repository: str, reference: str, data: bytes,
                     media_type: str) -> str:
        """Push a manifest under a tag or its digest (spec.md "Pushing Manifests").

        Returns its digest; the blobs (and child manifests) it names must be pushed first.
        """
        repository, reference = _check_repository(repository), _check_reference(reference)
        if len(data) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"{self.host}/{repository}:{reference}: manifest of "
                                  f"{len(data)} bytes exceeds {MAX_MANIFEST_SIZE}",
                                  argument="data")
        op = Operation("push manifest", repository, reference, kind="manifest")
        algorithm = reference.partition(":")[0] if ":" in reference else "sha256"
        digest = manifest_digest(bytes(data), algorithm)
        what = f"{self.host}/{repository}@{reference}"
        if ":" in reference and digest != reference:
            raise DigestMismatch(f"manifest {what}: the bytes have digest {digest}",
                                 what=what, expected=reference, actual=digest)
        s = self._session
        resp, body = s.exchange(
            "PUT", s.url(f"/v2/{repository}/manifests/{reference}"), op=op,
            scopes=_push(repository), headers={"Content-Type": media_type},
            body=Body(bytes(data)), read_limit=1 << 16,
        )
        if resp.status_code != 201:
            s.fail(resp, op, body)
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise InvalidResponse(f"{op.describe(self.host)}: the registry stored {said}, "
                                  f"the bytes sent have digest {digest}", host=self.host,
                                  repository=repository, reference=reference, status=201)
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (spec.md "Deleting Manifests"; needs the registry's OK)."""
        repository, digest = _check_repository(repository), validate_digest(digest)
        op = Operation("delete manifest", repository, digest, kind="manifest")
        s = self._session
        resp, body = s.exchange("DELETE", s.url(f"/v2/{repository}/manifests/{digest}"), op=op,
                                scopes=(repository_scope(repository, ("delete",)),),
                                read_limit=1 << 16)
        if resp.status_code not in (200, 202):
            s.fail(resp, op, body)

    # -- blobs -------------------------------------------------------------------------

    def get_blob(self, repository: str, digest: str, size: int = -1) -> BlobStream:
        """Stream a blob, verified while it is read (see :class:`BlobStream`).

        ``size`` is the descriptor's (-1: unknown). A missing blob raises
        :class:`~criolib.image.BlobUnknown` here, before any byte is read.
        """
        repository, digest = _check_repository(repository), validate_digest(digest)
        return open_blob(self._session, repository, digest, size, _pull(repository))

    def head_blob(self, repository: str, digest: str) -> BlobInfo:
        """``HEAD`` a blob: its size (spec.md "Checking if content exists in the registry")."""
        repository, digest = _check_repository(repository), validate_digest(digest)
        return head_blob(self._session, repository, digest, _pull(repository))

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository holds the blob (``HEAD``: 200 or 404)."""
        try:
            self.head_blob(repository, digest)
        except BlobUnknown:
            return False
        return True

    def put_blob(self, repository: str, stream: IO[bytes], digest: str, size: int = -1, *,
                 chunk_size: int | None = None) -> str:
        """Upload a blob from ``stream``; monolithic up to ``chunk_size`` bytes, else chunked.

        The bytes are verified against ``digest`` and ``size`` (-1: unknown) on the
        way up; a mismatch raises :class:`~criolib.image.DigestMismatch` and leaves
        nothing in the registry. A seekable stream is rewound to retry a failed
        upload. Returns the digest.
        """
        repository, digest = _check_repository(repository), validate_digest(digest)
        upload_blob(self._session, repository, stream, digest, size,
                    chunk_size=chunk_size or self._chunk_size, scopes=_push(repository))
        return digest

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Mount a blob from another repository of this registry (spec.md, cross-repo mount).

        True when mounted; False when the registry could not (the source lacks it, or
        the credentials may not read it): then push the bytes with :meth:`put_blob`.
        """
        repository, digest = _check_repository(repository), validate_digest(digest)
        from_repository = _check_repository(from_repository)
        scopes = (*_push(repository), *_pull(from_repository))
        return mount_blob(self._session, repository, digest, from_repository, scopes)

    # -- tags ----------------------------------------------------------------------------

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, following ``Link: <...>; rel="next"`` pages.

        spec.md "Listing Tags"; ``page_size`` is sent as ``n`` (a registry may
        ignore it and send everything at once).
        """
        repository = _check_repository(repository)
        op = Operation("list tags of", repository, kind="tags")
        s = self._session
        url: httpx.URL | None = httpx.URL(s.url(f"/v2/{repository}/tags/list"))
        if page_size is not None:
            assert url is not None
            url = url.copy_add_param("n", str(page_size))
        tags: list[str] = []
        seen: set[str] = set()
        while url is not None:
            if str(url) in seen or len(seen) >= _MAX_TAG_PAGES:
                raise InvalidResponse(f"{op.describe(self.host)}: the registry's Link pages "
                                      f"loop ({url})", host=self.host, repository=repository)
            seen.add(str(url))
            resp, body = s.exchange("GET", url, op=op, scopes=_pull(repository),
                                    read_limit=_MAX_TAGS_BODY)
            if resp.status_code != 200:
                s.fail(resp, op, body)
            assert body is not None
            tags += self._tags_page(body, op)
            url = self._next_page(resp, op)
        return tags

    def _tags_page(self, body: bytes, op: Operation) -> list[str]:
        try:
            doc = json.loads(body)
            page = doc.get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise ValueError("'tags' is not a list of strings")
        except (ValueError, AttributeError) as exc:
            raise InvalidResponse(f"{op.describe(self.host)}: malformed tag list: {exc}",
                                  host=self.host, repository=op.repository,
                                  status=200) from None
        return list(page)

    def _next_page(self, resp: httpx.Response, op: Operation) -> httpx.URL | None:
        """RFC 8288 ``Link`` with ``rel="next"``, resolved against the page's URL."""
        for value in resp.headers.get_list("Link"):
            for match in _LINK_RE.finditer(value):
                params = match.group(2).lower().replace(" ", "")
                if 'rel="next"' in params or "rel=next" in params:
                    nxt = resp.url.join(match.group(1))
                    if (nxt.scheme, nxt.netloc) != (resp.url.scheme, resp.url.netloc):
                        raise InvalidResponse(
                            f"{op.describe(self.host)}: the next page is on another host "
                            f"({nxt}); not following it", host=self.host,
                            repository=op.repository, status=resp.status_code)
                    return nxt
        return None
