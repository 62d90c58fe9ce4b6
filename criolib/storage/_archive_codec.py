"""Layer blob compression: detection, streaming decompression and compression, hashing.

image-spec v1.1 layer.md and media-types.md: a layer is a tar archive, compressed
with gzip (RFC 1952), zstd (RFC 8478) or not at all. A layer has two digests: the
blob's (``digest``, what a manifest names) and the uncompressed tar's
(``diff_id``, what an image config's ``rootfs.diff_ids`` names). Both are taken
here in the same single pass that feeds the tar reader, over every byte to the end
of the stream (trailing zero blocks included), exactly like ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Literal, cast

import attrs

from criolib.storage._errors import DigestMismatch, LayerFormatError, LayerIOError

__all__ = [
    "ApplyResult",
    "Compression",
    "Decoder",
    "Encoder",
    "WhiteoutMode",
    "check_digest_arg",
    "detect_compression",
]

Compression = Literal["gzip", "zstd", "none"]
#: overlay: whiteouts become char 0/0 devices and opaque xattrs; remove: they delete (vfs).
WhiteoutMode = Literal["overlay", "remove"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Raw reads of 256 KiB, decompressed chunks of at most 1 MiB: a gzip bomb never
# makes a chunk bigger than that, and big chunks keep per-chunk Python work low.
_RAW_CHUNK = 256 << 10
_OUT_CHUNK = 1 << 20


def detect_compression(head: bytes) -> Compression:
    """The compression of a layer blob from its first bytes (gzip 1f8b, zstd 28b52ffd).

    image-spec v1.1 media-types.md; anything else is taken as an uncompressed tar.
    """
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


@attrs.frozen
class ApplyResult:
    """What applying or exporting a layer measured (image-spec v1.1 config.md, descriptor.md)."""

    diff_id: str
    """``sha256:<hex>`` of the uncompressed tar: the image config's ``rootfs.diff_ids``."""
    digest: str
    """``sha256:<hex>`` of the blob as read or written (compressed)."""
    compressed_size: int
    uncompressed_size: int
    compression: Compression
    entries: int
    """Tar entries read or written (files, dirs, links, whiteouts; not PAX/GNU headers)."""


def check_digest_arg(what: str, value: str | None) -> None:
    """Refuse an expected digest that is not ``sha256:`` and 64 lowercase hex digits."""
    if value is None:
        return
    algo, _, hexpart = value.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or hexpart.strip("0123456789abcdef"):
        raise DigestMismatch(
            f"expected {what} {value!r} is not a sha256 digest (sha256: and 64 lowercase hex)",
            expected=value,
        )


class _RawReader:
    """Reads the blob, counting and hashing every byte; the first chunk is peeked."""

    def __init__(self, source: BinaryIO, label: str) -> None:
        self._source = source
        self._label = label
        self.sha = hashlib.sha256()
        self.size = 0
        self._head = b""
        self.eof = False
        #: Called with every chunk handed out (the zstd frame walker).
        self.observer: Callable[[bytes], None] | None = None

    def peek(self) -> bytes:
        """The first bytes of the blob (read once and handed out again by ``read``)."""
        # A stream may hand out a byte at a time: read until the magic can be seen.
        while len(self._head) < len(_ZSTD_MAGIC) and not self.eof:
            self._head += self._fill(_RAW_CHUNK)
        return self._head

    def _fill(self, n: int) -> bytes:
        try:
            data = self._source.read(n)
        except OSError as exc:
            err = LayerIOError(f"layer {self._label}: reading the blob at offset {self.size} "
                               f"failed: {exc.strerror or exc}")
            err.errno = exc.errno
            raise err from exc
        if not data:
            self.eof = True
            return b""
        data = bytes(data)
        self.sha.update(data)
        self.size += len(data)
        return data

    def read(self, n: int = _RAW_CHUNK) -> bytes:
        if self._head:
            data, self._head = self._head, b""
        elif self.eof:
            return b""
        else:
            data = self._fill(max(n, 1))
        if self.observer is not None and data:
            self.observer(data)
        return data


