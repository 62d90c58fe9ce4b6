"""Directories a layer changes without a header of its own (review item 20).

A single-tree unpacker (remove mode, umoci) keeps such a directory's times; a
layer-per-directory one (overlay mode) must make the directory in its own layer
as it is below (owner, mode, xattrs, times), and follow a symlink it finds below
on the way, or the merged tree differs from umoci's.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from criolib.storage import LayerFormatError, UnsafeArchive, apply_layer
from criolib.testing import require_root
from criolib.testing.strategies_tar import EPOCH, TarEntry, tar_bytes
from tests.storage.hostile.watch import xattrs

OLD = 1_000_000_000  # 2001-09-09: the lower tree's times, unlike EPOCH and now


def _apply(entries: list[TarEntry], dest: Path, mode: str, **kw: object) -> None:
    apply_layer(io.BytesIO(tar_bytes(entries)), dest, whiteouts=mode,  # type: ignore[arg-type]
                **kw)  # type: ignore[arg-type]


def _age(root: Path) -> None:
    """Set every directory under ``root`` (and itself) to OLD."""
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (OLD, OLD))


# -- remove mode: the directory is there, and keeps its times ------------------------


def test_remove_mode_keeps_the_times_of_directories_it_only_changes(tmp_path: Path) -> None:
    _apply([TarEntry(name=b"etc", kind="dir"), TarEntry(name=b"etc/a", data=b"a"),
            TarEntry(name=b"opt", kind="dir"), TarEntry(name=b"opt/x", data=b"x"),
            TarEntry(name=b"var", kind="dir"), TarEntry(name=b"var/y", data=b"y"),
            TarEntry(name=b"usr", kind="dir")],
           tmp_path, "remove", same_owner=False)
    _age(tmp_path)
    _apply([TarEntry(name=b"etc/b", data=b"b"), TarEntry(name=b"opt/.wh.x"),
            TarEntry(name=b"var/.wh..wh..opq"), TarEntry(name=b"usr/new/deep", data=b"d"),
            TarEntry(name=b"top", data=b"t")],
           tmp_path, "remove", same_owner=False)
    for d in ("etc", "opt", "var", "usr", "."):
        assert int(os.stat(tmp_path / d).st_mtime) == OLD, d
    assert sorted(os.listdir(tmp_path / "etc")) == ["a", "b"]
    assert os.listdir(tmp_path / "opt") == [] and os.listdir(tmp_path / "var") == []
    # A directory this layer made without a header is new: it has no old times.
    assert int(os.stat(tmp_path / "usr" / "new").st_mtime) != OLD


def test_a_header_still_wins_over_the_old_times(tmp_path: Path) -> None:
    _apply([TarEntry(name=b"etc", kind="dir")], tmp_path, "remove", same_owner=False)
    _age(tmp_path)
    _apply([TarEntry(name=b"etc/b", data=b"b"), TarEntry(name=b"etc", kind="dir", mode=0o700)],
           tmp_path, "remove", same_owner=False)
    st = os.stat(tmp_path / "etc")
    assert int(st.st_mtime) == EPOCH and stat.S_IMODE(st.st_mode) == 0o700


# -- overlay mode: copy the directory up from below ------------------------------------


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    """A lower view: etc (0750 5:6, an xattr), usr/lib (0700), lib -> usr/lib, a file."""
    require_root()
    view = tmp_path / "lower"
    view.mkdir()
    _apply([TarEntry(name=b"etc", kind="dir", mode=0o750, uid=5, gid=6,
                     pax=((b"SCHILY.xattr.user.kept", b"yes"),)),
            TarEntry(name=b"usr", kind="dir"),
            TarEntry(name=b"usr/lib", kind="dir", mode=0o700, uid=3, gid=3),
            TarEntry(name=b"lib", kind="symlink", link=b"usr/lib"),
            TarEntry(name=b"evil", kind="symlink", link=b"/"),
            TarEntry(name=b"up", kind="symlink", link=b"../../../../.."),
            TarEntry(name=b"loop", kind="symlink", link=b"loop/x"),
            TarEntry(name=b"file", data=b"f")], view, "remove")
    _age(view)
    return view


def test_overlay_copies_a_missing_parent_up_from_below(tmp_path: Path, lower: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    _apply([TarEntry(name=b"etc/new", data=b"n"), TarEntry(name=b"etc/.wh.gone")],
           dest, "overlay", lower=lower)
    st = os.stat(dest / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 5, 6)
    assert int(st.st_mtime) == OLD
    assert xattrs(dest / "etc").get("user.kept") == b"yes"
    assert "trusted.overlay.opaque" not in xattrs(dest / "etc")


def test_overlay_follows_a_symlink_below(tmp_path: Path, lower: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    _apply([TarEntry(name=b"lib/libx.so", data=b"x")], dest, "overlay", lower=lower)
    assert not os.path.lexists(dest / "lib")  # the symlink below stays the symlink
    assert (dest / "usr" / "lib" / "libx.so").read_bytes() == b"x"
    st = os.stat(dest / "usr" / "lib")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, int(st.st_mtime)) == (0o700, 3, OLD)


def test_a_symlink_below_never_leads_out_of_the_layer(tmp_path: Path, lower: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    before = sorted(os.listdir("/")), sorted(os.listdir(tmp_path))
    _apply([TarEntry(name=b"evil/criolib-should-not-exist", data=b"x"),
            TarEntry(name=b"up/criolib-nor-this", data=b"y")], dest, "overlay", lower=lower)
    assert (dest / "criolib-should-not-exist").read_bytes() == b"x"
    assert (dest / "criolib-nor-this").read_bytes() == b"y"
    assert (sorted(os.listdir("/")), sorted(os.listdir(tmp_path))) == before
    with pytest.raises(UnsafeArchive, match="symlinks"):
        _apply([TarEntry(name=b"loop/y", data=b"z")], dest, "overlay", lower=lower)


def test_a_file_below_in_the_way_is_a_format_error(tmp_path: Path, lower: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(LayerFormatError, match="not a directory in the layers below"):
        _apply([TarEntry(name=b"file/x", data=b"x")], dest, "overlay", lower=lower)


def test_nothing_below_shows_through_an_opaque_directory(tmp_path: Path, lower: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    _apply([TarEntry(name=b"usr/.wh..wh..opq"), TarEntry(name=b"usr/lib/x", data=b"x")],
           dest, "overlay", lower=lower)
    st = os.stat(dest / "usr" / "lib")  # made anew: the lower usr/lib is hidden
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)


def test_the_view_is_asked_for_only_when_a_parent_is_missing(tmp_path: Path,
                                                             lower: Path) -> None:
    calls: list[int] = []

    def view() -> Path:
        calls.append(1)
        return lower

    dest = tmp_path / "layer"
    dest.mkdir()
    _apply([TarEntry(name=b"etc", kind="dir"), TarEntry(name=b"etc/x", data=b"x")],
           dest, "overlay", lower=view)
    assert calls == []
    _apply([TarEntry(name=b"usr/lib/y", data=b"y"), TarEntry(name=b"etc/z", data=b"z")],
           dest, "overlay", lower=view)
    assert calls == [1]
    # No view (a base layer): a missing parent is a plain 0755 root directory.
    base = tmp_path / "base"
    base.mkdir()
    _apply([TarEntry(name=b"etc/x", data=b"x")], base, "overlay", lower=lambda: None)
    assert stat.S_IMODE(os.stat(base / "etc").st_mode) == 0o755
