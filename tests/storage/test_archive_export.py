"""export_layer: reproducible tar diffs that apply back to the same tree (layer.md "Creating")."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from criolib.storage import ApplyResult, apply_layer, export_layer
from criolib.testing import TestImages, require_root
from criolib.testing.strategies_tar import TarEntry, tar_bytes
from tests.storage.hostile.watch import listing
from tests.storage.test_archive_apply import blob_path

COMPRESSIONS = ["none", "gzip", "zstd"]


def tree(root: Path) -> dict[str, Any]:
    """Everything below ``root`` but ``root`` itself (whose metadata a layer never sets)."""
    out = listing(root)
    out.pop(".")
    return out


def export(layer_dir: Path, mode: str, **kw: Any) -> tuple[bytes, ApplyResult]:
    sink = io.BytesIO()
    result = export_layer(layer_dir, sink, whiteouts=mode, **kw)  # type: ignore[arg-type]
    return sink.getvalue(), result


def apply(blob: bytes, dest: Path, mode: str, **kw: Any) -> ApplyResult:
    dest.mkdir(exist_ok=True)
    return apply_layer(io.BytesIO(blob), dest, whiteouts=mode, **kw)  # type: ignore[arg-type]


def names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
        return tar.getnames()


def test_busybox_layer_exports_to_its_own_diff_id(criolib_test_images: TestImages,
                                                   tmp_path: Path) -> None:
    """The test bed writes layers in sorted order with tarfile's PAX headers; so do we."""
    require_root()
    image = criolib_test_images["busybox"]
    with open(blob_path(criolib_test_images, image.layers[0].digest), "rb") as f:
        apply_layer(f, tmp_path, whiteouts="overlay")
    _, result = export(tmp_path, "overlay")
    assert result.diff_id == image.diff_ids[0]
    assert result.compression == "none" and result.digest == result.diff_id


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_overlay_round_trip(criolib_test_images: TestImages, tmp_path: Path, layer: int,
                            compression: str) -> None:
    require_root()
    image = criolib_test_images["multilayer"]
    first = tmp_path / "first"
    with open(blob_path(criolib_test_images, image.layers[layer].digest), "rb") as f:
        applied = apply(f.read(), first, "overlay")
    blob, exported = export(first, "overlay", compression=compression)
    again = apply(blob, tmp_path / "again", "overlay", expected_diff_id=exported.diff_id,
                  expected_digest=exported.digest)
    assert tree(tmp_path / "again") == tree(first)
    assert (again.diff_id, again.digest) == (exported.diff_id, exported.digest)
    assert (again.compressed_size, again.uncompressed_size) == (
        exported.compressed_size, exported.uncompressed_size)
    assert again.entries == exported.entries == applied.entries
    assert again.compression == compression
    # Reproducible: the same tree gives the same bytes.
    assert export(tmp_path / "again", "overlay", compression=compression)[0] == blob


def test_overlay_export_markers(criolib_test_images: TestImages, tmp_path: Path) -> None:
    require_root()
    image = criolib_test_images["multilayer"]
    with open(blob_path(criolib_test_images, image.layers[1].digest), "rb") as f:
        apply_layer(f, tmp_path, whiteouts="overlay")
    got = names(export(tmp_path, "overlay")[0])
    # A directory, its opaque marker, its whiteouts, then its other children, sorted.
    assert got[:3] == ["data", "data/.wh.delete-me.txt", "data/abs-symlink"]
    at = got.index("data/replaced")
    assert got[at + 1: at + 3] == ["data/replaced/.wh..wh..opq", "data/replaced/new.txt"]
    with tarfile.open(fileobj=io.BytesIO(export(tmp_path, "overlay")[0])) as tar:
        members = {m.name: m for m in tar}
    assert members["data/hardlink-src.txt"].islnk()
    assert members["data/hardlink-src.txt"].linkname == "data/hardlink-dst.txt"
    assert members["data/xattr-file"].pax_headers["SCHILY.xattr.user.criolib.test"] == "layer2"
    assert all(m.uname == m.gname == "" for m in members.values())
    assert not any("trusted.overlay" in k for m in members.values() for k in m.pax_headers)


