"""apply_layer on the test bed's layers and on hand-made tars (image-spec v1.1 layer.md)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from criolib.storage import (
    ApplyResult,
    DigestMismatch,
    LayerFormatError,
    StorageError,
    UnsafeArchive,
    apply_layer,
    detect_compression,
)
from criolib.testing import TestImages, require_root
from criolib.testing.strategies_tar import EPOCH, TarEntry, compress, pax_record, tar_bytes
from tests.storage.hostile.watch import listing, xattrs

MULTILAYER = ["multilayer", "multilayer-zstd", "multilayer-uncompressed"]
COMPRESSION = {"multilayer": "gzip", "multilayer-zstd": "zstd", "multilayer-uncompressed": "none"}


def blob_path(images: TestImages, digest: str) -> Path:
    return images.layout / "blobs" / "sha256" / digest.partition(":")[2]


def apply_bytes(data: bytes, dest: Path, mode: str = "remove", **kw: object) -> ApplyResult:
    return apply_layer(io.BytesIO(data), dest, whiteouts=mode, **kw)  # type: ignore[arg-type]


def apply_image(images: TestImages, name: str, root: Path, mode: str) -> list[Path]:
    """Apply every layer of ``name``: into one dir (remove) or one dir per layer (overlay)."""
    image = images[name]
    dirs = []
    for i, (desc, diff_id) in enumerate(zip(image.layers, image.diff_ids, strict=True)):
        dest = root / ("rootfs" if mode == "remove" else f"layer{i}")
        dest.mkdir(exist_ok=True)
        with open(blob_path(images, desc.digest), "rb") as f:
            result = apply_layer(f, dest, whiteouts=mode,  # type: ignore[arg-type]
                                 expected_diff_id=diff_id, expected_digest=desc.digest)
        assert result.diff_id == diff_id
        assert result.digest == desc.digest
        assert result.compressed_size == desc.size
        assert result.compression == COMPRESSION.get(name, "gzip")
        assert result.uncompressed_size % 512 == 0 and result.entries > 0
        dirs.append(dest)
    return dirs


def test_detect_compression() -> None:
    assert detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert detect_compression(b"ustar") == "none"
    assert detect_compression(b"") == "none"
    assert detect_compression(b"\x1f") == "none"


# -- the test bed ------------------------------------------------------------------------


def _common_checks(data: Path) -> None:
    """What both modes must show in /data after the three multilayer layers."""
    assert stat.S_IMODE(os.lstat(data / "setuid-bin").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(data / "setgid-dir").st_mode) == 0o2775
    assert stat.S_IMODE(os.lstat(data / "sticky-dir").st_mode) == 0o1777
    assert (data / "setuid-bin").read_bytes() == b"#!/bin/sh\necho setuid\n"
    src, dst = os.lstat(data / "hardlink-src.txt"), os.lstat(data / "hardlink-dst.txt")
    assert (src.st_ino, src.st_nlink) == (dst.st_ino, 2)
    assert os.readlink(data / "abs-symlink") == "/data/keep.txt"
    assert os.readlink(data / "rel-symlink") == "../bin/busybox"
    assert stat.S_ISFIFO(os.lstat(data / "fifo").st_mode)
    assert xattrs(data / "xattr-file")["user.criolib.test"] == b"layer2"
    assert (data / "empty-dir").is_dir() and not any((data / "empty-dir").iterdir())
    assert (data / "replaced" / "new.txt").read_bytes() == b"the only file left in replaced/\n"
    for path in (data / "setuid-bin", data / "setgid-dir", data / "abs-symlink"):
        assert os.lstat(path).st_mtime == EPOCH
    assert os.lstat(data).st_mtime == EPOCH  # directories last, after their children


@pytest.mark.parametrize("name", MULTILAYER)
def test_multilayer_remove_mode(criolib_test_images: TestImages, name: str,
                                tmp_path: Path) -> None:
    require_root()
    (root,) = {d for d in apply_image(criolib_test_images, name, tmp_path, "remove")}
    data = root / "data"
    _common_checks(data)
    owned = os.lstat(data / "owned-by-tester.txt")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1000, 1000, 0o640)
    assert (root / "home" / "tester").stat().st_uid == 1000
    assert not (data / "delete-me.txt").exists()
    assert not os.path.lexists(data / "removed-dir")
    assert sorted(os.listdir(data / "replaced")) == ["new.txt"]
    assert (data / "overwritten.txt").read_bytes() == b"layer 2 version\n"
    assert (data / "keep.txt").read_bytes() == b"kept from layer 1\n"
    assert (root / "etc" / "criolib-image").read_bytes() == b"multilayer\n"
    assert not [p for p in listing(root) if ".wh." in p]


@pytest.mark.parametrize("name", MULTILAYER)
def test_multilayer_overlay_mode(criolib_test_images: TestImages, name: str,
                                 tmp_path: Path) -> None:
    require_root()
    base, second, third = apply_image(criolib_test_images, name, tmp_path, "overlay")
    _common_checks(second / "data")
    gone = os.lstat(second / "data" / "delete-me.txt")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == os.makedev(0, 0)
    assert xattrs(second / "data" / "replaced")["trusted.overlay.opaque"] == b"y"
    assert sorted(os.listdir(second / "data" / "replaced")) == ["new.txt"]
    removed = os.lstat(third / "data" / "removed-dir")
    assert stat.S_ISCHR(removed.st_mode) and removed.st_rdev == 0
    assert "trusted.overlay.opaque" not in xattrs(second / "data")
    assert (base / "data" / "delete-me.txt").is_file()  # lower layers keep theirs
    for layer in (base, second, third):
        assert not [p for p in listing(layer) if ".wh." in p]


def test_digest_mismatch(criolib_test_images: TestImages, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    desc = image.layers[2]
    wrong = "sha256:" + "0" * 64
    with open(blob_path(criolib_test_images, desc.digest), "rb") as f, \
            pytest.raises(DigestMismatch) as info:
        apply_layer(f, tmp_path, whiteouts="remove", expected_diff_id=wrong, same_owner=False)
    assert info.value.expected == wrong and info.value.actual == image.diff_ids[2]
    assert wrong in str(info.value) and image.diff_ids[2] in str(info.value)
    (tmp_path / "x").mkdir()
    with open(blob_path(criolib_test_images, desc.digest), "rb") as f, \
            pytest.raises(DigestMismatch, match="digest is sha256:"):
        apply_layer(f, tmp_path / "x", whiteouts="remove", expected_digest=wrong,
                    same_owner=False)


@pytest.mark.parametrize("bad", ["sha256:abc", "sha512:" + "0" * 128, "0" * 64,
                                 "sha256:" + "A" * 64])
def test_expected_digest_must_be_sha256(bad: str, tmp_path: Path) -> None:
    with pytest.raises(DigestMismatch, match="not a sha256 digest"):
        apply_bytes(tar_bytes([]), tmp_path, expected_diff_id=bad)


def test_bad_whiteout_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whiteouts"):
        apply_bytes(tar_bytes([]), tmp_path, mode="aufs")


# -- damaged streams ---------------------------------------------------------------------

_PAYLOAD = tar_bytes([TarEntry(name=b"d", kind="dir", mode=0o755),
                      TarEntry(name=b"d/f", data=os.urandom(300_000)),
                      TarEntry(name=b"d/g", data=b"x" * 100_000)])


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("cut", [0.5, 0.99, 10])
def test_truncated_stream(compression: str, cut: float, tmp_path: Path) -> None:
    blob = compress(_PAYLOAD, compression)
    keep = int(len(blob) * cut) if cut < 1 else int(cut)
    if compression == "none" and cut == 0.99:
        keep = len(_PAYLOAD) - 1024 - 100  # inside the last file's data
    with pytest.raises(LayerFormatError, match=r"truncated|not a tar") as info:
        apply_bytes(blob[:keep], tmp_path, same_owner=False)
    assert "offset" in str(info.value)


@pytest.mark.parametrize("blob", [
    pytest.param(b"\x1f\x8b" + os.urandom(1000), id="gzip-garbage"),
    pytest.param(gzip.compress(_PAYLOAD) + b"junk", id="gzip-trailing-junk"),
    pytest.param(b"\x28\xb5\x2f\xfd" + os.urandom(1000), id="zstd-garbage"),
    pytest.param(b"hello world" * 100, id="not-a-tar"),
    pytest.param(_PAYLOAD[:148] + b"9999999\x00" + _PAYLOAD[156:], id="bad-checksum"),
    pytest.param(_PAYLOAD[:512 * 3] + bytes(512) + b"x" * 512, id="zero-block-then-data"),
    pytest.param(tar_bytes([TarEntry(name=b"a", pax=((b"size", b"-1"),))]), id="pax-size"),
    pytest.param(tar_bytes([TarEntry(name=b"a", pax=((b"mtime", b"yesterday"),))]),
                 id="pax-mtime"),
])
def test_damaged_stream(blob: bytes, tmp_path: Path) -> None:
    with pytest.raises(LayerFormatError):
        apply_bytes(blob, tmp_path, same_owner=False)


def test_bad_pax_record(tmp_path: Path) -> None:
    good = tar_bytes([TarEntry(name=b"a", pax=((b"comment", b"hi"),))])
    at = good.index(b"comment")
    bad = good[: at - 3] + b"99" + good[at - 1:]  # the record's length is now wrong
    with pytest.raises(LayerFormatError, match="PAX"):
        apply_bytes(bad, tmp_path, same_owner=False)


# -- hashing and formats -----------------------------------------------------------------


def test_diff_id_counts_trailing_zero_blocks(tmp_path: Path) -> None:
    raw = tar_bytes([TarEntry(name=b"f", data=b"x")]) + bytes(512 * 17)
    for comp in ("none", "gzip", "zstd"):
        blob = compress(raw, comp)
        (tmp_path / comp).mkdir()
        result = apply_bytes(blob, tmp_path / comp, same_owner=False)
        assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert (result.uncompressed_size, result.compressed_size) == (len(raw), len(blob))
        assert (result.entries, result.compression) == (1, comp)


def test_multiple_gzip_members(tmp_path: Path) -> None:
    raw = tar_bytes([TarEntry(name=b"f", data=b"x" * 5000)])
    blob = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    result = apply_bytes(blob, tmp_path, same_owner=False)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (tmp_path / "f").read_bytes() == b"x" * 5000


def test_no_end_marker_and_empty_stream(tmp_path: Path) -> None:
    apply_bytes(tar_bytes([TarEntry(name=b"f", data=b"1")], end_marker=False), tmp_path,
                same_owner=False)
    assert (tmp_path / "f").read_bytes() == b"1"
    assert apply_bytes(b"", tmp_path, same_owner=False).entries == 0


def test_pax_and_gnu_extensions(tmp_path: Path) -> None:
    require_root()
    long = b"/".join([b"x" * 100] * 3) + b"/file"
    entries = [
        TarEntry(name=long, data=b"long\n"),
        TarEntry(name=b"gnu-" + b"y" * 200, longname=True, data=b"gnu\n"),
        TarEntry(name=b"ns", data=b"", pax=((b"mtime", b"1234567890.123456789"),)),
        TarEntry(name=b"big-ids", uid=3_000_000, gid=2**21 + 5),
        TarEntry(name=b"link", kind="symlink", link=b"t" * 250, mode=0o777),
        TarEntry(name=b"utf8-\xc3\xa9", data=b"e\n"),
        TarEntry(name=b"latin1-\xe9", data=b"raw\n"),
        TarEntry(name=b"old", typeflag=b"\x00", data=b"v7\n"),
        TarEntry(name=b"olddir/", typeflag=b"\x00", mode=0o700),
        TarEntry(name=b"cont", typeflag=b"7", data=b"contiguous\n"),
    ]
    apply_bytes(tar_bytes(entries), tmp_path)
    assert (tmp_path / os.fsdecode(long)).read_bytes() == b"long\n"
    assert (tmp_path / ("gnu-" + "y" * 200)).read_bytes() == b"gnu\n"
    assert os.lstat(tmp_path / "ns").st_mtime_ns == 1234567890123456789
    st = os.lstat(tmp_path / "big-ids")
    assert (st.st_uid, st.st_gid) == (3_000_000, 2**21 + 5)
    assert os.readlink(tmp_path / "link") == "t" * 250
    assert (tmp_path / "utf8-é").read_bytes() == b"e\n"
    with open(os.path.join(os.fsencode(tmp_path), b"latin1-\xe9"), "rb") as f:
        assert f.read() == b"raw\n"
    assert (tmp_path / "old").read_bytes() == b"v7\n"
    assert (tmp_path / "olddir").is_dir()
    assert (tmp_path / "cont").read_bytes() == b"contiguous\n"


def test_global_pax_header_is_ignored(tmp_path: Path) -> None:
    glob = TarEntry(name=b"pax_global_header", typeflag=b"g",
                    data=pax_record(b"path", b"../../evil"))
    blob = tar_bytes([glob, TarEntry(name=b"f", data=b"1")])
    assert apply_bytes(blob, tmp_path, same_owner=False).entries == 1
    assert (tmp_path / "f").read_bytes() == b"1"


def test_large_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    size = 64 << 20
    raw = tar_bytes([TarEntry(name=b"zeros", data=bytes(size))])
    blob = gzip.compress(raw, compresslevel=1)  # ~64 KiB: a small bomb
    del raw
    tracemalloc.start()
    try:
        result = apply_bytes(blob, tmp_path, same_owner=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "zeros").stat().st_size == size
    assert result.uncompressed_size == 512 + size + 1024
    assert peak < 16 << 20, f"peak {peak >> 20} MiB"


# -- semantics ---------------------------------------------------------------------------


def test_duplicates_later_wins(tmp_path: Path) -> None:
    require_root()
    entries = [
        TarEntry(name=b"f", data=b"first\n"), TarEntry(name=b"f", data=b"second\n"),
        TarEntry(name=b"d", kind="dir", mode=0o755), TarEntry(name=b"d/child", data=b"c\n"),
        TarEntry(name=b"d", kind="dir", mode=0o700, uid=7),  # merges, new metadata
        TarEntry(name=b"gone", kind="dir"), TarEntry(name=b"gone/x", data=b"x"),
        TarEntry(name=b"gone", data=b"now a file\n"),  # anything over a dir: dir removed
        TarEntry(name=b"s", kind="symlink", link=b"f"), TarEntry(name=b"s", data=b"real\n"),
        TarEntry(name=b"fifo", kind="fifo"), TarEntry(name=b"fifo", kind="dir"),
    ]
    apply_bytes(tar_bytes(entries), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"second\n"
    st = os.lstat(tmp_path / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 7)
    assert (tmp_path / "d" / "child").read_bytes() == b"c\n"
    assert (tmp_path / "gone").read_bytes() == b"now a file\n"
    assert not (tmp_path / "s").is_symlink() and (tmp_path / "s").read_bytes() == b"real\n"
    assert (tmp_path / "fifo").is_dir()


def test_opaque_after_children_keeps_this_layers(tmp_path: Path) -> None:
    """layer.md: the opaque marker applies first, wherever it sits in the tar."""
    lower = [TarEntry(name=b"d", kind="dir"), TarEntry(name=b"d/old", data=b"old"),
             TarEntry(name=b"d/sub", kind="dir"), TarEntry(name=b"d/sub/old", data=b"old"),
             TarEntry(name=b"d/keep-dir", kind="dir"), TarEntry(name=b"d/keep-dir/old")]
    upper = [TarEntry(name=b"d", kind="dir"), TarEntry(name=b"d/new", data=b"new"),
             TarEntry(name=b"d/sub/new", data=b"new"),  # sub: a lower dir, implicitly kept
             TarEntry(name=b"d/.wh..wh..opq")]
    apply_bytes(tar_bytes(lower), tmp_path, same_owner=False)
    apply_bytes(tar_bytes(upper), tmp_path, same_owner=False)
    assert sorted(p for p in listing(tmp_path / "d") if p != ".") == ["new", "sub", "sub/new"]


def test_whiteout_of_own_entry_is_ignored(tmp_path: Path) -> None:
    """layer.md: whiteouts hide lower layers' files only."""
    lower = tar_bytes([TarEntry(name=b"lower", data=b"l")])
    apply_bytes(lower, tmp_path, same_owner=False)
    upper = tar_bytes([TarEntry(name=b"mine", data=b"m"), TarEntry(name=b".wh.mine"),
                       TarEntry(name=b".wh.lower"), TarEntry(name=b".wh.absent"),
                       TarEntry(name=b"x/.wh.absent-dir")])
    apply_bytes(upper, tmp_path, same_owner=False)
    assert sorted(os.listdir(tmp_path)) == ["mine"]


