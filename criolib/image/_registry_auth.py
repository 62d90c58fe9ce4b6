"""Registry authentication: challenges, Basic, Bearer tokens with a cache, as an httpx.Auth.

RFC 7235 §4.1 (``WWW-Authenticate``), RFC 7617 (Basic), RFC 6750 §3 (Bearer
``error=``), distribution docs/spec/auth/token.md ("Requesting a Token", "Token
Response Fields"), scope.md (``repository:<name>:<actions>``) and oauth.md (an
identity token exchanged with ``grant_type=refresh_token``).

The protocol lives in a generator (httpx's ``Auth.auth_flow``): it yields the
requests to send and is handed the responses, so it runs against any transport.
Like containers/image (docker/docker_client.go ``setupRequestAuth``) it uses the
challenge learned from the ``/v2/`` ping *before* the first request, so a request
with a body is not sent once anonymously; unlike it, it also answers a 401 on any
request (a new challenge, an expired token: ``error="invalid_token"``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from typing import Any

import attrs
import httpx

from criolib.image._errors import InvalidArgument, InvalidResponse

__all__ = [
    "SCOPES_EXTENSION",
    "Challenge",
    "RegistryAuth",
    "UserCredentials",
    "normalize_credentials",
    "parse_challenges",
    "repository_scope",
]

log = logging.getLogger("criolib.image")

#: The request extension carrying the token scopes a request needs (scope.md strings).
SCOPES_EXTENSION = "criolib.image.scopes"
_TOKEN_REQUEST = "criolib.image.token_request"  # noqa: S105 - an extension key
#: token.md "Token Response Fields": ``expires_in`` defaults to 60 seconds.
DEFAULT_TOKEN_LIFETIME = 60.0
#: Token answers above this size are refused (containers/image MaxAuthTokenBodySize: 1 MiB).
MAX_TOKEN_BODY = 1 << 20
_CLIENT_ID = "criolib"

# RFC 9110 §5.6.2 token, §5.6.4 quoted-string; RFC 7235 §2.1 token68.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(_TCHARS)
_PARAM_RE = re.compile(
    rf"({_TCHARS})[ \t]*=[ \t]*(?:\"((?:[^\"\\]|\\.)*)\"|({_TCHARS}))", re.DOTALL
)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_OWS_RE = re.compile(r"[ \t]*")


@attrs.frozen
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: lower-cased scheme and param names."""

    scheme: str
    params: dict[str, str] = attrs.field(factory=dict)


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in ``WWW-Authenticate`` values (RFC 7235 §4.1, §2.1).

    A value may hold several challenges separated by commas; each is a scheme,
    then a token68 or comma-separated auth-params. Never raises: text that fits
    no rule is skipped.
    """
    found: list[Challenge] = []
    for value in values:
        pos, end = 0, len(value)
        while pos < end:
            while pos < end and value[pos] in " \t,":
                pos += 1
            scheme = _SCHEME_RE.match(value, pos)
            if scheme is None:
                # Skip to the next element: nothing here is a challenge.
                nxt = value.find(",", pos)
                pos = end if nxt < 0 else nxt + 1
                continue
            pos = scheme.end()
            params: dict[str, str] = {}
            pos = _OWS_RE.match(value, pos).end()  # type: ignore[union-attr]
            token68 = _TOKEN68_RE.match(value, pos)
            if token68 and not _PARAM_RE.match(value, pos) and (
                token68.end() == end or value[token68.end()] in " \t,"
            ):
                params["token68"] = token68.group()
                pos = token68.end()
            else:
                while pos < end:
                    param = _PARAM_RE.match(value, pos)
                    if param is None:
                        break
                    key, quoted, token = param.groups()
                    params[key.lower()] = token if quoted is None else _unquote(quoted)
                    pos = _OWS_RE.match(value, param.end()).end()  # type: ignore[union-attr]
                    if pos < end and value[pos] == ",":
                        look = pos + 1
                        while look < end and value[look] in " \t,":
                            look += 1
                        if _PARAM_RE.match(value, look):
                            pos = look
                            continue
                    break
            found.append(Challenge(scheme.group().lower(), params))
    return found


def _unquote(quoted: str) -> str:
    """RFC 9110 §5.6.4: a quoted-pair stands for its second character."""
    return re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL)


def repository_scope(repository: str, actions: Sequence[str]) -> str:
    """``repository:<name>:<actions>`` (scope.md "Resource Scope Grammar")."""
    return f"repository:{repository}:{','.join(actions)}"


def _scope_pairs(scopes: Iterable[str]) -> frozenset[tuple[str, str]]:
    """``{(type:name, action)}``: what a set of scopes grants, for superset lookups."""
    pairs = set()
    for scope in scopes:
        resource, _, actions = scope.rpartition(":")
        for action in actions.split(","):
            if resource and action:
                pairs.add((resource, action))
    return frozenset(pairs)


@attrs.frozen
class UserCredentials:
    """A user name and password, or an identity (OAuth2 refresh) token (oauth.md)."""

    username: str = ""
    password: str = attrs.field(default="", repr=False)
    identity_token: str = attrs.field(default="", repr=False)

    @property
    def basic(self) -> str | None:
        """The ``Authorization: Basic`` value (RFC 7617 §2, UTF-8), if there is a password."""
        if not self.username or not self.password:
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def normalize_credentials(credentials: Any) -> UserCredentials | None:
    """``(user, password)``, an object with ``username``/``password``/``identity_token``, or None.

    The object form is criolib.image's ``Credentials`` (auth.json), duck-typed so
    this module does not depend on where it is defined. Raises
    :class:`~criolib.image.InvalidArgument` for anything else.
    """
    if credentials is None:
        return None
    if isinstance(credentials, UserCredentials):
        return credentials
    if isinstance(credentials, tuple):
        if len(credentials) != 2 or not all(isinstance(c, str) for c in credentials):
            raise InvalidArgument("registry credentials: a tuple must be (username: str, "
                                  "password: str)", argument="credentials")
        user, password = credentials
        identity = ""
    else:
        user = getattr(credentials, "username", None) or ""
        password = getattr(credentials, "password", None) or ""
        identity = getattr(credentials, "identity_token", None) or ""
        if not all(isinstance(v, str) for v in (user, password, identity)):
            raise InvalidArgument(
                f"registry credentials: {type(credentials).__name__} must have str username, "
                "password and identity_token attributes", argument="credentials"
            )
    if ":" in user:
        # RFC 7617 §2: a user-id with a colon cannot be sent with Basic.
        raise InvalidArgument(f"registry credentials: user name {user!r} contains ':' "
                              "(RFC 7617 forbids it in Basic auth)", argument="credentials")
    if not (user or password or identity):
        return None
    return UserCredentials(user, password, identity)


class _TokenFailure(Exception):
    """The token service refused or failed; the client turns it into a RegistryError.

    Internal control flow, raised out of the auth flow and caught by the client,
    which knows the repository and reference to name.
    """

    def __init__(self, message: str, *, status: int | None, realm: str) -> None:
        super().__init__(message)
        self.status = status
        self.realm = realm


@attrs.frozen
class _Sent:
    """The ``Authorization`` value a request carried, and whether it was fetched for it."""

    value: str
    fresh: bool
    asked: frozenset[tuple[str, str]]


@attrs.frozen
class _Token:
    value: str
    scopes: frozenset[tuple[str, str]]
    good_until: float  # time.monotonic()


def _bad_token(realm: str, message: str) -> InvalidResponse:
    host = httpx.URL(realm).host if realm.startswith(("http://", "https://")) else realm
    return InvalidResponse(f"token service {realm or '(unnamed)'}: {message}",
                           host=host or "token service")


def parse_token_response(body: bytes, *, received: float, now: float | None = None,
                         realm: str = "") -> tuple[str, float]:
    """``(token, seconds it stays good from received)`` from a token answer (token.md).

    ``token`` or ``access_token`` (either; ``token`` wins), ``expires_in`` (default 60 s)
    and ``issued_at`` (RFC 3339): a token issued before it reached us has less
    life left. An ``issued_at`` in the future or older than the token's life is
    clock skew, and ignored. Raises :class:`~criolib.image.InvalidResponse`
    (naming the token service ``realm``) on a malformed answer.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise _bad_token(realm, f"token answer is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad_token(realm, "token answer is not a JSON object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise _bad_token(realm, "token answer holds neither 'token' nor 'access_token'")
    life = doc.get("expires_in")
    if life is None:
        life = DEFAULT_TOKEN_LIFETIME
    if isinstance(life, bool) or not isinstance(life, int | float) or life <= 0:
        raise _bad_token(realm, f"token answer has expires_in {life!r}, not a positive number")
    issued = doc.get("issued_at")
    if isinstance(issued, str):
        try:
            at = dt.datetime.fromisoformat(issued.replace("Z", "+00:00"))
            age = (received if now is None else now) - at.timestamp()
            if 0 < age < life:
                life -= age
        except ValueError:
            log.debug("token answer has an unreadable issued_at %r; ignored", issued)
    return value, float(life)


class RegistryAuth(httpx.Auth):
    """Answers registry challenges: Basic, Bearer (token.md) with a token cache, or none.

    Thread-safe: one instance serves a client's every request. Tokens are cached
    per (realm, service, scope set) until ``expires_in`` runs out (refreshed a little
    early) and reused for any request whose scopes they cover. A request names the
    scopes it needs in ``request.extensions[SCOPES_EXTENSION]``; a challenge's own
    ``scope`` is added. A refused token (``invalid_token``, or any 401 to a cached
    one) is dropped and fetched again, once. Anonymous clients fetch anonymous
    tokens, as docker does.
    """

    def __init__(self, credentials: UserCredentials | None, *, user_agent: str) -> None:
        self._creds = credentials
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str], list[_Token]] = {}
        self._fetched = 0

    @property
    def credentials_given(self) -> bool:
        """Whether a user name, password or identity token was configured."""
        return self._creds is not None

    @property
    def tokens_fetched(self) -> int:
        """How many tokens this client obtained from token services."""
        with self._lock:
            return self._fetched

    def learn(self, host: str, challenges: Sequence[Challenge]) -> None:
        """Remember the challenge ``host`` answers with (from the ``/v2/`` ping)."""
        chosen = _choose(challenges)
        with self._lock:
            if chosen is None:
                self._challenges.pop(host, None)
            else:
                self._challenges[host] = chosen

    def forget_tokens(self) -> None:
        """Drop every cached token."""
        with self._lock:
            self._tokens.clear()

    # -- the flow ------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The challenge flow (sans-I/O): yields requests, is sent their responses."""
        host = request.url.netloc.decode("ascii")
        scopes = tuple(request.extensions.get(SCOPES_EXTENSION, ()))
        with self._lock:
            known = self._challenges.get(host)
        sent: _Sent | None = None
        if known is not None:
            sent = yield from self._authorize(request, known, scopes, refuse=None)
        response = yield request
        for _ in range(2):
            if response.status_code != 401:
                return
            challenge = _choose(parse_challenges(response.headers.get_list("WWW-Authenticate")))
            if challenge is None:
                return
            with self._lock:
                self._challenges[host] = challenge
            wanted = scopes
            if challenge.scheme == "bearer":
                wanted = (*scopes, *challenge.params.get("scope", "").split())
                if (sent is not None and sent.fresh
                        and challenge.params.get("error") != "invalid_token"
                        and _scope_pairs(wanted) <= sent.asked):
                    # A token fetched just now for every scope asked was refused: the
                    # service granted less than asked (insufficient_scope). Final.
                    return
            elif sent is not None and self._creds is not None and sent.value == self._creds.basic:
                return  # the password was refused
            refused = sent.value if sent is not None else None
            sent = yield from self._authorize(request, challenge, wanted, refuse=refused)
            if sent is None or sent.value == refused:
                return
            response = yield request

    def _authorize(
        self,
        request: httpx.Request,
        challenge: Challenge,
        scopes: Sequence[str],
        *,
        refuse: str | None,
    ) -> Generator[httpx.Request, httpx.Response, _Sent | None]:
        """Set ``Authorization`` for ``challenge``; returns what was sent, or None."""
        if challenge.scheme == "basic":
            basic = self._creds.basic if self._creds else None
            if basic is None:
                return None
            request.headers["Authorization"] = basic
            return _Sent(basic, fresh=False, asked=frozenset())
        realm = challenge.params.get("realm", "")
        if challenge.scheme != "bearer" or not realm:
            return None
        service = challenge.params.get("service", "")
        wanted = _scope_pairs(scopes)
        cached = self._cached(realm, service, wanted, refuse)
        if cached is not None:
            value = f"Bearer {cached}"
            request.headers["Authorization"] = value
            return _Sent(value, fresh=False, asked=wanted)
        token_request = self._token_request(realm, service, sorted(set(scopes)), request)
        answer = yield token_request
        received = time.time()
        received_mono = time.monotonic()
        if answer.status_code != 200:
            raise _TokenFailure(
                _describe_token_failure(answer, self._creds), status=answer.status_code,
                realm=realm,
            )
        body = answer.content
        if len(body) > MAX_TOKEN_BODY:
            raise _TokenFailure(f"token service {realm} sent {len(body)} bytes, more than "
                             f"{MAX_TOKEN_BODY}", status=answer.status_code, realm=realm)
        try:
            token, life = parse_token_response(body, received=received, realm=realm)
        except InvalidResponse as exc:
            raise _TokenFailure(str(exc), status=answer.status_code,
                             realm=realm) from None
        # Stop using a token a little before it runs out: it was issued before it got here.
        good_until = received_mono + life - min(1.0, life / 4)
        with self._lock:
            self._fetched += 1
            bucket = self._tokens.setdefault((realm, service), [])
            bucket[:] = [t for t in bucket if t.good_until > received_mono and t.scopes != wanted]
            bucket.append(_Token(token, wanted, good_until))
        log.debug("token from %s for %s (good for %.0f s)", realm, " ".join(scopes) or "-", life)
        value = f"Bearer {token}"
        request.headers["Authorization"] = value
        return _Sent(value, fresh=True, asked=wanted)

    def _cached(self, realm: str, service: str, wanted: frozenset[tuple[str, str]],
                refuse: str | None) -> str | None:
        now = time.monotonic()
        with self._lock:
            bucket = self._tokens.get((realm, service), [])
            if refuse is not None:
                bucket[:] = [t for t in bucket if f"Bearer {t.value}" != refuse]
            for token in reversed(bucket):
                if token.good_until > now and wanted <= token.scopes:
                    return token.value
        return None

    def _token_request(self, realm: str, service: str, scopes: Sequence[str],
                       original: httpx.Request) -> httpx.Request:
        """token.md "Requesting a Token" (GET), or oauth.md's POST with an identity token."""
        headers = {"User-Agent": self._user_agent}
        extensions = {k: v for k, v in original.extensions.items() if k == "timeout"}
        extensions[_TOKEN_REQUEST] = True
        creds = self._creds
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": _CLIENT_ID}
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)  # RFC 6749 §3.3: space-delimited
            return httpx.Request("POST", realm, data=form, headers=headers,
                                 extensions=extensions)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in scopes]
        if creds is not None and creds.username:
            params.append(("account", creds.username))
        if creds is not None and creds.basic:
            headers["Authorization"] = creds.basic
        return httpx.Request("GET", realm, params=params, headers=headers, extensions=extensions)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx's driver, but it reads only token answers: blob bodies keep streaming."""
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.request.extensions.get(_TOKEN_REQUEST):
                _read_bounded(response)
            try:
                request = flow.send(response)
            except StopIteration:
                break


def _read_bounded(response: httpx.Response) -> None:
    """Read a token answer, refusing more than MAX_TOKEN_BODY (a hostile realm)."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_TOKEN_BODY:
        response.close()
        raise _TokenFailure(f"token service {response.request.url} announced {length} bytes",
                         status=response.status_code, realm=str(response.request.url))
    response.read()


def _choose(challenges: Sequence[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer (with a realm) before Basic, others never."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme and (scheme == "basic" or challenge.params.get("realm")):
                return challenge
    return None


def _describe_token_failure(answer: httpx.Response, creds: UserCredentials | None) -> str:
    realm = answer.request.url.copy_with(query=None)
    try:
        doc = json.loads(answer.content[:4096])
        detail = doc.get("details") or doc.get("error_description") or doc.get("error") or ""
        if not detail and doc.get("errors"):
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in doc["errors"])
    except (ValueError, AttributeError, TypeError):
        detail = answer.text[:200].strip()
    who = f"user {creds.username!r}" if creds and creds.username else (
        "an identity token" if creds else "no credentials (anonymous)")
    text = f"token service {realm} answered HTTP {answer.status_code} for {who}"
    return f"{text}: {detail}" if detail else text
