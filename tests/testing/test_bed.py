"""Acceptance of the test bed: every registry variant serves every test image.

Read back with skopeo, a tool nobody here wrote, so a mistake shared by our
builder and our pusher cannot hide.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from criolib.testing import RegistryServer, TestImages, host_platform, require_binaries

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


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_image_is_served(
    variant: str, request: pytest.FixtureRequest, criolib_test_images: TestImages
) -> None:
    registry: RegistryServer = request.getfixturevalue(variant)
    for image in criolib_test_images:
        ref = f"docker://{registry.host}/{image.reference}"
        raw = _skopeo(registry, "inspect", "--raw", ref)
        assert _digest(raw) == image.digest, image.name
        # Non-raw inspect follows the index to this host's instance and reads the config.
        info = json.loads(_skopeo(registry, "inspect", ref))
        assert info["Digest"] == image.digest
        assert info["Architecture"] == host_platform()["architecture"]
        if not image.is_index:
            config = json.loads(_skopeo(registry, "inspect", "--config", ref))
            assert config["rootfs"]["diff_ids"] == list(image.diff_ids)


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
    """With a 2 s token lifetime, pulls after expiry fetch a new token and still work."""
    require_binaries("docker-registry", "skopeo")
    import time

    from criolib.testing import serving_test_images

    with serving_test_images(criolib_test_images, auth="token", token_ttl=2,
                             names=["busybox"]) as registry:
        assert registry.token_server is not None
        ref = f"docker://{registry.host}/{criolib_test_images['busybox'].reference}"
        with registry.client() as client:
            before = registry.token_server.tokens_issued
            client.get(f"/v2/{criolib_test_images['busybox'].repository}/tags/list")
            time.sleep(3)
            resp = client.get(f"/v2/{criolib_test_images['busybox'].repository}/tags/list")
            assert resp.status_code == 200
            assert registry.token_server.tokens_issued >= before + 2
        assert _digest(_skopeo(registry, "inspect", "--raw", ref)) == criolib_test_images[
            "busybox"].digest
