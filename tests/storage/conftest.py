"""Fixtures and helpers shared by the storage tests.

``storage_tmpfs`` (session)
    a tmpfs mounted for the session when root (MACHINE-NOTES.md: file creation on
    the root ext4 measures the disk), else a plain temporary directory.
``graphroot``
    a fresh graphroot on it for one test. Its finalizer lazily unmounts every
    mount left below it (a leaked overlay would break later tests and keep the
    directory busy), then removes it.
``driver``
    a graph driver at ``graphroot/<name>``, parametrised over every built-in
    driver (containers/storage ``graphtest`` style); as root only.

Helpers: :func:`layer_blob`, :func:`chain_ids` (docs/storage.md's layer ids),
:func:`apply_image`, :func:`snapshot` (a comparable picture of a tree),
:func:`make_layer` (a layer tarball from :class:`criolib.testing.Entry` values)
and :func:`unmount_all_under`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from criolib.storage._drivers import GraphDriver, get_driver
from criolib.testing import Entry, TestImage, TestImages, integration_required, write_layer

_MNT_DETACH = 2


def is_root() -> bool:
    return os.geteuid() == 0


def unmount_all_under(path: str | os.PathLike[str]) -> list[str]:
    """Lazily unmount every mount at or below ``path``, deepest first; return them."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split(" ")[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(point)
    for point in sorted(found, key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return found


@pytest.fixture(scope="session")
def storage_tmpfs() -> Iterator[Path]:
    """A tmpfs for the session's graphroots (a plain temp dir when not root)."""
    where = Path(tempfile.mkdtemp(prefix="criolib-storage-tests-"))
    mounted = False
    if is_root():
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2g,mode=0755", "tmpfs", str(where)],
            check=False, capture_output=True).returncode == 0
    try:
        yield where
    finally:
        if mounted:
            unmount_all_under(where)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def graphroot(storage_tmpfs: Path) -> Iterator[Path]:
    """A fresh graphroot for one test; every mount below it is detached afterwards."""
    root = Path(tempfile.mkdtemp(prefix="g-", dir=storage_tmpfs))
    try:
        yield root
    finally:
        unmount_all_under(root)
        shutil.rmtree(root, ignore_errors=True)


def require_root(why: str) -> None:
    """Skip (fail under CRIOLIB_REQUIRE_INTEGRATION=1) unless root: mounts, chown, mknod."""
    if not is_root():
        if integration_required():
            pytest.fail(f"{why} need root")
        pytest.skip(f"{why} need root")


def require_root_for(name: str) -> None:
    """:func:`require_root` for tests of driver ``name`` (every driver's tests chown)."""
    require_root(f"{name} driver tests")


DRIVERS = ["overlay", "vfs"]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest, graphroot: Path) -> GraphDriver:
    """Each built-in graph driver, at ``graphroot/<name>``."""
    name: str = request.param
    # Test images own files as uid 1000 and overlay whiteouts are devices: root only.
    require_root_for(name)
    return get_driver(name, graphroot / name)


# -- layers --------------------------------------------------------------------------


def layer_blob(images: TestImages, digest: str) -> Path:
    """Where the OCI layout keeps the blob ``digest``."""
    algo, _, hexpart = digest.partition(":")
    return images.layout / "blobs" / algo / hexpart


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """Layer ids per docs/storage.md: base = diff_id hex, else sha256(parent + "+" + hex)."""
    out: list[str] = []
    for diff_id in diff_ids:
        hexpart = diff_id.partition(":")[2]
        if not out:
            out.append(hexpart)
        else:
            out.append(hashlib.sha256(f"{out[-1]}+{hexpart}".encode()).hexdigest())
    return out


def apply_image(driver: GraphDriver, images: TestImages, image: TestImage) -> list[str]:
    """Apply every layer of ``image`` in order; return the layer ids, base first."""
    ids = chain_ids(image.diff_ids)
    parent = None
    for layer_id, desc, diff_id in zip(ids, image.layers, image.diff_ids, strict=True):
        if not driver.exists(layer_id):
            with open(layer_blob(images, desc.digest), "rb") as src:
                result = driver.apply_diff(layer_id, parent, src, expected_diff_id=diff_id)
            assert result.diff_id == diff_id
        parent = layer_id
    return ids


def make_layer(entries: Iterable[Entry]) -> tuple[bytes, str]:
    """An uncompressed layer tarball of ``entries`` and its diff_id."""
    buf = io.BytesIO()
    blob = write_layer(list(entries), buf, "none")
    return buf.getvalue(), blob.diff_id


# -- comparing trees -----------------------------------------------------------------


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    with contextlib.suppress(OSError):
        names = os.listxattr(path, follow_symlinks=False)
        return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names
                            if not n.startswith("security.")))
    return ()


def snapshot(root: str | os.PathLike[str], *, mtimes: bool = True) -> dict[str, Any]:
    """Everything a layer keeps about each path below ``root``, comparable with ``==``.

    Type, mode, owner, size and content hash, link target, device numbers,
    xattrs, non-directory mtimes, and which paths share an inode (hard links);
    inode numbers themselves are left out.
    """
    out: dict[str, Any] = {}
    first_of_inode: dict[int, str] = {}
    base = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in [".", *sorted(dirnames), *sorted(filenames)]:
            if name == "." and dirpath != base:
                continue
            path = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            info: dict[str, Any] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                                    "xattrs": _xattrs(path)}
            if stat.S_ISREG(st.st_mode):
                info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    info["same_as"] = first_of_inode.setdefault(st.st_ino, rel)
            elif stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if mtimes and not stat.S_ISDIR(st.st_mode):
                info["mtime"] = int(st.st_mtime)
            out[rel] = info
    return out