def test_overlay_dir_over_whiteout_is_opaque(tmp_path: Path) -> None:
    require_root()
    apply_bytes(tar_bytes([TarEntry(name=b".wh.d"), TarEntry(name=b"d", kind="dir")]),
                tmp_path, "overlay")
    assert (tmp_path / "d").is_dir()
    assert xattrs(tmp_path / "d")["trusted.overlay.opaque"] == b"y"


def test_overlay_opaque_marker_without_dir_entry(tmp_path: Path) -> None:
    require_root()
    apply_bytes(tar_bytes([TarEntry(name=b"a/b/.wh..wh..opq")]), tmp_path, "overlay")
    assert xattrs(tmp_path / "a" / "b")["trusted.overlay.opaque"] == b"y"
    assert "trusted.overlay.opaque" not in xattrs(tmp_path / "a")


@pytest.mark.parametrize("mode", ["remove", "overlay"])
def test_hardlink_to_a_lower_layer_file_is_refused_in_both_modes(tmp_path: Path,
                                                                  mode: str) -> None:
    # One rule for both drivers (containers/storage's overlay cannot link across
    # layer directories either): only files this layer made can be linked to.
    if mode == "overlay":
        require_root()
    apply_bytes(tar_bytes([TarEntry(name=b"lower", data=b"l")]), tmp_path, mode,
                same_owner=False)
    with pytest.raises(UnsafeArchive, match="lower layer"):
        apply_bytes(tar_bytes([TarEntry(name=b"h", kind="hardlink", link=b"/lower")]),
                    tmp_path, mode, same_owner=False)
    assert not os.path.lexists(tmp_path / "h")
    assert (tmp_path / "lower").read_bytes() == b"l"


