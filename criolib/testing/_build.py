"""Building the test images into a directory: safely, once, and reused while valid.

:func:`build_test_images` owns a directory ``root`` holding ``oci/`` (an OCI image
layout, image-spec v1.1 image-layout.md), ``docker-archive/NAME.tar`` and
``stamp.json``, the record of what was built from which inputs. It

- never deletes what it did not make: it replaces ``root`` only when ``root`` is
  missing, empty, or holds a criolib stamp; anything else raises
  :class:`BuildDirError`;
- builds into a temporary sibling and swaps it in at once (renameat2(2)
  ``RENAME_EXCHANGE``), so ``root`` is always a whole build or the previous one;
- holds an ``fcntl`` lock on ``.<name>.lock`` beside ``root`` while it checks and
  builds, so parallel builds of one directory wait for each other and reuse the
  result;
- reuses a build only if its inputs (busybox, criolib, Python, zlib and zstandard
  versions, sizes) match and every referenced blob and tarball is present with
  its recorded size (manifests and indexes are re-hashed too).

The large image is an add-on to the same build: a request without ``large`` is
answered by a build that has it (the large image is kept, just not returned), and
a request for ``large`` with other parameters rebuilds the whole directory.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import struct
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from criolib import __version__
from criolib._atomic import atomic_write_bytes
from criolib._exec import run
from criolib.errors import ExecError
from criolib.testing._errors import (
    BuildDirError,
    ImageBuildError,
    MissingHostPart,
    TestbedValueError,
)
from criolib.testing._images import (
    LARGE_IMAGE,
    TestImage,
    TestImages,
    assemble,
    host_platform,
)
from criolib.testing._layout import MEDIA_TYPE_INDEX, Descriptor, is_sha256_digest
from criolib.testing._tar import import_zstandard

__all__ = ["BUSYBOX", "STAMP", "build_test_images"]

#: The statically linked busybox of Debian's busybox-static package.
BUSYBOX = Path("/bin/busybox")
#: The record of a finished build, in its root.
STAMP = "stamp.json"
#: Bump when the images' content or format changes, so cached builds are redone.
_FORMAT = 4
_STAMP_KIND = "criolib.testing test images"
_PT_INTERP = 3  # elf(5): the program header naming the dynamic loader
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


# -- inputs ---------------------------------------------------------------------------


def _elf_interpreter(data: bytes) -> str | None:
    """The PT_INTERP path of an ELF executable, ``None`` if static (elf(5)).

    Raises ``ValueError`` when ``data`` is not an ELF file.
    """
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise ValueError("not an ELF file")
    end = "<" if data[5] == 1 else ">"
    try:
        if data[4] == 2:  # ELFCLASS64
            (phoff,) = struct.unpack_from(end + "Q", data, 0x20)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
            offset_fmt, offset_at, size_at = end + "Q", 8, 32
        else:
            (phoff,) = struct.unpack_from(end + "I", data, 0x1C)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
            offset_fmt, offset_at, size_at = end + "I", 4, 16
        for i in range(phnum):
            at = phoff + i * phentsize
            (p_type,) = struct.unpack_from(end + "I", data, at)
            if p_type == _PT_INTERP:
                (off,) = struct.unpack_from(offset_fmt, data, at + offset_at)
                (size,) = struct.unpack_from(offset_fmt, data, at + size_at)
                return data[off : off + size].rstrip(b"\0").decode(errors="replace") or "?"
    except struct.error as exc:
        raise ValueError(f"truncated ELF file: {exc}") from exc
    return None


def _busybox_bytes() -> bytes:
    """The static busybox, or :class:`MissingHostPart` saying to install busybox-static."""
    hint = "install Debian's busybox-static (scripts/setup does)"
    if not BUSYBOX.is_file():
        raise MissingHostPart(f"{BUSYBOX} not found: {hint}")
    data = BUSYBOX.read_bytes()
    try:
        interpreter = _elf_interpreter(data)
    except ValueError as exc:
        raise MissingHostPart(f"{BUSYBOX} is not a busybox executable ({exc}): {hint}") from exc
    if interpreter is not None:
        # A dynamic busybox would need its loader and libc in every image.
        raise MissingHostPart(
            f"{BUSYBOX} is dynamically linked (loader {interpreter}); the test images need "
            f"a static one: {hint}"
        )
    return data


def _applets() -> list[str]:
    try:
        out = run([str(BUSYBOX), "--list-full"], env={}, timeout=10, what="busybox").stdout
    except ExecError as exc:
        raise ImageBuildError(f"cannot list the applets of {BUSYBOX}: {exc}") from exc
    return sorted({line.strip() for line in out.decode().splitlines() if line.strip()})


def _cache_key(busybox: bytes) -> dict[str, Any]:
    """Everything the images' bytes depend on, besides this code (``_FORMAT``)."""
    zstandard = import_zstandard()
    key = {
        "format": _FORMAT,
        "criolib": __version__,
        "platform": host_platform(),
        "busybox": hashlib.sha256(busybox).hexdigest(),
        "python": platform.python_version(),
        # gzip output depends on the zlib in use, zstd output on the library version.
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "zstandard": [zstandard.__version__, list(zstandard.ZSTD_VERSION)],
    }
    return dict(json.loads(json.dumps(key)))


