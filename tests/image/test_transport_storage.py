"""The containers-storage: transport: references, the destination's commit, the source's export."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.image import (
    InvalidReference,
    StorageReference,
    StoreSpec,
    SystemContext,
    copy_image,
    parse_image_name,
)
from criolib.storage import ImageUnknown, Store
from criolib.testing import TestImages, require_root
from tests.image.copy_support import blob_file, open_test_store, sha256, write_policy

HEX = "a" * 64


@pytest.mark.parametrize(("text", "spec", "name", "image_id"), [
    ("busybox", StoreSpec(), "docker.io/library/busybox:latest", None),
    ("[overlay@/g+/r:mountopt=nodev,size=1G]localhost/x:1",
     StoreSpec("overlay", Path("/g"), Path("/r"), ("mountopt=nodev", "size=1G")),
     "localhost/x:1", None),
    ("[/var/lib/g]quay.io/a/b", StoreSpec(None, Path("/var/lib/g")), "quay.io/a/b:latest", None),
    ("[vfs@/g]x@sha256:" + "b" * 64, StoreSpec("vfs", Path("/g")),
     "docker.io/library/x@sha256:" + "b" * 64, None),
    (f"localhost/x:1@{HEX}", StoreSpec(), "localhost/x:1", HEX),
    (HEX, StoreSpec(), None, HEX),
    (f"[/g]@{HEX}", StoreSpec(None, Path("/g")), None, HEX),
])
def test_references_parse_like_containers_image(text: str, spec: StoreSpec, name: str | None,
                                               image_id: str | None) -> None:
    ref = parse_image_name(f"containers-storage:{text}")
    assert isinstance(ref, StorageReference)
    assert ref.spec == spec
    assert (str(ref.name) if ref.name else None) == name
    assert ref.id == image_id
    again = parse_image_name(str(ref))
    assert again == ref


@pytest.mark.parametrize("text", [
    "", "[overlay@/g", "[@/g]x", "[overlay@]x", "[relative/g]x", "[/g+relative]x", "[/g]",
    "x@nothex", "x@", "UPPER",
])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference):
        StorageReference.parse(text)


def test_policy_scope_names_driver_and_graph_root() -> None:
    ref = StorageReference.parse("[overlay@/g+/r]localhost/x:1")
    assert ref.policy_scope() == "[overlay@/g]localhost/x:1"
    assert StorageReference.parse(f"[vfs@/g]{HEX}").policy_scope() == f"[vfs@/g]@{HEX}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


@pytest.mark.integration
def test_an_uncommitted_copy_removes_the_layers_it_made(criolib_test_images: TestImages,
                                                        store: Store) -> None:
    image = criolib_test_images["multilayer"]
    dest = StorageReference.parse("localhost/x:1").new_destination(SystemContext(store=store))
    for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
        with blob_file(criolib_test_images.layout, desc.digest).open("rb") as f:
            dest.put_layer(f, desc.to_json(), diff_id)
    assert len(store.layers()) == 3
    dest.close()
    assert store.layers() == []


@pytest.mark.integration
def test_commit_without_the_config_or_layers_fails(criolib_test_images: TestImages,
                                                   store: Store) -> None:
    image = criolib_test_images["busybox"]
    layout = criolib_test_images.layout
    manifest = blob_file(layout, image.digest).read_bytes()
    dest = StorageReference.parse("localhost/x:1").new_destination(SystemContext(store=store))
    try:
        dest.put_manifest(manifest, "application/vnd.oci.image.manifest.v1+json")
        with pytest.raises(Exception, match="config"):
            dest.commit()
        assert image.config_digest is not None
        config = blob_file(layout, image.config_digest).read_bytes()
        dest.put_blob(io.BytesIO(config), image.config_digest, len(config), "")
        with pytest.raises(Exception, match="layers"):
            dest.commit()
    finally:
        dest.close()
    assert store.images() == []


@pytest.mark.integration
def test_the_source_exports_layers_and_rewrites_what_changed(
        criolib_test_images: TestImages, store: Store, tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    ctx = SystemContext(store=store)
    layout = criolib_test_images.layout
    copy_image(f"oci:{layout}:busybox", "containers-storage:localhost/bb:1", policy=policy,
               ctx=ctx)
    copy_image(f"oci:{layout}:multilayer", "containers-storage:localhost/ml:1", policy=policy,
               ctx=ctx)
    bb = StorageReference.parse("localhost/bb:1").new_source(ctx)
    try:
        raw, _ = bb.get_manifest()
        doc = json.loads(raw)
        assert doc["config"]["digest"] == criolib_test_images["busybox"].config_digest
        layer = doc["layers"][0]
        with bb.get_blob(layer["digest"]) as blob:
            assert sha256(blob.read()) == layer["digest"]
    finally:
        bb.close()
    ml = StorageReference.parse("localhost/ml:1").new_source(ctx)
    try:
        raw, _ = ml.get_manifest()
        doc = json.loads(raw)
        with ml.get_blob(doc["config"]["digest"]) as blob:
            config = json.loads(blob.read())
        # No tar-split in criolib.storage: some layers export differently, and the
        # config follows what is exported.
        assert config["rootfs"]["diff_ids"] == [d["digest"] for d in doc["layers"]]
        assert config["config"] == json.loads(blob_file(
            layout, criolib_test_images["multilayer"].config_digest or "").read_bytes())["config"]
    finally:
        ml.close()


@pytest.mark.integration
def test_a_source_names_an_image_by_name_digest_or_id(criolib_test_images: TestImages,
                                                      store: Store, tmp_path: Path) -> None:
    ctx = SystemContext(store=store)
    result = copy_image(f"oci:{criolib_test_images.layout}:busybox",
                        "containers-storage:localhost/bb:1", policy=write_policy(tmp_path),
                        ctx=ctx)
    assert result.config_digest is not None
    image_id = result.config_digest.partition(":")[2]
    for text in ("localhost/bb:1", f"localhost/bb@{result.manifest_digest}", image_id,
                 f"localhost/bb:1@{image_id}"):
        source = StorageReference.parse(text).new_source(ctx)
        source.close()
    with pytest.raises(ImageUnknown):
        StorageReference.parse("localhost/bb:2").new_source(ctx)
    with pytest.raises(ImageUnknown):
        StorageReference.parse(f"localhost/other:1@{image_id}").new_source(ctx)
