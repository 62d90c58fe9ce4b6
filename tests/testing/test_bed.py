"""Acceptance of the test bed: every registry variant serves every test image.

Read back with skopeo, a tool nobody here wrote, so a mistake shared by our
builder and our pusher cannot hide.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from criolib.testing import (
    RegistryServer,
    TestImage,
    TestImages,
    host_platform,
    require_binaries,
    serving_test_images,
)

VARIANTS = ["criolib_registry", "criolib_registry_basic", "criolib_registry_token"]


def _skopeo(registry: RegistryServer, *args: str) -> bytes:
    require_binaries("skopeo")
    creds = ["--creds", ":".join(registry.credentials)] if registry.credentials else []
    return subprocess.run(
        ["skopeo", *args[:1], "--tls-verify=false", *creds, *args[1:]],
        check=True, capture_output=True, timeout=120,
    ).stdout


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _copy_all(registry: RegistryServer, images: list[TestImage], dest: Path) -> None:
    """``skopeo copy --all`` each image into its own OCI layout, in parallel.

    skopeo checks every blob's digest and size as it reads it from the registry.
    """
    require_binaries("skopeo")
    creds = ["--src-creds", ":".join(registry.credentials)] if registry.credentials else []

    def copy(image: TestImage) -> None:
        subprocess.run(
            ["skopeo", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", *creds,
             f"docker://{registry.host}/{image.reference}", f"oci:{dest / image.name}:copy"],
            check=True, capture_output=True, timeout=120,
        )

    with ThreadPoolExecutor(len(images)) as pool:
        list(pool.map(copy, images))


def _check_copied(image: TestImage, layout: Path) -> None:
    """The copy names the same manifest and holds every blob it references, intact."""
    (entry,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    assert entry["digest"] == image.digest, image.name
    blobs = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    assert all(_digest(data) == f"sha256:{name}" for name, data in blobs.items())
    for instance in image.instances or (image,):
        doc = json.loads(blobs[instance.digest.partition(":")[2]])
        for ref in [doc["config"], *doc["layers"]]:
            assert len(blobs[ref["digest"].partition(":")[2]]) == ref["size"], image.name
        config = json.loads(blobs[doc["config"]["digest"].partition(":")[2]])
        assert config["rootfs"]["diff_ids"] == list(instance.diff_ids)
        assert config["architecture"] == (instance.platform or {})["architecture"]


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_image_is_served(
    variant: str, request: pytest.FixtureRequest, criolib_test_images: TestImages,
    tmp_path: Path,
) -> None:
    """Every manifest, config and layer of every image comes back, digests verified."""
    registry: RegistryServer = request.getfixturevalue(variant)
    images = list(criolib_test_images)
    _copy_all(registry, images, tmp_path)
    for image in images:
        _check_copied(image, tmp_path / image.name)
    # Without --raw skopeo picks this host's instance out of the index.
    multiarch = criolib_test_images["multiarch"]
    info = json.loads(_skopeo(registry, "inspect",
                              f"docker://{registry.host}/{multiarch.reference}"))
    assert info["Digest"] == multiarch.digest
    assert info["Architecture"] == host_platform()["architecture"]


@pytest.mark.integration
def test_the_large_image_is_served(small_large_images: TestImages, tmp_path: Path) -> None:
    """At a small scale: the large image's many files and layers go up and come back."""
    require_binaries("docker-registry")
    large = small_large_images["large"]
    with serving_test_images(small_large_images, names=["large"]) as registry:
        _copy_all(registry, [large], tmp_path)
    _check_copied(large, tmp_path / "large")
    assert len(large.layers) == 3


@pytest.mark.integration
def test_index_instances_are_served_by_digest(
    criolib_registry: RegistryServer, criolib_test_images: TestImages
) -> None:
    image = criolib_test_images["multiarch"]
    for instance in image.instances:
        ref = f"docker://{criolib_registry.host}/{image.repository}@{instance.digest}"
        config = json.loads(_skopeo(criolib_registry, "inspect", "--config", ref))
        assert config["architecture"] == (instance.platform or {})["architecture"]
    arm = json.loads(_skopeo(criolib_registry, "inspect", "--override-arch", "arm64",
                             "--override-variant", "v8", "--raw",
                             f"docker://{criolib_registry.host}/{image.reference}"))
    assert arm["mediaType"] == "application/vnd.oci.image.index.v1+json"


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["criolib_registry_basic", "criolib_registry_token"])
def test_auth_variants_refuse_anonymous_pulls(
    variant: str, request: pytest.FixtureRequest, criolib_test_images: TestImages
) -> None:
    registry: RegistryServer = request.getfixturevalue(variant)
    require_binaries("skopeo")
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", "--no-creds",
         f"docker://{registry.host}/{criolib_test_images['busybox'].reference}"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "unauthorized" in proc.stderr.lower() or "authentication required" in proc.stderr


@pytest.mark.integration
def test_token_registry_pulls_outlive_a_token(
    criolib_test_images: TestImages, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With a 1 s token lifetime, pulls after expiry fetch a new token and still work."""
    require_binaries("docker-registry", "skopeo")
    import time

    from criolib.testing import serving_test_images

    with serving_test_images(criolib_test_images, auth="token", token_ttl=1,
                             names=["busybox"]) as registry:
        assert registry.token_server is not None
        ref = f"docker://{registry.host}/{criolib_test_images['busybox'].reference}"
        with registry.client() as client:
            before = registry.token_server.tokens_issued
            client.get(f"/v2/{criolib_test_images['busybox'].repository}/tags/list")
            time.sleep(2.05)  # the token lived less than ttl + 1 s
            resp = client.get(f"/v2/{criolib_test_images['busybox'].repository}/tags/list")
            assert resp.status_code == 200
            assert registry.token_server.tokens_issued >= before + 2
        assert _digest(_skopeo(registry, "inspect", "--raw", ref)) == criolib_test_images[
            "busybox"].digest
