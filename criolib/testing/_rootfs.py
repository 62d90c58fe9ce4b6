"""Unpacking a test image into a plain directory, for tests that need a rootfs.

This is a test-bed convenience for the test bed's own, trusted images (tests of
runtimes, monitors and networks need a busybox root before criolib.storage is in
the picture). It applies layers in order with the OCI whiteout rules of
image-spec layer.md, but it is not a safe extractor for hostile input: that is
criolib.storage's job.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

from criolib.testing._errors import ImageBuildError
from criolib.testing._images import TestImages, host_platform
from criolib.testing._layout import open_uncompressed

__all__ = ["unpack_test_image"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _trusted() -> dict[str, Any]:
    """``filter="fully_trusted"`` where tarfile knows extraction filters, else nothing.

    PEP 706 filters arrived in 3.11.4; Debian 12 ships 3.11.2, whose ``extract()``
    takes no ``filter``. Without one, tarfile extracts as "fully_trusted" does, which
    is what the test bed's own images need.
    """
    return {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def _apply(tar: tarfile.TarFile, dest: Path) -> None:
    for m in tar:  # a stream: each member is extracted as soon as it is read
        name = Path(m.name)
        if name.name == ".wh..wh..opq":
            parent = dest / name.parent
            if parent.is_dir():
                for child in parent.iterdir():
                    _remove(child)
        elif name.name.startswith(".wh."):
            _remove(dest / name.parent / name.name[len(".wh."):])
        else:
            target = dest / name
            if (target.exists() or target.is_symlink()) and not (m.isdir() and target.is_dir()):
                _remove(target)
            tar.extract(m, dest, **_trusted())


def unpack_test_image(images: TestImages, name: str, dest: str | Path) -> Path:
    """Unpack test image ``name`` (for an index: this host's instance) into ``dest``.

    ``dest`` must not exist or be empty; returns it. Needs root for ownership,
    setuid bits and device-like entries to come out as stored.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ImageBuildError(f"cannot unpack test image {name!r}: {dest} is not empty")
    image = images[name]
    if image.is_index:
        arch = host_platform()["architecture"]
        native = [i for i in image.instances if (i.platform or {}).get("architecture") == arch]
        if not native:
            raise ImageBuildError(f"test image {name!r} has no instance for {arch}")
        image = native[0]
    blobs = images.layout / "blobs" / "sha256"
    manifest: dict[str, Any] = json.loads((blobs / image.digest.partition(":")[2]).read_bytes())
    for layer in manifest["layers"]:
        path = blobs / layer["digest"].partition(":")[2]
        with open_uncompressed(path, layer["mediaType"]) as f, tarfile.open(fileobj=f,
                                                                       mode="r|") as tar:
            _apply(tar, dest)
    return dest
