"""The test bed's images: reproducible, well-formed, and holding what they promise."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from criolib.testing import (
    ImageBuildError,
    MissingHostPart,
    TestImages,
    UnknownTestImage,
    _build,
    build_test_images,
    host_platform,
    require_binaries,
    require_root,
)
from tests.testing.conftest import SMALL_LARGE


@pytest.fixture(scope="module")
def images(criolib_test_images: TestImages) -> TestImages:
    return criolib_test_images


def _blob(images: TestImages, digest: str) -> bytes:
    return (images.layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def _json(images: TestImages, digest: str) -> Any:
    return json.loads(_blob(images, digest))


def _members(images: TestImages, layer: dict[str, Any]) -> dict[str, tarfile.TarInfo]:
    data = _blob(images, layer["digest"])
    if layer["mediaType"].endswith("+gzip"):
        data = gzip.decompress(data)
    elif layer["mediaType"].endswith("+zstd"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _tree_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "stamp.json"
    }


def test_two_builds_give_the_same_bytes(images: TestImages, tmp_path: Path) -> None:
    again = build_test_images(tmp_path / "again")
    assert [(i.name, i.digest) for i in again] == [(i.name, i.digest) for i in images]
    assert _tree_digests(again.root) == _tree_digests(images.root)


def test_a_finished_build_is_reused_and_a_damaged_one_rebuilt(tmp_path: Path) -> None:
    first = build_test_images(tmp_path)
    stamp_mtime = (tmp_path / "stamp.json").stat().st_mtime_ns
    assert build_test_images(tmp_path) == first
    assert (tmp_path / "stamp.json").stat().st_mtime_ns == stamp_mtime
    blob = first.layout / "blobs" / "sha256" / first["busybox"].digest.partition(":")[2]
    blob.unlink()
    again = build_test_images(tmp_path)
    assert blob.is_file()
    assert again["busybox"].digest == first["busybox"].digest


def test_layout_is_an_oci_image_layout(images: TestImages) -> None:
    assert json.loads((images.layout / "oci-layout").read_bytes()) == {
        "imageLayoutVersion": "1.0.0"
    }
    index = json.loads((images.layout / "index.json").read_bytes())
    names = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert names == {i.name: i.digest for i in images}
    # Every blob is stored under its own digest.
    for blob in (images.layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_every_manifest_reference_resolves(images: TestImages) -> None:
    for image in images:
        manifests = [i.descriptor for i in image.instances] or [image.descriptor]
        for desc in manifests:
            doc = _json(images, desc.digest)
            assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            for ref in [doc["config"], *doc["layers"]]:
                assert len(_blob(images, ref["digest"])) == ref["size"]


def test_busybox_image_has_users_and_applets(images: TestImages) -> None:
    img = images["busybox"]
    manifest = _json(images, img.digest)
    config = _json(images, manifest["config"]["digest"])
    assert config["os"] == "linux"
    assert config["architecture"] == host_platform()["architecture"]
    assert config["config"]["Cmd"] == ["sh"]
    members = _members(images, manifest["layers"][0])
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777
    passwd = members["etc/passwd"]
    assert passwd.isfile()
    layer = _blob(images, manifest["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        f = tar.extractfile("etc/passwd")
        assert f is not None
        assert b"tester:x:1000:1000:" in f.read()


def test_multilayer_layers_carry_every_kind_of_change(images: TestImages) -> None:
    manifest = _json(images, images["multilayer"].digest)
    base, changes, removal = (_members(images, layer) for layer in manifest["layers"])
    assert base["data/owned-by-tester.txt"].uid == 1000
    assert base["data/owned-by-tester.txt"].mode == 0o640
    assert "data/.wh.delete-me.txt" in changes
    assert "data/replaced/.wh..wh..opq" in changes
    link = changes["data/hardlink-dst.txt"]
    assert link.islnk() and link.linkname == "data/hardlink-src.txt"
    names = list(changes)
    assert names.index("data/hardlink-src.txt") < names.index("data/hardlink-dst.txt")
    assert changes["data/abs-symlink"].linkname == "/data/keep.txt"
    assert changes["data/rel-symlink"].linkname == "../bin/busybox"
    assert changes["data/setuid-bin"].mode == 0o4755
    assert changes["data/setgid-dir"].mode == 0o2775
    assert changes["data/sticky-dir"].mode == 0o1777
    assert changes["data/empty-dir"].isdir()
    assert changes["data/fifo"].isfifo()
    assert changes["data/xattr-file"].pax_headers["SCHILY.xattr.user.criolib.test"] == "layer2"
    assert "data/.wh.removed-dir" in removal


def test_multilayer_config_has_every_field_a_runtime_reads(images: TestImages) -> None:
    manifest = _json(images, images["multilayer"].digest)
    config = _json(images, manifest["config"]["digest"])
    c = config["config"]
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["WorkingDir"] == "/data"
    assert c["StopSignal"] == "SIGQUIT"
    assert "/data/volume" in c["Volumes"]
    assert config["rootfs"]["diff_ids"] == list(images["multilayer"].diff_ids)
    # One history entry is an empty layer, so history and diff_ids do not line up 1:1.
    assert sum(1 for h in config["history"] if not h.get("empty_layer")) == 3
    assert len(config["history"]) == 4


@pytest.mark.parametrize("name, media_type", [
    ("multilayer", "application/vnd.oci.image.layer.v1.tar+gzip"),
    ("multilayer-zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("multilayer-uncompressed", "application/vnd.oci.image.layer.v1.tar"),
])
def test_compressions_differ_in_blobs_not_in_content(
    images: TestImages, name: str, media_type: str
) -> None:
    img = images[name]
    assert {layer.media_type for layer in img.layers} == {media_type}
    assert img.diff_ids == images["multilayer"].diff_ids
    for desc, diff_id in zip(img.layers, img.diff_ids, strict=True):
        members = _members(images, desc.to_json())
        assert members  # decompresses to a tar
        if media_type.endswith(".tar"):
            assert desc.digest == diff_id


def test_multiarch_index(images: TestImages) -> None:
    img = images["multiarch"]
    assert img.is_index
    index = _json(images, img.digest)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = [m["platform"] for m in index["manifests"]]
    assert platforms == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"architecture": "unknown", "os": "unknown"},
    ]
    attestation = index["manifests"][2]
    assert attestation["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    assert attestation["annotations"]["vnd.docker.reference.digest"] == index["manifests"][0][
        "digest"]
    # Each real instance says which platform it is.
    for entry in index["manifests"][:2]:
        manifest = _json(images, entry["digest"])
        config = _json(images, manifest["config"]["digest"])
        assert config["architecture"] == entry["platform"]["architecture"]
        marker = _members(images, manifest["layers"][-1])["etc/criolib-platform"]
        assert marker.size == len("/".join(entry["platform"].values())) + 1


def test_docker_archive_matches_the_oci_image(images: TestImages) -> None:
    for img in images:
        if img.is_index:
            assert img.archive is None
            continue
        assert img.archive is not None
        with tarfile.open(img.archive) as tar:
            f = tar.extractfile("manifest.json")
            assert f is not None
            (entry,) = json.load(f)
            assert entry["RepoTags"] == [img.reference]
            assert f"sha256:{entry['Config'].removesuffix('.json')}" == img.config_digest
            for name, diff_id in zip(entry["Layers"], img.diff_ids, strict=True):
                layer = tar.extractfile(name)
                assert layer is not None
                assert f"sha256:{hashlib.sha256(layer.read()).hexdigest()}" == diff_id


def test_large_image_is_deterministic_at_small_scale(
    small_large_images: TestImages, tmp_path: Path
) -> None:
    a = small_large_images
    b = build_test_images(tmp_path / "b", **SMALL_LARGE)  # type: ignore[arg-type]
    assert a["large"].digest == b["large"].digest
    assert len(a["large"].layers) == 3
    manifest = _json(a, a["large"].digest)
    files = sum(
        1 for layer in manifest["layers"][1:] for m in _members(a, layer).values() if m.isfile()
    )
    assert files == 300
    total = sum(m.size for layer in manifest["layers"][1:] for m in _members(a, layer).values())
    assert 1 << 20 < total < 4 << 20


def test_missing_busybox_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_build, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(MissingHostPart, match="busybox-static"):
        build_test_images(tmp_path / "out")


def test_unknown_image_name_is_a_key_error_and_a_testbed_error(images: TestImages) -> None:
    with pytest.raises(UnknownTestImage, match="no image 'nope'") as info:
        images["nope"]
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("test bed at ")  # not KeyError's quoted repr


# -- cross-checks with tools nobody here wrote -----------------------------------------


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.integration
def test_skopeo_reads_the_layout_and_the_archives(images: TestImages) -> None:
    require_binaries("skopeo")
    for img in images:
        raw = _run("skopeo", "inspect", "--raw", f"oci:{images.layout}:{img.name}")
        assert f"sha256:{hashlib.sha256(raw.encode()).hexdigest()}" == img.digest
        if img.archive is not None:
            info = json.loads(_run("skopeo", "inspect", "--config",
                                   f"docker-archive:{img.archive}"))
            assert info["rootfs"]["diff_ids"] == list(img.diff_ids)


@pytest.mark.integration
def test_umoci_unpacks_the_multilayer_image_as_promised(images: TestImages,
                                                        tmp_path: Path) -> None:
    require_root()
    require_binaries("umoci")
    # umoci 0.4.7 knows no zstd: the gzip and uncompressed variants must agree.
    trees = []
    for name in ("multilayer", "multilayer-uncompressed"):
        bundle = tmp_path / name
        _run("umoci", "unpack", "--image", f"{images.layout}:{name}", str(bundle))
        root = bundle / "rootfs"
        data = root / "data"
        assert not (data / "delete-me.txt").exists()
        assert not (data / "removed-dir").exists()
        assert sorted(p.name for p in (data / "replaced").iterdir()) == ["new.txt"]
        assert (data / "overwritten.txt").read_text() == "layer 2 version\n"
        assert (data / "hardlink-src.txt").stat().st_ino == (data / "hardlink-dst.txt").stat(
            ).st_ino
        assert os.readlink(data / "abs-symlink") == "/data/keep.txt"
        assert (data / "setuid-bin").stat().st_mode & 0o7777 == 0o4755
        assert os.getxattr(data / "xattr-file", "user.criolib.test") == b"layer2"
        assert (data / "owned-by-tester.txt").stat().st_uid == 1000
        trees.append(sorted(
            (str(p.relative_to(root)), p.lstat().st_mode, p.lstat().st_uid)
            for p in root.rglob("*")))
    assert trees[0] == trees[1]


@pytest.mark.integration
def test_unpack_test_image_applies_whiteouts(images: TestImages, tmp_path: Path) -> None:
    require_root()
    from criolib.testing import unpack_test_image

    root = unpack_test_image(images, "multilayer-zstd", tmp_path / "rootfs")
    data = root / "data"
    assert sorted(p.name for p in (data / "replaced").iterdir()) == ["new.txt"]
    assert not (data / "delete-me.txt").exists() and not (data / "removed-dir").exists()
    assert (data / "overwritten.txt").read_text() == "layer 2 version\n"
    assert (data / "setuid-bin").stat().st_mode & 0o7777 == 0o4755
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    arch_root = unpack_test_image(images, "multiarch", tmp_path / "multiarch")
    assert (arch_root / "etc" / "criolib-platform").read_text().startswith(
        f"linux/{host_platform()['architecture']}")
    with pytest.raises(ImageBuildError, match="not empty"):
        unpack_test_image(images, "busybox", root)


@pytest.mark.integration
def test_unpack_works_on_a_python_without_extraction_filters(
    images: TestImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 12's Python 3.11.2 has no ``tarfile.data_filter`` and no ``filter=``."""
    require_root()
    from criolib.testing import unpack_test_image

    monkeypatch.delattr(tarfile, "data_filter")
    original = tarfile.TarFile.extract

    def old_extract(self: tarfile.TarFile, member: Any, path: Any = "", *args: Any,
                    **kwargs: Any) -> None:
        if "filter" in kwargs:
            raise TypeError("extract() got an unexpected keyword argument 'filter'")
        original(self, member, path, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", old_extract)
    root = unpack_test_image(images, "busybox", tmp_path / "rootfs")
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    assert (root / "etc" / "passwd").read_bytes().startswith(b"root:x:0:0:")
