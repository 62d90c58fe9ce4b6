"""A token service for the test bed's registry: the Docker registry token protocol.

Implements distribution's docs/spec/auth/token.md ("Requesting a Token", "Token
Response Fields") and docs/spec/auth/jwt.md (the claim set and its RS256 signature),
as verified by distribution v2.8 registry/auth/token/token.go: the JOSE header
carries ``x5c`` (standard base64 DER), which the registry checks against the
``rootcertbundle`` this server writes.

Registry 2.8 adds ``Leeway`` (60 s) to both the ``exp`` and ``nbf`` checks, so a
token whose ``exp`` said *ttl* would live *ttl* + 60 s. To let tests watch a token
expire within seconds, every claim window is shifted back by the leeway: ``nbf =
iat - 60`` and ``exp = ceil(now + ttl) - 60``. The claims are whole seconds (the
registry reads them as int64), and ``exp`` is rounded up, never down: a token is
accepted for at least ``ttl`` seconds after it was issued (``expires_in`` says
``ttl``) and refused less than ``ttl + 1`` seconds after.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import logging
import math
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from criolib.testing._errors import TestbedError, TestbedValueError, missing_python_package

__all__ = ["REGISTRY_LEEWAY", "TokenServer"]

log = logging.getLogger("criolib.testing")

#: distribution v2.8 registry/auth/token/token.go ``Leeway``: added to exp, taken from nbf.
REGISTRY_LEEWAY = 60

def _b64url(data: bytes) -> str:
    # jwt.md: "url-safe base64 encoded (sans trailing '=' buffer)"
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(doc: Any) -> bytes:
    # jwt.md: header and claims are serialised "with no extraneous whitespace".
    return json.dumps(doc, separators=(",", ":")).encode()


def parse_scopes(values: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """Parse ``scope`` query values into ``{(type, name): [actions]}``.

    docs/spec/auth/scope.md: ``resourcetype:resourcename:action[,action]``; a name
    may itself hold ``:`` (a registry host with a port), so the type ends at the
    first colon and the actions start after the last. Several scopes may share one
    value, separated by spaces, as the ``WWW-Authenticate`` header writes them.
    A malformed scope raises :class:`~criolib.testing.TestbedValueError` (a ValueError).
    """
    wanted: dict[tuple[str, str], list[str]] = {}
    for value in values:
        for scope in value.split():
            rtype, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not (sep and sep2 and rtype and name):
                raise TestbedValueError(f"malformed scope {scope!r}")
            have = wanted.setdefault((rtype, name), [])
            for action in actions.split(","):
                if action and action not in have:
                    have.append(action)
    return wanted


def _check_acl(acl: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    out = {}
    for user, actions in acl.items():
        # A bare string would become a set of letters: "pull" -> {"p", "u", "l"}.
        if isinstance(actions, str) or not all(isinstance(a, str) for a in actions):
            raise TestbedValueError(
                f"token server: acl[{user!r}] must be a collection of action names such as "
                f"['pull'], not {actions!r}"
            )
        out[user] = frozenset(actions)
    return out


class _Handler(BaseHTTPRequestHandler):
    """GET /token as token.md describes; everything else is 404."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            self._reply(404, {"details": f"no such endpoint {url.path}"})
            return
        status, body = self.server.owner.handle_token_request(
            parse_qs(url.query), self.headers.get("Authorization")
        )
        extra = {"WWW-Authenticate": 'Basic realm="criolib-testbed"'} if status == 401 else {}
        self._reply(status, body, extra)

    def _reply(self, status: int, body: Mapping[str, Any], extra: Mapping[str, str] = {}) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # BaseHTTPRequestHandler writes to stderr; the library never prints.
        log.debug("token server: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: TokenServer) -> None:
        # Port 0 binds a free port atomically, with no probe-then-bind race.
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class TokenServer:
    """An HTTP token service issuing RS256 JWTs that distribution's registry trusts.

    Implements distribution docs/spec/auth/token.md and jwt.md. ``users`` maps user
    names to passwords (HTTP Basic on ``GET /token``). ``acl`` maps a user to the
    actions they may be granted on every resource; a user missing from it gets
    whatever they ask for. Anonymous clients get a token with empty ``access``
    (Docker Hub's answer for a private repository) unless ``anonymous_pull`` is set,
    when they get ``pull``. ``ttl`` is the effective lifetime in seconds at a 2.8
    registry (see the module docstring for the leeway shift).

    Use it as a context manager or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        acl: Mapping[str, Collection[str]] | None = None,
        anonymous_pull: bool = False,
        ttl: int = 10,
        service: str = "criolib-testbed-registry",
        issuer: str = "criolib-testbed-token-server",
        cert_path: Path | None = None,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise TestbedValueError(f"token ttl must be an int of at least 1 second, not {ttl!r}")
        self.users = dict(users if users is not None else {"tester": "criolib-secret"})
        if not all(isinstance(u, str) and isinstance(p, str) for u, p in self.users.items()):
            raise TestbedValueError("token server: users must map str names to str passwords")
        self.acl = _check_acl(acl or {})
        self.anonymous_pull = anonymous_pull
        self.ttl = ttl
        self.service = service
        self.issuer = issuer
        self._cert_path = cert_path
        self._tmpdir: Path | None = None
        self._lock = threading.Lock()
        self._requests = 0
        self._issued = 0
        self._failures = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._key: Any = None
        self._x5c: list[str] = []

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Self:
        """Generate the key and certificate, write the root bundle and serve."""
        if self._httpd is not None:
            return self
        try:
            cert_pem = self._make_key_and_cert()
            if self._cert_path is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="criolib-tokens-"))
                self._cert_path = self._tmpdir / "token-root.pem"
            self._cert_path.write_bytes(cert_pem)
            self._httpd = _HTTPServer(self)
        except OSError as exc:
            self._cleanup_tmpdir()
            raise TestbedError(
                f"token server: cannot start (root bundle {self._cert_path}): {exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            # shutdown() waits up to one poll interval; the default 0.5 s slows every test.
            kwargs={"poll_interval": 0.05},
            name="criolib-token-server",
            daemon=True,
        )
        self._thread.start()
        log.debug("token server listening on %s", self.realm)
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary root bundle, if this server made it."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._cleanup_tmpdir()

    def _cleanup_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._cert_path = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- facts for the registry config and for tests ---------------------

    @property
    def realm(self) -> str:
        """The token endpoint URL, for ``auth.token.realm``."""
        if self._httpd is None:
            raise TestbedError("token server: not started, so it has no realm yet")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/token"

    @property
    def cert_path(self) -> Path:
        """The PEM root bundle, for ``auth.token.rootcertbundle``."""
        if self._cert_path is None or self._httpd is None:
            raise TestbedError("token server: not started, so it has no certificate yet")
        return self._cert_path

    @property
    def requests(self) -> int:
        """How many ``GET /token`` requests arrived."""
        with self._lock:
            return self._requests

    @property
    def tokens_issued(self) -> int:
        """How many tokens were handed out (``mint`` included)."""
        with self._lock:
            return self._issued

    @property
    def failures(self) -> int:
        """How many requests were refused (bad credentials, bad scope or service)."""
        with self._lock:
            return self._failures

    # -- the protocol ----------------------------------------------------

    def mint(
        self,
        subject: str,
        access: Sequence[Mapping[str, Any]],
        *,
        ttl: int | None = None,
        issued_at: float | None = None,
    ) -> str:
        """Sign a token for ``subject`` with ``access`` entries ({type, name, actions}).

        jwt.md "Claim Set". ``issued_at`` (Unix seconds) lets a test make a token
        that is already expired at the registry.
        """
        if self._key is None:
            raise TestbedError("token server: not started, so it has no signing key yet")
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = issued_at if issued_at is not None else time.time()
        lifetime = self.ttl if ttl is None else ttl
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            # Shifted back by the registry's leeway, and rounded up to whole seconds,
            # so the effective life is at least ``ttl`` (module docstring).
            "exp": math.ceil(now + lifetime) - REGISTRY_LEEWAY,
            "nbf": math.floor(now) - REGISTRY_LEEWAY,
            "iat": math.floor(now),
            "jti": secrets.token_urlsafe(16),
            "access": [
                {"type": a["type"], "name": a["name"], "actions": list(a["actions"])}
                for a in access
            ],
        }
        signing_input = f"{_b64url(_compact(header))}.{_b64url(_compact(claims))}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        with self._lock:
            self._issued += 1
        return f"{signing_input}.{_b64url(signature)}"

    def handle_token_request(
        self, query: Mapping[str, list[str]], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Answer one ``GET /token``: token.md "Requesting a Token" (sans-I/O core).

        Returns the HTTP status and the JSON body.
        """
        with self._lock:
            self._requests += 1
        service = (query.get("service") or [self.service])[0]
        if service != self.service:
            return self._refuse(400, f"unknown service {service!r}; this is {self.service!r}")
        try:
            wanted = parse_scopes(query.get("scope", []))
        except ValueError as exc:
            return self._refuse(400, str(exc))
        user: str | None = None
        if authorization:
            user = self.authenticate(authorization)
            if user is None:
                # token.md: a failed authentication attempt is a 401, never a weaker token.
                return self._refuse(401, "invalid username or password")
        granted = []
        allowed = self._allowed(user)
        for (rtype, name), actions in wanted.items():
            # token.md: grant the intersection of asked and allowed, never an error.
            got = [a for a in actions if allowed is None or a in allowed]
            if got:
                granted.append({"type": rtype, "name": name, "actions": got})
        iat = time.time()
        token = self.mint(user or "", granted, issued_at=iat)
        log.debug("token server: issued %s for %s", granted, user or "anonymous")
        issued = dt.datetime.fromtimestamp(math.floor(iat), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": self.ttl,
            "issued_at": issued,
        }

    def _refuse(self, status: int, why: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._failures += 1
        log.debug("token server: refused with %d: %s", status, why)
        return status, {"details": why}

    def authenticate(self, authorization: str) -> str | None:
        """The user an ``Authorization: Basic`` value proves to be (RFC 7617), else ``None``.

        Never raises: any value a client may send is either good credentials or not.
        """
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except ValueError:  # binascii.Error, non-ASCII text, UnicodeDecodeError
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return user

    def _allowed(self, user: str | None) -> frozenset[str] | None:
        """The actions ``user`` may have on any resource; ``None`` means all of them."""
        if user is None:
            return frozenset({"pull"}) if self.anonymous_pull else frozenset()
        return self.acl.get(user)

    def _make_key_and_cert(self) -> bytes:
        """A 2048-bit RSA key and a self-signed CA certificate for it (PEM)."""
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
            from cryptography.x509.oid import NameOID
        except ImportError as exc:
            raise missing_python_package("cryptography", "signing registry tokens", exc) from exc

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # Go's x509 checks validity against the clock: start well in the past.
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._key = key
        # x5c is standard (not url-safe) base64 of DER: token.go base64.StdEncoding.
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        return cert.public_bytes(serialization.Encoding.PEM)