# -- the stamp --------------------------------------------------------------------------


def _dump(images: Mapping[str, TestImage]) -> list[dict[str, Any]]:
    def one(img: TestImage) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": img.name, "repository": img.repository, "tag": img.tag,
            "config_digest": img.config_digest, "diff_ids": list(img.diff_ids),
            "platform": dict(img.platform) if img.platform is not None else None,
            "descriptor": img.descriptor.to_json(),
            "layers": [d.to_json() for d in img.layers],
            "instances": [one(i) for i in img.instances],
            "archive": None,
        }
        if img.archive is not None:
            doc["archive"] = {"name": img.archive.name, "size": img.archive.stat().st_size}
        return doc

    return [one(i) for i in images.values()]


def _descriptor(d: Mapping[str, Any]) -> Descriptor:
    if not is_sha256_digest(d["digest"]) or not isinstance(d["size"], int):
        raise ValueError(f"bad descriptor {d!r}")
    return Descriptor(d["mediaType"], d["digest"], d["size"], d.get("platform"),
                      d.get("annotations"))


def _load(root: Path, doc: Mapping[str, Any]) -> TestImage:
    archive = doc["archive"]
    return TestImage(
        name=doc["name"], repository=doc["repository"], tag=doc["tag"],
        descriptor=_descriptor(doc["descriptor"]), config_digest=doc["config_digest"],
        diff_ids=tuple(doc["diff_ids"]), layers=tuple(_descriptor(x) for x in doc["layers"]),
        platform=doc["platform"], instances=tuple(_load(root, i) for i in doc["instances"]),
        archive=root / "docker-archive" / archive["name"] if archive else None,
    )


def _read_stamp(root: Path) -> Any:
    """The parsed stamp; ``None`` when there is none. Raises OSError and ValueError."""
    try:
        return json.loads((root / STAMP).read_bytes())
    except FileNotFoundError:
        return None


def _is_ours(stamp: Any) -> bool:
    if not isinstance(stamp, dict):
        return False
    if stamp.get("kind") == _STAMP_KIND:
        return True
    key = stamp.get("key")  # before format 4 stamps had no "kind"
    return isinstance(key, dict) and "busybox" in key and "format" in key


class _Damaged(ImageBuildError):
    """A cached build is incomplete (internal: it means "rebuild", never escapes)."""


def _verify_blob(blobs: Path, desc: Mapping[str, Any], *, hash_it: bool = False) -> bytes:
    """Check one blob's presence and size (and digest when ``hash_it``); return it if hashed."""
    digest, size = desc.get("digest"), desc.get("size")
    if not is_sha256_digest(digest) or not isinstance(size, int):
        raise _Damaged(f"bad descriptor {desc!r}")
    assert isinstance(digest, str)
    path = blobs / digest[len("sha256:"):]
    try:
        if not hash_it:
            if path.stat().st_size != size:
                raise _Damaged(f"{path}: size differs from {size}")
            return b""
        data = path.read_bytes()
    except OSError as exc:
        raise _Damaged(f"{path}: {exc}") from exc
    if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise _Damaged(f"{path}: content differs from {digest}")
    return data


def _verify_manifest(blobs: Path, desc: Mapping[str, Any]) -> None:
    """The manifest or index and everything it references, recursively."""
    try:
        doc = json.loads(_verify_blob(blobs, desc, hash_it=True))
        if desc.get("mediaType") == MEDIA_TYPE_INDEX:
            for child in doc["manifests"]:
                _verify_manifest(blobs, child)
        else:
            for ref in [doc["config"], *doc["layers"]]:
                _verify_blob(blobs, ref)
    except (ValueError, KeyError, TypeError) as exc:
        raise _Damaged(f"manifest {desc.get('digest')}: {exc}") from exc


def _cached(root: Path, key: Mapping[str, Any], large: list[int] | None) -> TestImages | None:
    """The build in ``root`` if it answers this request and is whole, else ``None``."""
    try:
        stamp = _read_stamp(root)
        if not _is_ours(stamp) or stamp.get("key") != key:
            return None
        if large is not None and stamp.get("large") != large:
            return None
        docs = [d for d in stamp["images"] if large is not None or d["name"] != LARGE_IMAGE]
        images = {d["name"]: _load(root, d) for d in docs}
        blobs = root / "oci" / "blobs" / "sha256"
        json.loads((root / "oci" / "index.json").read_bytes())
        for d in docs:
            _verify_manifest(blobs, d["descriptor"])
            if d["archive"] is not None:
                path = root / "docker-archive" / d["archive"]["name"]
                if path.stat().st_size != d["archive"]["size"]:
                    return None
    except (OSError, ValueError, KeyError, TypeError, _Damaged):
        return None
    return TestImages(root=root, layout=root / "oci", images=images)


