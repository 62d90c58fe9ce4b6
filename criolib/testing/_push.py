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
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from criolib.testing._errors import PushError, TestbedValueError
from criolib.testing._layout import is_sha256_digest

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
# RFC 7235 §2.1 auth-param: token BWS "=" BWS ( token / quoted-string ), where a token
# is RFC 9110 tchars and a quoted-string may hold backslash-escaped characters.
_AUTH_PARAM_RE = re.compile(
    r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*(?:\"((?:[^\"\\]|\\.)*)\"|([^,\s]*))", re.DOTALL
)
# RFC 6838 §4.2 type "/" subtype, which image-spec descriptor.md asks mediaType to be;
# it also keeps the Content-Type header of a manifest PUT sendable.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE_RE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
_TOKEN_REQUEST = "criolib.testing.token_request"  # noqa: S105 (an extension key)
_REPO_PATH_RE = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` value into its scheme and auth-params (RFC 7235 §4.1).

    Names are lower-cased; quoted values unescaped. Never raises: text that is no
    auth-param is skipped.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for match in _AUTH_PARAM_RE.finditer(rest):
        key, quoted, token = match.groups()
        value = token if quoted is None else re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL)
        params[key.lower()] = value
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
            raise TestbedValueError("registry auth: give both username and password, or neither")
        for what, value in (("username", username), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise TestbedValueError(
                    f"registry auth: {what} must be a str, not {type(value).__name__}"
                )
        if username is not None and ":" in username:
            # RFC 7617 §2: the user-id of Basic credentials cannot contain a colon.
            raise TestbedValueError(f"registry auth: user name {username!r} contains ':'")
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


def _check_descriptor(desc: Any, where: str) -> dict[str, Any]:
    """image-spec descriptor.md: an object with a sha256 ``digest`` and an int ``size``."""
    if not isinstance(desc, dict):
        raise PushError(f"{where}: descriptor is a JSON {_json_type(desc)}, not an object")
    digest, size = desc.get("digest"), desc.get("size")
    if not is_sha256_digest(digest):
        raise PushError(
            f"{where}: descriptor digest {digest!r} is not sha256: and 64 lowercase hex digits"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PushError(f"{where}: descriptor {digest} has size {size!r}, not an int >= 0")
    for key, kind in (("mediaType", str), ("annotations", dict), ("urls", list)):
        if key in desc and not isinstance(desc[key], kind):
            raise PushError(f"{where}: descriptor {digest} has a {key} of the wrong type")
    _check_media_type(desc.get("mediaType"), f"{where}: descriptor {digest}")
    return desc


def _check_media_type(value: Any, where: str) -> None:
    """``None`` (absent) or an RFC 6838 media type."""
    if value is not None and not (isinstance(value, str) and _MEDIA_TYPE_RE.fullmatch(value)):
        raise PushError(f"{where}: mediaType {value!r} is not a media type (type/subtype)")


def _descriptors(doc: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    """The list of descriptors under ``key`` (absent: none)."""
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise PushError(f"{where}: {key!r} is a JSON {_json_type(value)}, not an array")
    return [_check_descriptor(d, f"{where}, {key}[{i}]") for i, d in enumerate(value)]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _find_ref(layout: Path, ref_name: str) -> dict[str, Any]:
    """image-layout.md "index.json file": the one descriptor named ``ref_name``."""
    where = f"{layout / 'index.json'}"
    if not (layout / "oci-layout").is_file():
        raise PushError(f"{layout}: not an OCI image layout (no oci-layout file)")
    try:
        index = json.loads((layout / "index.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise PushError(f"{where}: cannot read the image index: {exc}") from exc
    if not isinstance(index, dict):
        raise PushError(f"{where}: the image index is a JSON {_json_type(index)}, not an object")
    manifests = _descriptors(index, "manifests", where)

    def name_of(m: dict[str, Any]) -> Any:
        return (m.get("annotations") or {}).get(REF_NAME_ANNOTATION)

    named = [m for m in manifests if name_of(m) == ref_name]
    if len(named) != 1:
        names = sorted({str(name_of(m)) for m in manifests})
        how = "no" if not named else f"{len(named)}"
        raise PushError(f"{where}: {how} manifests named {ref_name!r}; names: {names}")
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
        if not is_sha256_digest(digest):  # also keeps the path inside blobs/sha256
            raise self.fail(f"blob {digest!r}", "not sha256: and 64 lowercase hex digits")
        return self.layout / "blobs" / "sha256" / digest[len("sha256:"):]

    def request(self, what: str, req: httpx.Request, ok: tuple[int, ...]) -> httpx.Response:
        try:
            resp = self.client.send(req)
        except httpx.HTTPError as exc:
            raise self.fail(what, f"{type(exc).__name__}: {exc}", exc) from exc
        if resp.status_code not in ok:
            raise self.fail(what, _describe_failure(resp))
        return resp

    def push_blob(self, desc: dict[str, Any]) -> None:
        digest, size = desc["digest"], desc["size"]  # checked by _check_descriptor
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
        digest = desc["digest"]  # checked by _check_descriptor
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
        if actual != digest:
            raise self.fail(f"manifest {digest}", f"{path} hashes to {actual}")
        where = f"push {self.reference}: manifest {path}"
        if not isinstance(doc, dict):
            raise PushError(f"{where}: a JSON {_json_type(doc)}, not an object")
        doc_type = doc.get("mediaType")
        _check_media_type(doc_type, where)
        media_type = media_type or doc_type or ""
        if media_type in INDEX_MEDIA_TYPES or "manifests" in doc:
            # The registry checks an index's children exist: push them first, by digest.
            for child in _descriptors(doc, "manifests", where):
                self.push_manifest(child, None)
        else:
            if doc.get("config") is not None:
                self.push_blob(_check_descriptor(doc["config"], f"{where}, config"))
            for blob in _descriptors(doc, "layers", where):
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
    :class:`PushError` naming ``repository:tag`` and the registry's error code, and
    so does a malformed layout (naming the file and what is wrong with it).
    Digests must be sha256 with 64 lowercase hex digits.
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
