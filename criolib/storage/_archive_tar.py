"""A streaming tar reader for layer archives: headers, PAX and GNU extensions, names.

Reads what image-spec v1.1 layer.md calls a tar archive: POSIX ustar and pax
(IEEE 1003.1-2017 ``pax`` "ustar Interchange Format" and "pax Extended Header"),
GNU ``L``/``K`` long names and base-256 numbers, old v7 headers. Names and link
targets stay bytes, as Linux stores them. Every malformed or truncated header is a
:class:`LayerFormatError` naming the layer, the entry and its offset in the
uncompressed stream. It never interprets a name: :func:`clean_name` does that, the
way containers/storage's pkg/archive ``Unpack`` does (``filepath.Clean``, then a
name that still climbs above the root is a breakout).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from criolib.storage._errors import LayerFormatError

__all__ = ["DATA_TYPES", "Member", "TarReader", "clean_name", "display"]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
#: PAX and GNU long-name headers bigger than this are refused (Go's archive/tar: 1 MiB).
_MAX_SPECIAL = 1 << 20
_POSIX_MAGIC = b"ustar\x00"
_GNU_MAGIC = b"ustar "
_OCTAL = b"01234567"
_PAX_MTIME = re.compile(rb"(-?)([0-9]+)(?:\.([0-9]*))?")
#: Type flags whose entries carry data blocks (after ``\0`` and ``7`` became ``0``).
DATA_TYPES = frozenset({b"0"})
# POSIX: for these the size field is ignored and no data follows (Go's isHeaderOnlyType).
_HEADER_ONLY = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})


def display(name: bytes) -> str:
    """A tar name for messages: UTF-8 where it is, escapes where it is not."""
    return name.decode("utf-8", "backslashreplace")


def clean_name(name: bytes) -> bytes | None:
    """``name`` relative to the root, or ``None`` when it climbs above it.

    Go's ``filepath.Clean`` semantics, as containers/storage applies them: ``.`` and
    empty components go, ``..`` removes the previous one, ``..`` at the start of an
    absolute name stays at ``/`` (``/../etc`` is ``etc``), and a relative name that
    still starts with ``..`` after cleaning (``../x``, ``a/../../x``) is a breakout.
    The root itself is ``b""``.
    """
    if not name.startswith((b"/", b".")) and b"/." not in name and b"//" not in name:
        return name.rstrip(b"/")
    absolute = name.startswith(b"/")
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if not part or part == b".":
            continue
        if part == b"..":
            if parts:
                parts.pop()
            elif not absolute:
                return None
            continue
        parts.append(part)
    return b"/".join(parts)


class Member:
    """One tar entry, after its PAX and GNU extension headers were applied."""

    __slots__ = ("devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns", "name",
                 "offset", "size", "type", "uid", "xattrs")

    def __init__(self, *, name: bytes, type: bytes, mode: int, uid: int, gid: int, size: int,
                 mtime_ns: int, linkname: bytes, devmajor: int, devminor: int,
                 offset: int) -> None:
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.offset = offset
        self.xattrs: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"<Member {display(self.name)!r} type={self.type!r} size={self.size}>"


class _Extensions:
    """PAX records and GNU long names read ahead of the entry they belong to."""

    __slots__ = ("longlink", "longname", "pax")

    def __init__(self) -> None:
        self.pax: dict[bytes, bytes] = {}
        self.longname: bytes | None = None
        self.longlink: bytes | None = None


def _cut(field: bytes) -> bytes:
    """A NUL-terminated header string."""
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


class TarReader:
    """Pulls tar members out of a stream of uncompressed chunks.

    ``next_chunk`` returns the next piece of the uncompressed stream (``b""`` at its
    end). After :meth:`next` returned a member with data, the caller either writes
    it with :meth:`write_data` or leaves it: the next :meth:`next` skips it.
    """

    def __init__(self, next_chunk: Callable[[], bytes], label: str) -> None:
        self._next_chunk = next_chunk
        self.label = label
        self._buf = b""
        self._mv = memoryview(self._buf)
        self._pos = 0
        self._base = 0
        self._remaining = 0
        self._pad = 0
        self._member: Member | None = None
        self.entries = 0
        self.saw_end_marker = False

    @property
    def offset(self) -> int:
        """Bytes of the uncompressed stream consumed so far."""
        return self._base + self._pos

    def _error(self, what: str, offset: int | None = None) -> LayerFormatError:
        at = self.offset if offset is None else offset
        entry = f", entry {display(self._member.name)!r}" if self._member is not None else ""
        return LayerFormatError(f"layer {self.label}{entry} at offset {at}: {what}")

    def _refill(self) -> bool:
        chunk = self._next_chunk()
        if not chunk:
            return False
        self._base += len(self._buf)
        self._buf = chunk
        self._mv = memoryview(chunk)
        self._pos = 0
        return True

    def _take(self, n: int) -> bytes:
        """The next ``n`` bytes, fewer only at the end of the stream."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]]
        got = len(parts[0])
        self._pos = len(self._buf)
        while got < n and self._refill():
            k = min(n - got, len(self._buf))
            parts.append(self._buf[:k])
            self._pos = k
            got += k
        return b"".join(parts)

    def _skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns how many could not be skipped (the stream ended)."""
        while n:
            avail = len(self._buf) - self._pos
            if avail >= n:
                self._pos += n
                return 0
            n -= avail
            self._pos = len(self._buf)
            if not self._refill():
                return n
        return 0

    def write_data(self, fd: int) -> None:
        """Write the current member's data to ``fd``, in chunks, without copying them."""
        n = self._remaining
        buf, mv, pos = self._buf, self._mv, self._pos
        while n:
            avail = len(buf) - pos
            if avail <= 0:
                self._pos = pos
                if not self._refill():
                    self._remaining = n
                    raise self._error(f"truncated: {n} bytes of file data missing")
                buf, mv, pos = self._buf, self._mv, 0
                continue
            k = n if n < avail else avail
            written = os.write(fd, mv[pos : pos + k])
            pos += written
            n -= written
        self._pos = pos
        self._remaining = 0
        self._skip_padding()

    def _skip_padding(self) -> None:
        if self._pad and self._skip(self._pad):
            raise self._error("truncated in the padding after file data")
        self._pad = 0

    def _special(self, size: int, what: str, offset: int) -> bytes:
        if size > _MAX_SPECIAL:
            raise self._error(f"{what} header of {size} bytes (more than {_MAX_SPECIAL})", offset)
        data = self._take(size)
        if len(data) < size or self._skip(-size % BLOCK):
            raise self._error(f"truncated {what} header", offset)
        return data

    def next(self) -> Member | None:
        """The next member, or ``None`` at the end of the archive."""
        if self._remaining and self._skip(self._remaining):
            raise self._error("truncated: file data missing")
        self._remaining = 0
        self._skip_padding()
        self._member = None
        ext = _Extensions()
        while True:
            offset = self.offset
            block = self._take(BLOCK)
            if len(block) < BLOCK or block == _ZERO_BLOCK:
                self._end(block, offset, ext)
                return None
            typ, size = self._check(block, offset)
            if typ in (b"x", b"X"):
                ext.pax = self._parse_pax(self._special(size, "PAX", offset), ext.pax, offset)
            elif typ == b"g":
                self._special(size, "PAX global", offset)  # Go ignores them when extracting
            elif typ == b"L":
                ext.longname = _cut(self._special(size, "GNU long name", offset))
            elif typ == b"K":
                ext.longlink = _cut(self._special(size, "GNU long link", offset))
            else:
                return self._member_from(block, typ, size, offset, ext)

    def _end(self, block: bytes, offset: int, ext: _Extensions) -> None:
        """Check an end of archive: a zero block (or the end of the stream) at a header."""
        if block and len(block) < BLOCK:
            raise self._error(f"truncated header ({len(block)} of 512 bytes)", offset)
        if block:
            second = self._take(BLOCK)
            if second and second != _ZERO_BLOCK:
                raise self._error("a zero block followed by data", offset)
            self.saw_end_marker = True
        # Without an end-of-archive marker the stream just stops: Go's reader accepts that.
        if ext.pax or ext.longname is not None or ext.longlink is not None:
            raise self._error("extended header without an entry after it", offset)

    def _check(self, block: bytes, offset: int) -> tuple[bytes, int]:
        """Verify the header checksum; return the type flag and the header's size field."""
        stored = self._number(block[148:156], "checksum", offset)
        unsigned = sum(block[:148]) + sum(block[156:]) + 8 * 32
        if stored != unsigned:
            high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
            if stored != unsigned - 256 * high:  # some old tars summed signed chars
                what = "not a tar archive" if offset == 0 else "bad header checksum"
                raise self._error(what, offset)
        return block[156:157], self._number(block[124:136], "size", offset)

    def _number(self, field: bytes, what: str, offset: int) -> int:
        if field[0] & 0x80:
            # GNU base-256: big-endian two's complement, the marker bit dropped.
            if field[0] == 0xFF:
                return int.from_bytes(field, "big", signed=True)
            return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        digits = field.strip(b" \x00")
        if not digits:
            return 0
        if digits.translate(None, _OCTAL):
            raise self._error(f"bad {what} field {field!r}", offset)
        return int(digits, 8)

    def _parse_pax(self, data: bytes, into: dict[bytes, bytes],
                   offset: int) -> dict[bytes, bytes]:
        """PAX records ``"%d %s=%s\\n"`` (pax "Extended Header Records")."""
        pos, n = 0, len(data)
        while pos < n:
            space = data.find(b" ", pos, pos + 21)
            length_s = data[pos:space] if space > pos else b""
            if not length_s.isdigit():
                raise self._error("bad PAX record length", offset)
            end = pos + int(length_s)
            if end > n or end <= space + 1 or data[end - 1] != 0x0A:
                raise self._error("bad PAX record", offset)
            key, eq, value = data[space + 1 : end - 1].partition(b"=")
            if not eq or not key:
                raise self._error("PAX record without a key", offset)
            into[key] = value
            pos = end
        return into

    def _member_from(self, block: bytes, typ: bytes, size: int, offset: int,
                     ext: _Extensions) -> Member:
        name = _cut(block[0:100])
        if block[257:263] == _POSIX_MAGIC:
            prefix = _cut(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        if ext.longname is not None:
            name = ext.longname
        linkname = ext.longlink if ext.longlink is not None else _cut(block[157:257])
        if typ == b"\x00":
            typ = b"5" if name.endswith(b"/") else b"0"
        elif typ == b"7":
            typ = b"0"  # contiguous file: a regular file everywhere but old Masscomp
        num = self._number
        m = Member(name=name, type=typ, mode=num(block[100:108], "mode", offset) & 0o7777,
                   uid=num(block[108:116], "uid", offset), gid=num(block[116:124], "gid", offset),
                   size=size, mtime_ns=num(block[136:148], "mtime", offset) * 1_000_000_000,
                   linkname=linkname, devmajor=num(block[329:337], "devmajor", offset),
                   devminor=num(block[337:345], "devminor", offset), offset=offset)
        self._member = m
        if ext.pax:
            self._apply_pax(m, ext.pax, offset)
        if typ == b"S":
            raise self._error("GNU sparse files are not supported", offset)
        if b"\x00" in m.name or b"\x00" in m.linkname:
            raise self._error("NUL byte in a name", offset)
        if m.size < 0 or m.uid < 0 or m.gid < 0:
            raise self._error("negative size, uid or gid", offset)
        if typ in _HEADER_ONLY:
            m.size = 0
        self._remaining = m.size
        self._pad = -m.size % BLOCK
        self.entries += 1
        return m

    def _apply_pax(self, m: Member, pax: dict[bytes, bytes], offset: int) -> None:
        for key, value in pax.items():
            if key.startswith(b"SCHILY.xattr."):
                if len(key) == 13 or b"\x00" in key:
                    raise self._error("PAX xattr record without a usable name", offset)
                m.xattrs[key[13:]] = value
            elif not value:
                continue  # pax: an empty value unsets the keyword (the header's value counts)
            elif key == b"path":
                m.name = value
            elif key == b"linkpath":
                m.linkname = value
            elif key in (b"size", b"uid", b"gid"):
                if not value.isdigit():
                    raise self._error(f"bad PAX {key.decode()} {value!r}", offset)
                setattr(m, key.decode(), int(value))
            elif key == b"mtime":
                m.mtime_ns = self._pax_time(value, offset)
            elif key.startswith(b"GNU.sparse."):
                raise self._error("GNU sparse files are not supported", offset)

    def _pax_time(self, value: bytes, offset: int) -> int:
        match = _PAX_MTIME.fullmatch(value)
        if match is None:
            raise self._error(f"bad PAX mtime {value!r}", offset)
        sign, secs, frac = match.groups()
        ns = int(secs) * 1_000_000_000 + int(((frac or b"") + b"000000000")[:9])
        return -ns if sign else ns
