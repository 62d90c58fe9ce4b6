"""What the layers below hold at a path, for an extraction that sees only its own layer.

An overlay layer is applied into an empty directory of its own. When one of its
entries names a parent directory the tar does not carry (``usr/lib/x`` with no
``usr/`` header, a whiteout ``etc/.wh.a`` with no ``etc/``), the extractor has to
make that directory in the layer, and what it makes is what the container will
see there: overlayfs shows the upper directory's owner, mode and times. Made as a
plain 0755 root directory it would hide ``/etc``'s real owner and mode; made over a
lower symlink (``lib -> usr/lib``) it would replace the symlink by a directory.
A single-tree unpacker (umoci, the vfs driver) has neither problem: the parent is
there, and a symlink on the way is followed.

So the extractor asks :class:`LowerView` first. It reads a read-only view of the
merged layers below (the overlay driver mounts the parent layer there, so
overlayfs itself decides whiteouts and opaque directories), one component at a
time from the view's root with ``O_NOFOLLOW``, never following a symlink of the
view: a symlink's target is handed back to the extractor, which resolves it inside
the layer root like any other. Anything else on the way (a file, nothing, a
symlink in the middle) means there is nothing below at that path.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import attrs

__all__ = ["LowerEntry", "LowerView", "LowerViewSource"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_XATTRS = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENODATA)
_OVERLAY_XATTRS = b"trusted.overlay."

#: Where the layers below can be seen: a directory, or a callable giving one when first
#: needed (``None``: there is nothing below). The overlay driver mounts lazily.
LowerViewSource = Path | Callable[[], Path | None]


@attrs.frozen
class LowerEntry:
    """What the layers below have at one path: a directory's metadata or a symlink's target."""

    st: os.stat_result
    link: bytes | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class LowerView:
    """Read-only lookups in the merged tree below the layer being applied."""

    def __init__(self, source: LowerViewSource) -> None:
        self._source = source
        self._root: int | None = None
        self._opened = False

    def close(self) -> None:
        if self._root is not None:
            os.close(self._root)
            self._root = None

    def _root_fd(self) -> int | None:
        if not self._opened:
            self._opened = True
            where = self._source() if callable(self._source) else self._source
            if where is not None:
                self._root = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root

    def lookup(self, path: bytes) -> LowerEntry | None:
        """The directory or symlink at ``path`` (relative, resolved, bytes) below, if any."""
        root = self._root_fd()
        if root is None:
            return None
        parent, _, base = path.rpartition(b"/")
        fd = root
        try:
            for part in parent.split(b"/") if parent else ():
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    return None  # missing, or not a directory here: nothing below
                if fd != root:
                    os.close(fd)
                fd = nfd
            try:
                st = os.stat(base, dir_fd=fd, follow_symlinks=False)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return LowerEntry(st, link=os.readlink(base, dir_fd=fd))
            if not stat.S_ISDIR(st.st_mode):
                return LowerEntry(st)
            return LowerEntry(st, xattrs=_xattrs(fd, base))
        finally:
            if fd != root:
                os.close(fd)


def _xattrs(pfd: int, name: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """A directory's xattrs, without overlayfs's own (they describe the lower layer)."""
    where = b"/proc/self/fd/%d/%s" % (pfd, name)
    try:
        keys = os.listxattr(where, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        raise
    out = []
    for key in sorted(keys):
        bkey = os.fsencode(key)
        if bkey.startswith(_OVERLAY_XATTRS):
            continue
        try:
            out.append((bkey, os.getxattr(where, key, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return tuple(out)
