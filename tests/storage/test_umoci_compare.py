"""Unpacking through criolib.storage gives the tree umoci gives, on both drivers.

umoci (a tool nobody here wrote) unpacks the test bed's multilayer image; criolib
imports the same image into a Store, creates a container and mounts it. The two
trees must agree on every path: type, mode (setuid and friends included), owner,
content, link target, hard links, device numbers, xattrs and file mtimes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from criolib.storage import Store
from criolib.testing import TestImages, build_test_images, require_binaries

from .conftest import DRIVERS, require_root_for, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    return build_test_images(tmp_path_factory.mktemp("images"))


def _blob(images: TestImages, digest: str) -> Path:
    return images.layout / "blobs" / "sha256" / digest.partition(":")[2]


def _umoci_tree(images: TestImages, name: str, where: Path) -> dict[str, Any]:
    require_binaries("umoci")
    subprocess.run(["umoci", "unpack", "--image", f"{images.layout}:{name}", str(where)],
                   check=True, capture_output=True, timeout=120)
    return snapshot(where / "rootfs")


def _criolib_tree(images: TestImages, name: str, driver: str, graphroot: Path) -> (
    dict[str, Any]
):
    image = images[name]
    manifest = json.loads(_blob(images, image.digest).read_bytes())
    with Store(graphroot / "g", graphroot / "r", driver=driver) as store:
        parent = None
        for layer, diff_id in zip(manifest["layers"], image.diff_ids, strict=True):
            with _blob(images, layer["digest"]).open("rb") as f:
                parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                         expected_digest=layer["digest"]).id
        config_hex = (image.config_digest or "").partition(":")[2]
        store.create_image(config_hex, parent, names=[f"localhost/{image.reference}"],
                           big_data={"manifest": _blob(images, image.digest).read_bytes()})
        container = store.create_container(config_hex)
        root = store.mount(container.id)
        try:
            return snapshot(root)
        finally:
            store.unmount(container.id)


# umoci 0.4.7 knows no zstd, so the zstd variant is compared with umoci's gzip tree.
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", ["multilayer", "multilayer-uncompressed", "multilayer-zstd"])
def test_same_tree_as_umoci(images: TestImages, graphroot: Path, tmp_path: Path, driver: str,
                            name: str) -> None:
    require_root_for(driver)
    reference = "multilayer" if name == "multilayer-zstd" else name
    expected = _umoci_tree(images, reference, tmp_path / "umoci")
    got = _criolib_tree(images, name, driver, graphroot)
    # The root directory itself is made by the unpacker (umoci: 0755 from its umask).
    expected.pop(".")
    got.pop(".")
    assert sorted(got) == sorted(expected)
    different = {p: (got[p], expected[p]) for p in expected if got[p] != expected[p]}
    assert not different
    # And the tree is the one the layers describe, not just the same mistake twice.
    assert "data/delete-me.txt" not in got and "data/removed-dir" not in got
    assert got["data/setuid-bin"]["mode"] & 0o7777 == 0o4755
    assert got["data/hardlink-src.txt"]["same_as"] == "data/hardlink-dst.txt"  # one inode