def cp_a(src: Path, dest: Path) -> None:
    subprocess.run(["cp", "-a", f"{src}/.", str(dest)], check=True)


@pytest.mark.parametrize("layer", [1, 2])
def test_remove_mode_round_trip(criolib_test_images: TestImages, tmp_path: Path,
                                layer: int) -> None:
    """vfs: a layer's diff is what changed against its parent; applied on the parent it
    gives the layer back."""
    require_root()
    image = criolib_test_images["multilayer"]
    parent = tmp_path / "parent"
    parent.mkdir()
    for desc in image.layers[:layer]:
        with open(blob_path(criolib_test_images, desc.digest), "rb") as f:
            apply_layer(f, parent, whiteouts="remove")
    child = tmp_path / "child"
    child.mkdir()
    cp_a(parent, child)
    with open(blob_path(criolib_test_images, image.layers[layer].digest), "rb") as f:
        apply_layer(f, child, whiteouts="remove")
    blob, result = export(child, "remove", parent_dir=parent)
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    cp_a(parent, rebuilt)
    apply(blob, rebuilt, "remove", expected_diff_id=result.diff_id)
    assert tree(rebuilt) == tree(child)
    got = names(blob)
    if layer == 1:
        assert "data/.wh.delete-me.txt" in got
        assert "data/replaced/.wh.sub" in got and "data/replaced/sub/deep.txt" not in got
        assert "bin/busybox" not in got  # unchanged
    else:
        assert "data/.wh.removed-dir" in got and "data/removed-dir/child.txt" not in got
        assert "data" in got  # a directory with changes below it is written too


def test_remove_mode_without_parent_exports_everything(tmp_path: Path) -> None:
    entries = [TarEntry(name=b"d", kind="dir", mode=0o755), TarEntry(name=b"d/f", data=b"1"),
               TarEntry(name=b"l", kind="symlink", link=b"d/f", mode=0o777)]
    src = tmp_path / "src"
    apply(tar_bytes(entries), src, "remove", same_owner=False)
    blob, result = export(src, "remove")
    assert names(blob) == ["d", "d/f", "l"]
    assert result.entries == 3
    assert result.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()


def test_remove_mode_detects_metadata_changes(tmp_path: Path) -> None:
    require_root()
    parent, child = tmp_path / "parent", tmp_path / "child"
    base = [TarEntry(name=b"same", data=b"1"), TarEntry(name=b"mode", data=b"1"),
            TarEntry(name=b"owner", data=b"1"), TarEntry(name=b"xattr", data=b"1"),
            TarEntry(name=b"link", kind="symlink", link=b"aaa", mode=0o777),
            TarEntry(name=b"dir", kind="dir", mode=0o755),
            TarEntry(name=b"dir/f", data=b"1")]
    apply(tar_bytes(base), parent, "remove")
    child.mkdir()
    cp_a(parent, child)
    os.chmod(child / "mode", 0o600)
    os.chown(child / "owner", 5, 5)
    os.setxattr(child / "xattr", "user.new", b"v")
    os.unlink(child / "link")
    os.symlink("bbb", child / "link")
    os.utime(child / "link", ns=(os.lstat(parent / "link").st_mtime_ns,) * 2,
             follow_symlinks=False)
    assert names(export(child, "remove", parent_dir=parent)[0]) == [
        "link", "mode", "owner", "xattr"]


def test_export_skips_sockets_and_overlay_xattrs(tmp_path: Path) -> None:
    require_root()
    import socket

    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "trusted.overlay.redirect", b"/x")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(tmp_path / "sock"))
        blob, result = export(tmp_path, "overlay")
    assert names(blob) == ["d"] and result.entries == 1
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert not tar.getmembers()[0].pax_headers


def test_export_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whiteouts"):
        export(tmp_path, "aufs")
    with pytest.raises(ValueError, match="compression"):
        export(tmp_path, "overlay", compression="bzip2")
