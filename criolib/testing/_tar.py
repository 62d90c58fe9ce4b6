"""Reproducible layer tarballs for the test bed.

Implements the layer format of the OCI image spec (image-spec v1.1, layer.md):
a tar archive of changesets, whiteouts as ``.wh.NAME`` entries and opaque
directories as ``.wh..wh..opq``, compressed with gzip, zstd or not at all.

Every byte is a function of the entries alone: fixed mtimes, numeric owners only,
no user or group names, PAX headers only where an entry needs one (xattrs, long
names), gzip headers without name or time, zstd at a fixed level and one thread.
Two builds give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal, cast

import attrs

from criolib.testing._errors import TestbedValueError, missing_python_package

__all__ = [
    "EPOCH",
    "Compression",
    "Entry",
    "LayerBlob",
    "compress_stream",
    "import_zstandard",
    "media_type_for",
    "write_layer",
]

#: 2000-01-01T00:00:00Z, the mtime of every test-bed entry and the images' "created".
EPOCH = 946684800

Compression = Literal["gzip", "zstd", "none"]

_MEDIA_TYPES: dict[Compression, str] = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}

_CHUNK = 1 << 20


def media_type_for(compression: Compression) -> str:
    """The OCI layer media type for ``compression``."""
    try:
        return _MEDIA_TYPES[compression]
    except KeyError:
        raise TestbedValueError(
            f"layer compression must be one of {', '.join(_MEDIA_TYPES)}, not {compression!r}"
        ) from None


@attrs.frozen
class Entry:
    """One member of a layer tarball.

    ``path`` is relative to the root, without a leading slash. ``kind`` is one of
    file, dir, symlink, hardlink, fifo, char, block. ``link`` is the target of a
    symlink (as stored) or of a hard link (a path earlier in the same layer).
    ``data`` is the content of a file, or an iterable of chunks with ``size`` set,
    so large files stream. A bad ``kind``, text ``data`` or streamed data without
    ``size`` raise :class:`~criolib.testing.TestbedValueError` at once.
    """

    path: str
    kind: str = "file"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes | Iterable[bytes] = b""
    size: int | None = None
    link: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()
    devmajor: int = 0
    devminor: int = 0

    def __attrs_post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise TestbedValueError(
                f"layer entry {self.path!r}: kind {self.kind!r} is not one of {', '.join(_KINDS)}"
            )
        if isinstance(self.data, str):  # type: ignore[unreachable]  # callers may not type-check
            raise TestbedValueError(f"layer entry {self.path!r}: data must be bytes, not str")
        if not isinstance(self.data, bytes) and self.size is None:
            raise TestbedValueError(
                f"layer entry {self.path!r}: streamed data (chunks) needs size= set"
            )
        if self.size is not None and self.size < 0:
            raise TestbedValueError(f"layer entry {self.path!r}: negative size {self.size}")

    @classmethod
    def directory(cls, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
        return cls(path, "dir", mode, uid, gid)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, "symlink", 0o777, link=target)

    @classmethod
    def hardlink(cls, path: str, target: str) -> Entry:
        return cls(path, "hardlink", 0o644, link=target)

    @classmethod
    def whiteout(cls, path: str) -> Entry:
        """The entry that deletes ``path`` from the layers below."""
        parent, _, name = path.rpartition("/")
        return cls(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0o600)

    @classmethod
    def opaque(cls, directory: str) -> Entry:
        """The entry that hides everything below ``directory`` in lower layers."""
        return cls(f"{directory}/.wh..wh..opq", mode=0o600)


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for ``tarfile.addfile``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _tarinfo(entry: Entry) -> tuple[tarfile.TarInfo, IO[bytes] | None]:
    info = tarfile.TarInfo(entry.path)
    info.type = _KINDS[entry.kind]
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = EPOCH
    info.linkname = entry.link
    info.devmajor, info.devminor = entry.devmajor, entry.devminor
    if entry.xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs}
    if entry.kind != "file":
        return info, None
    if isinstance(entry.data, bytes):
        info.size = len(entry.data)
        return info, io.BytesIO(entry.data)
    assert entry.size is not None  # checked when the entry was made
    info.size = entry.size
    return info, io.BufferedReader(_ChunkReader(entry.data), _CHUNK)


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through on its way to ``sink``."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sha256.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)


@attrs.frozen
class LayerBlob:
    """A finished layer: its compressed digest and size, and its diff_id."""

    digest: str
    size: int
    diff_id: str
    uncompressed_size: int
    media_type: str


def import_zstandard() -> Any:
    """The zstandard module, or :class:`MissingHostPart` naming the ``testing`` extra."""
    try:
        import zstandard
    except ImportError as exc:
        raise missing_python_package("zstandard", "zstd layers", exc) from exc
    return zstandard


def compress_stream(compression: Compression, sink: IO[bytes]) -> IO[bytes]:
    """A writable stream that compresses into ``sink``; close it to finish."""
    if compression == "gzip":
        # No file name and mtime 0 in the header: the bytes depend on content only.
        return cast(IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0,
                                             compresslevel=6))
    if compression == "zstd":
        zstandard = import_zstandard()
        cctx = zstandard.ZstdCompressor(level=3, threads=0, write_content_size=False)
        writer: IO[bytes] = cctx.stream_writer(sink, closefd=False)
        return writer
    return cast(IO[bytes], _NoClose(sink))


class _NoClose(io.RawIOBase):
    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.sink.write(b)
        return len(b)


def write_layer(entries: Iterable[Entry], sink: IO[bytes], compression: Compression) -> LayerBlob:
    """Write ``entries`` in order as one layer into ``sink``, hashing as it goes.

    Returns the descriptor facts: digest and size of what was written (the blob)
    and the diff_id (sha256 of the uncompressed tar).
    """
    media_type = media_type_for(compression)  # checks ``compression`` first
    outer = _HashingWriter(sink)
    compressor = compress_stream(compression, cast(IO[bytes], outer))
    inner = _HashingWriter(compressor)
    with tarfile.open(fileobj=cast(IO[bytes], inner), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, fileobj = _tarinfo(entry)
            tar.addfile(info, fileobj)
    compressor.close()
    return LayerBlob(
        digest=f"sha256:{outer.sha256.hexdigest()}",
        size=outer.size,
        diff_id=f"sha256:{inner.sha256.hexdigest()}",
        uncompressed_size=inner.size,
        media_type=media_type,
    )
