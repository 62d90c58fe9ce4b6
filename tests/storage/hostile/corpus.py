"""The hostile tarball corpus: each case builds its tar in code and says what must happen.

Every case gets a :class:`Box`: ``dest`` (where the layer is applied), ``outside``
(a planted target directory beside it holding ``secret`` and ``target`` files, and
a ``sub`` directory) and the absolute path of ``outside`` as bytes, for entries
that aim at it. ``expect`` is the error class the extractor must raise, or
``None`` when the entry is to be confined (``check`` then looks at the result).
Whatever the expectation, the test also proves that nothing outside ``dest``
changed. No case ever aims at a real system file: a broken extractor would write
into ``outside``, never into /etc.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import attrs

from criolib.storage import LayerFormatError, UnsafeArchive
from criolib.testing.strategies_tar import TarEntry, tar_bytes
from tests.storage.hostile.watch import xattrs

__all__ = ["CASES", "Box", "Case"]


@attrs.frozen
class Box:
    """Where one case runs."""

    dest: Path
    outside: Path

    @property
    def out(self) -> bytes:
        """``outside`` as an absolute path in bytes."""
        return os.fsencode(self.outside)

    @property
    def out_rel(self) -> bytes:
        """``outside`` without its leading slash (what a name inside dest would be)."""
        return self.out.lstrip(b"/")

    @property
    def climb(self) -> bytes:
        """Enough ``../`` to reach ``/`` from anywhere in ``dest``, and more."""
        return b"../" * (len(self.dest.parts) + 3)

    def inside(self, rel: bytes) -> Path:
        return self.dest / os.fsdecode(rel)


@attrs.frozen
class Case:
    id: str
    build: Callable[[Box], list[TarEntry]]
    expect: type[Exception] | None = None
    check: Callable[[Box, str], None] | None = None
    allow_devices: bool = True
    same_owner: bool = True
    modes: tuple[str, ...] = ("overlay", "remove")

    def tar(self, box: Box) -> bytes:
        return tar_bytes(self.build(box))


def F(name: bytes, data: bytes = b"pwned\n", **kw: object) -> TarEntry:
    return TarEntry(name=name, data=data, **kw)  # type: ignore[arg-type]


def D(name: bytes, **kw: object) -> TarEntry:
    return TarEntry(name=name, kind="dir", mode=0o755, **kw)  # type: ignore[arg-type]


def L(name: bytes, target: bytes) -> TarEntry:
    return TarEntry(name=name, kind="symlink", link=target, mode=0o777)


def H(name: bytes, target: bytes) -> TarEntry:
    return TarEntry(name=name, kind="hardlink", link=target)


def _is_file(rel: bytes, data: bytes = b"pwned\n") -> Callable[[Box, str], None]:
    def check(box: Box, mode: str) -> None:
        path = box.inside(rel)
        assert path.is_file() and not path.is_symlink(), path
        assert path.read_bytes() == data

    return check


def _confined_out(tail: bytes) -> Callable[[Box, str], None]:
    """The write landed at ``dest/<outside path>/tail``: the symlink resolved inside."""
    def check(box: Box, mode: str) -> None:
        _is_file(box.out_rel + b"/" + tail)(box, mode)

    return check


def _check_dup_swaps(box: Box, mode: str) -> None:
    x = box.inside(b"x")
    assert x.is_symlink() and os.readlink(x) == os.fsdecode(box.out)
    _confined_out(b"y")(box, mode)


def _check_replaced_dir(box: Box, mode: str) -> None:
    assert box.inside(b"d").is_symlink()
    _confined_out(b"b")(box, mode)


def _check_file_over_dir(box: Box, mode: str) -> None:
    # The symlink went with the directory the file replaced: d/link is a new, real one.
    link = box.inside(b"d/link")
    assert link.is_dir() and not link.is_symlink()
    _is_file(b"d/link/x")(box, mode)


def _check_setuid_dropped(box: Box, mode: str) -> None:
    st = os.lstat(box.inside(b"suid"))
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def _check_no_overlay_xattrs(box: Box, mode: str) -> None:
    for rel in (b"f", b"d"):
        got = xattrs(box.inside(rel))
        assert not any(k.startswith("trusted.overlay.") for k in got), got
    assert xattrs(box.inside(b"f")).get("user.kept") == b"yes"


def _check_whiteout_through_link(box: Box, mode: str) -> None:
    if mode == "overlay":  # a whiteout device at dest/<outside>/secret
        st = os.lstat(box.inside(box.out_rel + b"/secret"))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _check_opaque_through_link(box: Box, mode: str) -> None:
    if mode == "overlay":
        assert xattrs(box.inside(box.out_rel)).get("trusted.overlay.opaque") == b"y"


def _check_deep(box: Box, mode: str) -> None:
    assert box.inside(b"a").is_file()


_DEEP = b"/".join([b"a"] * 2000)

CASES: list[Case] = [
    Case("dotdot-escape", lambda b: [F(b"../escape")], UnsafeArchive),
    Case("inner-dotdot-escape", lambda b: [F(b"a/../../escape")], UnsafeArchive),
    Case("deep-dotdot-escape", lambda b: [F(b.climb + b.out_rel + b"/pwned")], UnsafeArchive),
    Case("absolute-name", lambda b: [F(b"/abs/path")], check=_is_file(b"abs/path")),
    Case("absolute-dotdot", lambda b: [F(b"/../../escape-abs")], check=_is_file(b"escape-abs")),
    Case("absolute-outside-name", lambda b: [F(b.out + b"/pwned")],
         check=_confined_out(b"pwned")),
    Case("symlink-root-then-file", lambda b: [L(b"evil", b"/"),
                                              F(b"evil/" + b.out_rel + b"/pwned")],
         check=_confined_out(b"pwned")),
    Case("symlink-absolute-outside", lambda b: [L(b"evil", b.out), F(b"evil/secret")],
         check=_confined_out(b"secret")),
    Case("symlink-relative-climb", lambda b: [L(b"evil", b.climb.rstrip(b"/")),
                                              F(b"evil/" + b.out_rel + b"/pwned")],
         check=_confined_out(b"pwned")),
    Case("symlink-chain", lambda b: [L(b"a", b"b"), L(b"b", b"./c"), L(b"c", b.out),
                                     F(b"a/pwned")], check=_confined_out(b"pwned")),
    Case("symlink-loop", lambda b: [L(b"a", b"b"), L(b"b", b"a"), F(b"a/x")], UnsafeArchive),
    Case("symlink-self-loop", lambda b: [L(b"loop", b"loop/x"), F(b"loop/f")], UnsafeArchive),
    Case("symlink-then-hardlink-through", lambda b: [L(b"evil", b.out),
                                                     H(b"h", b"evil/secret")], UnsafeArchive),
    Case("hardlink-etc-passwd", lambda b: [H(b"pw", b"/etc/passwd")], UnsafeArchive),
    Case("hardlink-dotdot", lambda b: [H(b"h", b"../outside/secret")], UnsafeArchive),
    Case("hardlink-absent", lambda b: [H(b"h", b"nothing")], UnsafeArchive),
    Case("hardlink-to-dir", lambda b: [D(b"d"), H(b"h", b"d")], UnsafeArchive),
    Case("hardlink-to-symlink-then-write", lambda b: [
        L(b"s", b.out + b"/target"), H(b"h", b"s"), F(b"h", b"replaced\n")],
        check=_is_file(b"h", b"replaced\n")),
    Case("hardlink-to-symlink-then-write-below", lambda b: [
        L(b"s", b.out), H(b"h", b"s"), F(b"h/secret")], check=_confined_out(b"secret")),
    Case("file-replaces-dir-holding-symlink", lambda b: [
        D(b"d"), L(b"d/link", b.out), F(b"d", b"file\n"), D(b"d"), F(b"d/link/x")],
        check=_check_file_over_dir),
    Case("dir-symlink-replaced-mid-archive", lambda b: [
        D(b"d"), F(b"d/a", b"a\n"), L(b"d", b.out), F(b"d/b")], check=_check_replaced_dir),
    Case("duplicate-file-dir-symlink-swaps", lambda b: [
        F(b"x", b"1\n"), D(b"x"), F(b"x/inner", b"2\n"), L(b"x", b.out), F(b"x/y")],
        check=_check_dup_swaps),
    Case("whiteout-dotdot", lambda b: [F(b".wh..", b"")], UnsafeArchive),
    Case("whiteout-dotdot-in-dir", lambda b: [D(b"a"), F(b"a/.wh...", b"")], UnsafeArchive),
    Case("whiteout-empty-name", lambda b: [F(b".wh.", b"")], UnsafeArchive),
    Case("whiteout-name-escapes", lambda b: [F(b"../.wh.outside", b"")], UnsafeArchive),
    Case("whiteout-through-symlink", lambda b: [L(b"evil", b.out), F(b"evil/.wh.secret", b"")],
         check=_check_whiteout_through_link),
    Case("opaque-in-symlinked-dir", lambda b: [L(b"evil", b.out),
                                               F(b"evil/.wh..wh..opq", b"")],
         check=_check_opaque_through_link),
    Case("char-device-not-allowed", lambda b: [
        TarEntry(name=b"null", kind="char", devmajor=1, devminor=3)], UnsafeArchive,
        allow_devices=False),
    Case("block-device-not-allowed", lambda b: [
        TarEntry(name=b"sda", kind="block", devmajor=8, devminor=0)], UnsafeArchive,
        allow_devices=False),
    Case("name-over-path-max", lambda b: [F(b"/".join([b"n" * 200] * 21))], UnsafeArchive),
    Case("component-over-255", lambda b: [F(b"c" * 256)], UnsafeArchive),
    Case("pax-path-dotdot", lambda b: [F(b"benign", pax=((b"path", b"../x"),))],
         UnsafeArchive),
    Case("pax-linkpath-dotdot", lambda b: [
        TarEntry(name=b"h", kind="hardlink", link=b"ok", pax=((b"linkpath", b"../../x"),))],
        UnsafeArchive),
    Case("gnu-longname-escape", lambda b: [F(b"../" * 40 + b"escape-long", longname=True)],
         UnsafeArchive),
    Case("fifo-where-dir-expected", lambda b: [TarEntry(name=b"p", kind="fifo"), F(b"p/x")],
         LayerFormatError),
    Case("setuid-without-same-owner", lambda b: [F(b"suid", mode=0o6755, uid=1234, gid=1234)],
         check=_check_setuid_dropped, same_owner=False),
    Case("overlay-xattr-smuggled", lambda b: [
        F(b"f", xattrs=((b"trusted.overlay.opaque", b"y"), (b"user.kept", b"yes"),
                        (b"trusted.overlay.redirect", b"/etc"))),
        D(b"d", xattrs=((b"trusted.overlay.opaque", b"y"),))],
        check=_check_no_overlay_xattrs),
    Case("entry-named-dot", lambda b: [F(b".")], UnsafeArchive),
    Case("entry-named-empty", lambda b: [F(b"")], UnsafeArchive),
    Case("nul-in-pax-path", lambda b: [F(b"a", pax=((b"path", b"a\x00/../../x"),))],
         LayerFormatError),
    Case("unknown-type", lambda b: [TarEntry(name=b"v", typeflag=b"V")], UnsafeArchive),
    Case("gnu-sparse", lambda b: [TarEntry(name=b"s", typeflag=b"S")], LayerFormatError),
    Case("deep-tree-replaced", lambda b: [F(_DEEP, b"deep\n"), F(b"a", b"flat\n")],
         check=_check_deep),
]
