"""Writing a layer's changes as a tar blob, reproducibly.

image-spec v1.1 layer.md "Creating" and "Representing Changes". The walk is
sorted (by name bytes, depth first: a directory, its opaque marker, its whiteouts,
then its other children), headers are PAX with numeric owners and no user or group
names, whole-second mtimes, xattrs as ``SCHILY.xattr.*`` (never overlayfs's own
``trusted.overlay.*``), and a file with several names in the layer is written once
and then as hard links. The same tree gives the same bytes.

``overlay`` mode: the directory holds only the layer's changes, as overlayfs left
them (whiteouts are 0/0 character devices, opaque directories carry
``trusted.overlay.opaque=y``). ``remove`` mode: the directory is a full tree and
the changes are found by comparing it with ``parent_dir`` the way containers/storage's
``ChangesDirs`` does: type, mode, owner, device number, xattrs, link target, and
for non-directories size and mtime; and, unlike it, the content of regular files
whose metadata all match (clamped mtimes would hide changes). A directory with a
change below it is written too, so its metadata survives; a deleted directory is
one whiteout.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
from pathlib import Path
from typing import IO, BinaryIO, cast

from criolib.storage._archive_codec import ApplyResult, Compression, Encoder, WhiteoutMode
from criolib.storage._archive_tree import DIR_FLAGS
from criolib.storage._errors import LayerIOError

__all__ = ["export_layer"]

log = logging.getLogger("criolib.storage")

_OPAQUE = b"trusted.overlay.opaque"
_OVERLAY_XATTRS = b"trusted.overlay."
_NO_XATTRS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENODATA)
_TYPES = {stat.S_IFREG: tarfile.REGTYPE, stat.S_IFDIR: tarfile.DIRTYPE,
          stat.S_IFLNK: tarfile.SYMTYPE, stat.S_IFCHR: tarfile.CHRTYPE,
          stat.S_IFBLK: tarfile.BLKTYPE, stat.S_IFIFO: tarfile.FIFOTYPE}
_Meta = tuple[os.stat_result, dict[bytes, bytes], bytes]


def export_layer(layer_dir: Path, sink: BinaryIO, *, whiteouts: WhiteoutMode,
                 parent_dir: Path | None = None,
                 compression: Compression = "none") -> ApplyResult:
    """Write the changes in ``layer_dir`` to ``sink`` as a layer blob; return its digests.

    image-spec v1.1 layer.md. ``whiteouts="overlay"``: ``layer_dir`` holds only
    the changes (overlayfs's upper directory); ``"remove"``: the changes are what
    differs from ``parent_dir`` (``None``: an empty parent, so everything is new).
    ``compression`` is ``"gzip"``, ``"zstd"`` or ``"none"``. Raises
    :class:`LayerIOError` when the tree cannot be read.
    """
    if whiteouts not in ("overlay", "remove"):
        raise ValueError(f"whiteouts must be 'overlay' or 'remove', not {whiteouts!r}")
    encoder = Encoder(cast(IO[bytes], sink), compression)
    fds: list[int] = []
    try:
        fds.append(os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        old = None
        if whiteouts == "remove" and parent_dir is not None:
            old = os.open(parent_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(old)
        writer = _Writer(encoder, str(layer_dir))
        if whiteouts == "overlay":
            writer.overlay(fds[0])
        else:
            writer.changes(fds[0], old)
        writer.close()
    except OSError as exc:
        if isinstance(exc, LayerIOError):
            raise
        raise LayerIOError(f"exporting {layer_dir}: {exc.strerror or exc}"
                           f"{f' ({exc.filename})' if exc.filename else ''}") from exc
    finally:
        for fd in fds:
            os.close(fd)
    encoder.close()
    return encoder.result(writer.entries)


def _xattrs(pfd: int, name: bytes) -> dict[bytes, bytes]:
    """The entry's xattrs, read without following it (via the parent's /proc fd link)."""
    where = b"/proc/self/fd/%d/%s" % (pfd, name)
    try:
        keys = os.listxattr(where, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        raise
    out: dict[bytes, bytes] = {}
    for key in sorted(keys):
        bkey = os.fsencode(key)
        try:
            out[bkey] = os.getxattr(where, key, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return out


def _sorted_children(fd: int) -> list[bytes]:
    return sorted(os.fsencode(n) for n in os.listdir(fd))


def _join(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


class _Writer:
    """Walks a tree by descriptors (never following a symlink) and writes tar entries."""

    def __init__(self, encoder: Encoder, label: str) -> None:
        self.label = label
        self.tar = tarfile.open(fileobj=cast(IO[bytes], encoder), mode="w|",  # noqa: SIM115
                                format=tarfile.PAX_FORMAT, encoding="utf-8",
                                errors="surrogateescape")
        self.entries = 0
        self._links: dict[tuple[int, int], str] = {}
        # Directory entries written only if something below them is (remove mode).
        self._lazy: list[tuple[str, os.stat_result, dict[bytes, bytes]] | None] = []

    def close(self) -> None:
        self.tar.close()

    # -- entries -------------------------------------------------------------------------

    def _info(self, name: str, st: os.stat_result, xattrs: dict[bytes, bytes]) -> (
        tarfile.TarInfo
    ):
        info = tarfile.TarInfo(name)
        info.type = _TYPES[stat.S_IFMT(st.st_mode)]
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime_ns // 1_000_000_000
        if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        kept = {k: v for k, v in xattrs.items() if not k.startswith(_OVERLAY_XATTRS)}
        if kept:
            info.pax_headers = {
                "SCHILY.xattr." + os.fsdecode(k): v.decode("utf-8", "surrogateescape")
                for k, v in kept.items()
            }
        return info

    def _flush_lazy(self) -> None:
        for i, item in enumerate(self._lazy):
            if item is not None:
                name, st, xattrs = item
                self._add(self._info(name, st, xattrs))
                self._lazy[i] = None

    def _add(self, info: tarfile.TarInfo, data: IO[bytes] | None = None) -> None:
        self.tar.addfile(info, data)
        self.entries += 1

    def _marker(self, name: str, mtime_ns: int) -> None:
        """A whiteout or opaque marker: an empty regular file (layer.md "Whiteouts")."""
        self._flush_lazy()
        info = tarfile.TarInfo(name)
        info.mode = 0o600
        info.uname = info.gname = ""
        info.mtime = mtime_ns // 1_000_000_000
        self._add(info)

    def _entry(self, pfd: int, name: bytes, rel: bytes, meta: _Meta) -> None:
        """Write one non-whiteout entry (a directory's header included)."""
        st, xattrs, link = meta
        self._flush_lazy()
        fmt = stat.S_IFMT(st.st_mode)
        if fmt not in _TYPES:
            log.debug("export of %s: skipping %r (a socket cannot go in a tar)", self.label, rel)
            return
        info = self._info(os.fsdecode(rel), st, xattrs)
        if fmt == stat.S_IFLNK:
            info.linkname = os.fsdecode(link)
        elif fmt != stat.S_IFDIR and st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self._add(info)
                return
            self._links[(st.st_dev, st.st_ino)] = info.name
        if fmt != stat.S_IFREG:
            self._add(info)
            return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        with os.fdopen(fd, "rb", buffering=1 << 20) as f:
            now = os.fstat(f.fileno())
            if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                raise LayerIOError(f"exporting {self.label}: {rel!r} changed while read")
            info.size = st.st_size
            self._add(info, cast(IO[bytes], f))

    def _meta(self, pfd: int, name: bytes) -> _Meta:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        link = os.readlink(name, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else b""
        return st, _xattrs(pfd, name), link

    # -- overlay mode ----------------------------------------------------------------------

    def overlay(self, root: int) -> None:
        """Write an overlayfs upper directory: only changes, whiteouts as 0/0 devices."""
        if _xattrs_root(root).get(_OPAQUE) == b"y":
            self._marker(".wh..wh..opq", os.fstat(root).st_mtime_ns)
        stack: list[tuple[int, bytes, list[bytes]]] = [(root, b"", self._sorted_for_overlay(root))]
        try:
            while stack:
                fd, pre, todo = stack[-1]
                if not todo:
                    stack.pop()
                    if fd != root:
                        os.close(fd)
                    continue
                name = todo.pop()
                meta = self._meta(fd, name)
                st, xattrs, _ = meta
                rel = _join(pre, name)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    self._marker(os.fsdecode(_join(pre, b".wh." + name)), st.st_mtime_ns)
                    continue
                self._entry(fd, name, rel, meta)
                if stat.S_ISDIR(st.st_mode):
                    if xattrs.get(_OPAQUE) == b"y":
                        self._marker(os.fsdecode(_join(rel, b".wh..wh..opq")), st.st_mtime_ns)
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                    stack.append((sub, rel, self._sorted_for_overlay(sub)))
        finally:
            for fd, _, _ in stack:
                if fd != root:
                    os.close(fd)

    def _sorted_for_overlay(self, fd: int) -> list[bytes]:
        """Children in write order, reversed for popping: whiteouts first, then the rest."""
        names = _sorted_children(fd)
        whiteouts: list[bytes] = []
        others: list[bytes] = []
        for n in names:
            st = os.stat(n, dir_fd=fd, follow_symlinks=False)
            (whiteouts if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 else others).append(n)
        order = whiteouts + others
        order.reverse()
        return order

    # -- remove mode -----------------------------------------------------------------------

    def changes(self, new_root: int, old_root: int | None) -> None:
        """Write what differs between two full trees (containers/storage ChangesDirs)."""
        stack: list[tuple[int, int | None, bytes, list[bytes]] | None] = []
        try:
            self._open_dir(stack, new_root, old_root, b"")
            while stack:
                top = stack[-1]
                if top is None:  # the end of a directory: drop its lazy header if unused
                    stack.pop()
                    self._lazy.pop()
                    continue
                nfd, ofd, pre, todo = top
                if not todo:
                    stack.pop()
                    _close_pair(nfd, ofd, new_root, old_root)
                    continue
                self._change(stack, nfd, ofd, pre, todo.pop())
        finally:
            for item in stack:
                if item is not None:
                    _close_pair(item[0], item[1], new_root, old_root)

    def _change(self, stack: list[tuple[int, int | None, bytes, list[bytes]] | None],
                nfd: int, ofd: int | None, pre: bytes, name: bytes) -> None:
        rel = _join(pre, name)
        new = self._meta(nfd, name)
        old = self._old_meta(ofd, name)
        is_dir = stat.S_ISDIR(new[0].st_mode)
        if old is None or _differs(new, old) or (
                stat.S_ISREG(new[0].st_mode) and ofd is not None
                and not _same_content(nfd, ofd, name, new[0].st_size)):
            self._entry(nfd, name, rel, new)
            if is_dir:
                self._lazy.append(None)
        elif is_dir:
            self._lazy.append((os.fsdecode(rel), new[0], new[1]))
        if not is_dir:
            return
        stack.append(None)
        sub_new = os.open(name, DIR_FLAGS, dir_fd=nfd)
        sub_old = None
        try:
            if ofd is not None and old is not None and stat.S_ISDIR(old[0].st_mode):
                sub_old = os.open(name, DIR_FLAGS, dir_fd=ofd)
            self._open_dir(stack, sub_new, sub_old, rel)
        except BaseException:
            _close_pair(sub_new, sub_old, -1, -1)
            raise

    def _old_meta(self, ofd: int | None, name: bytes) -> _Meta | None:
        if ofd is None:
            return None
        try:
            return self._meta(ofd, name)
        except FileNotFoundError:
            return None

    def _open_dir(self, stack: list[tuple[int, int | None, bytes, list[bytes]] | None],
                  nfd: int, ofd: int | None, prefix: bytes) -> None:
        """Push a directory pair; write whiteouts for what only the old one has."""
        names = _sorted_children(nfd)
        if ofd is not None:
            st = os.fstat(nfd)
            present = set(names)
            for gone in _sorted_children(ofd):
                if gone not in present:
                    self._marker(os.fsdecode(_join(prefix, b".wh." + gone)), st.st_mtime_ns)
        names.reverse()
        stack.append((nfd, ofd, prefix, names))


def _close_pair(nfd: int, ofd: int | None, new_root: int, old_root: int | None) -> None:
    if nfd != new_root:
        os.close(nfd)
    if ofd is not None and ofd != old_root:
        os.close(ofd)


def _xattrs_root(fd: int) -> dict[bytes, bytes]:
    try:
        value = os.getxattr(fd, _OPAQUE)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}
        raise
    return {_OPAQUE: value}


def _same_content(nfd: int, ofd: int, name: bytes, size: int) -> bool:
    """Whether two regular files of equal size hold the same bytes (read in 1 MiB chunks).

    containers/storage stops at size and mtime; layers built with clamped mtimes
    (SOURCE_DATE_EPOCH, the test bed's 2000-01-01) change files without changing
    either, so the content decides.
    """
    if not size:
        return True
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    a = os.open(name, flags, dir_fd=nfd)
    try:
        b = os.open(name, flags, dir_fd=ofd)
        try:
            while True:
                x, y = os.read(a, 1 << 20), os.read(b, 1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


def _differs(new: _Meta, old: _Meta) -> bool:
    """containers/storage's statDifferent, plus all xattrs and the symlink target."""
    n, o = new[0], old[0]
    if (n.st_mode, n.st_uid, n.st_gid, n.st_rdev) != (o.st_mode, o.st_uid, o.st_gid, o.st_rdev):
        return True
    if not stat.S_ISDIR(n.st_mode) and (n.st_size, n.st_mtime_ns) != (o.st_size, o.st_mtime_ns):
        return True
    strip = _OVERLAY_XATTRS
    nx = {k: v for k, v in new[1].items() if not k.startswith(strip)}
    ox = {k: v for k, v in old[1].items() if not k.startswith(strip)}
    return nx != ox or new[2] != old[2]
