"""The FaultProxy itself, driven by plain httpx in front of the real registry."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from criolib.testing import RegistryServer, TestbedValueError, TestImages
from criolib.testing._faultproxy import Fault, FaultProxy
from tests.image.test_registry import blob_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(criolib_registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(criolib_registry.url) as proxy:
        yield proxy


@pytest.fixture
def blob(criolib_test_images: TestImages) -> tuple[str, bytes]:
    image = criolib_test_images["busybox"]
    digest = image.layers[0].digest
    return f"/v2/{image.repository}/blobs/{digest}", blob_bytes(criolib_test_images, digest)


def get(proxy: FaultProxy, path: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=proxy.url, trust_env=False) as client:
        return client.get(path, headers=headers)


def test_forwards_and_records(proxy: FaultProxy, blob: tuple[str, bytes]) -> None:
    path, data = blob
    resp = get(proxy, path, **{"X-Test": "yes"})
    assert resp.status_code == 200 and resp.content == data
    (record,) = proxy.requests
    assert (record.method, record.path, record.headers["x-test"]) == ("GET", path, "yes")
    assert record.faults == ()


def test_range_answered_by_upstream(proxy: FaultProxy, blob: tuple[str, bytes]) -> None:
    path, data = blob
    resp = get(proxy, path, Range="bytes=100-")
    assert resp.status_code == 206 and resp.content == data[100:]
    proxy.ignore_range(path=path)
    assert get(proxy, path, Range="bytes=100-").status_code == 200


def test_status_with_retry_after_counts_down(proxy: FaultProxy,
                                             blob: tuple[str, bytes]) -> None:
    path, _ = blob
    fault = proxy.status(429, retry_after=3, path="/blobs/", times=2)
    for _ in range(2):
        resp = get(proxy, path)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        assert resp.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert get(proxy, path).status_code == 200
    assert fault.hits == 2


def test_body_faults(proxy: FaultProxy, blob: tuple[str, bytes]) -> None:
    path, data = blob
    proxy.truncate(10, path=path)
    resp = get(proxy, path)
    assert (resp.headers["Content-Length"], resp.content) == ("10", data[:10])
    proxy.corrupt(5, path=path)
    flipped = get(proxy, path).content
    assert flipped[5] == data[5] ^ 0xFF and flipped[:5] + flipped[6:] == data[:5] + data[6:]
    breaking: list[Callable[[], Fault]] = [
        lambda: proxy.cut(10, path=path),
        lambda: proxy.truncate(10, fix_length=False, path=path),
        lambda: proxy.lie_length(7, path=path),
    ]
    for add in breaking:
        add()
        with pytest.raises(httpx.RemoteProtocolError):
            get(proxy, path)
    proxy.lie_length(-7, path=path)
    resp = get(proxy, path)
    assert resp.content == data[:-7]


def test_delay(proxy: FaultProxy, blob: tuple[str, bytes]) -> None:
    proxy.delay(0.3, path=blob[0])
    start = time.monotonic()
    assert get(proxy, blob[0]).status_code == 200
    assert time.monotonic() - start >= 0.3


def test_bad_rules_refused(criolib_registry: RegistryServer) -> None:
    with pytest.raises(TestbedValueError):
        FaultProxy("https://example.test")
    proxy = FaultProxy(criolib_registry.url)
    with pytest.raises(TestbedValueError):
        proxy.cut(-1)
    with pytest.raises(TestbedValueError):
        proxy.status(200)
    with pytest.raises(TestbedValueError):
        proxy.delay(1, times=0)


def test_repeated_request_headers_are_forwarded_each(proxy: FaultProxy,
                                                     blob: tuple[str, bytes]) -> None:
    path, _ = blob
    with FaultProxy(proxy.url) as front:  # front -> proxy -> registry
        conn = http.client.HTTPConnection(front.host, timeout=10)
        try:
            conn.putrequest("GET", path)
            conn.putheader("Accept", "application/vnd.oci.image.manifest.v1+json")
            conn.putheader("Accept", "application/vnd.docker.distribution.manifest.v2+json")
            conn.endheaders()
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        assert resp.status == 200
    (seen,) = proxy.requests
    assert seen.headers["accept"] == ("application/vnd.oci.image.manifest.v1+json, "
                                      "application/vnd.docker.distribution.manifest.v2+json")
