"""The layer root as the extractor sees it: every lookup confined to it, by file descriptor.

The safety half of image-spec v1.1 layer.md "Applying Changesets" for hostile
input. Nothing resolves through a path string a symlink could redirect: each
directory is opened one component at a time with ``O_NOFOLLOW | O_DIRECTORY``
relative to its parent's descriptor; a symlink met on the way is read and its
target resolved inside the root as if the root were ``/`` (absolute targets start
again at the root, ``..`` never climbs above it: cyphar/filepath-securejoin's rule,
done with descriptors). The final component is never followed: callers create it
with ``O_EXCL | O_NOFOLLOW``, ``mkdirat``, ``symlinkat``, ``mknodat`` after
removing what was there.

Only the extractor writes the tree while it works (it is a staging directory), so
a name it has just created is still what it created a moment later.

Directories the layer changes without a header of their own keep their times, as
umoci keeps them: the first time the extractor creates or removes something in a
directory that was there before, it notes the directory's times (``restore``) and
the applier puts them back at the end. In overlay mode a missing parent is looked
up in the layers below (:class:`~criolib.storage._archive_lower.LowerView`): a
directory there is copied up with its owner, mode, xattrs and times, a symlink
there is followed (see ``_archive_lower``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from criolib.storage._archive_lower import LowerEntry, LowerView
from criolib.storage._archive_tar import display
from criolib.storage._errors import LayerFormatError, UnsafeArchive

__all__ = ["DIR_FLAGS", "OPAQUE_XATTR", "Tree"]

#: The overlayfs xattr that makes a directory hide the lower layers' (kernel overlayfs.rst).
OPAQUE_XATTR = b"trusted.overlay.opaque"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Symlinks followed while resolving one name; Linux's own limit is 40, securejoin's 255.
_MAX_LINKS = 255
# Directory descriptors kept open between entries (each file's parent is looked up
# once); past this many they are dropped and the lookups start again.
_MAX_FDS = 256
# Names looked up (many can lead to one directory: "a", "b/../a", "link/.").
_MAX_LOOKUPS = 4096


class _Walk:
    """The state of one lookup: where it is, and whether it must close that descriptor."""

    __slots__ = ("fd", "owned", "resolved")

    def __init__(self, root: int) -> None:
        self.fd = root
        self.owned = False
        self.resolved: list[bytes] = []

    def move(self, fd: int, *, owned: bool) -> None:
        if self.owned:
            os.close(self.fd)
        self.fd, self.owned = fd, owned

    def drop(self) -> None:
        if self.owned:
            os.close(self.fd)
            self.owned = False


class Tree:
    """Descriptor-based access to ``dest`` for one extraction.

    ``mine`` collects the paths (relative, resolved, bytes) this extraction created,
    with every directory above them: the whiteout rules need to tell this layer's
    entries from the lower layers' (layer.md "Whiteouts"). ``restore`` maps the
    directories whose times (and, copied up, mode) go back at the end to
    ``(mode or -1, atime_ns, mtime_ns, inode)``; ``opaque`` holds the directories
    this layer made opaque (nothing below shows through them).
    """

    def __init__(self, dest: Path, label: str, *, overlay: bool,
                 lower: LowerView | None = None, same_owner: bool = True) -> None:
        self.label = label
        self.overlay = overlay
        self.lower = lower if overlay else None
        self.same_owner = same_owner
        self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: dict[bytes, int] = {}
        self._lookup: dict[bytes, tuple[int, bytes]] = {}
        self._loose: list[int] = []
        self.mine: set[bytes] = set()
        self.restore: dict[bytes, tuple[int, int, int, int]] = {}
        self.opaque: set[bytes] = set()

    def touch(self, path: bytes, fd: int) -> None:
        """Note the times of directory ``path`` (at ``fd``) before this layer first changes it.

        Only for directories the layer did not make: its own get their times from
        their headers, or are new.
        """
        if path not in self.mine and path not in self.restore:
            st = os.fstat(fd)
            self.restore[path] = (-1, st.st_atime_ns, st.st_mtime_ns, st.st_ino)

    def close(self) -> None:
        if self.lower is not None:
            self.lower.close()
        self.invalidate()
        self.release()
        os.close(self.root)

    def release(self) -> None:
        """Close the descriptors one entry needed that the cache does not keep."""
        loose, self._loose = self._loose, []
        for fd in loose:
            os.close(fd)

    def invalidate(self) -> None:
        """Forget every cached lookup: a directory or symlink in the tree went away.

        The descriptors close at the next :meth:`release`, so a caller holding one
        for the current entry can still use it.
        """
        self._loose.extend(self._fds.values())
        self._fds.clear()
        self._lookup.clear()

    def remember(self, path: bytes, fd: int) -> None:
        """Keep ``fd`` (the directory at ``path``, just made) for later lookups."""
        if len(self._fds) < _MAX_FDS and path not in self._fds:
            self._fds[path] = fd
            self._lookup[path] = (fd, path)
        else:
            self._loose.append(fd)

    def mark(self, parent: bytes, path: bytes) -> None:
        """Record ``path`` (in directory ``parent``) as this layer's, with its ancestors."""
        mine = self.mine
        mine.add(path)
        while parent and parent not in mine:
            mine.add(parent)
            parent = parent.rpartition(b"/")[0]

    def walk(self, path: bytes, *, create: bool, entry: bytes) -> tuple[int, bytes] | None:
        """The directory ``path`` names, resolved inside the root: ``(fd, real path)``.

        Missing directories are made (0755, like containers/storage's implicit
        parents) when ``create``; otherwise a missing or non-directory component
        gives ``None``. The descriptor belongs to the tree: don't close it.
        """
        if not path:
            return self.root, b""
        hit = self._lookup.get(path)
        if hit is not None:
            return hit
        if len(self._fds) >= _MAX_FDS or len(self._lookup) >= _MAX_LOOKUPS:
            self.invalidate()
        # One descriptor at a time: a 2,000-level name must not hold 2,000 of them.
        # ``..`` is looked up in the cache or opened from the directory itself (a
        # directory's ``..`` is its real parent, never a symlink).
        walk = _Walk(self.root)
        try:
            found = self._resolve(walk, path, create=create, entry=entry)
        except BaseException:
            walk.drop()
            raise
        if not found:
            walk.drop()
            return None
        real = b"/".join(walk.resolved)
        if walk.owned:
            self._loose.append(walk.fd)
        elif not real or real in self._fds:
            self._lookup[path] = (walk.fd, real)
        return walk.fd, real

    def _resolve(self, walk: _Walk, path: bytes, *, create: bool, entry: bytes) -> bool:
        pending = path.split(b"/")
        pending.reverse()
        links = 0
        while pending:
            part = pending.pop()
            if not part or part == b".":
                continue
            if part == b"..":
                if walk.resolved:  # at the root ".." stays there
                    walk.resolved.pop()
                    key = b"/".join(walk.resolved)
                    cached = self._fds.get(key) if key else self.root
                    if cached is not None:
                        walk.move(cached, owned=False)
                    else:
                        walk.move(os.open(b"..", DIR_FLAGS, dir_fd=walk.fd), owned=True)
                continue
            key = b"/".join((*walk.resolved, part))
            step = self._step(walk.fd, part, key, entry, create)
            if step is None:
                return False
            if isinstance(step, tuple):
                walk.resolved.append(part)
                walk.move(step[0], owned=step[1])
                continue
            links += 1
            if links > _MAX_LINKS:
                raise UnsafeArchive(
                    f"layer {self.label}: entry {display(entry)!r}: more than {_MAX_LINKS} "
                    "symlinks on its way (a loop?)", entry=display(entry)
                )
            if step.startswith(b"/"):
                walk.resolved = []
                walk.move(self.root, owned=False)
            more = step.split(b"/")
            more.reverse()
            pending.extend(more)
        return True

    def _step(self, fd: int, part: bytes, key: bytes, entry: bytes,
              create: bool) -> tuple[int, bool] | bytes | None:
        """One component: ``(descriptor, owned)``, a symlink's target, or ``None``."""
        nfd = self._fds.get(key)
        if nfd is not None:
            return nfd, False
        try:
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
            below = self._below(key, entry)
            if isinstance(below, bytes):
                return below  # a symlink in the layers below: follow it, as one tree would
            nfd = self._mkdir(fd, part, key, below)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            target = self._link_target(fd, part, key, entry, create)
            if not isinstance(target, int):
                return target
            nfd = target
        if len(self._fds) < _MAX_FDS:
            self._fds[key] = nfd
            return nfd, False
        return nfd, True

    def _below(self, key: bytes, entry: bytes) -> bytes | LowerEntry | None:
        """For a missing directory ``key``: a symlink target below, a directory below, or None."""
        if self.lower is None or any(key == o or key.startswith(o + b"/") or not o
                                     for o in self.opaque):
            return None
        found = self.lower.lookup(key)
        if found is None:
            return None
        if found.link is not None:
            return found.link
        if not found.is_dir:
            raise LayerFormatError(
                f"layer {self.label}: entry {display(entry)!r}: {display(key)!r} is not a "
                "directory in the layers below")
        return found

    def _mkdir(self, fd: int, part: bytes, key: bytes, below: LowerEntry | None = None) -> int:
        """Make a directory no header asked for: as it is below (copied up), else 0755."""
        parent = key.rpartition(b"/")[0]
        self.touch(parent, fd)
        os.mkdir(part, 0o700 if below else 0o755, dir_fd=fd)
        nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
        if below is None:
            os.fchmod(nfd, 0o755)  # whatever the umask
        else:
            st = below.st
            if self.same_owner:
                os.fchown(nfd, st.st_uid, st.st_gid)
            for name, value in below.xattrs:
                try:
                    os.setxattr(nfd, name, value)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                        raise
            # Mode and times at the end, with the directories that have headers.
            self.restore[key] = (stat.S_IMODE(st.st_mode), st.st_atime_ns, st.st_mtime_ns,
                                 os.fstat(nfd).st_ino)
        self.mark(parent, key)
        return nfd

    def _link_target(self, fd: int, part: bytes, key: bytes, entry: bytes,
                     create: bool) -> bytes | int | None:
        """The target of the symlink ``part``; a non-directory is an error when creating.

        In overlay mode a whiteout (a 0/0 character device) of this layer's own
        making is a directory deleted: a name below it makes the directory anew,
        opaque so the lower one's children stay hidden. Returns its descriptor.
        """
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return os.readlink(part, dir_fd=fd)
        if not create:
            return None
        if self.overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            os.unlink(part, dir_fd=fd)
            nfd = self._mkdir(fd, part, key)
            os.setxattr(nfd, OPAQUE_XATTR, b"y")
            self.opaque.add(key)
            return nfd
        raise LayerFormatError(
            f"layer {self.label}: entry {display(entry)!r}: {display(key)!r} is not a "
            "directory (an earlier entry made it something else)"
        )

    def lstat(self, pfd: int, base: bytes) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, pfd: int, base: bytes) -> int | None:
        """Delete ``base`` in ``pfd`` (a directory with all it holds); its old mode or ``None``."""
        st = self.lstat(pfd, base)
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            self.invalidate()
            self._remove_tree(pfd, base)
        else:
            if stat.S_ISLNK(st.st_mode):
                self.invalidate()
            os.unlink(base, dir_fd=pfd)
        return st.st_mode

    def _remove_tree(self, pfd: int, base: bytes) -> None:
        """``rm -r`` by descriptors, depth first, one descriptor at a time.

        Iterative, so a hostile 2,000-level tree neither hits the recursion limit
        nor holds 2,000 descriptors; it climbs back with ``..``, which is never a
        symlink.
        """
        fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
        stack: list[tuple[bytes | str, list[str]]] = [(base, os.listdir(fd))]
        try:
            while stack:
                name, todo = stack[-1]
                if todo:
                    child = todo.pop()
                    try:
                        os.unlink(child, dir_fd=fd)
                    except IsADirectoryError:
                        nfd = os.open(child, DIR_FLAGS, dir_fd=fd)
                        os.close(fd)
                        fd = nfd
                        stack.append((child, os.listdir(fd)))
                    except FileNotFoundError:
                        pass
                    continue
                stack.pop()
                if stack:
                    up = os.open(b"..", DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = up
                    os.rmdir(name, dir_fd=fd)
                else:
                    os.close(fd)
                    fd = -1
                    os.rmdir(base, dir_fd=pfd)
        finally:
            if fd >= 0:
                os.close(fd)

    def children(self, fd: int) -> list[bytes]:
        return [os.fsencode(n) for n in os.listdir(fd)]

    def open_dir(self, path: bytes) -> int | None:
        """A new descriptor for the directory at real path ``path``, or ``None`` if gone."""
        parent, _, base = path.rpartition(b"/")
        found = self.walk(parent, create=False, entry=path)
        if found is None:
            return None
        try:
            return os.open(base, DIR_FLAGS, dir_fd=found[0]) if base else os.dup(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise
