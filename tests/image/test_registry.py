"""RegistryClient against the real distribution registry: pulls and auth.

Anonymous, htpasswd basic and bearer-token registries from the test bed serve
every test image; the client must pull each manifest and blob with the test
bed's digests, refresh expired tokens, and name host, repository and reference
when it is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from criolib.image._errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    Unauthorized,
)
from criolib.image._registry import RegistryClient
from criolib.testing import RegistryServer, TestImage, TestImages, serving_test_images
from criolib.testing._faultproxy import FaultProxy

pytestmark = pytest.mark.integration

REGISTRIES = ["criolib_registry", "criolib_registry_basic", "criolib_registry_token"]
READER = ("reader", "reader-secret")
TESTER = ("tester", "criolib-secret")


def blob_bytes(images: TestImages, digest: str) -> bytes:
    return (images.layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def client_for(registry: RegistryServer, **options: object) -> RegistryClient:
    options.setdefault("credentials", registry.credentials)
    options.setdefault("backoff", 0.01)
    return RegistryClient(registry.host, insecure=True, **options)  # type: ignore[arg-type]


def _every_manifest(image: TestImage) -> Iterator[TestImage]:
    yield image
    for instance in image.instances:
        yield from _every_manifest(instance)


@pytest.fixture(scope="module")
def short_tokens(criolib_test_images: TestImages) -> Iterator[RegistryServer]:
    """A token registry whose tokens live 1 s, with a pull-only reader and anonymous pull."""
    with serving_test_images(
        criolib_test_images, auth="token", names=["busybox"], token_ttl=1,
        users=dict([TESTER, READER]), acl={"reader": ["pull"]}, anonymous_pull=True,
    ) as registry:
        yield registry


# -- pulls -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", REGISTRIES)
def test_pulls_every_test_image(fixture: str, request: pytest.FixtureRequest,
                                criolib_test_images: TestImages) -> None:
    registry: RegistryServer = request.getfixturevalue(fixture)
    with client_for(registry) as client:
        for image in criolib_test_images:
            by_tag = client.get_manifest(image.repository, image.tag)
            assert by_tag.digest == image.digest
            assert by_tag.media_type == image.descriptor.media_type
            assert by_tag.data == blob_bytes(criolib_test_images, image.digest)
            for manifest in _every_manifest(image):
                got = client.get_manifest(image.repository, manifest.digest)
                assert got.digest == manifest.digest
                blobs = [*manifest.layers]
                if manifest.config_digest:
                    head = client.head_blob(image.repository, manifest.config_digest)
                    data = client.get_blob(image.repository, manifest.config_digest).read()
                    assert head.size == len(data)
                for layer in blobs:
                    with client.get_blob(image.repository, layer.digest, layer.size) as stream:
                        data = stream.read()
                        assert stream.verified
                    assert hashlib.sha256(data).hexdigest() == layer.digest.partition(":")[2]
                    assert client.blob_exists(image.repository, layer.digest)
        if registry.auth == "token":
            assert client.tokens_fetched == len(list(criolib_test_images))


def test_one_client_shared_by_threads(criolib_registry_token: RegistryServer,
                                      criolib_test_images: TestImages) -> None:
    jobs = [(image.repository, layer.digest, layer.size)
            for image in criolib_test_images for layer in image.layers]
    with client_for(criolib_registry_token) as client, ThreadPoolExecutor(8) as pool:
        def pull(job: tuple[str, str, int]) -> bytes:
            with client.get_blob(*job) as stream:
                return stream.read()

        for (_, digest, _), data in zip(jobs * 2, pool.map(pull, jobs * 2), strict=True):
            assert data == blob_bytes(criolib_test_images, digest)
        # Tokens are shared: at most one per repository, plus races between threads.
        assert client.tokens_fetched < len(jobs) * 2


def test_head_manifest_and_index_type(criolib_registry: RegistryServer,
                                      criolib_test_images: TestImages) -> None:
    image = criolib_test_images["multiarch"]
    with client_for(criolib_registry) as client:
        info = client.head_manifest(image.repository, image.tag)
        assert (info.digest, info.media_type) == (image.digest, image.descriptor.media_type)
        assert info.size == image.descriptor.size
        doc = json.loads(client.get_manifest(image.repository, image.tag).data)
        # The test bed's instances leave out the attestation manifest the index also holds.
        assert {i.digest for i in image.instances} < {m["digest"] for m in doc["manifests"]}


def test_missing_things_raise_lookup_errors(criolib_registry: RegistryServer,
                                            criolib_test_images: TestImages) -> None:
    repo = criolib_test_images["busybox"].repository
    host = criolib_registry.host
    with client_for(criolib_registry) as client:
        with pytest.raises(ManifestUnknown) as info:
            client.get_manifest(repo, "no-such-tag")
        assert info.value.codes == ("MANIFEST_UNKNOWN",)
        assert f"{host}/{repo}:no-such-tag" in str(info.value)
        assert (info.value.host, info.value.repository) == (host, repo)
        with pytest.raises(BlobUnknown):
            client.get_blob(repo, "sha256:" + "0" * 64)
        assert not client.blob_exists(repo, "sha256:" + "0" * 64)
        with pytest.raises(NameUnknown) as name:  # distribution says so for tag lists
            client.list_tags("testbed/nothing-here")
        assert isinstance(name.value, LookupError)


# -- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["criolib_registry_basic", "criolib_registry_token"])
def test_wrong_password_is_unauthorized_naming_the_host(fixture: str,
                                                        request: pytest.FixtureRequest) -> None:
    registry: RegistryServer = request.getfixturevalue(fixture)
    with client_for(registry, credentials=("tester", "wrong")) as client, \
            pytest.raises(Unauthorized) as info:
        client.get_manifest("testbed/busybox", "latest")
    err = info.value
    assert err.credentials_given
    assert registry.host in str(err) and "testbed/busybox:latest" in str(err)
    assert "check" in str(err)


@pytest.mark.parametrize("fixture", ["criolib_registry_basic", "criolib_registry_token"])
def test_no_credentials_is_unauthorized(fixture: str, request: pytest.FixtureRequest) -> None:
    registry: RegistryServer = request.getfixturevalue(fixture)
    with client_for(registry, credentials=None) as client, pytest.raises(Unauthorized) as info:
        client.get_manifest("testbed/busybox", "latest")
    assert not info.value.credentials_given
    assert info.value.status == 401
    assert "log in" in str(info.value)


def test_anonymous_token_pull(short_tokens: RegistryServer,
                              criolib_test_images: TestImages) -> None:
    image = criolib_test_images["busybox"]
    with client_for(short_tokens, credentials=None) as client:
        assert client.get_manifest(image.repository, image.tag).digest == image.digest
        assert client.tokens_fetched == 1


def test_pull_only_user_cannot_push(short_tokens: RegistryServer,
                                    criolib_test_images: TestImages) -> None:
    image = criolib_test_images["busybox"]
    with client_for(short_tokens, credentials=READER) as client:
        manifest = client.get_manifest(image.repository, image.tag)
        with pytest.raises(Denied) as info:
            client.put_manifest(image.repository, "stolen", manifest.data, manifest.media_type)
        assert short_tokens.host in str(info.value)
        assert info.value.repository == image.repository
        with pytest.raises(Denied):
            client.mount_blob("testbed/elsewhere", image.layers[0].digest, image.repository)


def test_token_refreshed_after_expiry(short_tokens: RegistryServer,
                                      criolib_test_images: TestImages) -> None:
    image = criolib_test_images["busybox"]
    server = short_tokens.token_server
    assert server is not None
    before = server.tokens_issued
    with client_for(short_tokens) as client:
        client.get_manifest(image.repository, image.tag)
        client.get_manifest(image.repository, image.digest)  # cached token
        assert server.tokens_issued - before == 1
        time.sleep(1.2)  # ttl 1 s: the cached token has run out
        client.get_manifest(image.repository, image.tag)
        assert server.tokens_issued - before == 2
        assert client.tokens_fetched == 2


def test_refused_token_is_refreshed_once(short_tokens: RegistryServer,
                                         criolib_test_images: TestImages) -> None:
    """A token the client thinks good but the registry refuses (invalid_token) is replaced."""
    image = criolib_test_images["busybox"]
    with FaultProxy(short_tokens.url) as proxy, \
            RegistryClient(proxy.host, insecure=True, credentials=TESTER) as client:
        client.get_manifest(image.repository, image.tag)
        server = short_tokens.token_server
        assert server is not None
        # Swap the cached token for one that expired 10 s ago but that the client
        # believes good forever (a clock that lies): the registry will refuse it.
        stale = server.mint("tester", [{"type": "repository", "name": image.repository,
                                        "actions": ["pull"]}], issued_at=time.time() - 10)
        for bucket in client._session.auth._tokens.values():
            bucket[:] = [type(t)(stale, t.scopes, math.inf) for t in bucket]
        proxy.clear()
        assert client.get_manifest(image.repository, image.tag).digest == image.digest
        gets = [r for r in proxy.requests if "/manifests/" in r.path]
        assert len(gets) == 2  # refused once, then sent with a fresh token
        assert gets[0].headers["authorization"] == f"Bearer {stale}"
        assert gets[1].headers["authorization"] != f"Bearer {stale}"
        assert client.tokens_fetched == 2


def test_basic_credentials_sent_up_front(criolib_registry_basic: RegistryServer) -> None:
    """After the ping, Basic credentials go with the first request: no 401 round trip."""
    with FaultProxy(criolib_registry_basic.url) as proxy, \
            RegistryClient(proxy.host, insecure=True,
                           credentials=criolib_registry_basic.credentials) as client:
        client.ping()
        proxy.clear()
        client.get_manifest("testbed/busybox", "latest")
        (only,) = proxy.requests
        assert only.headers["authorization"].startswith("Basic ")


def test_layout_path_helper(criolib_test_images: TestImages) -> None:
    image = criolib_test_images["busybox"]
    data = blob_bytes(criolib_test_images, image.digest)
    assert hashlib.sha256(data).hexdigest() == image.digest.partition(":")[2]
    assert Path(criolib_test_images.layout).is_dir()
