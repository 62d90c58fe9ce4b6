"""The local transports (oci:, oci-archive:, docker-archive:, dir:) read the test bed and
write what they read back identically; skopeo reads what they write."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_LAYER_TAR,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    DockerManifest,
    OCIIndex,
    OCIManifest,
    config_descriptor,
    is_index,
    layers,
    manifest_digest,
    parse_image_config,
    parse_manifest,
)
from criolib.image._transports import (
    ImageDestination,
    ImageSource,
    SystemContext,
    parse_image_name,
)
from criolib.testing import TestImage, TestImages, require_binaries

CTX = SystemContext()
SINGLE = ["busybox", "multilayer", "multilayer-zstd", "multilayer-uncompressed"]


def sha256_of(stream: Any) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with stream:
        while chunk := stream.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return f"sha256:{h.hexdigest()}", n


def open_source(name: str) -> ImageSource:
    return parse_image_name(name).new_source(CTX)


def _copy_one(src: ImageSource, dst: ImageDestination, data: bytes, media_type: str,
              instance: str | None) -> None:
    m = parse_manifest(data, media_type)
    cd = config_descriptor(m)
    with src.get_blob(cd.digest, cd.size) as f:
        config = f.read()
    if not dst.has_blob(cd.digest, cd.size):
        import io

        dst.put_blob(io.BytesIO(config), cd.digest, cd.size, cd.media_type)
    for layer, diff_id in zip(layers(m), parse_image_config(config).diff_ids, strict=True):
        with src.get_blob(layer.digest, layer.size) as f:
            dst.put_layer(f, {"mediaType": layer.media_type, "digest": layer.digest,
                              "size": layer.size}, diff_id)
    dst.put_manifest(data, media_type, instance)


def copy_simple(src_name: str, dest_name: str) -> bytes:
    """The plainest copy: manifest, blobs, layers in order, manifest, commit."""
    src = open_source(src_name)
    dst = parse_image_name(dest_name).new_destination(CTX)
    try:
        data, media_type = src.get_manifest()
        top = parse_manifest(data, media_type)
        if isinstance(top, OCIIndex):
            for e in top.manifests:
                inner, inner_type = src.get_manifest(e.digest)
                _copy_one(src, dst, inner, inner_type, e.digest)
            dst.put_manifest(data, media_type)
        else:
            _copy_one(src, dst, data, media_type, None)
        dst.commit()
    finally:
        dst.close()
        src.close()
    return data


def check_image(source: ImageSource, image: TestImage, *, same_manifest: bool) -> None:
    """The source serves ``image``: its config, diff_ids, and every blob by its digest."""
    data, media_type = source.get_manifest()
    m = parse_manifest(data, media_type)
    if same_manifest:
        assert manifest_digest(data) == image.digest
    cd = config_descriptor(m)
    assert cd.digest == image.config_digest
    with source.get_blob(cd.digest, cd.size) as f:
        assert parse_image_config(f.read()).diff_ids == image.diff_ids
    for layer in layers(m):
        assert source.has_blob_cheaply(layer.digest)
        assert sha256_of(source.get_blob(layer.digest, layer.size)) == (layer.digest,
                                                                         layer.size)


# -- reading the test bed ------------------------------------------------------------------


@pytest.mark.parametrize("name", SINGLE)
def test_read_oci(criolib_test_images: TestImages, name: str) -> None:
    image = criolib_test_images[name]
    with closing(open_source(f"oci:{criolib_test_images.layout}:{name}")) as src:
        check_image(src, image, same_manifest=True)
        assert src.get_manifest()[1] == image.descriptor.media_type


@pytest.mark.parametrize("name", SINGLE)
def test_read_docker_archive(criolib_test_images: TestImages, name: str) -> None:
    image = criolib_test_images[name]
    assert image.archive is not None
    for ref in (f"docker-archive:{image.archive}", f"docker-archive:{image.archive}:@0",
                f"docker-archive:{image.archive}:{image.reference}"):
        with closing(open_source(ref)) as src:
            check_image(src, image, same_manifest=False)
            data, media_type = src.get_manifest()
            m = parse_manifest(data, media_type)
            assert isinstance(m, DockerManifest) and media_type == MEDIA_TYPE_DOCKER_MANIFEST
            assert [x.digest for x in m.layers] == list(image.diff_ids)
            assert {x.media_type for x in m.layers} == {MEDIA_TYPE_DOCKER_LAYER_TAR}


def test_read_multiarch_index(criolib_test_images: TestImages) -> None:
    image = criolib_test_images["multiarch"]
    with closing(open_source(f"oci:{criolib_test_images.layout}:multiarch")) as src:
        data, media_type = src.get_manifest()
        assert media_type == MEDIA_TYPE_OCI_INDEX and manifest_digest(data) == image.digest
        index = parse_manifest(data, media_type)
        assert isinstance(index, OCIIndex)
        for instance in image.instances:
            inner, inner_type = src.get_manifest(instance.digest)
            assert manifest_digest(inner) == instance.digest
            assert isinstance(parse_manifest(inner, inner_type), OCIManifest)
            check_image(_Instance(src, instance.digest), instance, same_manifest=True)


class _Instance:
    """One instance of an index source, seen as an image source of its own."""

    def __init__(self, src: ImageSource, digest: str) -> None:
        self.src, self.digest = src, digest
        self.reference = src.reference

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        return self.src.get_manifest(self.digest)

    def get_blob(self, digest: str, size: int = -1) -> Any:
        return self.src.get_blob(digest, size)

    def has_blob_cheaply(self, digest: str) -> bool:
        return self.src.has_blob_cheaply(digest)

    def close(self) -> None:
        pass


# -- writing every local transport -------------------------------------------------------


def dest_names(tmp: Path, name: str) -> Iterator[tuple[str, str]]:
    """(destination name, name to read it back) for each local transport."""
    yield f"oci:{tmp}/layout:{name}", f"oci:{tmp}/layout:{name}"
    yield f"oci-archive:{tmp}/{name}.oci.tar:{name}", f"oci-archive:{tmp}/{name}.oci.tar:{name}"
    yield f"dir:{tmp}/dir-{name}", f"dir:{tmp}/dir-{name}"
    yield (f"docker-archive:{tmp}/{name}.docker.tar:testbed/{name}:v1",
           f"docker-archive:{tmp}/{name}.docker.tar:docker.io/testbed/{name}:v1")


@pytest.mark.parametrize("name", SINGLE)
def test_write_each_transport_and_read_back(criolib_test_images: TestImages, tmp_path: Path,
                                            name: str) -> None:
    image = criolib_test_images[name]
    for dest, back in dest_names(tmp_path, name):
        copy_simple(f"oci:{criolib_test_images.layout}:{name}", dest)
        with closing(open_source(back)) as src:
            check_image(src, image, same_manifest=not dest.startswith("docker-archive:"))
    # The layout holds exactly what the test bed holds for this image.
    for blob in (tmp_path / "layout" / "blobs" / "sha256").iterdir():
        assert blob.read_bytes() == (criolib_test_images.layout / "blobs" / "sha256" /
                                     blob.name).read_bytes()


def test_docker_archive_round_trip(criolib_test_images: TestImages, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    first = copy_simple(f"docker-archive:{image.archive}", f"docker-archive:{tmp_path}/a.tar")
    again = copy_simple(f"docker-archive:{tmp_path}/a.tar", f"dir:{tmp_path}/d")
    assert first == again  # the generated manifest is a function of the archive's content
    with closing(open_source(f"dir:{tmp_path}/d")) as src:
        check_image(src, image, same_manifest=False)


@pytest.mark.parametrize("kind", ["oci", "oci-archive", "dir"])
def test_write_multiarch_index(criolib_test_images: TestImages, tmp_path: Path,
                               kind: str) -> None:
    image = criolib_test_images["multiarch"]
    dest = {"oci": f"oci:{tmp_path}/l:m", "oci-archive": f"oci-archive:{tmp_path}/m.tar:m",
            "dir": f"dir:{tmp_path}/d"}[kind]
    copy_simple(f"oci:{criolib_test_images.layout}:multiarch", dest)
    with closing(open_source(dest)) as src:
        data, media_type = src.get_manifest()
        assert manifest_digest(data) == image.digest
        assert is_index(parse_manifest(data, media_type))
        for instance in image.instances:
            check_image(_Instance(src, instance.digest), instance, same_manifest=True)


def test_archives_are_reproducible(criolib_test_images: TestImages, tmp_path: Path) -> None:
    src = f"oci:{criolib_test_images.layout}:multilayer"
    for kind in ("oci-archive", "docker-archive"):
        copy_simple(src, f"{kind}:{tmp_path}/one.tar:x/y:z")
        copy_simple(src, f"{kind}:{tmp_path}/two.tar:x/y:z")
        assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
        (tmp_path / "one.tar").unlink()
        (tmp_path / "two.tar").unlink()


def test_docker_archive_is_the_classic_format(criolib_test_images: TestImages,
                                              tmp_path: Path) -> None:
    import tarfile

    copy_simple(f"oci:{criolib_test_images.layout}:multilayer",
                f"docker-archive:{tmp_path}/a.tar:busybox")
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
        items = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
        assert all(m.uid == 0 and m.mtime == 0 for m in tar.getmembers())
    assert items[0]["RepoTags"] == ["docker.io/library/busybox:latest"]
    config = criolib_test_images["multilayer"].config_digest
    assert config is not None and items[0]["Config"] == f"{config[7:]}.json"
    assert len(items[0]["Layers"]) == 3
    for layer in items[0]["Layers"]:
        layer_id = layer.split("/")[0]
        assert {f"{layer_id}/VERSION", f"{layer_id}/json", layer} <= set(names)
    assert repositories == {"docker.io/library/busybox": {
        "latest": items[0]["Layers"][-1].split("/")[0]}}


# -- skopeo reads what criolib writes ------------------------------------------------------


def skopeo_inspect(*args: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", "inspect", *args], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_skopeo_reads_what_we_write(criolib_test_images: TestImages, tmp_path: Path) -> None:
    require_binaries("skopeo")
    image = criolib_test_images["multilayer"]
    for dest, back in dest_names(tmp_path, "multilayer"):
        copy_simple(f"oci:{criolib_test_images.layout}:multilayer", dest)
        target = back if not back.startswith("docker-archive:") else dest.rsplit(":", 2)[0]
        doc = skopeo_inspect(target)
        config = skopeo_inspect("--config", target)
        assert config["rootfs"]["diff_ids"] == list(image.diff_ids)
        if dest.startswith("docker-archive:"):
            assert doc["Layers"] == list(image.diff_ids)
        else:
            assert doc["Digest"] == image.digest
            assert doc["Layers"] == [d.digest for d in image.layers]
    raw = skopeo_inspect("--raw", f"oci:{tmp_path}/layout:multilayer")
    assert raw["config"]["digest"] == image.config_digest


def test_skopeo_copies_our_docker_archive(criolib_test_images: TestImages,
                                          tmp_path: Path) -> None:
    require_binaries("skopeo")
    image = criolib_test_images["multilayer-zstd"]
    copy_simple(f"oci:{criolib_test_images.layout}:multilayer-zstd",
                f"docker-archive:{tmp_path}/a.tar:x:y")
    out = subprocess.run(["skopeo", "copy", "--quiet", f"docker-archive:{tmp_path}/a.tar",
                          f"oci:{tmp_path}/layout:copied"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    # skopeo re-serialises the config when it converts to OCI ("User": "" goes), so
    # compare what matters: the layers' uncompressed digests, read back by criolib.
    with closing(open_source(f"oci:{tmp_path}/layout:copied")) as src:
        data, media_type = src.get_manifest()
        cd = config_descriptor(parse_manifest(data, media_type))
        with src.get_blob(cd.digest) as f:
            assert parse_image_config(f.read()).diff_ids == image.diff_ids
