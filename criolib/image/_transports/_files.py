"""File plumbing shared by the local transports (``oci:``, ``oci-archive:``, ``dir:``,
``docker-archive:``): verified blob writes, layout locks, safe tar in and out.

- A blob is written to a temporary file beside its final place, hashed and counted
  while it streams, and renamed into place only when digest and size match
  (image-spec v1.1 descriptor.md "Digests": verify before use); otherwise the
  temporary file is removed and :class:`DigestMismatch` raised.
- Archives are read with criolib's own member filter: regular files and
  directories only, every name inside the target, no links followed.
- Archives are written reproducibly: sorted names, owner 0, mtime 0, fixed modes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gzip
import hashlib
import io
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from criolib._atomic import fsync_dir
from criolib.image._errors import CorruptImage, DigestMismatch, TransportError
from criolib.image._manifest import validate_digest
from criolib.storage import detect_compression

__all__ = [
    "CHUNK",
    "copy_verified",
    "exchange_or_rename",
    "extract_tar",
    "layout_lock",
    "open_decompressed",
    "split_digest",
    "tar_directory",
    "write_blob",
]

log = logging.getLogger("criolib.image")

CHUNK = 1 << 20
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def split_digest(digest: str) -> tuple[str, str]:
    """``(algorithm, hex)`` of a checked digest; :class:`InvalidDigest` otherwise."""
    algorithm, _, encoded = validate_digest(digest).partition(":")
    return algorithm, encoded


def copy_verified(stream: BinaryIO, out: BinaryIO, digest: str, size: int, *, what: str) -> int:
    """Copy ``stream`` into ``out`` while hashing; raise :class:`DigestMismatch` if off.

    ``size`` -1 means unknown. More bytes than ``size`` stop the copy at once, so a
    lying source cannot fill the disk.
    """
    algorithm, _ = split_digest(digest)
    hasher = hashlib.new(algorithm)
    count = 0
    while chunk := stream.read(CHUNK):
        count += len(chunk)
        if 0 <= size < count:
            raise DigestMismatch(f"{what}: blob {digest} is longer than its size {size}",
                                 what=what, expected=digest, expected_size=size,
                                 actual_size=count)
        hasher.update(chunk)
        out.write(chunk)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if size >= 0 and count != size:
        raise DigestMismatch(f"{what}: blob {digest} has {count} bytes, not {size}", what=what,
                             expected=digest, actual=actual, expected_size=size,
                             actual_size=count)
    if actual != digest:
        raise DigestMismatch(f"{what}: blob {digest} hashes to {actual}", what=what,
                             expected=digest, actual=actual, expected_size=size,
                             actual_size=count)
    return count


def write_blob(stream: BinaryIO, final: Path, digest: str, size: int, *, what: str,
               tmp_dir: Path | None = None) -> int:
    """Write a verified blob to ``final`` atomically (temp file, fsync, rename).

    The temporary file lives in ``tmp_dir`` (default: ``final``'s directory, which
    must be on the same file system). Returns the byte count.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".criolib-blob-", dir=tmp_dir or final.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            count = copy_verified(stream, cast(BinaryIO, out), digest, size, what=what)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return count


@contextlib.contextmanager
def layout_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on directory ``root`` (no extra file in the layout)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class _Decompressed(io.RawIOBase):
    """A decompressing reader that closes the compressed stream under it too."""

    def __init__(self, reader: Any, underlying: BinaryIO) -> None:
        super().__init__()
        self._reader = reader
        self._underlying = underlying

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._reader.readinto(buffer)
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._reader.close()
            finally:
                self._underlying.close()
        super().close()


def open_decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw`` decompressed by its magic number (gzip, zstd) or as it is (image-spec layer.md).

    Closing the result closes ``raw``.
    """
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(
        cast(io.RawIOBase, raw))
    kind = detect_compression(buffered.peek(4)[:4])
    if kind == "gzip":
        reader: Any = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif kind == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(buffered, closefd=False)
    else:  # "none"
        return cast(BinaryIO, buffered)
    return cast(BinaryIO, io.BufferedReader(_Decompressed(reader, cast(BinaryIO, buffered)),
                                            CHUNK))


def _member_path(name: str, archive: Path) -> str | None:
    """The normalised relative path of a tar member; ``None`` for the root itself."""
    if name.startswith("/") or "\x00" in name:
        raise CorruptImage(f"archive {archive}: member {name!r} has an absolute path")
    clean = posixpath.normpath(name)
    if clean == ".":
        return None
    if clean == ".." or clean.startswith("../"):
        raise CorruptImage(f"archive {archive}: member {name!r} points outside the archive")
    return clean


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract regular files and directories of ``archive`` into the empty dir ``dest``.

    Links, devices and the like are skipped (an image layout holds none); a name
    outside ``dest`` or a file given twice raises :class:`CorruptImage`.
    """
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                rel = _member_path(member.name, archive)
                if rel is None:
                    continue
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    log.debug("archive %s: skipping %s (not a regular file)", archive, rel)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # a regular file always has data
                try:
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o644)
                except FileExistsError:
                    raise CorruptImage(f"archive {archive}: {rel} appears twice") from None
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except tarfile.TarError as exc:
        raise CorruptImage(f"archive {archive} is not a readable tar file: {exc}") from exc
    except FileNotFoundError as exc:
        raise TransportError(f"cannot read archive {archive}: {exc.strerror}") from exc


def tar_directory(src: Path, dest: Path) -> None:
    """Write the tree ``src`` as a reproducible tar at ``dest``, atomically.

    Names sorted, directories first in each, owner 0:0, mtime 0, modes 0755/0644;
    two runs over the same content give the same bytes.
    """
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(src).as_posix()
        if rel_dir != ".":
            entries.append((rel_dir + "/", base))
        entries.extend((posixpath.join(rel_dir, f) if rel_dir != "." else f, base / f)
                       for f in sorted(filenames))
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w",
                                                      format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                info = tarfile.TarInfo(name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if name.endswith("/"):
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                info.mode, info.size = 0o644, path.stat().st_size
                with path.open("rb") as f:
                    tar.addfile(info, f)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(dest.parent)


def exchange_or_rename(new: Path, target: Path) -> Path | None:
    """Put directory ``new`` at ``target``; return where the old ``target`` went, if any.

    With an existing ``target`` the two are swapped in one step (renameat2(2)
    ``RENAME_EXCHANGE``), so readers see the old tree or the new one; the caller
    removes the old tree (now at ``new``'s path).
    """
    if not target.exists():
        os.rename(new, target)
        fsync_dir(target.parent)
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None and renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD,
                                           os.fsencode(target), _RENAME_EXCHANGE) == 0:
        fsync_dir(target.parent)
        return new
    err = ctypes.get_errno() if renameat2 is not None else errno.ENOSYS
    if err not in (errno.ENOSYS, errno.EINVAL):
        raise OSError(err, os.strerror(err), str(target))
    # No atomic exchange here: move the old tree aside, then the new one in.
    old = target.with_name(f".{target.name}.criolib-old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    fsync_dir(target.parent)
    return old
