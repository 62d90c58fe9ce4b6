"""The HTTP layer of the registry client: ping, retries with backoff, error bodies.

distribution-spec v1.1 spec.md ("Determining Support", "Error Codes"), RFC 9110
§10.2.3 (``Retry-After``) and §15 (status codes). Behaviour follows containers/image
docker/docker_client.go: ``GET /v2/`` over https first and over http only when the
registry is insecure; a 200 or 401 answer means a v2 registry and its challenge is
remembered for every later request.

Retried (with exponential backoff, honouring ``Retry-After`` up to a cap): 429,
500, 502, 503, 504, dropped or refused connections, timeouts, a token service
that fails the same way. Never retried: any other 4xx (a 401 only goes through the
auth flow's refresh), or a request whose body cannot be sent again.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import attrs
import httpx

from criolib.image._errors import (
    BlobUnknown,
    Denied,
    InvalidResponse,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    RegistryUnavailable,
    TooManyRequests,
    Unauthorized,
)
from criolib.image._registry_auth import (
    SCOPES_EXTENSION,
    RegistryAuth,
    UserCredentials,
    _TokenFailure,
    parse_challenges,
)

__all__ = ["Body", "Operation", "Session", "raw_chunks", "read_limited", "retry_after"]

log = logging.getLogger("criolib.image")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Error bodies are read up to this many bytes (they are small JSON documents).
MAX_ERROR_BODY = 64 << 10
_API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
#: spec.md "Error Codes" to the class a caller can act on.
_CODE_ERRORS: Mapping[str, type[RegistryError]] = {
    "UNAUTHORIZED": Unauthorized,
    "DENIED": Denied,
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
    "NAME_UNKNOWN": NameUnknown,
    "TOOMANYREQUESTS": TooManyRequests,
}


@attrs.frozen
class Operation:
    """What a request is for, to name in errors: ``pull manifest host/repo:tag``."""

    action: str  # "pull manifest", "push blob", ...
    repository: str | None = None
    reference: str | None = None
    kind: str = ""  # "manifest", "blob", "tags", "upload": picks the 404 class

    def describe(self, host: str) -> str:
        name = host if self.repository is None else f"{host}/{self.repository}"
        if self.reference:
            sep = "@" if ":" in self.reference else ":"
            name = f"{name}{sep}{self.reference}"
        return f"{self.action} {name}"


class Body:
    """A request body; this one is bytes, so it may be sent again. Streams subclass it."""

    def __init__(self, content: bytes = b"") -> None:
        self.content = content

    @property
    def replayable(self) -> bool:
        """Whether :meth:`fresh` may be called again after an attempt failed."""
        return True

    def fresh(self) -> bytes | Iterable[bytes]:
        """The content for one attempt."""
        return self.content


class Session:
    """One registry host: a pooled httpx client, its auth, the ping and the retry loop.

    Thread-safe. ``host`` is ``name[:port]``; ``docker.io`` is reached at
    ``registry-1.docker.io`` (containers/image ``newDockerClient``).
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool,
        credentials: UserCredentials | None,
        timeout: float,
        retries: int,
        backoff: float,
        max_delay: float,
        transport: httpx.BaseTransport | None,
        user_agent: str,
    ) -> None:
        self.host = host
        self.endpoint = "registry-1.docker.io" if host == "docker.io" else host
        self.insecure = insecure
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay
        self.auth = RegistryAuth(credentials, user_agent=user_agent)
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            # insecure (registries.conf): no TLS verification, plain http allowed.
            verify=not insecure,
            # Proxies from the environment are still honoured by transport=None;
            # trust_env stays on, like Go's ProxyFromEnvironment in containers/image.
            # identity: blob bytes must hash as stored, and Range offsets must count them.
            headers={"User-Agent": user_agent, _API_VERSION[0]: _API_VERSION[1],
                     "Accept-Encoding": "identity"},
            follow_redirects=False,
        )
        self._ping_lock = threading.Lock()
        self._scheme: str | None = None

    def close(self) -> None:
        self.client.close()

    # -- ping -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``scheme://endpoint``, pinging first if needed."""
        return f"{self.ensure_pinged()}://{self.endpoint}"

    def ensure_pinged(self) -> str:
        """Ping ``/v2/`` once (spec.md "Determining Support"); return the scheme that works."""
        if self._scheme is not None:
            return self._scheme
        with self._ping_lock:
            if self._scheme is None:
                self._scheme = self._ping()
            return self._scheme

    def _ping(self) -> str:
        op = Operation("ping", kind="ping")
        schemes = ("https", "http") if self.insecure else ("https",)
        causes: list[str] = []
        last: RegistryError | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.endpoint}/v2/"
            # With a fallback left, https gets one try: a plain-http server fails fast.
            retries = 0 if scheme != schemes[-1] else self.retries
            try:
                resp, _ = self.exchange("GET", url, op=op, retries=retries, use_auth=False,
                                        read_limit=MAX_ERROR_BODY)
            except RegistryError as exc:
                causes.append(f"{scheme}: {getattr(exc, 'cause', None) or exc}")
                last = exc
                log.debug("ping %s failed: %s", url, exc)
                continue
            if resp.status_code in (200, 401):
                self.auth.learn(resp.url.netloc.decode("ascii"),
                                parse_challenges(resp.headers.get_list("WWW-Authenticate")))
                log.debug("ping %s: %d", url, resp.status_code)
                return scheme
            causes.append(f"{scheme}: HTTP {resp.status_code} from {url}")
        raise RegistryUnavailable(
            f"registry {self.host}: /v2/ did not answer as a registry "
            f"({'; '.join(causes)})" + ("" if self.insecure else
                                         "; is it plain http? then mark it insecure"),
            host=self.host, cause=causes[-1] if causes else "",
        ) from last

    # -- requests -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def exchange(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        op: Operation,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        follow_redirects: bool = False,
        read_limit: int | None = None,
        retries: int | None = None,
        use_auth: bool = True,
    ) -> tuple[httpx.Response, bytes | None]:
        """Send a request, retrying what may be retried; return the response (streaming).

        With ``read_limit`` the body is read inside the retry loop (a connection
        dropped mid-body is retried too) and returned; a body longer than the limit
        raises InvalidResponse. Statuses other than the retried ones are returned
        for the caller to judge (:meth:`fail`).
        """
        budget = self.retries if retries is None else retries
        attempt = 0
        delay = self.backoff
        while True:
            content = body.fresh() if body is not None else None
            request = self.client.build_request(
                method, url, headers=headers, params=params, content=content,
                extensions={SCOPES_EXTENSION: tuple(scopes)},
            )
            can_retry = attempt < budget and (body is None or body.replayable)
            try:
                resp = self.client.send(request, stream=True, follow_redirects=follow_redirects,
                                        auth=self.auth if use_auth else None)
                data = None
                if resp.status_code in RETRY_STATUSES:
                    error_body = _read_error_body(resp)
                    cause = describe_response(resp, error_body)
                    if not can_retry:
                        self._give_up(resp, op, cause, error_body, attempt + 1)
                    wait = min(retry_after(resp, delay), self.max_delay)
                    log.debug("%s: %s; retry %d/%d in %.2f s", op.describe(self.host), cause,
                              attempt + 1, budget, wait)
                elif read_limit is not None:
                    data = read_limited(resp, read_limit, op, self.host)
                    return resp, data
                else:
                    return resp, None
            except _TokenFailure as exc:
                if exc.status not in RETRY_STATUSES or not can_retry:
                    self._token_failure(exc, op)
                cause = str(exc)
                wait = delay
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                cause = f"{type(exc).__name__}: {exc or 'connection closed'}"
                if not can_retry:
                    raise RegistryUnavailable(
                        f"{op.describe(self.host)}: {cause}"
                        + (f" (gave up after {attempt + 1} attempts)" if attempt else ""),
                        host=self.host, repository=op.repository, reference=op.reference,
                        cause=cause,
                    ) from exc
                wait = delay
                log.debug("%s: %s; retry %d/%d in %.2f s", op.describe(self.host), cause,
                          attempt + 1, budget, wait)
            except (httpx.HTTPError, httpx.StreamError) as exc:
                raise RegistryError(
                    f"{op.describe(self.host)}: {type(exc).__name__}: {exc}",
                    host=self.host, repository=op.repository, reference=op.reference,
                ) from exc
            time.sleep(wait)
            attempt += 1
            delay *= 2

    def _give_up(self, resp: httpx.Response, op: Operation, cause: str, body: bytes,
                 attempts: int) -> NoReturn:
        errors = _errors_from_body(body)
        cls = TooManyRequests if resp.status_code == 429 else RegistryUnavailable
        tries = f"gave up after {attempts} attempts" if attempts > 1 else "failed"
        raise cls(
            f"{op.describe(self.host)}: {tries}: {cause}", host=self.host,
            repository=op.repository, reference=op.reference, status=resp.status_code,
            errors=errors, cause=cause,
        )

    def _token_failure(self, exc: _TokenFailure, op: Operation) -> NoReturn:
        context: dict[str, Any] = {"host": self.host, "repository": op.repository,
                                   "reference": op.reference, "status": exc.status}
        what = op.describe(self.host)
        if exc.status in (401, 403):
            given = self.auth.credentials_given
            fix = "check the user name and password" if given else "log in first"
            raise Unauthorized(f"{what}: unauthorized: {exc}; {fix}", credentials_given=given,
                               **context) from exc
        if exc.status in RETRY_STATUSES:
            raise RegistryUnavailable(f"{what}: gave up: {exc}", cause=str(exc),
                                      **context) from exc
        raise InvalidResponse(f"{what}: {exc}", **context) from exc

    def fail(self, resp: httpx.Response, op: Operation, body: bytes | None = None) -> NoReturn:
        """Raise the RegistryError an unexpected answer stands for (spec.md "Error Codes")."""
        if body is None:
            body = _read_error_body(resp)
        errors = _errors_from_body(body)
        status = resp.status_code
        context: dict[str, Any] = {"host": self.host, "repository": op.repository,
                                   "reference": op.reference, "status": status, "errors": errors}
        text = describe_response(resp, body)
        what = op.describe(self.host)
        codes = [str(e.get("code", "")) for e in errors]
        cls: type[RegistryError] | None = next(
            (_CODE_ERRORS[c] for c in codes if c in _CODE_ERRORS), None)
        if status == 401 or cls is Unauthorized:
            given = self.auth.credentials_given
            challenge = " ".join(resp.headers.get_list("WWW-Authenticate"))
            if given and 'error="insufficient_scope"' in challenge:
                raise Denied(f"{what}: denied: the credentials given do not grant this "
                             f"({text})", **context)
            fix = ("the registry refused the credentials given; check them" if given
                   else "no credentials were given; log in first")
            raise Unauthorized(f"{what}: unauthorized: {text}; {fix}", credentials_given=given,
                               **context)
        if cls is None:
            if status == 403:
                cls = Denied
            elif status == 404:
                cls = {"manifest": ManifestUnknown, "blob": BlobUnknown}.get(op.kind, NameUnknown)
            else:
                cls = RegistryError
        if cls is TooManyRequests or cls is RegistryUnavailable:
            raise cls(f"{what}: {text}", cause=text, **context)
        raise cls(f"{what}: {text}", **context)