def test_hardlink_to_this_layers_file_through_a_lower_symlink(tmp_path: Path) -> None:
    # The target is named through a lower layer's symlink; it is still this layer's.
    apply_bytes(tar_bytes([TarEntry(name=b"usr", kind="dir"),
                           TarEntry(name=b"lib", kind="symlink", link=b"usr")]),
                tmp_path, same_owner=False)
    apply_bytes(tar_bytes([TarEntry(name=b"usr/a", data=b"a"),
                           TarEntry(name=b"b", kind="hardlink", link=b"lib/a")]),
                tmp_path, same_owner=False)
    assert os.lstat(tmp_path / "b").st_ino == os.lstat(tmp_path / "usr" / "a").st_ino


def test_root_entry_is_skipped(tmp_path: Path) -> None:
    mode = stat.S_IMODE(os.lstat(tmp_path).st_mode)
    apply_bytes(tar_bytes([TarEntry(name=b"./", kind="dir", mode=0o700),
                           TarEntry(name=b"./f", data=b"1")]), tmp_path, same_owner=False)
    assert stat.S_IMODE(os.lstat(tmp_path).st_mode) == mode
    assert (tmp_path / "f").read_bytes() == b"1"


def test_devices_when_allowed(tmp_path: Path) -> None:
    require_root()
    apply_bytes(tar_bytes([TarEntry(name=b"null", kind="char", devmajor=1, devminor=3,
                                    mode=0o666),
                           TarEntry(name=b"loop0", kind="block", devmajor=7, devminor=0)]),
                tmp_path)
    null, loop = os.lstat(tmp_path / "null"), os.lstat(tmp_path / "loop0")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 0)