class Decoder:
    """The uncompressed stream of a blob, chunk by chunk, hashed as it is produced.

    ``next_chunk()`` returns up to 1 MiB at a time and ``b""`` at the end; a damaged
    or truncated compressed stream raises :class:`LayerFormatError` naming ``label``.
    """

    def __init__(self, source: BinaryIO, label: str) -> None:
        self.label = label
        self._raw = _RawReader(source, label)
        self.compression = detect_compression(self._raw.peek())
        self.sha = hashlib.sha256()
        self.size = 0
        self._next: Callable[[], bytes]
        if self.compression == "gzip":
            self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._gz_fed = False
            self._tail = b""
            self._next = self._next_gzip
        elif self.compression == "zstd":
            self._zst = self._zstd_reader()
            self._next = self._next_zstd
        else:
            self._next = self._raw.read

    @property
    def raw_digest(self) -> str:
        return f"sha256:{self._raw.sha.hexdigest()}"

    @property
    def raw_size(self) -> int:
        return self._raw.size

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"

    def next_chunk(self) -> bytes:
        """The next piece of the uncompressed stream; ``b""`` at its end."""
        data = self._next()
        if data:
            self.sha.update(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        """Read and hash the rest of the stream (what follows the tar's end marker)."""
        while self.next_chunk():
            pass

    def _error(self, what: str, exc: BaseException | None = None) -> LayerFormatError:
        detail = f": {exc}" if exc is not None else ""
        return LayerFormatError(
            f"layer {self.label}: {what} at compressed offset {self._raw.size}, "
            f"uncompressed offset {self.size}{detail}"
        )

    def _next_gzip(self) -> bytes:
        while True:
            if self._tail:
                data, self._tail = self._tail, b""
            else:
                data = self._raw.read(_RAW_CHUNK)
                if not data:
                    if self._gz_fed and not self._gz.eof:
                        raise self._error("truncated gzip stream")
                    return b""
            try:
                out = self._gz.decompress(data, _OUT_CHUNK)
            except zlib.error as exc:
                what = "data after the gzip stream" if not self._gz_fed else "bad gzip data"
                raise self._error(what, exc) from exc
            self._gz_fed = True
            self._tail = self._gz.unconsumed_tail
            if self._gz.eof:
                # RFC 1952 §2.2: a gzip file is a series of members; Go's reader
                # (containers/image) reads them all, so do we.
                self._tail = self._gz.unused_data
                self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._gz_fed = False
            if out:
                return out

    def _zstd_reader(self) -> Any:
        import zstandard

        self._frames = _ZstdFrames()
        self._raw.observer = self._frames.feed
        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(cast(IO[bytes], self._raw), read_size=_RAW_CHUNK,
                                  read_across_frames=True, closefd=False)

    def _next_zstd(self) -> bytes:
        import zstandard

        try:
            out: bytes = self._zst.read(_OUT_CHUNK)
        except zstandard.ZstdError as exc:
            raise self._error("bad zstd data", exc) from exc
        if not out:
            # stream_reader ends quietly when its input ends inside a frame: the
            # frame walker over the raw bytes is what notices a truncated blob.
            problem = self._frames.problem or self._frames.at_end()
            if problem:
                raise self._error(problem)
        return out


class _ZstdFrames:
    """Walks the frame and block headers of a zstd stream (RFC 8878 §3.1) as it passes.

    It only checks the framing, so that a blob cut short is an error: zstandard's
    stream reader returns a clean end of stream when its input stops mid-frame.
    """

    def __init__(self) -> None:
        self._state = "magic"
        self._want = 4
        self._hdr = b""
        self._skip = 0
        self._checksum = False
        self._frames = 0
        self.problem = ""

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n and not self.problem:
            if self._skip:
                k = min(self._skip, n - pos)
                pos += k
                self._skip -= k
                continue
            take = min(self._want - len(self._hdr), n - pos)
            self._hdr += data[pos : pos + take]
            pos += take
            while len(self._hdr) >= self._want and not self.problem:
                self._advance()

    def _next(self, state: str, want: int, skip: int = 0) -> None:
        self._state, self._want, self._skip, self._hdr = state, want, skip, b""

    def _advance(self) -> None:
        h = self._hdr
        if self._state == "magic":
            magic = int.from_bytes(h, "little")
            if magic == 0xFD2FB528:
                self._frames += 1
                self._next("fhd", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._next("skippable", 4)
            else:
                self.problem = "data after the zstd stream (not a zstd frame)"
        elif self._state == "skippable":
            self._next("magic", 4, int.from_bytes(h, "little"))
        elif self._state == "fhd":
            fhd = h[0]
            single = bool(fhd & 0x20)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            did = (0, 1, 2, 4)[fhd & 0x03]
            self._checksum = bool(fhd & 0x04)
            self._next("fhrest", (0 if single else 1) + did + fcs)
        elif self._state == "fhrest":
            self._next("block", 3)
        else:  # a block header
            bh = int.from_bytes(h, "little")
            last, btype, size = bh & 1, (bh >> 1) & 3, bh >> 3
            if btype == 3:
                self.problem = "bad zstd data (reserved block type)"
                return
            skip = 1 if btype == 1 else size
            if last:
                self._next("magic", 4, skip + (4 if self._checksum else 0))
            else:
                self._next("block", 3, skip)

    def at_end(self) -> str:
        """Why the stream cannot end here (``""`` when it can)."""
        if self._frames == 0 and self._state == "magic" and not self._hdr:
            return "no zstd frame"
        if self._state != "magic" or self._hdr or self._skip:
            return "truncated zstd stream"
        return ""


class _HashingSink:
    """Counts and hashes what passes through on its way to ``sink``."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes | bytearray | memoryview) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)


class Encoder:
    """A writable stream: hashes the tar, compresses it, hashes the blob, writes ``sink``.

    Reproducible: gzip without name or time at level 6, zstd at level 3 in one thread.
    """

    def __init__(self, sink: IO[bytes], compression: Compression) -> None:
        if compression not in ("gzip", "zstd", "none"):
            raise ValueError(f"compression must be gzip, zstd or none, not {compression!r}")
        self.compression: Compression = compression
        self._outer = _HashingSink(sink)
        self._gz: Any = None
        self._zst: Any = None
        if compression == "gzip":
            # A raw deflate stream wrapped by hand: the header carries no name and
            # mtime 0 (RFC 1952 §2.3), so the bytes depend on the content only.
            self._gz = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif compression == "zstd":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=3, threads=0, write_content_size=False)
            self._zst = cctx.compressobj()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes | bytearray | memoryview) -> int:
        n = len(b)
        if not n:
            return 0
        self.sha.update(b)
        self.size += n
        if self._gz is not None:
            out = self._gz.compress(b)
        elif self._zst is not None:
            out = self._zst.compress(bytes(b))
        else:
            out = bytes(b)
        if out:
            self._outer.write(out)
        return n

    def flush(self) -> None:
        """Nothing to do: compressed data is written when ``close`` ends the stream."""

    def close(self) -> None:
        """End the compressed stream; the sink stays open."""
        if self._gz is not None:
            self._outer.write(self._gz.flush())
            self._gz = None
        elif self._zst is not None:
            self._outer.write(self._zst.flush())
            self._zst = None

    def result(self, entries: int) -> ApplyResult:
        return ApplyResult(
            diff_id=f"sha256:{self.sha.hexdigest()}",
            digest=f"sha256:{self._outer.sha.hexdigest()}",
            compressed_size=self._outer.size,
            uncompressed_size=self.size,
            compression=self.compression,
            entries=entries,
        )