def retry_after(resp: httpx.Response, fallback: float) -> float:
    """Seconds a ``Retry-After`` asks for (RFC 9110 §10.2.3: seconds or an HTTP-date)."""
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return fallback
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    delta = when.timestamp() - time.time()
    return delta if delta > 0 else fallback


def read_limited(resp: httpx.Response, limit: int, op: Operation, host: str) -> bytes:
    """The whole body, refusing more than ``limit`` bytes or fewer than Content-Length."""
    context: dict[str, Any] = {"host": host, "repository": op.repository,
                               "reference": op.reference, "status": resp.status_code}
    if resp.request.method == "HEAD" or resp.status_code in (204, 304):
        resp.close()  # RFC 9110 §9.3.2, §15.3.5: no body, whatever Content-Length says
        return b""
    length = resp.headers.get("Content-Length")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > limit:
        resp.close()
        raise InvalidResponse(
            f"{op.describe(host)}: the registry announces {declared} bytes, more than the "
            f"{limit} allowed", **context)
    chunks = []
    total = 0
    try:
        for chunk in raw_chunks(resp):
            total += len(chunk)
            if total > limit:
                raise InvalidResponse(
                    f"{op.describe(host)}: the registry sent more than the {limit} bytes allowed",
                    **context)
            chunks.append(chunk)
    finally:
        resp.close()
    if declared is not None and total != declared:
        raise InvalidResponse(
            f"{op.describe(host)}: the registry said Content-Length {declared} but sent "
            f"{total} bytes", **context)
    data = b"".join(chunks)
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        # A proxy compressed it: decode as httpx would, but the limit held on the wire.
        decoded = httpx.Response(200, headers={"Content-Encoding": encoding}, content=data)
        data = decoded.content
        if len(data) > limit:
            raise InvalidResponse(f"{op.describe(host)}: more than {limit} bytes decoded",
                                  **context)
    return data


