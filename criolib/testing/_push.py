"""Push an OCI image layout into a test registry, byte for byte.

A test helper, not criolib's registry client: it reads an image layout (image-spec
v1.1 image-layout.md: ``oci-layout``, ``index.json`` with
``org.opencontainers.image.ref.name``, ``blobs/<alg>/<encoded>``) and uploads it with
distribution's push protocol (docs/spec/api.md "Pushing An Image": existence check
with ``HEAD``, ``POST`` to start an upload, monolithic ``PUT ?digest=``, then the
manifest ``PUT``). Bytes go up exactly as stored, so every digest is preserved.

:class:`RegistryAuth` answers the registry's challenges (RFC 7235, RFC 6750 §3 and
distribution docs/spec/auth/token.md) as an httpx generator auth flow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from criolib.testing._errors import PushError

if TYPE_CHECKING:
    from criolib.testing._registry import RegistryServer

__all__ = ["PushedImage", "RegistryAuth", "push_layout"]

log = logging.getLogger("criolib.testing")

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_CHUNK = 1 << 20
# image-spec descriptor.md "Digests": algorithm ":" encoded; also keeps blob paths inside.
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
# RFC 7235 auth-param: token "=" ( token / quoted-string ).
_AUTH_PARAM_RE = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_TOKEN_REQUEST = "criolib.testing.token_request"  # noqa: S105 (an extension key)
_REPO_PATH_RE = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` value into its scheme and auth-params (RFC 7235 §4.1)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for key, raw in _AUTH_PARAM_RE.findall(rest):
        quoted = raw.startswith('"')
        params[key.lower()] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if quoted else raw
    return scheme.lower(), params


def _repository_of(path: str) -> str | None:
    match = _REPO_PATH_RE.match(path)
    return match.group(1) if match else None


@attrs.frozen
class _Token:
    value: str
    good_until: float  # time.monotonic()


class RegistryAuth(httpx.Auth):
    """Answers a registry's Basic or Bearer challenge with a user name and password.

    RFC 7617 for Basic; distribution docs/spec/auth/token.md for Bearer: on a 401
    with ``Bearer realm,service,scope`` it asks the realm for a token (sending the
    credentials as Basic, or none when anonymous), caches it per scope until its
    ``expires_in`` runs out, and retries once. Later requests to the same
    repository send the cached token at once, fetching a fresh one first when it
    has expired, so a streamed upload body is not sent unauthenticated.
    """

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self._lock = threading.Lock()
        self._basic_hosts: set[str] = set()
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._hints: dict[tuple[str, str | None], tuple[str, str, str]] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The challenge flow; yields requests, httpx sends them (sans-I/O)."""
        place = (request.url.netloc.decode(), _repository_of(request.url.path))
        with self._lock:
            use_basic = place[0] in self._basic_hosts
            hint = self._hints.get(place)
        sent: str | None = None
        if use_basic and self._basic:
            request.headers["Authorization"] = self._basic
        elif hint is not None:
            sent = yield from self._bearer(request, hint, stale=None)
        response = yield request
        for _ in range(2):
            if response.status_code != 401:
                return
            challenges = response.headers.get_list("WWW-Authenticate")
            if not challenges:
                return
            scheme, params = parse_challenge(challenges[0])
            if scheme == "basic":
                if self._basic is None or request.headers.get("Authorization") == self._basic:
                    return
                with self._lock:
                    self._basic_hosts.add(place[0])
                request.headers["Authorization"] = self._basic
            elif scheme == "bearer" and "realm" in params:
                key = (params["realm"], params.get("service", ""), params.get("scope", ""))
                with self._lock:
                    self._hints[place] = key
                sent = yield from self._bearer(request, key, stale=sent)
                if sent is None:
                    return
            else:
                return
            response = yield request

    def _bearer(
        self, request: httpx.Request, key: tuple[str, str, str], *, stale: str | None
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        """Put a token for ``key`` on ``request``, fetching one unless a fresh one is cached.

        ``stale`` is a token the registry just refused: never reuse it. Returns the
        token sent, or ``None`` when the token service refused (the caller then
        gets the token service's answer, whose URL and body say why).
        """
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached.value != stale and cached.good_until > time.monotonic():
            request.headers["Authorization"] = f"Bearer {cached.value}"
            return cached.value
        realm, service, scope = key
        params: list[tuple[str, str | int | float | bool | None]] = (
            [("service", service)] if service else []
        )
        # token.md: one ``scope`` parameter per space-separated challenge scope.
        params += [("scope", s) for s in scope.split()]
        headers = {"Authorization": self._basic} if self._basic else {}
        extensions = dict(request.extensions)
        extensions[_TOKEN_REQUEST] = True
        answer = yield httpx.Request(
            "GET", realm, params=params, headers=headers, extensions=extensions
        )
        if answer.status_code != 200:
            log.debug("token service %s refused %s: %d", realm, scope, answer.status_code)
            return None
        try:
            body = answer.json()
            value = body.get("token") or body["access_token"]
            # token.md: expires_in is optional and defaults to 60 seconds.
            life = float(body.get("expires_in") or 60)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.debug("token service %s answered without a token", realm)
            return None
        # Drop a token a little early: it was issued before it reached us.
        good_until = time.monotonic() + life - min(1.0, life / 4)
        with self._lock:
            self._tokens[key] = _Token(value, good_until)
        request.headers["Authorization"] = f"Bearer {value}"
        return str(value)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Like httpx's, but reads only token answers: blob bodies keep streaming."""
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.request.extensions.get(_TOKEN_REQUEST):
                response.read()
            try:
                request = flow.send(response)
            except StopIteration:
                break

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The same flow for ``httpx.AsyncClient``."""
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.request.extensions.get(_TOKEN_REQUEST):
                await response.aread()
            try:
                request = flow.send(response)
            except StopIteration:
                break


class _FileStream:
    """A re-iterable file body: each pass reopens the file, so an auth retry resends it."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk


@attrs.frozen
class PushedImage:
    """What :func:`push_layout` put into the registry."""

    reference: str  # host/repository:tag
    digest: str  # of the manifest or index under the tag
    media_type: str
    blobs_uploaded: int
    blobs_skipped: int  # already in the registry (HEAD said 200)
    manifests: int  # pushed manifests, children of an index included


def _find_ref(layout: Path, ref_name: str) -> dict[str, Any]:
    """image-layout.md "index.json file": the one descriptor named ``ref_name``."""
    if not (layout / "oci-layout").is_file():
        raise PushError(f"{layout}: not an OCI image layout (no oci-layout file)")
    try:
        index = json.loads((layout / "index.json").read_bytes())
        manifests = list(index["manifests"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PushError(f"{layout / 'index.json'}: cannot read the image index: {exc}") from exc
    named = [
        m for m in manifests if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) == ref_name
    ]
    if len(named) != 1:
        names = sorted(
            {str((m.get("annotations") or {}).get(REF_NAME_ANNOTATION)) for m in manifests}
        )
        how = "no" if not named else f"{len(named)}"
        raise PushError(
            f"{layout / 'index.json'}: {how} manifests named {ref_name!r}; names: {names}"
        )
    return dict(named[0])


class _Pusher:
    def __init__(self, client: httpx.Client, layout: Path, repository: str, reference: str):
        self.client = client
        self.layout = layout
        self.repository = repository
        self.reference = reference
        self.uploaded = 0
        self.skipped = 0
        self.manifests = 0
        self._done: set[str] = set()

    def fail(self, what: str, detail: str, cause: BaseException | None = None) -> PushError:
        err = PushError(f"push {self.reference}: {what}: {detail}")
        err.__cause__ = cause
        return err

    def blob_path(self, digest: str) -> Path:
        if not _DIGEST_RE.match(digest):
            raise self.fail(f"blob {digest!r}", "not a valid digest")
        alg, _, encoded = digest.partition(":")
        return self.layout / "blobs" / alg / encoded

    def request(self, what: str, req: httpx.Request, ok: tuple[int, ...]) -> httpx.Response:
        try:
            resp = self.client.send(req)
        except httpx.HTTPError as exc:
            raise self.fail(what, f"{type(exc).__name__}: {exc}", exc) from exc
        if resp.status_code not in ok:
            raise self.fail(what, _describe_failure(resp))
        return resp

    def push_blob(self, desc: dict[str, Any]) -> None:
        digest, size = desc["digest"], int(desc["size"])
        if digest in self._done:
            return
        path = self.blob_path(digest)
        base = f"/v2/{self.repository}/blobs"
        if not path.is_file():
            if desc.get("urls"):
                log.debug("push %s: skipping foreign layer %s", self.reference, digest)
                return
            raise self.fail(f"blob {digest}", f"{path} is missing from the layout")
        if path.stat().st_size != size:
            raise self.fail(
                f"blob {digest}", f"{path} holds {path.stat().st_size} bytes, descriptor {size}"
            )
        head = self.client.build_request("HEAD", f"{base}/{digest}")
        if self.request(f"HEAD blob {digest}", head, (200, 404)).status_code == 200:
            self.skipped += 1
            self._done.add(digest)
            return
        start = self.client.build_request("POST", f"{base}/uploads/")
        resp = self.request(f"start upload of {digest}", start, (202,))
        location = resp.headers.get("Location")
        if not location:
            raise self.fail(f"start upload of {digest}", "registry sent no Location")
        url = resp.url.join(location).copy_merge_params({"digest": digest})
        put = self.client.build_request(
            "PUT",
            url,
            # An explicit length keeps httpx from chunking; the file streams from disk.
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=_FileStream(path),
        )
        self.request(f"upload blob {digest}", put, (201,))
        self.uploaded += 1
        self._done.add(digest)

    def push_manifest(self, desc: dict[str, Any], tag: str | None) -> tuple[str, str]:
        digest = desc["digest"]
        media_type = desc.get("mediaType") or ""
        if tag is None and digest in self._done:
            return digest, media_type
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
            doc = json.loads(data)
        except (OSError, ValueError) as exc:
            raise self.fail(f"manifest {digest}", f"cannot read {path}: {exc}", exc) from exc
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest.startswith("sha256:") and actual != digest:
            raise self.fail(f"manifest {digest}", f"{path} hashes to {actual}")
        media_type = media_type or doc.get("mediaType") or ""
        if media_type in INDEX_MEDIA_TYPES or "manifests" in doc:
            # The registry checks an index's children exist: push them first, by digest.
            for child in doc.get("manifests", []):
                self.push_manifest(child, None)
        else:
            for blob in [doc.get("config"), *doc.get("layers", [])]:
                if blob:
                    self.push_blob(blob)
        if not media_type:
            raise self.fail(f"manifest {digest}", "no mediaType in descriptor or document")
        ref = tag or digest
        put = self.client.build_request(
            "PUT",
            f"/v2/{self.repository}/manifests/{ref}",
            headers={"Content-Type": media_type},
            content=data,
        )
        resp = self.request(f"PUT manifest {digest} as {ref}", put, (201,))
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise self.fail(f"PUT manifest {digest}", f"registry stored it as {got}")
        self.manifests += 1
        self._done.add(digest)
        return digest, media_type


def _describe_failure(resp: httpx.Response) -> str:
    """``HTTP 400 from <url>: CODE: message`` from distribution's JSON error body."""
    resp.read()
    where = f"HTTP {resp.status_code} from {resp.request.method} {resp.url}"
    try:
        errors = resp.json()["errors"]
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = resp.text.strip()[:500]
    if resp.status_code == 401:
        text = f"{text}; " if text else ""
        text += "credentials missing or refused"
    return f"{where}: {text}" if text else where


def push_layout(
    registry: RegistryServer,
    layout: Path,
    ref_name: str,
    repository: str,
    tag: str,
    *,
    credentials: tuple[str, str] | None = None,
    timeout: float = 60.0,
) -> PushedImage:
    """Push the image named ``ref_name`` in ``layout`` to ``registry`` as ``repository:tag``.

    image-spec v1.1 image-layout.md in, distribution docs/spec/api.md "Pushing An
    Image" out. An index is pushed after each child manifest (by digest) and its
    blobs. ``credentials`` default to the registry's first user; failures raise
    :class:`PushError` naming ``repository:tag`` and the registry's error code.
    """
    layout = Path(layout)
    reference = f"{registry.host}/{repository}:{tag}"
    desc = _find_ref(layout, ref_name)
    with registry.client(credentials=credentials, timeout=timeout) as client:
        pusher = _Pusher(client, layout, repository, reference)
        digest, media_type = pusher.push_manifest(desc, tag)
    log.debug(
        "pushed %s (%s): %d blobs uploaded, %d present",
        reference, digest, pusher.uploaded, pusher.skipped,
    )
    return PushedImage(
        reference=reference,
        digest=digest,
        media_type=media_type,
        blobs_uploaded=pusher.uploaded,
        blobs_skipped=pusher.skipped,
        manifests=pusher.manifests,
    )