def test_security_capability_survives_chown(tmp_path: Path) -> None:
    require_root()
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service
    apply_bytes(tar_bytes([TarEntry(name=b"ping", data=b"\x7fELF", mode=0o755, uid=5,
                                    xattrs=((b"security.capability", cap),))]), tmp_path)
    assert xattrs(tmp_path / "ping")["security.capability"] == cap
    assert os.lstat(tmp_path / "ping").st_uid == 5


def test_errors_are_storage_errors(tmp_path: Path) -> None:
    for cls in (LayerFormatError, UnsafeArchive, DigestMismatch):
        assert issubclass(cls, StorageError) and issubclass(cls, ValueError)


def test_layer_io_error_names_the_entry(tmp_path: Path) -> None:
    from criolib.storage import LayerIOError

    require_root()
    # EOPNOTSUPP is tolerated (logged); a value over XATTR_SIZE_MAX is E2BIG.
    blob = tar_bytes([TarEntry(name=b"f", xattrs=((b"user.big", b"v" * 65537),))])
    with pytest.raises(LayerIOError) as info:
        apply_bytes(blob, tmp_path)
    assert "'f'" in str(info.value) and info.value.errno is not None


def test_xattr_unsupported_by_the_fs_is_logged_and_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import errno as errno_

    def refuse(*args: object, **kw: object) -> None:
        raise OSError(errno_.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    blob = tar_bytes([TarEntry(name=b"f", data=b"1", xattrs=((b"user.a", b"1"),))])
    with caplog.at_level("WARNING", logger="criolib.storage"):
        apply_bytes(blob, tmp_path, same_owner=False)
    assert (tmp_path / "f").read_bytes() == b"1"
    assert "user.a" in caplog.text and "not set" in caplog.text


def test_source_read_error_is_a_layer_io_error(tmp_path: Path) -> None:
    from criolib.storage import LayerIOError

    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError(104, "Connection reset by peer")
            return tar_bytes([TarEntry(name=b"f", data=b"x" * 1000)], end_marker=False)[:700]

    with pytest.raises(LayerIOError, match="reading the blob at offset 700"):
        apply_layer(Broken(), tmp_path, whiteouts="remove", same_owner=False)  # type: ignore[arg-type]


def test_overlay_hardlink_to_a_whiteout_is_refused(tmp_path: Path) -> None:
    require_root()
    with pytest.raises(UnsafeArchive, match="a whiteout"):
        apply_bytes(tar_bytes([TarEntry(name=b".wh.x"),
                               TarEntry(name=b"y", kind="hardlink", link=b"x")]), tmp_path,
                    "overlay")


@pytest.mark.parametrize("mode", ["overlay", "remove"])
def test_name_below_a_whiteout_makes_the_directory_anew(tmp_path: Path, mode: str) -> None:
    require_root()
    lower = tmp_path / "lower"
    upper = tmp_path / "upper" if mode == "overlay" else lower
    lower.mkdir()
    apply_bytes(tar_bytes([TarEntry(name=b"x/old", data=b"old")]), lower, mode)
    upper.mkdir(exist_ok=True)
    apply_bytes(tar_bytes([TarEntry(name=b".wh.x"), TarEntry(name=b"x/new", data=b"new")]),
                upper, mode)
    assert sorted(os.listdir(upper / "x")) == ["new"]
    if mode == "overlay":
        assert xattrs(upper / "x")["trusted.overlay.opaque"] == b"y"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_stream_that_hands_out_one_byte_at_a_time(tmp_path: Path, compression: str) -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.data.read(1)

    raw = tar_bytes([TarEntry(name=b"f", data=b"hello")])
    result = apply_layer(Trickle(compress(raw, compression)), tmp_path,  # type: ignore[arg-type]
                         whiteouts="remove", same_owner=False)
    assert result.compression == compression
    assert (tmp_path / "f").read_bytes() == b"hello"
