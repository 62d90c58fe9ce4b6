"""RegistryClient under faults: a FaultProxy between it and the real registry.

Retries (5xx, 429 with Retry-After, timeouts), resumed downloads (a cut
connection, a short body, a registry without Range), corrupt bytes, manifests
that lie about their size, and retries that run out.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import pytest

from criolib.image._errors import (
    DigestMismatch,
    RegistryError,
    RegistryUnavailable,
    TooManyRequests,
)
from criolib.image._registry import RegistryClient
from criolib.testing import RegistryServer, TestImage, TestImages
from criolib.testing._faultproxy import FaultProxy
from tests.image.test_registry import blob_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(criolib_registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(criolib_registry.url) as proxy:
        yield proxy


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[RegistryClient]:
    with RegistryClient(proxy.host, insecure=True, backoff=0.01, retries=3) as client:
        client.ping()
        proxy.clear()
        yield client


@pytest.fixture
def image(criolib_test_images: TestImages) -> TestImage:
    return criolib_test_images["multilayer"]


def big_layer(image: TestImage) -> tuple[str, int]:
    layer = max(image.layers, key=lambda d: d.size)
    assert layer.size > 100_000
    return layer.digest, layer.size


def seen(proxy: FaultProxy, method: str, fragment: str) -> list[dict[str, str]]:
    return [dict(r.headers) for r in proxy.requests if r.method == method and fragment in r.path]


# -- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_then_success(status: int, proxy: FaultProxy, client: RegistryClient,
                                   image: TestImage) -> None:
    proxy.status(status, path="/manifests/")
    assert client.get_manifest(image.repository, image.tag).digest == image.digest
    assert len(seen(proxy, "GET", "/manifests/")) == 2


def test_429_honours_retry_after(proxy: FaultProxy, client: RegistryClient,
                                 image: TestImage) -> None:
    proxy.status(429, retry_after=1, path="/manifests/")
    start = time.monotonic()
    assert client.get_manifest(image.repository, image.tag).digest == image.digest
    waited = time.monotonic() - start
    assert 0.95 <= waited < 3.0
    assert len(seen(proxy, "GET", "/manifests/")) == 2


def test_timeout_is_retried(proxy: FaultProxy, image: TestImage) -> None:
    with RegistryClient(proxy.host, insecure=True, backoff=0.01, timeout=0.3) as client:
        client.ping()
        proxy.delay(1.0, path="/manifests/")
        assert client.get_manifest(image.repository, image.tag).digest == image.digest


def test_retries_run_out(proxy: FaultProxy, client: RegistryClient, image: TestImage) -> None:
    proxy.status(503, path="/manifests/", times=None)
    with pytest.raises(RegistryUnavailable) as info:
        client.get_manifest(image.repository, image.tag)
    err = info.value
    assert "503" in err.cause and "UNAVAILABLE" in err.cause
    assert err.host == proxy.host and err.repository == image.repository
    assert f"{image.repository}:{image.tag}" in str(err)
    assert len(seen(proxy, "GET", "/manifests/")) == 4  # 1 + retries


def test_429_to_the_end_is_too_many_requests(proxy: FaultProxy, client: RegistryClient,
                                             image: TestImage) -> None:
    proxy.status(429, path="/blobs/", times=None)
    with pytest.raises(TooManyRequests) as info:
        client.get_blob(image.repository, image.layers[0].digest)
    assert info.value.status == 429


def test_4xx_is_not_retried(proxy: FaultProxy, client: RegistryClient,
                            image: TestImage) -> None:
    proxy.status(400, path="/manifests/")
    with pytest.raises(RegistryError) as info:
        client.get_manifest(image.repository, image.tag)
    # A 400 with code UNKNOWN has no more specific class; above all it is not a
    # RegistryUnavailable (retries exhausted), which it would be if retried.
    assert type(info.value) is RegistryError
    assert info.value.status == 400
    assert (info.value.host, info.value.repository, info.value.reference) == (
        proxy.host, image.repository, image.tag)
    assert f"{proxy.host}/{image.repository}:{image.tag}" in str(info.value)
    assert len(seen(proxy, "GET", "/manifests/")) == 1


def test_upload_retried_from_the_start(proxy: FaultProxy, client: RegistryClient,
                                       criolib_test_images: TestImages,
                                       image: TestImage) -> None:
    layer = image.layers[0]
    proxy.status(500, method="PUT", path="/blobs/uploads/")
    data = blob_bytes(criolib_test_images, layer.digest)
    client.put_blob("faults/upload", io.BytesIO(data), layer.digest, layer.size)
    assert len(seen(proxy, "POST", "/blobs/uploads/")) == 2
    assert client.get_blob("faults/upload", layer.digest, layer.size).read() == data


# -- resumed downloads -----------------------------------------------------------------


def test_cut_mid_blob_resumes_with_range(proxy: FaultProxy, client: RegistryClient,
                                         criolib_test_images: TestImages,
                                         image: TestImage) -> None:
    digest, size = big_layer(image)
    proxy.cut(after_bytes=40_000, path=re.escape(digest))
    with client.get_blob(image.repository, digest, size) as stream:
        data = stream.read()
        assert stream.verified and stream.resumes == 1
    assert data == blob_bytes(criolib_test_images, digest)
    ranges = [h.get("range") for h in seen(proxy, "GET", digest)]
    assert ranges == [None, "bytes=40000-"]


@pytest.mark.parametrize("fix_length", [True, False])
def test_truncated_blob_of_known_size_resumes(fix_length: bool, proxy: FaultProxy,
                                              client: RegistryClient,
                                              criolib_test_images: TestImages,
                                              image: TestImage) -> None:
    digest, size = big_layer(image)
    proxy.truncate(1000, fix_length=fix_length, path=re.escape(digest))
    assert client.get_blob(image.repository, digest, size).read() == blob_bytes(
        criolib_test_images, digest)
    assert [h.get("range") for h in seen(proxy, "GET", digest)] == [None, "bytes=1000-"]


def test_truncated_blob_of_unknown_size_is_a_mismatch(proxy: FaultProxy,
                                                      client: RegistryClient,
                                                      image: TestImage) -> None:
    digest, _ = big_layer(image)
    proxy.truncate(1000, fix_length=True, path=re.escape(digest))
    stream = client.get_blob(image.repository, digest)
    with pytest.raises(DigestMismatch) as info:
        stream.read()
    assert info.value.actual_size == 1000 and info.value.expected == digest
    with pytest.raises(DigestMismatch):  # and it stays failed
        stream.read()


def test_registry_without_range_support(proxy: FaultProxy, client: RegistryClient,
                                        criolib_test_images: TestImages,
                                        image: TestImage) -> None:
    digest, size = big_layer(image)
    proxy.cut(after_bytes=50_000, path=re.escape(digest))
    proxy.ignore_range(path=re.escape(digest))
    with client.get_blob(image.repository, digest, size) as stream:
        assert stream.read() == blob_bytes(criolib_test_images, digest)
        assert stream.resumes == 1


def test_cut_every_time_gives_up(proxy: FaultProxy, client: RegistryClient,
                                 image: TestImage) -> None:
    digest, size = big_layer(image)
    proxy.cut(after_bytes=100, path=re.escape(digest), times=None)
    stream = client.get_blob(image.repository, digest, size)
    with pytest.raises(RegistryUnavailable) as info:
        stream.read()
    assert "gave up after 3 resumes" in str(info.value)
    assert len(seen(proxy, "GET", digest)) == 4


# -- corruption --------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 70_000, -1])
def test_corrupt_blob_is_never_returned_whole(offset: int, proxy: FaultProxy,
                                              client: RegistryClient, image: TestImage) -> None:
    digest, size = big_layer(image)
    proxy.corrupt(offset if offset >= 0 else size - 1, path=re.escape(digest))
    stream = client.get_blob(image.repository, digest, size)
    got = bytearray()
    with pytest.raises(DigestMismatch) as info:
        while chunk := stream.read(8192):
            got += chunk
    assert len(got) < size  # the last bytes were held back, the mismatch raised instead
    assert info.value.expected == digest and info.value.actual.startswith("sha256:")
    assert not stream.verified


def test_corrupt_manifest_by_digest(proxy: FaultProxy, client: RegistryClient,
                                    image: TestImage) -> None:
    proxy.corrupt(10, path="/manifests/")
    with pytest.raises(DigestMismatch):
        client.get_manifest(image.repository, image.digest)


def test_manifest_shorter_than_its_content_length_says(proxy: FaultProxy,
                                                       client: RegistryClient,
                                                       image: TestImage) -> None:
    """Content-Length below the body: the bytes read stop short of the registry's digest."""
    proxy.lie_length(-10, path="/manifests/", times=None)
    with pytest.raises(DigestMismatch) as info:
        client.get_manifest(image.repository, image.tag)
    assert "truncated or altered" in str(info.value)


def test_manifest_longer_than_its_body(proxy: FaultProxy, client: RegistryClient,
                                       image: TestImage) -> None:
    """Content-Length above the body: an incomplete read, retried, then given up."""
    proxy.lie_length(10, path="/manifests/", times=None)
    with pytest.raises(RegistryUnavailable) as info:
        client.get_manifest(image.repository, image.tag)
    assert "RemoteProtocolError" in info.value.cause
    proxy.clear()
    proxy.lie_length(10, path="/manifests/", times=1)
    assert client.get_manifest(image.repository, image.tag).digest == image.digest
