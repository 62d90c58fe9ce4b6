"""Applying a layer blob to a directory: one pass, hashed, confined, whiteouts per driver.

image-spec v1.1 layer.md "Applying Changesets" and "Whiteouts". The blob is read
once: its bytes are hashed (``digest``), decompressed, hashed again (``diff_id``,
to the very end of the stream like ``sha256sum``), parsed as tar and each entry
created by hand (never ``tarfile.extract``) through :class:`Tree`, which keeps
every lookup inside the root.

The breakout policy follows containers/storage's pkg/archive: a name is cleaned
(Go's ``filepath.Clean``: a leading ``/`` dropped, ``/..`` at the root stays at the
root) and a name that still climbs above the root (``../x``, ``a/../../x``) is
refused with :class:`UnsafeArchive`, as is a hard link whose target does. Symlink
*targets* are stored as written: the extractor resolves every parent inside the
root itself, so a symlink can never redirect a write, and inside a container the
kernel resolves the target against the container's own root.

Other decisions, each where layer.md leaves room:

- Whiteouts apply to the lower layers only: a whiteout of a name this layer made
  is ignored, and an opaque marker, wherever it sits in the tar, keeps what this
  layer already put in the directory (and the directories above those entries).
- ``trusted.overlay.*`` xattrs on entries are dropped with a warning in both
  modes: overlayfs's state (opaque, redirect, metacopy) comes from whiteout
  entries only. A 0/0 character device entry is a device like any other (and so
  refused when devices are not allowed); in overlay mode it acts as a whiteout.
- A directory over a whiteout of the same layer (overlay mode) is made opaque.
- Hard link headers' metadata is not applied: the inode is its target's.
- A hard link must name a non-directory an earlier entry of the same layer made,
  in both modes: a link to a lower layer's file is refused (:class:`UnsafeArchive`)
  because overlay cannot link across layer directories, and one rule for both
  drivers keeps a layer valid on either.
- ``same_owner=False`` also drops setuid/setgid from non-directories: the files
  belong to the caller, whose privileges a tar must not hand out.
- The root's own entry (``./``) is skipped, as containers/storage does.
- Directory modes and mtimes are set last, deepest first. A directory that was
  there before (a lower layer's, in ``remove`` mode) and that the layer changes
  without a header of its own keeps its times, as umoci keeps them.
- In ``overlay`` mode, with ``lower`` (a view of the layers below), a parent
  directory the tar does not carry is copied up from below (owner, mode, xattrs,
  times) instead of made 0755, and a symlink below on the way is followed, so
  the merged tree is the one a single-tree unpacker makes (``_archive_lower``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

from criolib.storage._archive_codec import (
    ApplyResult,
    Decoder,
    WhiteoutMode,
    check_digest_arg,
)
from criolib.storage._archive_lower import LowerView, LowerViewSource
from criolib.storage._archive_tar import Member, TarReader, clean_name, display
from criolib.storage._archive_tree import DIR_FLAGS, OPAQUE_XATTR, Tree
from criolib.storage._errors import (
    DigestMismatch,
    LayerFormatError,
    LayerIOError,
    StorageError,
    UnsafeArchive,
)

__all__ = ["OPAQUE_XATTR", "apply_layer"]

log = logging.getLogger("criolib.storage")

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
_OVERLAY_XATTRS = b"trusted.overlay."
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_MAX = 4096
_NOT_SUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP)


def _label(source: BinaryIO, digest: str | None, diff_id: str | None) -> str:
    name = getattr(source, "name", None)
    parts = [p for p in (digest or diff_id, name if isinstance(name, str) else None) if p]
    return " ".join(parts) if parts else "<stream>"


def apply_layer(source: BinaryIO, dest: Path, *, whiteouts: WhiteoutMode,
                expected_diff_id: str | None = None, expected_digest: str | None = None,
                allow_devices: bool = True, same_owner: bool = True,
                lower: LowerViewSource | None = None) -> ApplyResult:
    """Apply the layer blob ``source`` (gzip, zstd or plain tar) onto the directory ``dest``.

    image-spec v1.1 layer.md. Streams once; never writes outside ``dest``.
    ``whiteouts`` is ``"overlay"`` (``.wh.NAME`` becomes a 0/0 character device,
    ``.wh..wh..opq`` the ``trusted.overlay.opaque`` xattr) or ``"remove"`` (they
    delete what the lower layers put in ``dest``; the vfs driver's way). With
    ``same_owner`` entries get the tar's uid/gid, else the caller's and files lose
    setuid/setgid. ``lower`` (overlay mode) shows the merged layers below ``dest``:
    a directory, or a callable returning one (or ``None``) when first needed;
    missing parents are then copied up from it (see the module docstring).
    Raises :class:`UnsafeArchive`, :class:`LayerFormatError`,
    :class:`DigestMismatch` (checked at the end: ``dest`` is then complete but
    wrong) and :class:`LayerIOError`; on error ``dest`` may be half-written, so
    apply into a staging directory.
    """
    if whiteouts not in ("overlay", "remove"):
        raise ValueError(f"whiteouts must be 'overlay' or 'remove', not {whiteouts!r}")
    check_digest_arg("diff_id", expected_diff_id)
    check_digest_arg("digest", expected_digest)
    label = _label(source, expected_digest, expected_diff_id)
    try:
        tree = Tree(Path(dest), label, overlay=whiteouts == "overlay",
                    lower=LowerView(lower) if lower is not None else None,
                    same_owner=same_owner)
    except OSError as exc:
        raise LayerIOError(f"layer {label}: cannot open {dest}: {exc.strerror}") from exc
    # One thread: on this project's machines a second one bought nothing (two
    # threads hashing in parallel ran slower than one doing both), so decoding and
    # writing simply alternate.
    try:
        decoder = Decoder(source, label)
        reader = TarReader(decoder.next_chunk, label)
        _Applier(tree, reader, whiteouts, allow_devices=allow_devices,
                 same_owner=same_owner).run()
    finally:
        tree.close()
    decoder.drain()
    for what, expected, actual in (("diff_id", expected_diff_id, decoder.digest),
                                   ("digest", expected_digest, decoder.raw_digest)):
        if expected is not None and expected != actual:
            raise DigestMismatch(f"layer {label}: {what} is {actual}, expected {expected}",
                                 expected=expected, actual=actual)
    return ApplyResult(diff_id=decoder.digest, digest=decoder.raw_digest,
                       compressed_size=decoder.raw_size, uncompressed_size=decoder.size,
                       compression=decoder.compression, entries=reader.entries)


class _Applier:
    """Creates each entry of one layer in a :class:`Tree`."""

    def __init__(self, tree: Tree, reader: TarReader, whiteouts: WhiteoutMode, *,
                 allow_devices: bool, same_owner: bool) -> None:
        self.tree = tree
        self.reader = reader
        self.label = reader.label
        self.overlay = whiteouts == "overlay"
        self.allow_devices = allow_devices
        self.same_owner = same_owner
        # Directory metadata waits until the end, when nothing is created in them any
        # more: path -> (mode, mtime in ns, inode it was set up on).
        self.pending: dict[bytes, tuple[int, int, int]] = {}

    def run(self) -> None:
        tree, reader = self.tree, self.reader
        while (m := reader.next()) is not None:
            try:
                self._entry(m)
            except StorageError:
                raise  # LayerIOError is an OSError too: keep its message
            except OSError as exc:
                raise self._os_error(m, exc) from exc
            except OverflowError as exc:
                raise LayerFormatError(
                    f"layer {self.label}: entry {display(m.name)!r} at offset {m.offset}: "
                    f"a number out of range ({exc})"
                ) from exc
            finally:
                tree.release()
        try:
            self._finish_dirs()
        except OSError as exc:
            raise LayerIOError(
                f"layer {self.label}: setting directory modes and times: {exc.strerror}"
            ) from exc

    def _os_error(self, m: Member, exc: OSError) -> Exception:
        where = f"layer {self.label}: entry {display(m.name)!r} at offset {m.offset}"
        if exc.errno == errno.ENAMETOOLONG:
            return UnsafeArchive(f"{where}: a name component is too long", entry=display(m.name))
        if exc.errno == errno.ELOOP:
            return UnsafeArchive(f"{where}: too many symlinks", entry=display(m.name))
        err = LayerIOError(f"{where}: {exc.strerror or exc}")
        err.errno = exc.errno
        return err

    def _refuse(self, m: Member, why: str) -> UnsafeArchive:
        return UnsafeArchive(
            f"layer {self.label}: entry {display(m.name)!r} at offset {m.offset}: {why}",
            entry=display(m.name),
        )

    # -- dispatch ------------------------------------------------------------------------

    def _entry(self, m: Member) -> None:
        name = clean_name(m.name)
        if name is None:
            raise self._refuse(m, "its name climbs above the layer root")
        if len(name) >= _PATH_MAX:
            raise self._refuse(m, f"its name is {len(name)} bytes long (PATH_MAX is 4096)")
        if not name:
            if m.type == b"5":
                return  # the root's own entry ("./"): containers/storage skips it too
            raise self._refuse(m, "it would replace the layer root")
        parent, _, base = name.rpartition(b"/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(m, parent, base)
            return
        typ = m.type
        if typ == b"0":
            self._file(m, parent, base)
        elif typ == b"5":
            self._dir(m, parent, base)
        elif typ == b"2":
            self._symlink(m, parent, base)
        elif typ == b"1":
            self._hardlink(m, parent, base)
        elif typ in (b"3", b"4", b"6"):
            self._node(m, parent, base)
        else:
            raise self._refuse(m, f"unsupported entry type {typ!r}")

    def _slot(self, m: Member, parent: bytes, base: bytes) -> tuple[int, bytes, bytes]:
        """The parent's descriptor and real path, and the entry's real path."""
        found = self.tree.walk(parent, create=True, entry=m.name)
        assert found is not None  # create=True makes what is missing
        pfd, rparent = found
        self.tree.touch(rparent, pfd)
        return pfd, rparent, (rparent + b"/" + base if rparent else base)

    def _clear(self, pfd: int, base: bytes) -> None:
        """Remove what is at ``base`` so an entry can take its place (layer.md)."""
        self.tree.remove(pfd, base)

    # -- entries -------------------------------------------------------------------------

    def _file(self, m: Member, parent: bytes, base: bytes) -> None:
        pfd, rparent, path = self._slot(m, parent, base)
        try:
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base)
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            if m.size:
                self.reader.write_data(fd)
            if self.same_owner:
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode)  # after chown, which clears setuid/setgid
            else:
                os.fchmod(fd, m.mode & ~0o6000)  # not ours to hand out
            if m.xattrs:
                self._xattrs(m, fd, regular=True)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        finally:
            os.close(fd)
        self.tree.mark(rparent, path)

    def _dir(self, m: Member, parent: bytes, base: bytes) -> None:
        pfd, rparent, path = self._slot(m, parent, base)
        opaque = False
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = self.tree.lstat(pfd, base)
            if st is None or not stat.S_ISDIR(st.st_mode):
                # A directory over a whiteout of the same layer is a directory made
                # anew: overlay must not show the lower one's children through it.
                opaque = (self.overlay and st is not None and stat.S_ISCHR(st.st_mode)
                          and st.st_rdev == 0)
                self._clear(pfd, base)
                os.mkdir(base, 0o700, dir_fd=pfd)
                if opaque:
                    self.tree.opaque.add(path)
        fd = os.open(base, DIR_FLAGS, dir_fd=pfd)
        self.tree.remember(path, fd)
        if self.same_owner:
            os.fchown(fd, m.uid, m.gid)
        if m.xattrs:
            self._xattrs(m, fd, regular=True)
        if opaque:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        self.pending[path] = (m.mode, m.mtime_ns, os.fstat(fd).st_ino)
        self.tree.mark(rparent, path)

    def _symlink(self, m: Member, parent: bytes, base: bytes) -> None:
        if not m.linkname:
            raise self._refuse(m, "a symlink without a target")
        pfd, rparent, path = self._slot(m, parent, base)
        try:
            os.symlink(m.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base)
            os.symlink(m.linkname, base, dir_fd=pfd)
        self._path_meta(m, pfd, base, symlink=True)
        self.tree.mark(rparent, path)

    def _hardlink(self, m: Member, parent: bytes, base: bytes) -> None:
        target = clean_name(m.linkname)
        if target is None:
            raise self._refuse(m, f"hard link to {display(m.linkname)!r}, above the layer root")
        if not target:
            raise self._refuse(m, "hard link to the layer root")
        tparent, _, tbase = target.rpartition(b"/")
        found = self.tree.walk(tparent, create=False, entry=m.name)
        tst = self.tree.lstat(found[0], tbase) if found is not None else None
        if found is None or tst is None:
            raise self._refuse(m, f"hard link to {display(m.linkname)!r}, which no earlier "
                                  "entry of this layer made (a hard link cannot reach into "
                                  "a lower layer)")
        if stat.S_ISDIR(tst.st_mode):
            raise self._refuse(m, f"hard link to the directory {display(m.linkname)!r}")
        if self.overlay and stat.S_ISCHR(tst.st_mode) and tst.st_rdev == 0:
            raise self._refuse(m, f"hard link to {display(m.linkname)!r}, a whiteout")
        tpfd, trparent = found
        if (trparent + b"/" + tbase if trparent else tbase) not in self.tree.mine:
            # A lower layer's file: a hard link cannot cross layers (overlay keeps each
            # layer in its own directory), so both drivers refuse it, as
            # containers/storage's overlay driver does; layer.md has producers leave
            # such links out of a changeset.
            raise self._refuse(m, f"hard link to {display(m.linkname)!r}, which no earlier "
                                  "entry of this layer made (a hard link cannot reach into "
                                  "a lower layer)")
        pfd, rparent, path = self._slot(m, parent, base)
        if (rparent, base) == (trparent, tbase):
            return  # a link to itself: it is there already
        # follow_symlinks=False: linkat(2) without AT_SYMLINK_FOLLOW links a symlink
        # itself, never what it points at.
        try:
            os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            self._clear(pfd, base)
            try:
                os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise self._refuse(m, f"hard link to {display(m.linkname)!r}, which this "
                                      "entry replaced") from None
        self.tree.mark(rparent, path)

    def _node(self, m: Member, parent: bytes, base: bytes) -> None:
        if m.type == b"6":
            kind = stat.S_IFIFO
            device = 0
        else:
            if not self.allow_devices:
                raise self._refuse(m, "a device node, and devices are not allowed here")
            kind = stat.S_IFCHR if m.type == b"3" else stat.S_IFBLK
            device = os.makedev(m.devmajor, m.devminor)
        pfd, rparent, path = self._slot(m, parent, base)
        try:
            os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        except FileExistsError:
            self._clear(pfd, base)
            os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        self._path_meta(m, pfd, base, symlink=False)
        self.tree.mark(rparent, path)

    def _path_meta(self, m: Member, pfd: int, base: bytes, *, symlink: bool) -> None:
        """Owner, mode, xattrs and times of a symlink, device or fifo, never following it."""
        if self.same_owner:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if not symlink:  # a symlink's mode is always 0777 on Linux
            mode = m.mode if self.same_owner else m.mode & ~0o6000
            os.chmod(base, mode, dir_fd=pfd, follow_symlinks=False)
        if m.xattrs:
            # lsetxattr through the parent's /proc/self/fd link: there is no setxattrat.
            where = b"/proc/self/fd/%d/%s" % (pfd, base)
            self._xattrs(m, where, regular=False)
        os.utime(base, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(self, m: Member, target: int | bytes, *, regular: bool) -> None:
        for key, value in m.xattrs.items():
            if key.startswith(_OVERLAY_XATTRS):
                # overlayfs's own state (opaque, redirect, metacopy) comes from
                # whiteout entries only, never from an entry's xattrs.
                log.warning("layer %s: entry %r: ignoring the xattr %r (overlayfs's own)",
                            self.label, display(m.name), display(key))
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as exc:
                user_on_special = exc.errno == errno.EPERM and not regular and key.startswith(
                    b"user.")
                if exc.errno not in _NOT_SUPPORTED and not user_on_special:
                    raise
                log.warning("layer %s: entry %r: xattr %r not set: %s", self.label,
                            display(m.name), display(key), exc.strerror)

    # -- whiteouts -----------------------------------------------------------------------

    def _whiteout(self, m: Member, parent: bytes, base: bytes) -> None:
        if base == OPAQUE_MARKER:
            self._opaque(m, parent)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            # AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): containers/storage skips it.
            log.debug("layer %s: skipping AUFS metadata %r", self.label, display(m.name))
            return
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in (b"", b".", b".."):
            raise self._refuse(m, f"a whiteout of {display(victim)!r}")
        if self.overlay:
            pfd, rparent, _ = self._slot(m, parent, base)
        else:
            found = self.tree.walk(parent, create=False, entry=m.name)
            if found is None:
                return  # nothing below to delete
            pfd, rparent = found
        path = rparent + b"/" + victim if rparent else victim
        if path in self.tree.mine:
            # layer.md: whiteouts apply to the lower layers only, never to this one's.
            log.debug("layer %s: whiteout %r of this layer's own entry ignored", self.label,
                      display(m.name))
            return
        if not self.overlay:
            self.tree.touch(rparent, pfd)
            self.tree.remove(pfd, victim)
            return
        st = self.tree.lstat(pfd, victim)
        if st is None or not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
            if st is not None:
                self._clear(pfd, victim)
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
        os.utime(victim, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, m: Member, parent: bytes) -> None:
        if self.overlay:
            found = self.tree.walk(parent, create=True, entry=m.name)
            assert found is not None
            os.setxattr(found[0], OPAQUE_XATTR, b"y")
            self.tree.opaque.add(found[1])
            if found[1]:
                self.tree.mark(found[1].rpartition(b"/")[0], found[1])
            return
        found = self.tree.walk(parent, create=False, entry=m.name)
        if found is not None:
            self.tree.touch(found[1], found[0])
            self._clear_lower(found[0], found[1])

    def _clear_lower(self, dfd: int, rdir: bytes) -> None:
        """Delete everything below ``rdir`` that this layer did not put there.

        layer.md: the opaque marker applies first whatever its place in the tar, so
        entries this layer already made in the directory (and the directories above
        them) stay, and everything else under it goes.
        """
        mine = self.tree.mine
        prefix = rdir + b"/" if rdir else b""
        keep_dirs = sorted(p for p in mine if p.startswith(prefix))
        for d in [rdir, *keep_dirs]:
            fd = dfd if d == rdir else self.tree.open_dir(d)
            if fd is None:
                continue
            try:
                for child in self.tree.children(fd):
                    path = d + b"/" + child if d else child
                    if path not in mine:
                        self.tree.remove(fd, child)
            finally:
                if fd != dfd:
                    os.close(fd)

    def _finish_dirs(self) -> None:
        """Modes and mtimes of directories, deepest first, once nothing is created in them.

        Those with a header get the header's; those the layer only changed (or copied
        up) get back what they had.
        """
        todo: dict[bytes, tuple[int, int, int, int]] = {
            p: v for p, v in self.tree.restore.items() if p not in self.pending}
        todo.update((p, (mode, mtime, mtime, ino))
                    for p, (mode, mtime, ino) in self.pending.items())
        for path in sorted(todo, key=lambda p: p.count(b"/"), reverse=True):
            mode, atime_ns, mtime_ns, ino = todo[path]
            fd = self.tree.open_dir(path)
            if fd is None:
                continue  # a later entry replaced it
            try:
                if os.fstat(fd).st_ino == ino:
                    if mode >= 0:
                        os.fchmod(fd, mode)
                    os.utime(fd, ns=(atime_ns, mtime_ns))
            finally:
                os.close(fd)
                self.tree.release()
