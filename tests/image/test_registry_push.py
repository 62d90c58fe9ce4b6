"""RegistryClient pushes against the real distribution registry, cross-checked by skopeo.

Monolithic and chunked blob uploads, cross-repository mounts, manifests under a
tag and by digest, tag lists, and uploads whose bytes do not match their digest
(nothing may be committed).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import uuid

import pytest

from criolib.image._errors import DigestMismatch, InvalidReference
from criolib.image._registry import RegistryClient
from criolib.testing import RegistryServer, TestImages
from criolib.testing._faultproxy import FaultProxy
from tests.image.test_registry import blob_bytes, client_for

pytestmark = pytest.mark.integration


class Unseekable(io.RawIOBase):
    """A pipe-like stream: no seek, no size, short reads."""

    def __init__(self, data: bytes, step: int = 7000) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._pos:self._pos + min(len(buffer), self._step)]
        buffer[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def new_repo() -> str:
    return f"pushed/{uuid.uuid4().hex[:12]}"


def push_image(client: RegistryClient, images: TestImages, name: str, repo: str,
               tag: str) -> str:
    image = images[name]
    manifest = json.loads(blob_bytes(images, image.digest))
    for desc in [manifest["config"], *manifest["layers"]]:
        data = blob_bytes(images, desc["digest"])
        if not client.blob_exists(repo, desc["digest"]):
            client.put_blob(repo, io.BytesIO(data), desc["digest"], desc["size"])
    return client.put_manifest(repo, tag, blob_bytes(images, image.digest),
                               image.descriptor.media_type)


@pytest.mark.parametrize("fixture", ["criolib_registry", "criolib_registry_token"])
def test_push_an_image_to_a_new_repository(fixture: str, request: pytest.FixtureRequest,
                                           criolib_test_images: TestImages) -> None:
    registry: RegistryServer = request.getfixturevalue(fixture)
    image = criolib_test_images["multilayer"]
    repo = new_repo()
    with client_for(registry) as client:
        assert push_image(client, criolib_test_images, "multilayer", repo, "v1") == image.digest
        got = client.get_manifest(repo, "v1")
        assert (got.digest, got.data) == (image.digest, blob_bytes(criolib_test_images,
                                                                   image.digest))
        for layer in image.layers:
            assert client.get_blob(repo, layer.digest, layer.size).read() == blob_bytes(
                criolib_test_images, layer.digest)
        # By digest too: same bytes, same answer.
        assert client.put_manifest(repo, image.digest, got.data, got.media_type) == image.digest
    if shutil.which("skopeo") and registry.auth == "none":
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry.host}/{repo}:v1"],
                             capture_output=True, check=True).stdout
        assert raw == got.data


def test_cross_repository_mount(criolib_registry_token: RegistryServer,
                                criolib_test_images: TestImages) -> None:
    image = criolib_test_images["busybox"]
    repo = new_repo()
    with client_for(criolib_registry_token) as client:
        layer = image.layers[0]
        assert not client.blob_exists(repo, layer.digest)
        assert client.mount_blob(repo, layer.digest, image.repository)
        assert client.blob_exists(repo, layer.digest)
        assert client.head_blob(repo, layer.digest).size == layer.size
        # Not in the source: the registry starts an upload instead, which is cancelled.
        missing = "sha256:" + "1" * 64
        assert not client.mount_blob(repo, missing, image.repository)
        assert not client.blob_exists(repo, missing)


@pytest.mark.parametrize("seekable", [True, False])
def test_chunked_upload(seekable: bool, criolib_registry: RegistryServer,
                        criolib_test_images: TestImages) -> None:
    layer = max(criolib_test_images["multilayer"].layers, key=lambda d: d.size)
    data = blob_bytes(criolib_test_images, layer.digest)
    chunk = 64 << 10
    assert layer.size > 3 * chunk
    repo = new_repo()
    with FaultProxy(criolib_registry.url) as proxy, \
            RegistryClient(proxy.host, insecure=True, chunk_size=chunk) as client:
        stream = io.BytesIO(data) if seekable else io.BufferedReader(Unseekable(data))
        size = layer.size if seekable else -1  # unknown size: chunked whatever its length
        client.put_blob(repo, stream, layer.digest, size)
        patches = [r for r in proxy.requests if r.method == "PATCH"]
        assert len(patches) == math.ceil(layer.size / chunk)
        assert patches[1].headers["content-range"] == f"{chunk}-{2 * chunk - 1}"
        assert client.get_blob(repo, layer.digest, layer.size).read() == data


def test_monolithic_upload_is_one_put(criolib_registry: RegistryServer,
                                      criolib_test_images: TestImages) -> None:
    layer = criolib_test_images["busybox"].layers[0]
    with FaultProxy(criolib_registry.url) as proxy, \
            RegistryClient(proxy.host, insecure=True) as client:
        client.put_blob(new_repo(), io.BytesIO(blob_bytes(criolib_test_images, layer.digest)),
                        layer.digest, layer.size)
        assert [r.method for r in proxy.requests if "/blobs/" in r.path] == ["POST", "PUT"]


@pytest.mark.parametrize("size", ["right", "unknown"])
@pytest.mark.parametrize("chunk", [1 << 30, 64 << 10])
def test_wrong_bytes_are_never_committed(size: str, chunk: int,
                                         criolib_registry: RegistryServer,
                                         criolib_test_images: TestImages) -> None:
    layer = criolib_test_images["multilayer"].layers[0]
    data = bytearray(blob_bytes(criolib_test_images, layer.digest))
    data[len(data) // 2] ^= 0xFF
    repo = new_repo()
    with client_for(criolib_registry, chunk_size=chunk) as client:
        with pytest.raises(DigestMismatch) as info:
            client.put_blob(repo, io.BytesIO(bytes(data)), layer.digest,
                            layer.size if size == "right" else -1)
        assert info.value.expected == layer.digest
        assert not client.blob_exists(repo, layer.digest)
        with pytest.raises(DigestMismatch):  # a short stream for the size given
            client.put_blob(repo, io.BytesIO(bytes(data[:-1])), layer.digest, layer.size)
        assert not client.blob_exists(repo, layer.digest)


def test_list_tags_with_page_size(criolib_registry: RegistryServer,
                                  criolib_test_images: TestImages) -> None:
    repo = new_repo()
    tags = [f"t{i}" for i in range(7)]
    with FaultProxy(criolib_registry.url) as proxy, \
            RegistryClient(proxy.host, insecure=True) as client:
        for tag in tags:
            push_image(client, criolib_test_images, "busybox", repo, tag)
        assert sorted(client.list_tags(repo, page_size=3)) == tags
        lists = [r.path for r in proxy.requests if "/tags/list" in r.path]
        # distribution 2.8 ignores n for tags (pagination came in v3): the first page
        # holds them all and carries no Link. Link-following is tested in test_registry_unit.
        assert lists[0].endswith("?n=3")
        assert sorted(client.list_tags(repo)) == tags


def test_delete_manifest(criolib_registry: RegistryServer,
                         criolib_test_images: TestImages) -> None:
    repo = new_repo()
    with client_for(criolib_registry) as client:
        digest = push_image(client, criolib_test_images, "busybox", repo, "gone")
        client.delete_manifest(repo, digest)
        with pytest.raises(LookupError):
            client.get_manifest(repo, digest)


def test_names_are_checked_before_any_request(criolib_registry: RegistryServer) -> None:
    with client_for(criolib_registry) as client:
        with pytest.raises(InvalidReference):
            client.get_manifest("Upper/Case", "latest")
        with pytest.raises(InvalidReference):
            client.get_manifest("ok/repo", "../../etc")
        with pytest.raises(ValueError, match="digest"):
            client.get_blob("ok/repo", "sha256:abc")
