"""RegistryClient without a registry: the auth texts, error mapping, retries and paging.

httpx.MockTransport plays registries that the real one cannot: paginated tag
lists (distribution 2.8 ignores ``n``), OAuth2 identity tokens, Retry-After
dates, https-only hosts, oversized or mislabelled manifests.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import io
import json
import time
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from criolib.image._credentials import Credentials
from criolib.image._errors import (
    Denied,
    InvalidArgument,
    InvalidResponse,
    ManifestUnknown,
    RegistryError,
    RegistryUnavailable,
    Unauthorized,
)
from criolib.image._registry import MAX_MANIFEST_SIZE, RegistryClient
from criolib.image._registry_auth import (
    Challenge,
    normalize_credentials,
    parse_challenges,
    parse_token_response,
)
from criolib.image._registry_http import retry_after
from criolib.testing.strategies_http import challenges, format_challenge, header_texts

OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {}, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()

Handler = Callable[[httpx.Request], httpx.Response]


def mock(handler: Handler, **options: object) -> RegistryClient:
    options.setdefault("backoff", 0.001)
    return RegistryClient("registry.test", transport=httpx.MockTransport(handler),
                          **options)  # type: ignore[arg-type]


def errors(code: str, message: str = "") -> dict[str, object]:
    return {"errors": [{"code": code, "message": message, "detail": None}]}


# -- challenges and tokens ---------------------------------------------------------------


@given(challenges())
def test_challenge_round_trip(challenge: tuple[str, dict[str, tuple[str, bool]]]) -> None:
    scheme, params = challenge
    (got,) = parse_challenges([format_challenge(scheme, params)])
    assert got == Challenge(scheme.lower(), {k.lower(): v for k, (v, _) in params.items()})


@given(st.lists(challenges(), min_size=1, max_size=3))
def test_several_challenges_in_one_header(many: list[tuple[str, dict[str, tuple[str, bool]]]],
                                          ) -> None:
    # RFC 7235 §4.1: challenges separated by commas; each needs a param to be unambiguous.
    many = [(s, p) for s, p in many if p]
    text = ", ".join(format_challenge(s, p) for s, p in many)
    assert [c.scheme for c in parse_challenges([text])] == [s.lower() for s, _ in many]


@given(header_texts())
def test_any_header_text_parses(text: str) -> None:
    for challenge in parse_challenges([text]):
        assert challenge.scheme == challenge.scheme.lower()


def test_registry_challenges() -> None:
    got = parse_challenges([
        'Basic realm="Registry Realm", Bearer realm="https://auth.test/token",'
        'service="registry.test",scope="repository:a/b:pull,push",error="invalid_token"',
        "Negotiate abc123==",
    ])
    assert got == [
        Challenge("basic", {"realm": "Registry Realm"}),
        Challenge("bearer", {"realm": "https://auth.test/token", "service": "registry.test",
                             "scope": "repository:a/b:pull,push", "error": "invalid_token"}),
        Challenge("negotiate", {"token68": "abc123=="}),
    ]


def test_token_response_fields() -> None:
    now = time.time()
    assert parse_token_response(b'{"token": "t"}', received=now) == ("t", 60.0)
    assert parse_token_response(b'{"access_token": "a", "expires_in": 300}',
                                received=now) == ("a", 300.0)
    issued = dt.datetime.fromtimestamp(now - 100, dt.UTC).isoformat().replace("+00:00", "Z")
    _, life = parse_token_response(
        json.dumps({"token": "t", "expires_in": 300, "issued_at": issued}).encode(),
        received=now)
    assert 199 < life < 201
    # An issued_at in the future (clock skew) is ignored.
    future = dt.datetime.fromtimestamp(now + 1000, dt.UTC).isoformat()
    assert parse_token_response(json.dumps({"token": "t", "issued_at": future}).encode(),
                                received=now)[1] == 60.0
    for bad in (b"[]", b"{}", b"nope", b'{"token": "t", "expires_in": -1}'):
        with pytest.raises(InvalidResponse, match=r"auth\.example"):
            parse_token_response(bad, received=now, realm="https://auth.example/token")


def test_credentials_forms() -> None:
    class Creds:
        username, password, identity_token = "u", "p", ""

    assert normalize_credentials(("u", "p")) == normalize_credentials(Creds())
    assert normalize_credentials(None) is None
    with pytest.raises(InvalidArgument, match="contains ':'"):
        normalize_credentials(("a:b", "p"))
    with pytest.raises(InvalidArgument, match="credentials"):
        normalize_credentials(("u",))
    assert "p" not in repr(normalize_credentials(("u", "p")))


def test_retry_after_forms() -> None:
    def resp(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(resp("7"), 1.0) == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after(resp(later), 1.0) <= 30
    assert retry_after(resp("Wed, 21 Oct 2015 07:28:00 GMT"), 1.0) == 1.0  # past
    assert retry_after(resp("soon"), 2.0) == 2.0


# -- the flow against mock registries ----------------------------------------------------


def bearer_registry(tokens: list[httpx.Request], *, expires_in: int = 60) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            tokens.append(request)
            return httpx.Response(200, json={"token": f"tok{len(tokens)}",
                                             "expires_in": expires_in})
        if request.headers.get("Authorization", "").startswith("Bearer tok"):
            if request.url.path == "/v2/":
                return httpx.Response(200)
            return httpx.Response(200, content=MANIFEST, headers={
                "Content-Type": OCI, "Docker-Content-Digest": DIGEST})
        return httpx.Response(401, json=errors("UNAUTHORIZED"), headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="reg"'})
    return handler


def test_bearer_token_asked_with_scope_and_cached() -> None:
    tokens: list[httpx.Request] = []
    with mock(bearer_registry(tokens), credentials=("user", "pw")) as client:
        assert client.get_manifest("a/b", "latest").digest == DIGEST
        assert client.get_manifest("a/b", DIGEST).digest == DIGEST
    (token,) = tokens
    query = parse_qs(token.url.query.decode())
    assert query == {"service": ["reg"], "scope": ["repository:a/b:pull"], "account": ["user"]}
    assert token.headers["Authorization"].startswith("Basic ")


def test_identity_token_uses_oauth2_post() -> None:
    tokens: list[httpx.Request] = []
    with mock(bearer_registry(tokens),
              credentials=Credentials(identity_token="refresh-me")) as client:
        client.get_manifest("a/b", "latest")
    (token,) = tokens
    assert token.method == "POST"
    form = parse_qs(token.content.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["refresh-me"]
    assert form["scope"] == ["repository:a/b:pull"]


def test_token_service_refusal_is_unauthorized() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(401, json={"details": "bad password"})
        return httpx.Response(401, headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="reg"'})

    with mock(handler, credentials=("user", "pw")) as client, \
            pytest.raises(Unauthorized, match="bad password") as info:
        client.get_manifest("a/b", "latest")
    assert info.value.credentials_given and "registry.test/a/b:latest" in str(info.value)


def test_https_only_unless_insecure() -> None:
    schemes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        if request.url.scheme == "https":
            raise httpx.ConnectError("TLS handshake failed", request=request)
        return httpx.Response(200)

    with mock(handler, retries=0) as client, pytest.raises(RegistryUnavailable,
                                                         match="mark it insecure"):
        client.ping()
    assert schemes == ["https"]
    schemes.clear()
    with mock(handler, insecure=True) as client:
        assert client.ping() == "http"
    assert schemes == ["https", "http"]


def test_docker_io_is_reached_at_registry_1() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(200)

    with RegistryClient("docker.io", transport=httpx.MockTransport(handler)) as client:
        client.ping()
    assert hosts == ["registry-1.docker.io"]


@pytest.mark.parametrize(("status", "body", "cls"), [
    (404, errors("MANIFEST_UNKNOWN", "manifest unknown"), ManifestUnknown),
    (403, errors("DENIED", "requested access to the resource is denied"), Denied),
    (404, None, ManifestUnknown),
    (400, errors("MANIFEST_INVALID"), RegistryError),
])
def test_error_bodies_become_classes(status: int, body: dict[str, object] | None,
                                     cls: type[RegistryError]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(status, json=body) if body else httpx.Response(status)

    with mock(handler) as client, pytest.raises(cls) as info:
        client.get_manifest("a/b", "v1")
    err = info.value
    assert type(err) is cls
    assert (err.host, err.repository, err.reference, err.status) == ("registry.test", "a/b",
                                                                     "v1", status)
    assert "registry.test/a/b:v1" in str(err)
    if body:
        assert err.codes == (body["errors"][0]["code"],)  # type: ignore[index]
    assert calls.count("/v2/a/b/manifests/v1") == 1  # 4xx: never retried


def test_5xx_retried_with_backoff_then_success() -> None:
    answers = iter([503, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        status = next(answers)
        return httpx.Response(status, content=MANIFEST if status == 200 else b"",
                              headers={"Content-Type": OCI})

    with mock(handler) as client:
        assert client.get_manifest("a/b", "v1").digest == DIGEST


def manifest_registry(content: bytes, headers: dict[str, str]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(200, content=content, headers=headers)
    return handler


def test_oversized_manifest_refused() -> None:
    big = b" " * (MAX_MANIFEST_SIZE + 1)
    with mock(manifest_registry(big, {"Content-Type": OCI})) as client, \
            pytest.raises(InvalidResponse, match="more than"):
        client.get_manifest("a/b", "v1")


def test_manifest_media_type_guessed_when_generic() -> None:
    with mock(manifest_registry(MANIFEST, {"Content-Type": "application/json"})) as client:
        got = client.get_manifest("a/b", "v1")
    assert (got.media_type, got.digest) == (OCI, DIGEST)


def test_manifest_content_length_checked() -> None:
    # MockTransport does not enforce framing as h11 does: the client checks it itself.
    handler = manifest_registry(MANIFEST, {"Content-Type": OCI,
                                           "Content-Length": str(len(MANIFEST) + 5)})
    with mock(handler) as client, pytest.raises(InvalidResponse, match="Content-Length"):
        client.get_manifest("a/b", "v1")


def test_tag_pages_followed_through_link() -> None:
    pages = {None: (["a", "b"], "</v2/r/tags/list?n=2&last=b>; rel=\"next\""),
             "b": (["c", "d"], "<http://registry.test/v2/r/tags/list?n=2&last=d>; rel=next"),
             "d": (["e"], None)}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        seen.append(str(request.url.params))
        tags, link = pages[request.url.params.get("last")]
        return httpx.Response(200, json={"name": "r", "tags": tags},
                              headers={"Link": link} if link else {})

    with mock(handler, insecure=True) as client:
        client._session._scheme = "http"  # skip the ping's https attempt
        assert client.list_tags("r", page_size=2) == ["a", "b", "c", "d", "e"]
    assert seen == ["n=2", "n=2&last=b", "n=2&last=d"]


def test_tag_pages_that_loop_or_leave_the_host() -> None:
    for link in ("</v2/r/tags/list>; rel=\"next\"",
                 "<https://elsewhere.test/v2/r/tags/list?last=x>; rel=\"next\""):
        def handler(request: httpx.Request, link: str = link) -> httpx.Response:
            if request.url.path == "/v2/":
                return httpx.Response(200)
            return httpx.Response(200, json={"tags": ["a"]}, headers={"Link": link})

        with mock(handler) as client, pytest.raises(InvalidResponse):
            client.list_tags("r")


@pytest.mark.parametrize("seekable", [True, False])
def test_upload_body_sent_again_after_a_token_refresh(seekable: bool) -> None:
    """A PUT refused with invalid_token is re-sent; its stream is rewound, or the error says why."""
    data = b"layer bytes" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tokens: list[httpx.Request] = []
    puts: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        challenge = {"WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="reg"'}
        if request.url.host == "auth.test":
            tokens.append(request)
            return httpx.Response(200, json={"token": f"tok{len(tokens)}"})
        if request.url.path == "/v2/":
            return httpx.Response(401, headers=challenge)
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/1"})
        if request.method == "PUT":
            puts.append(b"".join(request.stream))  # type: ignore[arg-type]
            if len(puts) == 1:  # the first token "expires" on the way
                return httpx.Response(401, headers={
                    "WWW-Authenticate": challenge["WWW-Authenticate"] + ',error="invalid_token"'})
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(204)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.left = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            n = min(len(buffer), len(self.left))
            buffer[:n], self.left = self.left[:n], self.left[n:]
            return n

    class Transport(httpx.BaseTransport):
        """Like MockTransport, but without its request.read(), which caches the body."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return handler(request)

    stream = io.BytesIO(data) if seekable else io.BufferedReader(Pipe())
    with RegistryClient("registry.test", transport=Transport(), credentials=("u", "p"),
                        retries=0) as client:
        if seekable:
            client.put_blob("a/b", stream, digest, len(data))
            assert puts == [data, data] and len(tokens) == 2
        else:
            with pytest.raises(RegistryUnavailable, match="cannot seek back"):
                client.put_blob("a/b", stream, digest, len(data))
