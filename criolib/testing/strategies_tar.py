"""Tar archives built byte by byte, and hypothesis strategies for hostile ones.

For tests of layer extraction (image-spec v1.1 layer.md) against what a hostile
image may carry. :func:`tar_bytes` writes exactly the names, link targets, types
and PAX records it is given (``tarfile`` would clean some up), so a test can hand
an extractor ``../escape``, absolute names, ``path=../x`` in a PAX header, a GNU
long name that climbs out, symlink chains and hard links through them.

This module imports hypothesis, a test-only dependency (``criolib[test]``);
nothing in criolib imports it but tests. :func:`tar_entries` and
:func:`tar_archives` draw entries from a small alphabet of names (``a``, ``b``,
``..``, ``.``, ``.wh.a``, ``.wh..wh..opq``, absolute names, over-long components)
so that collisions, replacements and escapes are frequent.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable

import attrs
from hypothesis import strategies as st

__all__ = [
    "EPOCH",
    "TarEntry",
    "compress",
    "link_targets",
    "pax_record",
    "tar_archives",
    "tar_bytes",
    "tar_entries",
    "tar_names",
]

Strategy = st.SearchStrategy

#: 2000-01-01T00:00:00Z, the test bed's fixed mtime.
EPOCH = 946684800
_TYPEFLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "char": b"3", "block": b"4",
              "dir": b"5", "fifo": b"6"}


@attrs.frozen
class TarEntry:
    """One tar member, written as given.

    ``kind`` is file, dir, symlink, hardlink, char, block or fifo; ``typeflag``
    overrides the type byte (``b"V"``, ``b"S"``...). ``pax`` holds extra PAX records
    written before the header (``((b"path", b"../x"),)``); a ``name`` longer than
    the 100-byte field goes into a PAX ``path`` record unless ``longname`` asks
    for a GNU ``L`` record instead.
    """

    name: bytes
    kind: str = "file"
    data: bytes = b""
    link: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = EPOCH
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    pax: tuple[tuple[bytes, bytes], ...] = ()
    longname: bool = False
    typeflag: bytes | None = None


def pax_record(key: bytes, value: bytes) -> bytes:
    """One PAX extended header record, ``"%d %s=%s\\n"`` with its own length counted."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _num(value: int, width: int) -> bytes:
    """An octal header number, or GNU base-256 when it does not fit."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\x00" % (width - 1, value)
    raw = value.to_bytes(width, "big", signed=True)
    return raw if value < 0 else bytes([0x80 | raw[0]]) + raw[1:]


def _header(name: bytes, typeflag: bytes, *, size: int = 0, mode: int = 0o644, uid: int = 0,
            gid: int = 0, mtime: int = EPOCH, link: bytes = b"", devmajor: int = 0,
            devminor: int = 0) -> bytes:
    h = bytearray(512)
    h[0:100] = name[:100].ljust(100, b"\x00")
    h[100:108] = _num(mode, 8)
    h[108:116] = _num(uid, 8)
    h[116:124] = _num(gid, 8)
    h[124:136] = _num(size, 12)
    h[136:148] = _num(mtime, 12)
    h[156:157] = typeflag
    h[157:257] = link[:100].ljust(100, b"\x00")
    h[257:265] = b"ustar\x0000"
    h[329:337] = _num(devmajor, 8)
    h[337:345] = _num(devminor, 8)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def _member(e: TarEntry) -> bytes:
    out = b""
    records = list(e.pax) + [(b"SCHILY.xattr." + k, v) for k, v in e.xattrs]
    name, link = e.name, e.link
    if len(name) > 100 and not e.longname and not any(k == b"path" for k, _ in e.pax):
        records.append((b"path", name))
    if len(link) > 100:
        records.append((b"linkpath", link))
    if e.longname:
        out += _header(b"././@LongLink", b"L", size=len(name) + 1)
        out += _padded(name + b"\x00")
    if records:
        data = b"".join(pax_record(k, v) for k, v in records)
        out += _header(b"PaxHeaders/" + name[-80:], b"x", size=len(data)) + _padded(data)
    typeflag = e.typeflag or _TYPEFLAGS[e.kind]
    data = e.data if typeflag in (b"0", b"\x00", b"7", b"g", b"x") else b""
    out += _header(name, typeflag, size=len(data), mode=e.mode, uid=e.uid, gid=e.gid,
                   mtime=e.mtime, link=link, devmajor=e.devmajor, devminor=e.devminor)
    return out + _padded(data)


def tar_bytes(entries: Iterable[TarEntry], *, end_marker: bool = True) -> bytes:
    """The tar archive of ``entries`` in order, with the two zero blocks unless told not to."""
    out = b"".join(_member(e) for e in entries)
    return out + bytes(1024) if end_marker else out


def compress(data: bytes, compression: str) -> bytes:
    """``data`` compressed with ``gzip``, ``zstd`` or not at all (``none``)."""
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return data


# -- strategies -------------------------------------------------------------------------

# Short names that collide often; the troublemakers (each refused outright by a
# careful extractor) come rarely, or most archives would stop at their first entry.
_COMMON = (b"a", b"a", b"a", b"b", b"b", b"c", b".", b"..")
_RARE = (b"", b".wh.a", b".wh..wh..opq", b".wh...", b".wh.", b"a" * 300)


def tar_names(outside: bytes | None = None, *, max_depth: int = 4,
              rare: bool = True) -> Strategy[bytes]:
    """Entry names: short components, ``..``, ``.``, absolute; whiteouts, over-long if ``rare``.

    ``outside``, an absolute path, is sometimes used as a prefix, so that names
    point at a directory a test watches.
    """
    component = st.sampled_from(_COMMON)
    if rare:
        component = st.one_of(*[component] * 12, st.sampled_from(_RARE))
    parts = st.lists(component, min_size=1, max_size=max_depth)
    plain = st.builds(lambda ps, lead: (b"/" if lead else b"") + b"/".join(ps), parts,
                      st.sampled_from([False, False, False, True]))
    if outside is None:
        return plain
    near = st.builds(lambda tail: outside + b"/" + tail, plain)
    return st.one_of(plain, plain, plain, near)


def link_targets(outside: bytes | None = None, *, rare: bool = True) -> Strategy[bytes]:
    """Symlink and hard link targets: names, ``/``, long climbs, and ``outside`` itself."""
    climbs = st.integers(1, 12).map(lambda n: b"/".join([b".."] * n))
    extra = [st.just(b"/"), climbs]
    if outside is not None:
        extra += [st.just(outside), st.just(outside + b"/sub"), st.just(outside + b"/secret")]
    return st.one_of(tar_names(outside, rare=rare), *extra)


def tar_entries(outside: bytes | None = None, *, rare: bool = True) -> Strategy[TarEntry]:
    """One entry of any kind, aimed at ``outside`` now and then."""
    kinds = st.sampled_from(["file", "file", "file", "dir", "dir", "symlink", "symlink",
                             "symlink", "hardlink", "hardlink", "fifo"])
    return st.builds(
        lambda name, kind, link, data, mode: TarEntry(
            name=name, kind=kind, link=link if kind in ("symlink", "hardlink") else b"",
            data=data if kind == "file" else b"", mode=mode),
        tar_names(outside, rare=rare), kinds, link_targets(outside, rare=rare),
        st.binary(max_size=64),
        st.sampled_from([0o644, 0o755, 0o4755, 0o700, 0o1777]),
    )


@st.composite
def _archives(draw: st.DrawFn, outside: bytes | None, max_entries: int,
              rare: bool) -> list[TarEntry]:
    entries: list[TarEntry] = []
    for _ in range(draw(st.integers(1, max_entries))):
        entry = draw(tar_entries(outside, rare=rare))
        reuse: bool = draw(st.booleans())
        if entries and reuse:
            # Go through (or link to) something an earlier entry made: that is where
            # symlinked parents, replaced directories and hard links bite.
            earlier = draw(st.sampled_from(entries)).name
            if entry.kind == "hardlink" and draw(st.booleans()):
                entry = attrs.evolve(entry, link=earlier)
            else:
                tail = draw(tar_names(None, max_depth=2, rare=rare))
                entry = attrs.evolve(entry, name=earlier + b"/" + tail)
        entries.append(entry)
    return entries


def tar_archives(outside: bytes | None = None, *, max_entries: int = 12,
                 rare: bool = True) -> Strategy[list[TarEntry]]:
    """Lists of entries for :func:`tar_bytes`; later entries often reuse earlier names.

    ``rare=False`` leaves out the names an extractor refuses outright (whiteouts of
    nothing, over-long components), so more archives get through to the end.
    """
    return _archives(outside, max_entries, rare)
