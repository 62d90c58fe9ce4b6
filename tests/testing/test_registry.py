"""Integration tests of the test bed's registry, token server and push helper.

They run the real distribution registry (Debian's docker-registry 2.8) and
cross-check what it serves with skopeo, a client nobody here wrote.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from criolib._exec import run
from criolib.testing import (
    MissingHostPart,
    PushError,
    RegistryServer,
    RegistryStartError,
    TestImages,
    TokenServer,
    _registry,
    push_layout,
    require_binaries,
    serving_test_images,
)
from criolib.testing._push import parse_challenge
from criolib.testing._registry import AuthKind
from criolib.testing._tokens import REGISTRY_LEEWAY, parse_scopes

pytestmark = pytest.mark.integration

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = f"{MANIFEST}, {INDEX}"
TTL = 1  # seconds; a token is accepted for at least TTL and less than TTL + 1


# -- a tiny OCI image layout, built here ------------------------------------


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _image(layout: Path, text: bytes, arch: str) -> dict[str, Any]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    layer = _blob(layout, gzip.compress(raw.getvalue(), mtime=0))
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = _blob(layout, _json({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]},
    }))
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = _blob(layout, _json({
        "schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": [layer],
    }))
    return {"mediaType": MANIFEST, **manifest, "platform": {"architecture": arch, "os": "linux"}}


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout with ``hello`` (one manifest) and ``multi`` (an index of two)."""
    root = tmp_path_factory.mktemp("layout")
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    hello = _image(root, b"hello\n", "amd64")
    children = [_image(root, b"amd64\n", "amd64"), _image(root, b"arm64\n", "arm64")]
    index = _blob(root, _json({"schemaVersion": 2, "mediaType": INDEX, "manifests": children}))
    refs = [
        {"mediaType": MANIFEST, "digest": hello["digest"], "size": hello["size"],
         "annotations": {"org.opencontainers.image.ref.name": "hello"}},
        {"mediaType": INDEX, **index,
         "annotations": {"org.opencontainers.image.ref.name": "multi"}},
    ]
    (root / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": refs}))
    return root


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _pull_manifest(registry: RegistryServer, repo: str, ref: str) -> bytes:
    with registry.client() as client:
        resp = client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        assert resp.status_code == 200, resp.text
        return resp.content


def _skopeo_raw(registry: RegistryServer, repo: str, tag: str) -> bytes:
    argv = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    if registry.credentials:
        argv += ["--creds", "{}:{}".format(*registry.credentials)]
    argv.append(f"docker://{registry.host}/{repo}:{tag}")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return run(argv, env=env, timeout=30, what=f"skopeo inspect {repo}:{tag}").stdout


@pytest.fixture(scope="module", params=["none", "basic", "token"])
def registry(request: pytest.FixtureRequest) -> Iterator[RegistryServer]:
    require_binaries("docker-registry")
    with RegistryServer(auth=request.param, token_ttl=TTL) as server:
        yield server


# -- every auth variant -------------------------------------------------------


def test_serves_v2_and_guards_it(registry: RegistryServer) -> None:
    with httpx.Client(trust_env=False) as http:
        resp = http.get(f"{registry.url}/v2/")
    if registry.auth == "none":
        assert resp.status_code == 200
    else:
        assert resp.status_code == 401
        scheme, _ = parse_challenge(resp.headers["WWW-Authenticate"])
        assert scheme == ("basic" if registry.auth == "basic" else "bearer")
        with registry.client() as client:
            assert client.get("/v2/").status_code == 200


def test_push_and_pull_back_same_digest(registry: RegistryServer, layout: Path) -> None:
    pushed = push_layout(registry, layout, "hello", "test/hello", "v1")
    assert pushed.reference == f"{registry.host}/test/hello:v1"
    assert pushed.blobs_uploaded == 2 and pushed.manifests == 1
    data = _pull_manifest(registry, "test/hello", "v1")
    assert _digest_of(data) == pushed.digest
    # Pushing again uploads nothing: HEAD finds every blob.
    again = push_layout(registry, layout, "hello", "test/hello", "v1")
    assert again.blobs_uploaded == 0 and again.blobs_skipped == 2


def test_push_index_with_children(registry: RegistryServer, layout: Path) -> None:
    pushed = push_layout(registry, layout, "multi", "test/multi", "latest")
    assert pushed.media_type == INDEX and pushed.manifests == 3
    index = json.loads(_pull_manifest(registry, "test/multi", "latest"))
    for child in index["manifests"]:
        data = _pull_manifest(registry, "test/multi", child["digest"])
        assert _digest_of(data) == child["digest"]


def test_skopeo_sees_the_same_bytes(registry: RegistryServer, layout: Path) -> None:
    require_binaries("skopeo")
    pushed = push_layout(registry, layout, "hello", "test/skopeo", "v1")
    assert _digest_of(_skopeo_raw(registry, "test/skopeo", "v1")) == pushed.digest


# -- auth failures --------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_anonymous_and_wrong_password_are_refused(auth: AuthKind, layout: Path) -> None:
    require_binaries("docker-registry")
    with RegistryServer(auth=auth) as server:
        push_layout(server, layout, "hello", "test/private", "v1")
        path = "/v2/test/private/manifests/v1"
        with server.client(authenticated=False) as anon:
            assert anon.get(path, headers={"Accept": ACCEPT}).status_code == 401
        with server.client(credentials=("tester", "wrong")) as client:
            assert client.get(path, headers={"Accept": ACCEPT}).status_code == 401
        if server.token_server is not None:
            assert server.token_server.failures >= 1
        with pytest.raises(PushError, match=r"test/private:v2: .*HTTP 401") as info:
            push_layout(server, layout, "hello", "test/private", "v2",
                        credentials=("tester", "wrong"))
    assert "credentials missing or refused" in str(info.value)


def test_token_expires_and_is_refreshed(layout: Path) -> None:
    require_binaries("docker-registry")
    with RegistryServer(auth="token", token_ttl=TTL) as server:
        tokens = server.token_server
        assert tokens is not None
        push_layout(server, layout, "hello", "test/ttl", "v1")
        # A raw token: good now, refused once ttl passes (the leeway shift works).
        raw = tokens.mint("tester", [
            {"type": "repository", "name": "test/ttl", "actions": ["pull"]}])
        headers = {"Authorization": f"Bearer {raw}", "Accept": ACCEPT}
        with httpx.Client(base_url=server.url, trust_env=False) as http:
            assert http.get("/v2/test/ttl/manifests/v1", headers=headers).status_code == 200
            with server.client() as client:
                assert client.get("/v2/test/ttl/manifests/v1",
                                  headers={"Accept": ACCEPT}).status_code == 200
                before = tokens.tokens_issued
                time.sleep(TTL + 1.05)
                resp = http.get("/v2/test/ttl/manifests/v1", headers=headers)
                assert resp.status_code == 401
                assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
                # The same client goes on working, with a fresh token.
                assert client.get("/v2/test/ttl/manifests/v1",
                                  headers={"Accept": ACCEPT}).status_code == 200
                assert tokens.tokens_issued > before
        before = tokens.tokens_issued
        push_layout(server, layout, "multi", "test/ttl", "v2")
        assert tokens.tokens_issued > before


def test_token_server_protocol() -> None:
    with TokenServer(users={"alice": "pw", "reader": "pw"}, acl={"reader": ["pull"]},
                     ttl=30) as tokens, httpx.Client(trust_env=False) as http:
        def claims(auth: tuple[str, str] | None, *scopes: str) -> dict[str, Any]:
            resp = http.get(tokens.realm, auth=auth, params=[
                ("service", tokens.service), *(("scope", s) for s in scopes)])
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["token"] == body["access_token"] and body["expires_in"] == 30
            payload = body["token"].split(".")[1]
            doc: dict[str, Any] = json.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return doc

        doc = claims(("alice", "pw"), "repository:a/b:pull,push", "registry:catalog:*")
        assert doc["sub"] == "alice" and doc["aud"] == tokens.service
        # exp is rounded up to a whole second: the token lives 30 to 31 s at the registry.
        assert doc["exp"] + REGISTRY_LEEWAY - doc["iat"] in (30, 31)
        assert doc["access"] == [
            {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ]
        assert claims(("reader", "pw"), "repository:a/b:pull,push")["access"] == [
            {"type": "repository", "name": "a/b", "actions": ["pull"]}]
        assert claims(None, "repository:a/b:pull")["access"] == []
        assert http.get(tokens.realm, auth=("alice", "nope")).status_code == 401
        assert tokens.failures == 1 and tokens.requests == 4
    assert parse_scopes(["repository:localhost:5000/x:pull"]) == {
        ("repository", "localhost:5000/x"): ["pull"]}


# -- startup failures ---------------------------------------------------------------


def test_registry_dies_early_with_log_tail() -> None:
    require_binaries("docker-registry")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RegistryStartError, match="address already in use") as info:
            RegistryServer(port=port).start()
    assert f"127.0.0.1:{port}" in str(info.value)


def test_missing_binary_names_the_package() -> None:
    with pytest.raises(MissingHostPart, match="apt-get install docker-registry"):
        RegistryServer(binary="/nonexistent/docker-registry").start()


def test_registry_binary_is_major_version_2() -> None:
    """The token server's leeway shift is distribution 2.x's 60 s (registry/auth/token)."""
    require_binaries("docker-registry")
    out = run(["docker-registry", "--version"], env={}, timeout=10).stdout.decode()
    match = re.search(r"\bv?(\d+)\.(\d+)\.(\d+)", out)
    assert match is not None, out
    assert match.group(1) == "2", f"{out.strip()}: REGISTRY_LEEWAY assumes distribution 2.x"


class _Impostor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_foreign_server_on_the_port_is_not_taken_for_the_registry(tmp_path: Path) -> None:
    """Another server answers /v2/ on the port while "our registry" has not bound it yet."""
    slow = tmp_path / "slow-registry"  # starts, never listens: the impostor answers instead
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    impostor = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = impostor.server_address[1]
        server = RegistryServer(binary=str(slow), port=port, startup_timeout=0.5)
        with pytest.raises(RegistryStartError, match="answered 200 without our X-Criolib-Registry"):
            server.start()
        assert server.pid is None  # stopped and reaped
    finally:
        impostor.shutdown()
        impostor.server_close()
        thread.join()


def test_a_lost_port_race_is_retried_on_another_port(monkeypatch: pytest.MonkeyPatch) -> None:
    require_binaries("docker-registry")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: bind(2) fails, connect is refused
        port = taken.getsockname()[1]
        ports = iter([port])
        real = _registry._free_port
        monkeypatch.setattr(_registry, "_free_port", lambda: next(ports, None) or real())
        with RegistryServer() as server:
            assert server.host != f"127.0.0.1:{port}"
            with server.client() as client:
                assert client.get("/v2/").status_code == 200


_ORPHAN = """
import sys
from criolib.testing import RegistryServer
server = RegistryServer().start()
print(server.pid, server.workdir, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_the_registry_dies_with_the_process_that_started_it() -> None:
    require_binaries("docker-registry")
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert parent.stdout is not None
    line = parent.stdout.readline().decode()
    pid_text, _, workdir = line.strip().partition(" ")
    try:
        pid = int(pid_text)
        assert _alive(pid)
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.communicate(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(pid), f"registry pid {pid} outlived its parent"
    finally:
        parent.kill()
        shutil.rmtree(workdir, ignore_errors=True)


# -- scopes and grants, end to end ------------------------------------------------------------

READER = ("reader", "read-only")
PULL_ONLY_USERS = {"tester": "criolib-secret", READER[0]: READER[1]}


@pytest.fixture(scope="module")
def scoped(criolib_test_images: TestImages) -> Iterator[RegistryServer]:
    """Token auth where ``reader`` may only pull and anonymous callers may pull."""
    require_binaries("docker-registry")
    with serving_test_images(criolib_test_images, auth="token", names=["busybox"],
                             users=PULL_ONLY_USERS, acl={"reader": ["pull"]},
                             anonymous_pull=True) as server:
        yield server


def _bearer(server: RegistryServer, repository: str, *actions: str) -> dict[str, str]:
    assert server.token_server is not None
    token = server.token_server.mint(
        "tester", [{"type": "repository", "name": repository, "actions": list(actions)}])
    return {"Authorization": f"Bearer {token}", "Accept": ACCEPT}


def _refused_for_scope(resp: httpx.Response) -> bool:
    return resp.status_code == 401 and 'error="insufficient_scope"' in resp.headers.get(
        "WWW-Authenticate", "")


def test_a_token_for_one_repository_is_refused_on_another(scoped: RegistryServer) -> None:
    headers = _bearer(scoped, "testbed/busybox", "pull")
    with httpx.Client(base_url=scoped.url, trust_env=False) as http:
        assert http.get("/v2/testbed/busybox/manifests/latest", headers=headers
                        ).status_code == 200
        assert _refused_for_scope(http.get("/v2/testbed/other/manifests/latest",
                                           headers=headers))
        assert _refused_for_scope(http.get("/v2/testbed/busybox-other/manifests/latest",
                                           headers=headers))


def test_a_pull_token_cannot_push(scoped: RegistryServer) -> None:
    with httpx.Client(base_url=scoped.url, trust_env=False) as http:
        pull = _bearer(scoped, "testbed/busybox", "pull")
        assert _refused_for_scope(http.post("/v2/testbed/busybox/blobs/uploads/", headers=pull))
        both = _bearer(scoped, "testbed/busybox", "pull", "push")
        assert http.post("/v2/testbed/busybox/blobs/uploads/", headers=both).status_code == 202


def test_acl_lets_a_user_pull_but_not_push(scoped: RegistryServer, layout: Path) -> None:
    with scoped.client(credentials=READER) as client:
        resp = client.get("/v2/testbed/busybox/manifests/latest", headers={"Accept": ACCEPT})
        assert resp.status_code == 200
    with pytest.raises(PushError, match=r"testbed/busybox:by-reader: .*HTTP 401"):
        push_layout(scoped, layout, "hello", "testbed/busybox", "by-reader",
                    credentials=READER)
    push_layout(scoped, layout, "hello", "testbed/busybox", "by-tester")  # the first user may


def test_anonymous_pull(scoped: RegistryServer) -> None:
    with scoped.client(authenticated=False) as anon:
        resp = anon.get("/v2/testbed/busybox/manifests/latest", headers={"Accept": ACCEPT})
        assert resp.status_code == 200
        assert anon.post("/v2/testbed/busybox/blobs/uploads/").status_code == 401


def test_registry_storage_goes_to_a_tmpfs_unless_tmpdir_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert _registry._scratch_parent() is None
    monkeypatch.delenv("TMPDIR")
    with open("/proc/self/mounts") as mounts:
        shm_is_tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts)
    assert _registry._scratch_parent() == ("/dev/shm" if shm_is_tmpfs else None)
