"""copy_image between local transports: OCI layout, docker-archive and containers-storage.

No registry here (see test_transport_docker.py and test_e2e_copy.py): the OCI
layout of the test bed is the source, a Store on ``tmp_path`` or a new layout the
destination. Needs root for overlay mounts and the test images' uid 1000 files.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.image import (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    DigestMismatch,
    InvalidArgument,
    NoMatchingPlatform,
    Platform,
    PolicyDenied,
    ProgressEvent,
    SystemContext,
    UnsupportedConversion,
    copy_image,
)
from criolib.storage import Store
from criolib.testing import MULTILAYER_FILES, PASSWD, TestImages, require_root
from tests.image.copy_support import (
    blob_file,
    copy_layout,
    flip_byte,
    open_test_store,
    read_in_container,
    sha256,
    storage_name,
    write_policy,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


def oci(images: TestImages, name: str) -> str:
    return f"oci:{images.layout}:{name}"


def test_oci_to_storage_names_the_image_and_applies_every_layer(
        criolib_test_images: TestImages, store: Store, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    result = copy_image(oci(criolib_test_images, "multilayer"),
                        storage_name(store, "localhost/multilayer:1"),
                        policy=write_policy(tmp_path))
    assert result.manifest_digest == image.digest == result.source_digest
    assert result.config_digest == image.config_digest
    assert (result.layers_copied, result.layers_skipped) == (3, 0)
    assert result.bytes_copied == sum(d.size for d in image.layers)
    stored = store.image("localhost/multilayer:1")
    assert stored.id == image.config_digest.partition(":")[2]
    assert stored.digest == image.digest
    assert store.big_data(stored.id, "manifest") == result.manifest
    assert sha256(store.big_data(stored.id, "config")) == image.config_digest
    assert [layer.diff_id for layer in store.image_layers(stored.id)] == list(image.diff_ids)
    keep, layer3, passwd = read_in_container(store, stored.id, "/data/keep.txt",
                                             "/data/layer3.txt", "/etc/passwd")
    assert keep == MULTILAYER_FILES[0][1].data
    assert layer3 == b"added by layer 3\n"
    assert passwd == PASSWD


def test_a_second_copy_downloads_nothing(criolib_test_images: TestImages, store: Store,
                                         tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    ctx = SystemContext(store=store)
    copy_image(oci(criolib_test_images, "busybox"), "containers-storage:localhost/bb:1",
               policy=policy, ctx=ctx)
    events: list[ProgressEvent] = []
    again = copy_image(oci(criolib_test_images, "busybox"), "containers-storage:localhost/bb:2",
                       policy=policy, ctx=ctx, progress=events.append)
    assert (again.layers_copied, again.layers_skipped, again.bytes_copied) == (0, 1, 0)
    assert {e.kind for e in events} == {"skipped"}  # config and layer
    assert store.image("localhost/bb:1").names == ("localhost/bb:1", "localhost/bb:2")
    assert len(store.images()) == 1


def test_layers_are_found_by_diff_id_whatever_their_compression(
        criolib_test_images: TestImages, store: Store, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    ctx = SystemContext(store=store)
    first = copy_image(oci(criolib_test_images, "multilayer"), "containers-storage:localhost/m:gz",
                       policy=policy, ctx=ctx)
    zstd = copy_image(oci(criolib_test_images, "multilayer-zstd"),
                      "containers-storage:localhost/m:zstd", policy=policy, ctx=ctx)
    assert zstd.config_digest == first.config_digest
    assert (zstd.layers_copied, zstd.bytes_copied) == (0, 0)
    image = store.image("localhost/m:zstd")
    assert set(image.digests) == {first.manifest_digest, zstd.manifest_digest}
    assert store.image(f"localhost/m@{zstd.manifest_digest}").id == image.id


def test_storage_to_oci_keeps_config_and_diff_ids(criolib_test_images: TestImages,
                                                  store: Store, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    image = criolib_test_images["busybox"]
    copy_image(oci(criolib_test_images, "busybox"), storage_name(store, "localhost/bb:1"),
               policy=policy)
    result = copy_image(storage_name(store, "localhost/bb:1"), f"oci:{tmp_path / 'out'}:bb",
                        policy=policy)
    assert result.config_digest == image.config_digest
    manifest = json.loads(result.manifest)
    assert manifest["mediaType"] == MEDIA_TYPE_OCI_MANIFEST
    # criolib.storage exports layers uncompressed: the blob digest is the diff_id.
    assert [d["digest"] for d in manifest["layers"]] == list(image.diff_ids)
    index = json.loads((tmp_path / "out" / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == result.manifest_digest


def test_policy_rejects_before_anything_is_written(criolib_test_images: TestImages,
                                                   tmp_path: Path) -> None:
    policy = write_policy(tmp_path, {"default": [{"type": "insecureAcceptAnything"}],
                                     "transports": {"oci": {"": [{"type": "reject"}]}}})
    graph = tmp_path / "never"
    with pytest.raises(PolicyDenied):
        copy_image(oci(criolib_test_images, "busybox"),
                   f"containers-storage:[vfs@{graph}/g+{graph}/r]localhost/x:1", policy=policy)
    with pytest.raises(PolicyDenied):
        copy_image(oci(criolib_test_images, "busybox"), f"oci:{graph}/layout:x", policy=policy)
    assert not graph.exists()


def test_a_corrupt_layer_commits_nothing(criolib_test_images: TestImages, store: Store,
                                        tmp_path: Path) -> None:
    layout = copy_layout(criolib_test_images, tmp_path / "layout")
    image = criolib_test_images["multilayer"]
    flip_byte(blob_file(layout, image.layers[2].digest), 100)  # the last layer
    policy = write_policy(tmp_path)
    with pytest.raises(DigestMismatch) as info:
        copy_image(f"oci:{layout}:multilayer", "containers-storage:localhost/broken:1",
                   policy=policy, ctx=SystemContext(store=store))
    assert info.value.expected == image.layers[2].digest
    # Layers 1 and 2 were applied while 3 downloaded: they are gone again.
    assert store.images() == []
    assert store.layers() == []
    with pytest.raises(DigestMismatch):
        copy_image(f"oci:{layout}:multilayer", f"oci:{tmp_path / 'out'}:x", policy=policy)
    assert not (tmp_path / "out" / "index.json").exists()


def test_docker_archive_becomes_an_oci_image(criolib_test_images: TestImages,
                                             tmp_path: Path) -> None:
    image = criolib_test_images["busybox"]
    assert image.archive is not None
    policy = write_policy(tmp_path)
    result = copy_image(f"docker-archive:{image.archive}", f"oci:{tmp_path / 'o'}:bb",
                        policy=policy)
    assert result.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert result.config_digest == image.config_digest
    assert result.source_digest != result.manifest_digest
    with pytest.raises(UnsupportedConversion, match="preserve_digests"):
        copy_image(f"docker-archive:{image.archive}", f"oci:{tmp_path / 'p'}:bb",
                   policy=policy, preserve_digests=True)


def test_an_index_gives_the_platform_asked_for(criolib_test_images: TestImages,
                                               tmp_path: Path) -> None:
    index = criolib_test_images["multiarch"]
    arm = next(i for i in index.instances if (i.platform or {}).get("architecture") == "arm64")
    policy = write_policy(tmp_path)
    result = copy_image(oci(criolib_test_images, "multiarch"), f"oci:{tmp_path / 'a'}:arm",
                        policy=policy, platform=Platform("linux", "arm64"))
    assert result.manifest_digest == arm.digest
    assert result.config_digest == arm.config_digest
    with pytest.raises(NoMatchingPlatform):
        copy_image(oci(criolib_test_images, "multiarch"), f"oci:{tmp_path / 'n'}:x",
                   policy=policy, platform=Platform("linux", "riscv64"))
    assert not (tmp_path / "n").exists()  # chosen before the destination opened


def test_all_platforms_copies_the_index_as_it_is(criolib_test_images: TestImages,
                                                 store: Store, tmp_path: Path) -> None:
    index = criolib_test_images["multiarch"]
    policy = write_policy(tmp_path)
    result = copy_image(oci(criolib_test_images, "multiarch"), f"oci:{tmp_path / 'all'}:x",
                        policy=policy, all_platforms=True)
    assert (result.manifest_digest, result.media_type) == (index.digest, MEDIA_TYPE_OCI_INDEX)
    assert len(result.instances) == 3  # amd64, arm64 and the attestation
    with pytest.raises(UnsupportedConversion, match="one platform"):
        copy_image(oci(criolib_test_images, "multiarch"), "containers-storage:localhost/all:1",
                   policy=policy, ctx=SystemContext(store=store), all_platforms=True)
    assert store.images() == []


def test_progress_reports_every_layer_in_commit_order(criolib_test_images: TestImages,
                                                      tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    events: list[ProgressEvent] = []
    copy_image(oci(criolib_test_images, "multilayer"), f"oci:{tmp_path / 'p'}:x",
               policy=write_policy(tmp_path), progress=events.append, concurrency=2)
    done = [e for e in events if e.kind == "done" and e.index is not None]
    assert [e.index for e in done] == [0, 1, 2]
    assert [e.digest for e in done] == [d.digest for d in image.layers]
    for layer in image.layers:
        mine = [e for e in events if e.digest == layer.digest]
        assert mine[0].kind == "started"
        assert max(e.offset for e in mine) == layer.size
    assert {e.image for e in events} == {image.digest}


def test_identical_concurrent_copies_do_the_work_once(criolib_test_images: TestImages,
                                                      store: Store, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    ctx = SystemContext(store=store)
    events: list[ProgressEvent] = []
    lock = threading.Lock()

    def record(event: ProgressEvent) -> None:
        with lock:
            events.append(event)

    errors: list[BaseException] = []

    def pull(tag: str) -> None:
        try:
            copy_image(oci(criolib_test_images, "multilayer"),
                       f"containers-storage:localhost/same:{tag}", policy=policy, ctx=ctx,
                       progress=record)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(str(i),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    started = [e for e in events if e.kind == "started" and e.index is not None]
    assert len(started) == 3  # each of the 3 layers downloaded by one copy only
    assert set(store.image("localhost/same:0").names) == {
        "localhost/same:0", "localhost/same:1", "localhost/same:2"}


def test_concurrency_must_be_positive(criolib_test_images: TestImages, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="concurrency") as caught:
        copy_image(oci(criolib_test_images, "busybox"), f"oci:{tmp_path}/x:y",
                   policy=write_policy(tmp_path), concurrency=0)
    assert caught.value.argument == "concurrency"
