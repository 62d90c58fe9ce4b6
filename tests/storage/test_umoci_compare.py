"""Unpacking through criolib.storage gives the tree umoci gives, on both drivers.

umoci (a tool nobody here wrote) unpacks an image; criolib imports the same image
into a Store, creates a container and mounts it. The two trees must agree on every
path: type, mode (setuid and friends included), owner, content, link target, hard
links, device numbers, every xattr (``security.capability`` included) and the
mtimes of files and directories.

Two images: the test bed's multilayer image, and a small one built here whose
upper layers change directories they carry no header for (a file added, a whiteout,
an opaque marker, a file reached through a lower layer's symlink) and give files a
capability: the cases where a layer-per-directory driver has to copy a lower
directory's metadata up and a single-tree unpacker has to keep a directory's times.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from criolib.storage import Store
from criolib.testing import Entry, TestImages, build_test_images, require_binaries
from criolib.testing._layout import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, OCILayoutWriter

from .conftest import DRIVERS, require_root_for, snapshot

pytestmark = pytest.mark.integration

#: VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted and effective (linux/capability.h).
CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    return build_test_images(tmp_path_factory.mktemp("images"))


def full_snapshot(root: Path) -> dict[str, Any]:
    """conftest's snapshot plus what it leaves out: security.* xattrs and directory mtimes."""
    out = snapshot(root)
    for rel, info in out.items():
        path = root / rel
        names = os.listxattr(path, follow_symlinks=False)
        info["xattrs"] = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                                      for n in names))
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            info["mtime"] = int(st.st_mtime)
    return out


def _umoci_tree(layout: Path, tag: str, where: Path) -> dict[str, Any]:
    require_binaries("umoci")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(where)],
                   check=True, capture_output=True, timeout=120)
    return full_snapshot(where / "rootfs")


def _criolib_tree(layout: Path, manifest_digest: str, diff_ids: Sequence[str], driver: str,
                  graphroot: Path) -> dict[str, Any]:
    blobs = layout / "blobs" / "sha256"
    manifest_bytes = (blobs / manifest_digest.partition(":")[2]).read_bytes()
    manifest = json.loads(manifest_bytes)
    with Store(graphroot / "g", graphroot / "r", driver=driver) as store:
        parent = None
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            with (blobs / layer["digest"].partition(":")[2]).open("rb") as f:
                parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                         expected_digest=layer["digest"]).id
        config_hex = manifest["config"]["digest"].partition(":")[2]
        store.create_image(config_hex, parent, names=["localhost/compare:latest"],
                           big_data={"manifest": manifest_bytes})
        container = store.create_container(config_hex)
        root = store.mount(container.id)
        try:
            return full_snapshot(root)
        finally:
            store.unmount(container.id)


def _compare(got: dict[str, Any], expected: dict[str, Any]) -> None:
    # The root directory itself is made by the unpacker (umoci: 0755 from its umask).
    expected.pop(".")
    got.pop(".")
    assert sorted(got) == sorted(expected)
    different = {p: (got[p], expected[p]) for p in expected if got[p] != expected[p]}
    assert not different


# umoci 0.4.7 knows no zstd, so the zstd variant is compared with umoci's gzip tree.
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", ["multilayer", "multilayer-uncompressed", "multilayer-zstd"])
def test_same_tree_as_umoci(images: TestImages, graphroot: Path, tmp_path: Path, driver: str,
                            name: str) -> None:
    require_root_for(driver)
    reference = "multilayer" if name == "multilayer-zstd" else name
    expected = _umoci_tree(images.layout, reference, tmp_path / "umoci")
    image = images[name]
    got = _criolib_tree(images.layout, image.digest, image.diff_ids, driver, graphroot)
    _compare(got, expected)
    # And the tree is the one the layers describe, not just the same mistake twice.
    assert "data/delete-me.txt" not in got and "data/removed-dir" not in got
    assert got["data/setuid-bin"]["mode"] & 0o7777 == 0o4755
    assert got["data/hardlink-src.txt"]["same_as"] == "data/hardlink-dst.txt"  # one inode
    assert got["data"]["mtime"] == expected["data"]["mtime"]


def _cap(path: str) -> Entry:
    return Entry(path, data=b"#!/bin/sh\n", mode=0o755,
                 xattrs=(("security.capability", CAP_NET_RAW.decode("utf-8",
                                                                    "surrogateescape")),))


LAYERS = [
    [Entry.directory("etc", mode=0o750, uid=5, gid=6), Entry("etc/a", data=b"a\n"),
     Entry("etc/b", data=b"b\n"), Entry.directory("opt", mode=0o711, uid=7, gid=7),
     Entry("opt/old", data=b"old\n"), Entry.directory("usr"),
     Entry.directory("usr/lib", mode=0o700, uid=3, gid=3), Entry("usr/lib/liba.so", data=b"a"),
     Entry.symlink("lib", "usr/lib"), Entry.directory("bin"), _cap("bin/ping")],
    # No headers for etc/, opt/, usr/lib/ (reached through the lib symlink) or bin/.
    [Entry("etc/c", data=b"c\n"), Entry.whiteout("etc/a"), Entry.opaque("opt"),
     Entry("opt/new", data=b"new\n"), Entry("lib/libb.so", data=b"b"), _cap("bin/ping6")],
]


def _small_image(where: Path) -> tuple[Path, str, list[str]]:
    layout = OCILayoutWriter(where)
    layers = [layout.add_layer(entries, "gzip") for entries in LAYERS]
    diff_ids = [blob.diff_id for _, blob in layers]
    config = layout.add_json({"architecture": "amd64", "os": "linux", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}},
                             MEDIA_TYPE_CONFIG)
    manifest = layout.add_json({"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
                                "config": config.to_json(),
                                "layers": [d.to_json() for d, _ in layers]},
                               MEDIA_TYPE_MANIFEST)
    layout.tag(manifest, "small")
    layout.finish()
    return where, manifest.digest, diff_ids


@pytest.mark.parametrize("driver", DRIVERS)
def test_headerless_directories_and_capabilities_as_umoci(
    graphroot: Path, tmp_path: Path, driver: str
) -> None:
    require_root_for(driver)
    layout, manifest_digest, diff_ids = _small_image(tmp_path / "oci")
    expected = _umoci_tree(layout, "small", tmp_path / "umoci")
    got = _criolib_tree(layout, manifest_digest, diff_ids, driver, graphroot)
    _compare(got, expected)
    # What the layers say, checked directly too.
    caps = {"security.capability": CAP_NET_RAW}
    assert dict(got["bin/ping"]["xattrs"]) == caps == dict(got["bin/ping6"]["xattrs"])
    assert (got["etc"]["mode"] & 0o7777, got["etc"]["uid"], got["etc"]["gid"]) == (0o750, 5, 6)
    assert sorted(p for p in got if p.startswith("etc/")) == ["etc/b", "etc/c"]
    assert sorted(p for p in got if p.startswith("opt/")) == ["opt/new"]
    assert got["opt"]["mode"] & 0o7777 == 0o711
    assert got["lib"]["target"] == "usr/lib"  # still the symlink, not a directory over it
    assert "usr/lib/libb.so" in got and got["usr/lib"]["mode"] & 0o7777 == 0o700
    epoch = got["etc/b"]["mtime"]
    assert all(got[d]["mtime"] == epoch for d in ("etc", "opt", "usr/lib", "bin"))
