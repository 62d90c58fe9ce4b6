"""The docker:// transport against the real registry: pulls, pushes, mirrors, short names.

The three registry variants of the test bed (anonymous, htpasswd basic, bearer
tokens) serve every test image; skopeo, run on the same registry, says what the
digests and configs must be. Requests are counted through criolib.testing's
FaultProxy placed in front of a registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.image import (
    BlockedRegistry,
    DockerReference,
    InvalidImageName,
    ManifestUnknown,
    PolicyDenied,
    SystemContext,
    copy_image,
    parse_image_name,
)
from criolib.storage import Store
from criolib.testing import MULTILAYER_FILES, RegistryServer, TestImages, require_root
from criolib.testing._faultproxy import FaultProxy
from tests.image.copy_support import (
    open_test_store,
    read_in_container,
    registry_ctx,
    sha256,
    skopeo_inspect,
    write_policy,
)

REGISTRIES = ["criolib_registry", "criolib_registry_basic", "criolib_registry_token"]


@pytest.mark.parametrize(("text", "ref", "short"), [
    ("//busybox", "docker.io/library/busybox:latest", "busybox"),
    ("//testbed/busybox:1", "docker.io/testbed/busybox:1", "testbed/busybox:1"),
    ("//127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest", None),
    ("//localhost/x@sha256:" + "c" * 64, "localhost/x@sha256:" + "c" * 64, None),
    ("//quay.io/a/b:t@sha256:" + "c" * 64, "quay.io/a/b:t@sha256:" + "c" * 64, None),
])
def test_references(text: str, ref: str, short: str | None) -> None:
    parsed = parse_image_name(f"docker:{text}")
    assert isinstance(parsed, DockerReference)
    assert (str(parsed.ref), parsed.short_name) == (ref, short)
    assert parsed.policy_scope() == ref
    assert parse_image_name(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["busybox", "/busybox", "//", "//UPPER/x", "//a/b:bad tag"])
def test_bad_references(text: str) -> None:
    with pytest.raises(InvalidImageName):
        parse_image_name(f"docker:{text}")


def test_pushing_needs_a_registry(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageName, match="fully qualified"):
        parse_image_name("docker://busybox").new_destination(SystemContext())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


@pytest.mark.integration
@pytest.mark.parametrize("variant", REGISTRIES)
def test_pull_into_storage_and_oci_agrees_with_skopeo(
        variant: str, request: pytest.FixtureRequest, criolib_test_images: TestImages,
        store: Store, tmp_path: Path) -> None:
    registry: RegistryServer = request.getfixturevalue(variant)
    image = criolib_test_images["multilayer"]
    ctx = registry_ctx(tmp_path, registry, store=store)
    policy = write_policy(tmp_path)
    src = f"docker://{registry.host}/{image.reference}"
    result = copy_image(src, f"containers-storage:{registry.host}/{image.reference}",
                        policy=policy, ctx=ctx)
    seen = json.loads(skopeo_inspect(registry, image.reference))
    config = skopeo_inspect(registry, image.reference, "--config", "--raw")
    assert result.manifest_digest == seen["Digest"] == image.digest
    assert result.config_digest == sha256(config)
    stored = store.image(f"{registry.host}/{image.reference}")
    assert store.big_data(stored.id, "config") == config
    assert [layer.compressed_digest for layer in store.image_layers(stored.id)] == \
        seen["Layers"]
    keep, owned = read_in_container(store, stored.id, "/data/keep.txt",
                                    "/data/owned-by-tester.txt")
    assert keep == MULTILAYER_FILES[0][1].data
    assert owned == b"mine\n"
    into_oci = copy_image(src, f"oci:{tmp_path / 'layout'}:ml", policy=policy, ctx=ctx)
    assert into_oci.manifest_digest == seen["Digest"]


@pytest.mark.integration
def test_an_image_already_present_costs_one_manifest_request(
        criolib_registry: RegistryServer, store: Store, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    with FaultProxy(criolib_registry.url) as proxy:
        ctx = registry_ctx(tmp_path, store=store)
        src = f"docker://{proxy.host}/testbed/multilayer:latest"
        first = copy_image(src, "containers-storage:localhost/ml:1", policy=policy, ctx=ctx)
        assert first.layers_copied == 3
        proxy.clear()
        again = copy_image(src, "containers-storage:localhost/ml:2", policy=policy, ctx=ctx)
        registry_requests = [(r.method, r.path) for r in proxy.requests if r.path != "/v2/"]
    assert registry_requests == [("GET", "/v2/testbed/multilayer/manifests/latest")]
    assert (again.layers_copied, again.layers_skipped, again.bytes_copied) == (0, 3, 0)
    assert set(store.image("localhost/ml:1").names) == {"localhost/ml:1", "localhost/ml:2"}


@pytest.mark.integration
def test_a_mirror_is_tried_first(criolib_registry: RegistryServer,
                                 criolib_registry_basic: RegistryServer,
                                 tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    with FaultProxy(criolib_registry.url) as primary, \
            FaultProxy(criolib_registry_basic.url) as mirror:
        for mirror_path, served_by in (("testbed", mirror), ("no-such-namespace", primary)):
            conf = f"""