# -- the directory ------------------------------------------------------------------------


def _check_replaceable(root: Path) -> None:
    """Refuse to replace ``root`` unless it is missing, empty or a test-bed build."""
    if not root.exists():
        return
    if not root.is_dir():
        raise BuildDirError(f"test bed: {root} exists and is not a directory")
    if not any(root.iterdir()):
        return
    try:
        stamp = _read_stamp(root)
    except ValueError:
        stamp = None
    if not _is_ours(stamp):
        raise BuildDirError(
            f"test bed: {root} is not empty and holds no criolib {STAMP}; refusing to replace "
            "it (a build only replaces its own earlier builds): use an empty or new directory"
        )


def _lock(root: Path) -> int:
    """Take an exclusive ``flock`` on ``.<name>.lock`` beside ``root``; close the fd to drop it.

    The lock file stays: removing it would let two builders lock different inodes.
    """
    path = root.parent / f".{root.name}.lock"
    # O_NOFOLLOW: a symlink planted there must not make us create or lock another file.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, root: Path) -> None:
    """Put the finished build ``new`` at ``root``; the previous build ends up at ``new``."""
    if not root.exists() or not any(root.iterdir()):
        os.replace(new, root)  # rename(2) replaces an empty directory
        return
    if _exchange(new, root):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
    os.replace(root, old)
    os.replace(new, root)
    os.replace(old, new)


def _remove_leftovers(root: Path) -> None:
    """Temporary siblings of builds that were killed (we hold the lock: none is live)."""
    for prefix in (f".{root.name}.build-", f".{root.name}.old-"):
        for path in root.parent.glob(f"{prefix}*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def _build_into(tmp: Path, busybox: bytes, key: Mapping[str, Any],
                large: list[int] | None) -> None:
    (tmp / "docker-archive").mkdir()
    images = assemble(tmp / "oci", tmp / "docker-archive", busybox, _applets(),
                      large=(large[0], large[1], large[2]) if large else None)
    stamp = {"kind": _STAMP_KIND, "key": key, "large": large, "images": _dump(images)}
    atomic_write_bytes(tmp / STAMP, json.dumps(stamp, indent=1).encode(), durable=False)
    # mkdtemp made it 0700; the images are for every user's tools (and readers only).
    os.chmod(tmp, 0o755)  # noqa: S103


def build_test_images(
    root: str | os.PathLike[str],
    *,
    large: bool = False,
    large_size: int = 300 << 20,
    large_files: int = 20000,
    large_layers: int = 4,
) -> TestImages:
    """Build (or reuse) the test bed's images under ``root``.

    ``root/oci`` is an OCI image layout naming every image by its name
    (``org.opencontainers.image.ref.name``); ``root/docker-archive/NAME.tar`` holds
    the single-manifest images as docker-archive tarballs. ``large`` adds the large
    image (``large_size`` bytes in ``large_files`` files over ``large_layers``
    layers). See the module docstring for reuse, locking and what ``root`` may
    hold; a ``root`` that is not the test bed's raises :class:`BuildDirError`.
    """
    for name, value in (("large_size", large_size), ("large_files", large_files),
                        ("large_layers", large_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TestbedValueError(f"test bed: {name} must be a positive int, not {value!r}")
    root = Path(os.path.realpath(root))
    if root == root.parent:
        raise BuildDirError(f"test bed: cannot build into {root}")
    busybox = _busybox_bytes()
    key = _cache_key(busybox)
    large_key = [large_size, large_files, large_layers] if large else None
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(root)
    except OSError as exc:
        raise BuildDirError(f"test bed: cannot use {root}: {exc}") from exc
    try:
        return _build_locked(root, busybox, key, large_key)
    finally:
        os.close(lock_fd)


def _build_locked(root: Path, busybox: bytes, key: dict[str, Any],
                  large_key: list[int] | None) -> TestImages:
    try:
        cached = _cached(root, key, large_key)
        if cached is not None:
            return cached
        _check_replaceable(root)
        _remove_leftovers(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
    except OSError as exc:
        raise BuildDirError(f"test bed: cannot use {root}: {exc}") from exc
    try:
        _build_into(tmp, busybox, key, large_key)
        _swap_in(tmp, root)
    except OSError as exc:
        raise ImageBuildError(f"test bed: building into {root} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    images = _cached(root, key, large_key)
    if images is None:
        raise ImageBuildError(f"test bed: the build in {root} does not verify")
    return images
