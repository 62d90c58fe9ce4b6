"""The tar reader and name cleaning, against tarfile's writer and damaged input."""

from __future__ import annotations

import contextlib
import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.storage import LayerFormatError
from criolib.storage._archive_tar import Member, TarReader, clean_name
from criolib.testing.strategies_tar import TarEntry, tar_bytes


def read_all(data: bytes, chunk: int = 1 << 20) -> list[Member]:
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    it = iter(pieces)
    reader = TarReader(lambda: next(it, b""), "test")
    out = []
    while (m := reader.next()) is not None:
        out.append(m)
    return out


@pytest.mark.parametrize(("name", "clean"), [
    (b"a/b", b"a/b"), (b"a/b/", b"a/b"), (b"./a", b"a"), (b"/a", b"a"), (b"//a//b", b"a/b"),
    (b"/../a", b"a"), (b"/a/../../b", b"b"), (b"a/../b", b"b"), (b".", b""), (b"./", b""),
    (b"", b""), (b"/", b""), (b"a/..", b""),
    (b"..", None), (b"../a", None), (b"a/../../b", None), (b"./../a", None),
    (b"a/./../..", None),
])
def test_clean_name(name: bytes, clean: bytes | None) -> None:
    assert clean_name(name) == clean


_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1,
                 max_size=40)


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.tuples(st.lists(_NAMES, min_size=1, max_size=4),
                                  st.binary(max_size=2000), st.integers(0, 0o7777),
                                  st.integers(0, 2**31), st.integers(0, 2**33)),
                        min_size=1, max_size=8),
       fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
       chunk=st.sampled_from([1, 7, 512, 4096, 1 << 20]))
def test_reads_what_tarfile_writes(entries: list[tuple[list[str], bytes, int, int, int]],
                                   fmt: int, chunk: int) -> None:
    buf = io.BytesIO()
    written = []
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for parts, data, mode, uid, mtime in entries:
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.uid, info.mtime = len(data), mode, uid, mtime
            try:
                tar.addfile(info, io.BytesIO(data))
            except ValueError:  # ustar cannot hold it (long name, big number)
                continue
            written.append((info.name.encode(), data, mode, uid, mtime))
    got = read_all(buf.getvalue(), chunk)
    assert [(m.name, m.mode, m.uid, m.mtime_ns // 10**9, m.size) for m in got] == [
        (n, mo, u, t, len(d)) for n, d, mo, u, t in written]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000), flip=st.integers(0, 3000))
def test_damaged_input_raises_only_layer_format_error(data: bytes, cut: int,
                                                      flip: int) -> None:
    base = tar_bytes([TarEntry(name=b"a", data=data),
                      TarEntry(name=b"b" * 150, kind="symlink", link=b"c" * 150),
                      TarEntry(name=b"d", xattrs=((b"user.x", b"y"),))])
    damaged = bytearray(base[:cut] if cut < len(base) else base)
    if damaged:
        damaged[flip % len(damaged)] ^= 0x5A
    with contextlib.suppress(LayerFormatError):
        read_all(bytes(damaged), 512)


def test_base256_numbers() -> None:
    (m,) = read_all(tar_bytes([TarEntry(name=b"x", uid=2**40, mtime=-5)]))
    assert m.uid == 2**40 and m.mtime_ns == -5 * 10**9


def test_pax_records_override_the_header() -> None:
    (m,) = read_all(tar_bytes([TarEntry(name=b"short", pax=(
        (b"path", b"long/" * 40 + b"name"), (b"uid", b"123456789"), (b"gid", b""),
        (b"mtime", b"-1.5"), (b"SCHILY.xattr.user.empty", b""), (b"comment", b"ignored")))]))
    assert m.name == b"long/" * 40 + b"name"
    assert (m.uid, m.gid, m.mtime_ns) == (123456789, 0, -1_500_000_000)
    assert m.xattrs == {b"user.empty": b""}


def test_pax_header_too_big() -> None:
    with pytest.raises(LayerFormatError, match="more than"):
        read_all(tar_bytes([TarEntry(name=b"x", pax=((b"comment", b"c" * (1 << 20)),))]))


def test_extended_header_without_entry() -> None:
    blob = tar_bytes([TarEntry(name=b"x", pax=((b"comment", b"c"),))], end_marker=False)
    with pytest.raises(LayerFormatError, match="without an entry"):
        read_all(blob[:1024] + bytes(1024))