[[registry]]
prefix = "registry.example/testbed"
location = "{primary.host}/testbed"
insecure = true
[[registry.mirror]]
location = "{mirror.host}/{mirror_path}"
insecure = true
"""
            primary.clear()
            mirror.clear()
            ctx = registry_ctx(tmp_path, criolib_registry_basic, conf=conf)
            result = copy_image("docker://registry.example/testbed/busybox:latest",
                                f"oci:{tmp_path / mirror_path}:bb", policy=policy, ctx=ctx)
            asked = [r.path for r in mirror.requests if "/manifests/" in r.path]
            assert asked == [f"/v2/{mirror_path}/busybox/manifests/latest"]
            blobs = [r.path for r in served_by.requests if "/blobs/" in r.path]
            assert len(blobs) == 2  # config and layer, from whoever served the manifest
            assert result.layers_copied == 1
            if served_by is mirror:
                assert primary.requests == []  # the primary was never needed
            else:
                assert [r.path for r in primary.requests if "/manifests/" in r.path] == [
                    "/v2/testbed/busybox/manifests/latest"]


@pytest.mark.integration
def test_short_names_try_each_search_registry(criolib_registry: RegistryServer,
                                              criolib_test_images: TestImages,
                                              tmp_path: Path) -> None:
    conf = f"""
unqualified-search-registries = ["127.0.0.1:1", "{criolib_registry.host}"]
short-name-mode = "permissive"
"""
    ctx = registry_ctx(tmp_path, conf=conf, retries=0)
    result = copy_image("docker://testbed/busybox", f"oci:{tmp_path / 'o'}:bb",
                        policy=write_policy(tmp_path), ctx=ctx)
    assert result.manifest_digest == criolib_test_images["busybox"].digest
    with pytest.raises(ManifestUnknown):
        copy_image(f"docker://{criolib_registry.host}/testbed/busybox:no-such-tag",
                   f"oci:{tmp_path / 'n'}:x", policy=write_policy(tmp_path), ctx=ctx)


@pytest.mark.integration
@pytest.mark.parametrize("variant", REGISTRIES)
def test_push_from_storage_then_skopeo_reads_it(
        variant: str, request: pytest.FixtureRequest, criolib_test_images: TestImages,
        store: Store, tmp_path: Path) -> None:
    registry: RegistryServer = request.getfixturevalue(variant)
    image = criolib_test_images["busybox"]
    ctx = registry_ctx(tmp_path, registry, store=store)
    policy = write_policy(tmp_path)
    copy_image(f"oci:{criolib_test_images.layout}:busybox", "containers-storage:localhost/bb:1",
               policy=policy, ctx=ctx)
    repo = f"criolib-push/{variant.replace('_', '-')}:v1"
    pushed = copy_image("containers-storage:localhost/bb:1", f"docker://{registry.host}/{repo}",
                        policy=policy, ctx=ctx)
    seen = json.loads(skopeo_inspect(registry, repo))
    assert seen["Digest"] == pushed.manifest_digest
    assert sha256(skopeo_inspect(registry, repo, "--config", "--raw")) == image.config_digest
    again = copy_image("containers-storage:localhost/bb:1", f"docker://{registry.host}/{repo}",
                       policy=policy, ctx=ctx)
    assert (again.layers_copied, again.layers_skipped) == (0, 1)


def _docker_only_policy(tmp_path: Path, scope: str) -> dict[str, object]:
    return {"default": [{"type": "reject"}],
            "transports": {"docker": {scope: [{"type": "insecureAcceptAnything"}]}}}


@pytest.mark.integration
def test_short_name_policy_is_checked_against_the_resolved_registry(
        criolib_registry: RegistryServer, criolib_test_images: TestImages,
        tmp_path: Path) -> None:
    conf = f"""
unqualified-search-registries = ["{criolib_registry.host}"]
short-name-mode = "permissive"
"""
    ctx = registry_ctx(tmp_path, conf=conf, retries=0)
    dest = tmp_path / "o"
    only_docker_io = write_policy(tmp_path, _docker_only_policy(tmp_path, "docker.io"))
    with FaultProxy(criolib_registry.url) as proxy:
        proxied = registry_ctx(tmp_path, conf=conf.replace(criolib_registry.host,
                                                           proxy.host), retries=0)
        with pytest.raises(PolicyDenied, match=re.escape(proxy.host)):
            copy_image("docker://testbed/busybox", f"oci:{dest}:bb", policy=only_docker_io,
                       ctx=proxied)
        assert proxy.requests == []  # denied before the registry was contacted
    assert not (dest / "index.json").exists()
    # Allowed by the resolved registry's scope although docker.io is rejected.
    only_local = write_policy(tmp_path, _docker_only_policy(tmp_path, criolib_registry.host))
    result = copy_image("docker://testbed/busybox", f"oci:{dest}:bb", policy=only_local,
                        ctx=ctx)
    assert result.manifest_digest == criolib_test_images["busybox"].digest


@pytest.mark.integration
def test_a_blocked_search_registry_is_skipped(criolib_registry: RegistryServer,
                                              criolib_test_images: TestImages,
                                              tmp_path: Path) -> None:
    conf = f"""
unqualified-search-registries = ["blocked.invalid", "{criolib_registry.host}"]
short-name-mode = "permissive"

[[registry]]
location = "blocked.invalid"
blocked = true
"""
    ctx = registry_ctx(tmp_path, conf=conf, retries=0)
    result = copy_image("docker://testbed/busybox", f"oci:{tmp_path / 'o'}:bb",
                        policy=write_policy(tmp_path), ctx=ctx)
    assert result.manifest_digest == criolib_test_images["busybox"].digest
    only_blocked = conf.replace(f', "{criolib_registry.host}"', "")
    with pytest.raises(BlockedRegistry, match=r"blocked\.invalid"):
        copy_image("docker://testbed/busybox", f"oci:{tmp_path / 'p'}:bb",
                   policy=write_policy(tmp_path), ctx=registry_ctx(tmp_path, conf=only_blocked))