def raw_chunks(resp: httpx.Response) -> Iterator[bytes]:
    """The body's bytes as sent, whether still streaming or already in memory (mocks)."""
    try:
        content = resp.content
    except httpx.ResponseNotRead:
        return resp.iter_raw()  # unchunked: a dropped connection loses no byte already here
    return iter([content] if content else [])


def _read_error_body(resp: httpx.Response) -> bytes:
    try:
        chunks = []
        total = 0
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
            total += len(chunk)
            if total >= MAX_ERROR_BODY:
                break
        return b"".join(chunks)[:MAX_ERROR_BODY]
    except httpx.HTTPError:
        return b""
    finally:
        resp.close()


def _errors_from_body(body: bytes) -> list[dict[str, Any]]:
    """spec.md "Error Codes": ``{"errors": [{"code", "message", "detail"}]}``."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, dict)]


def describe_response(resp: httpx.Response, body: bytes) -> str:
    """``HTTP 404 from GET <url>: MANIFEST_UNKNOWN: manifest unknown (detail)``."""
    where = f"HTTP {resp.status_code} from {resp.request.method} {resp.url.copy_with(query=None)}"
    errors = _errors_from_body(body)
    if errors:
        parts = []
        for e in errors:
            part = f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ")
            detail = e.get("detail")
            if detail:
                part += f" ({json.dumps(detail)[:200]})"
            parts.append(part)
        return f"{where}: {'; '.join(parts)}"
    text = body.decode("utf-8", "replace").strip()[:200]
    return f"{where}: {text}" if text else where
