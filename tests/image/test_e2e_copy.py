"""End to end: images travelling between a real registry, criolib.storage and files.

- OCI layout → registry → containers-storage → docker-archive → OCI layout keeps
  the config digest and the layer diff_ids;
- an index gives the instance of the platform asked for, whose files are read
  from a mounted container; a platform it lacks fails before anything is stored;
- a blob whose bytes do not match its digest (a FaultProxy flips one byte) fails
  the pull with DigestMismatch and leaves the store as it was;
- identical pulls at the same time download each blob once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.image import (
    CopyResult,
    DigestMismatch,
    NoMatchingPlatform,
    Platform,
    copy_image,
)
from criolib.storage import Store
from criolib.testing import RegistryServer, TestImages, require_root
from criolib.testing._faultproxy import FaultProxy
from tests.image.copy_support import (
    open_test_store,
    read_in_container,
    registry_ctx,
    write_policy,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


def diff_ids_of(result: CopyResult, read_config: bytes) -> list[str]:
    return list(json.loads(read_config)["rootfs"]["diff_ids"])


def test_round_trip_keeps_config_and_diff_ids(criolib_registry_token: RegistryServer,
                                              criolib_test_images: TestImages, store: Store,
                                              tmp_path: Path) -> None:
    image = criolib_test_images["busybox"]
    registry = criolib_registry_token
    ctx = registry_ctx(tmp_path, registry, store=store)
    policy = write_policy(tmp_path)
    remote = f"docker://{registry.host}/criolib-e2e/round-trip:v1"
    archive = tmp_path / "bb.tar"
    steps = [
        (f"oci:{criolib_test_images.layout}:busybox", remote),
        (remote, "containers-storage:localhost/round-trip:v1"),
        ("containers-storage:localhost/round-trip:v1", f"docker-archive:{archive}"),
        (f"docker-archive:{archive}", f"oci:{tmp_path / 'back'}:bb"),
    ]
    for src, dest in steps:
        result = copy_image(src, dest, policy=policy, ctx=ctx)
        assert result.config_digest == image.config_digest, (src, dest)
    stored = store.image("localhost/round-trip:v1")
    assert [layer.diff_id for layer in store.image_layers(stored.id)] == list(image.diff_ids)
    back = json.loads(result.manifest)
    config = (tmp_path / "back" / "blobs" / "sha256" /
              back["config"]["digest"].partition(":")[2]).read_bytes()
    assert json.loads(config)["rootfs"]["diff_ids"] == list(image.diff_ids)


def test_the_instance_for_the_platform_asked_for(criolib_registry: RegistryServer,
                                                 criolib_test_images: TestImages,
                                                 store: Store, tmp_path: Path) -> None:
    ctx = registry_ctx(tmp_path, store=store)
    policy = write_policy(tmp_path)
    src = f"docker://{criolib_registry.host}/testbed/multiarch:latest"
    result = copy_image(src, "containers-storage:localhost/multiarch:arm64", policy=policy,
                        ctx=ctx, platform=Platform("linux", "arm64"))
    arm = next(i for i in criolib_test_images["multiarch"].instances
               if (i.platform or {}).get("architecture") == "arm64")
    assert result.manifest_digest == arm.digest
    assert result.source_digest == arm.digest
    (marker,) = read_in_container(store, "localhost/multiarch:arm64", "/etc/criolib-platform")
    assert marker == b"linux/arm64/v8\n"
    with pytest.raises(NoMatchingPlatform, match="riscv64"):
        copy_image(src, "containers-storage:localhost/multiarch:riscv", policy=policy, ctx=ctx,
                   platform=Platform("linux", "riscv64"))
    assert [i.names for i in store.images()] == [("localhost/multiarch:arm64",)]


def test_a_corrupt_blob_leaves_the_store_as_it_was(criolib_registry: RegistryServer,
                                                   criolib_test_images: TestImages,
                                                   store: Store, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    policy = write_policy(tmp_path)
    ctx = registry_ctx(tmp_path, store=store, retries=1)
    with FaultProxy(criolib_registry.url) as proxy:
        last = image.layers[2].digest
        proxy.corrupt(200, path=f"/blobs/{last}$", times=None)
        with pytest.raises(DigestMismatch) as info:
            copy_image(f"docker://{proxy.host}/{image.reference}",
                       "containers-storage:localhost/broken:1", policy=policy, ctx=ctx)
        assert last in str(info.value)
        assert any(r.faults for r in proxy.requests)
    assert store.images() == []
    assert store.layers() == []


def test_identical_pulls_at_once_download_each_blob_once(criolib_registry: RegistryServer,
                                                         criolib_test_images: TestImages,
                                                         store: Store, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    policy = write_policy(tmp_path)
    ctx = registry_ctx(tmp_path, store=store)
    errors: list[BaseException] = []
    with FaultProxy(criolib_registry.url) as proxy:
        # Keep the first pull busy while the others arrive.
        proxy.delay(0.2, path="/blobs/", times=None)

        def pull(tag: str) -> None:
            try:
                copy_image(f"docker://{proxy.host}/{image.reference}",
                           f"containers-storage:localhost/same:{tag}", policy=policy, ctx=ctx)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=pull, args=(str(i),)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        blob_gets = [r.path for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path]
    assert errors == []
    assert sorted(blob_gets) == sorted(
        f"/v2/{image.repository}/blobs/{d}" for d in
        [image.config_digest, *(layer.digest for layer in image.layers)])
    assert len(store.image("localhost/same:0").names) == 4
