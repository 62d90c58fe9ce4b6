"""The local transports when things go wrong, and their names: the registry, parsing,
unverified blobs, commits, multi-image archives, hostile archives, clean-up."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.image._errors import (
    BlobNotFound,
    CorruptImage,
    DigestMismatch,
    DuplicateTransport,
    ImageNotFound,
    InvalidImageName,
    TransportError,
    UnknownTransport,
    UnsupportedManifest,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    manifest_digest,
    parse_manifest,
)
from criolib.image._transports import (
    SystemContext,
    get_transport,
    parse_image_name,
    register_transport,
    transport_names,
)
from criolib.image._transports._dir import DirReference
from criolib.image._transports._docker_archive import DockerArchiveReference
from criolib.image._transports._oci import OCI_TRANSPORT, OCIReference, OCITransport
from criolib.image._transports._oci_archive import OCIArchiveSource
from criolib.testing import TestImages
from tests.image.test_transports_local import check_image, copy_simple, open_source

CTX = SystemContext()


# -- the registry and names ---------------------------------------------------------------


def test_registry_knows_the_local_transports() -> None:
    assert {"oci", "oci-archive", "docker-archive", "dir"} <= set(transport_names())
    assert get_transport("oci") is OCI_TRANSPORT
    with pytest.raises(UnknownTransport) as err:
        get_transport("ftp")
    assert "oci-archive" in str(err.value) and "dir" in str(err.value)
    assert isinstance(err.value, LookupError)


def test_duplicate_names_are_refused() -> None:
    register_transport(OCI_TRANSPORT)  # the same object again: fine
    with pytest.raises(DuplicateTransport, match="'oci'"):
        register_transport(OCITransport())
    with pytest.raises(InvalidImageName):
        register_transport(attrs.evolve(OCI_TRANSPORT, name="a:b"))
    assert get_transport("oci") is OCI_TRANSPORT


@pytest.mark.parametrize("name", ["", "oci", ":x", "busybox"])
def test_image_names_need_a_transport(name: str) -> None:
    with pytest.raises((InvalidImageName, UnknownTransport)):
        parse_image_name(name)


def test_parse_local_names(tmp_path: Path) -> None:
    ref = parse_image_name(f"oci:{tmp_path}/l:my/app:1.0")
    assert ref == OCIReference(tmp_path / "l", "my/app:1.0")
    assert ref.string_within_transport() == f"{tmp_path}/l:my/app:1.0"
    assert parse_image_name(f"oci:{ref.string_within_transport()}") == ref
    assert ref.policy_scope() == f"{tmp_path.resolve()}/l"
    assert parse_image_name(f"oci:{tmp_path}:@2") == OCIReference(tmp_path, "", 2)
    with pytest.raises(InvalidImageName):
        parse_image_name(f"oci:{tmp_path}:-bad")
    with pytest.raises(InvalidImageName):
        parse_image_name("oci::name")
    assert parse_image_name(f"dir:{tmp_path}/a:b") == DirReference(tmp_path / "a:b")
    archive = parse_image_name(f"docker-archive:{tmp_path}/a.tar:busybox")
    assert archive == DockerArchiveReference(tmp_path / "a.tar",
                                             "docker.io/library/busybox:latest")
    assert archive.policy_scope() == ""
    assert parse_image_name(f"docker-archive:{tmp_path}/a.tar:@1") == DockerArchiveReference(
        tmp_path / "a.tar", None, 1)
    for bad in (f"{tmp_path}/a.tar:Upper", f"{tmp_path}/a.tar:x@sha256:{'0' * 64}", ":x"):
        with pytest.raises(InvalidImageName):
            parse_image_name(f"docker-archive:{bad}")
    relative = parse_image_name("dir:relative/path")
    assert isinstance(relative, DirReference) and relative.path.is_absolute()


# -- choosing images -------------------------------------------------------------------------


def test_oci_selection_errors(criolib_test_images: TestImages) -> None:
    layout = criolib_test_images.layout
    with pytest.raises(ImageNotFound, match="name one") as err:
        open_source(f"oci:{layout}")
    assert "busybox" in str(err.value) and "multiarch" in str(err.value)
    with pytest.raises(ImageNotFound, match="no image named 'nope'"):
        open_source(f"oci:{layout}:nope")
    with pytest.raises(ImageNotFound, match="@99"):
        open_source(f"oci:{layout}:@99")
    with closing(open_source(f"oci:{layout}:@0")) as src:
        assert manifest_digest(src.get_manifest()[0]) == criolib_test_images["busybox"].digest
    with pytest.raises(ImageNotFound, match="not an OCI image layout"):
        open_source(f"oci:{layout.parent}")
    with closing(open_source(f"oci:{layout}:busybox")) as src:
        with pytest.raises(BlobNotFound):
            src.get_blob("sha256:" + "0" * 64)
        assert not src.has_blob_cheaply("sha256:" + "0" * 64)


def merged_archive(images: TestImages, names: list[str], dest: Path) -> Path:
    """One docker archive holding several test images (manifest.json entries appended)."""
    items: list[Any] = []
    seen: set[str] = set()
    with tarfile.open(dest, "w") as out:
        for name in names:
            archive = images[name].archive
            assert archive is not None
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.name == "manifest.json":
                        items += json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                    elif member.name not in seen and member.name != "repositories":
                        seen.add(member.name)
                        out.addfile(member, tar.extractfile(member) if member.isfile() else None)
        data = json.dumps(items).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    return dest


def test_docker_archive_with_several_images(criolib_test_images: TestImages,
                                            tmp_path: Path) -> None:
    path = merged_archive(criolib_test_images, ["busybox", "multilayer"], tmp_path / "two.tar")
    with pytest.raises(ImageNotFound, match="holds 2 images") as err:
        open_source(f"docker-archive:{path}")
    assert "testbed/busybox:latest" in str(err.value)
    for ref, name in ((f"{path}:@0", "busybox"), (f"{path}:@1", "multilayer"),
                      (f"{path}:testbed/multilayer", "multilayer"),
                      (f"{path}:docker.io/testbed/busybox:latest", "busybox")):
        with closing(open_source(f"docker-archive:{ref}")) as src:
            check_image(src, criolib_test_images[name], same_manifest=False)
    with pytest.raises(ImageNotFound, match="no image tagged"):
        open_source(f"docker-archive:{path}:testbed/busybox:v2")
    with pytest.raises(ImageNotFound, match="@2"):
        open_source(f"docker-archive:{path}:@2")


def test_docker_archive_with_gzip_layers_and_gzip_archive(criolib_test_images: TestImages,
                                                          tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    assert image.archive is not None
    repacked = tmp_path / "gz-layers.tar"
    with tarfile.open(image.archive) as tar, tarfile.open(repacked, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None and member.name.endswith("layer.tar"):
                data = gzip.compress(data, mtime=0)
            if data is not None:
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    squeezed = tmp_path / "whole.tar.gz"
    squeezed.write_bytes(gzip.compress(image.archive.read_bytes()))
    for path in (repacked, squeezed):
        with closing(open_source(f"docker-archive:{path}")) as src:
            check_image(src, image, same_manifest=False)
            m = parse_manifest(*src.get_manifest())
            plain = parse_manifest(*open_source(f"docker-archive:{image.archive}").get_manifest())
            assert m == plain  # sizes are the uncompressed ones
    # close() removes the uncompressed copy of a compressed archive.
    src = open_source(f"docker-archive:{squeezed}")
    tmp = src._tmp  # type: ignore[attr-defined]
    assert tmp is not None and tmp.exists()
    src.close()
    assert not tmp.exists()


def test_docker_archive_that_lies(criolib_test_images: TestImages, tmp_path: Path) -> None:
    image = criolib_test_images["busybox"]
    assert image.archive is not None
    bad = tmp_path / "bad.tar"
    with tarfile.open(image.archive) as tar, tarfile.open(bad, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data is not None and member.name.endswith("layer.tar"):
                data = gzip.compress(data[:-1024] + b"\0" * 1024 + b"x", mtime=0)
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    with closing(open_source(f"docker-archive:{bad}")) as src, pytest.raises(
            CorruptImage, match="diff_id"):
        src.get_manifest()
    no_manifest = tmp_path / "legacy.tar"
    with tarfile.open(no_manifest, "w") as out:
        info = tarfile.TarInfo("repositories")
        out.addfile(info, io.BytesIO())
    with pytest.raises(CorruptImage, match=r"manifest\.json"):
        open_source(f"docker-archive:{no_manifest}")
    with pytest.raises(ImageNotFound):
        open_source(f"docker-archive:{tmp_path}/missing.tar")


# -- destinations: verify, commit, clean up ---------------------------------------------------


def dest(name: str) -> Any:
    return parse_image_name(name).new_destination(CTX)


def test_unverified_blobs_are_never_kept(tmp_path: Path) -> None:
    data = b"layer bytes"
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + "e" * 64
    for name in (f"oci:{tmp_path}/l:x", f"dir:{tmp_path}/d", f"oci-archive:{tmp_path}/a.tar:x",
                 f"docker-archive:{tmp_path}/b.tar:x:y"):
        d = dest(name)
        try:
            with pytest.raises(DigestMismatch) as err:
                d.put_blob(io.BytesIO(data), wrong, len(data), MEDIA_TYPE_OCI_LAYER_GZIP)
            assert err.value.expected == wrong and err.value.actual == good
            with pytest.raises(DigestMismatch, match="bytes, not"):
                d.put_blob(io.BytesIO(data), good, len(data) + 1, MEDIA_TYPE_OCI_LAYER_GZIP)
            with pytest.raises(DigestMismatch, match="longer"):
                d.put_blob(io.BytesIO(data * 1000), good, len(data), MEDIA_TYPE_OCI_LAYER_GZIP)
            assert not d.has_blob(wrong) and not d.has_blob(good)
            d.put_blob(io.BytesIO(data), good, -1, MEDIA_TYPE_OCI_LAYER_GZIP)
            assert d.has_blob(good) and d.has_blob(good, len(data))
            assert not d.has_blob(good, len(data) + 1)
            with pytest.raises(TransportError, match="without a manifest"):
                d.commit()
        finally:
            d.close()
    leftovers = [p for p in tmp_path.rglob("*") if ".criolib" in p.name or p.suffix == ".tmp"]
    assert not leftovers
    assert not (tmp_path / "l" / "index.json").exists()
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "b.tar").exists()


def test_nothing_is_visible_before_commit(criolib_test_images: TestImages,
                                          tmp_path: Path) -> None:
    src = open_source(f"oci:{criolib_test_images.layout}:busybox")
    data, media_type = src.get_manifest()
    m = parse_manifest(data, media_type)
    for name in (f"oci:{tmp_path}/l:x", f"dir:{tmp_path}/d", f"oci-archive:{tmp_path}/a.tar:x"):
        d = dest(name)
        try:
            for desc in (m.config, *m.layers):  # type: ignore[union-attr]
                with src.get_blob(desc.digest) as f:
                    d.put_blob(f, desc.digest, desc.size, desc.media_type)
            d.put_manifest(data, media_type)
        finally:
            d.close()  # no commit
    assert not (tmp_path / "l" / "index.json").exists()
    assert not (tmp_path / "d").exists() and not (tmp_path / "a.tar").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l"]


def test_commit_needs_every_blob(criolib_test_images: TestImages, tmp_path: Path) -> None:
    data, media_type = open_source(f"oci:{criolib_test_images.layout}:busybox").get_manifest()
    for name in (f"oci:{tmp_path}/l:x", f"dir:{tmp_path}/d"):
        d = dest(name)
        d.put_manifest(data, media_type)
        with pytest.raises(TransportError, match="commit without blob"):
            d.commit()
        d.close()
    d = dest(f"docker-archive:{tmp_path}/a.tar")
    d.put_manifest(data, media_type)
    with pytest.raises(TransportError, match="without the config"):
        d.commit()
    d.close()


def test_manifest_types_each_destination_takes(criolib_test_images: TestImages,
                                               tmp_path: Path) -> None:
    index, _ = open_source(f"oci:{criolib_test_images.layout}:multiarch").get_manifest()
    d = dest(f"docker-archive:{tmp_path}/a.tar")
    with pytest.raises(UnsupportedManifest, match="single images"):
        d.put_manifest(index, MEDIA_TYPE_OCI_INDEX)
    d.close()
    d = dest(f"oci:{tmp_path}/l")
    with pytest.raises(UnsupportedManifest, match="convert"):
        d.put_manifest(b"{}", MEDIA_TYPE_DOCKER_MANIFEST)
    with pytest.raises(DigestMismatch):
        d.put_manifest(index, MEDIA_TYPE_OCI_INDEX, instance="sha256:" + "0" * 64)
    d.close()


def test_oci_names_move_to_the_newest_image(criolib_test_images: TestImages,
                                            tmp_path: Path) -> None:
    layout = criolib_test_images.layout
    copy_simple(f"oci:{layout}:busybox", f"oci:{tmp_path}/l:app")
    copy_simple(f"oci:{layout}:busybox", f"oci:{tmp_path}/l:other")
    copy_simple(f"oci:{layout}:multilayer", f"oci:{tmp_path}/l:app")
    copy_simple(f"oci:{layout}:multilayer", f"oci:{tmp_path}/l")  # unnamed
    copy_simple(f"oci:{layout}:multilayer", f"oci:{tmp_path}/l")  # unnamed, merged
    index = json.loads((tmp_path / "l" / "index.json").read_bytes())
    named = {(e.get("annotations") or {}).get("org.opencontainers.image.ref.name"): e["digest"]
             for e in index["manifests"]}
    assert named == {"app": criolib_test_images["multilayer"].digest,
                     "other": criolib_test_images["busybox"].digest,
                     None: criolib_test_images["multilayer"].digest}
    assert len(index["manifests"]) == 3
    assert json.loads((tmp_path / "l" / "oci-layout").read_bytes()) == {
        "imageLayoutVersion": "1.0.0"}


def test_destinations_refuse_foreign_paths(criolib_test_images: TestImages,
                                           tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "important.txt").write_text("keep me")
    for name in (f"oci:{tmp_path}/busy", f"dir:{tmp_path}/busy"):
        with pytest.raises(TransportError, match="refusing"):
            dest(name)
    (tmp_path / "full.tar").write_bytes(b"data")
    with pytest.raises(TransportError, match="already exists"):
        dest(f"docker-archive:{tmp_path}/full.tar")
    with pytest.raises(InvalidImageName, match="@N"):
        dest(f"oci:{tmp_path}/l:@0")
    assert (tmp_path / "busy" / "important.txt").read_text() == "keep me"
    # A dir: image is replaced whole by the next one.
    copy_simple(f"oci:{criolib_test_images.layout}:busybox", f"dir:{tmp_path}/d")
    copy_simple(f"oci:{criolib_test_images.layout}:multilayer", f"dir:{tmp_path}/d")
    with closing(open_source(f"dir:{tmp_path}/d")) as src:
        check_image(src, criolib_test_images["multilayer"], same_manifest=True)
    busybox_layer = criolib_test_images["busybox"].layers[0].digest[7:]
    assert not (tmp_path / "d" / busybox_layer).exists()
    assert (tmp_path / "d" / "version").read_text() == "Directory Transport Version: 1.1\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_docker_archive_checks_diff_ids(criolib_test_images: TestImages,
                                        tmp_path: Path) -> None:
    src = open_source(f"oci:{criolib_test_images.layout}:busybox")
    data, media_type = src.get_manifest()
    m = parse_manifest(data, media_type)
    d = dest(f"docker-archive:{tmp_path}/a.tar:x:y")
    with src.get_blob(m.config.digest) as f:  # type: ignore[union-attr]
        d.put_blob(f, m.config.digest, m.config.size, m.config.media_type)  # type: ignore[union-attr]
    layer = m.layers[0]  # type: ignore[union-attr]
    with src.get_blob(layer.digest) as f:
        d.put_layer(f, {"digest": layer.digest, "size": layer.size,
                        "mediaType": layer.media_type}, "sha256:" + "0" * 64)
    d.put_manifest(data, media_type)
    with pytest.raises(DigestMismatch, match="config says"):
        d.commit()
    d.close()
    assert not (tmp_path / "a.tar").exists()
    assert not list(tmp_path.iterdir())


# -- hostile archives and clean-up -----------------------------------------------------------


def test_oci_archive_member_outside_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as out:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        out.addfile(info, io.BytesIO(b"x"))
    src = open_source(f"oci-archive:{evil}")
    with pytest.raises(CorruptImage, match="outside"):
        src.get_manifest()
    src.close()
    assert not (tmp_path.parent / "escaped").exists()
    absolute = tmp_path / "abs.tar"
    with tarfile.open(absolute, "w") as out:
        info = tarfile.TarInfo("/etc/evil")
        out.addfile(info, io.BytesIO())
    with closing(open_source(f"oci-archive:{absolute}")) as src, pytest.raises(
            CorruptImage, match="absolute"):
        src.get_manifest()
    with pytest.raises(ImageNotFound):
        open_source(f"oci-archive:{tmp_path}/missing.tar")


def test_oci_archive_source_cleans_up(criolib_test_images: TestImages, tmp_path: Path) -> None:
    copy_simple(f"oci:{criolib_test_images.layout}:busybox", f"oci-archive:{tmp_path}/a.tar")
    src = open_source(f"oci-archive:{tmp_path}/a.tar")
    assert isinstance(src, OCIArchiveSource)
    assert src.descriptor.digest == criolib_test_images["busybox"].digest
    tmp = src._tmp
    assert tmp is not None and (tmp / "index.json").is_file()
    src.close()
    assert not tmp.exists()


def test_corrupt_layout_blob_is_caught(criolib_test_images: TestImages, tmp_path: Path) -> None:
    shutil.copytree(criolib_test_images.layout, tmp_path / "l")
    digest = criolib_test_images["busybox"].digest
    blob = tmp_path / "l" / "blobs" / "sha256" / digest[7:]
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b" ")
    with closing(open_source(f"oci:{tmp_path}/l:busybox")) as src, pytest.raises(
            DigestMismatch):
        src.get_manifest()
    (tmp_path / "l" / "index.json").write_text("{not json")
    with pytest.raises(CorruptImage, match=r"index\.json"):
        open_source(f"oci:{tmp_path}/l:busybox")
