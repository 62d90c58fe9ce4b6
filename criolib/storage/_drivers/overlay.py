"""The overlay graph driver: each layer keeps only its own changes; mounts stack them.

Follows containers/storage ``drivers/overlay/overlay.go`` (on-disk format kept, so
the layout is familiar to anyone who knows c/storage)::

    <home>/<id>/diff/     the layer's changes (overlay whiteouts: char 0/0 devices,
                          "trusted.overlay.opaque" xattrs)
    <home>/<id>/link      its short name: 26 random base32 characters
    <home>/<id>/lower     "l/<short>:l/<short>...": every parent, nearest first
                          (absent for a base layer, which has <id>/empty/ instead)
    <home>/<id>/work/     overlay's workdir;  <home>/<id>/merged/  the mount point
    <home>/l/<short>  ->  ../<id>/diff

Mounts name lower layers by their ``l/<short>`` links, relative to ``<home>``, so
about 135 parents fit in the one page of mount data the kernel reads (4096 bytes);
deeper stacks (up to overlay's limit of 500) pass descriptors of the lower
directories as ``/proc/self/fd`` numbers instead, as c/storage's mountfrom does.
Both run mount(2) in a thread with its own working directory (see ``_fs``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from criolib._atomic import fsync_dir
from criolib.storage._drivers import _fs, _overlay_links, _overlay_opts
from criolib.storage._drivers._overlay_links import LINK_DIR as _LINK_DIR
from criolib.storage._errors import (
    DriverError,
    DriverUnsupported,
    LayerExists,
    LayerUnknown,
    MountError,
)

if TYPE_CHECKING:
    from criolib.storage._archive import ApplyResult, Compression

__all__ = ["MAX_DEPTH", "OverlayDriver"]

log = logging.getLogger("criolib.storage")

#: overlayfs's own limit on stacked lower layers (OVL_MAX_STACK in fs/overlayfs).
MAX_DEPTH = 500
_DEFAULT_ROOT_MODE = 0o555  # c/storage defaultPerms for a base layer's diff/
_FS_REFUSED = {"overlay": "overlay", "aufs": "aufs", "ecryptfs": "ecryptfs"}
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class OverlayDriver:
    """Layers as overlayfs directories; see the module docstring for the layout.

    ``options``: ``mountopt=OPTS`` (or ``overlay.mountopt=``), comma-separated mount
    options added to every mount, like storage.conf's ``[storage.options.overlay]
    mountopt``; c/storage's ``skip_mount_home``, and ``ignore_chown_errors`` /
    ``use_composefs`` set to false, are accepted; any other option (a quota, a
    mount program) raises :class:`InvalidDriverOption`, and so do mount options
    that would make exports of a layer wrong (``metacopy=on``, ``redirect_dir=on``,
    ``index=on``, ``nfs_export=on``, ``userxattr``; see ``_overlay_opts``). Safe to
    share between threads; the caller's store lock orders processes.
    """

    name = "overlay"

    def __init__(self, home: str | os.PathLike[str], options: Sequence[str] = ()) -> None:
        self.home = Path(os.path.abspath(home))
        parsed = _fs.parse_driver_options("overlay", options, known=frozenset({"mountopt"}))
        self.mount_options: tuple[str, ...] = tuple(
            _overlay_opts.check_mount_options([parsed.get("mountopt", "")], "mountopt"))
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"OverlayDriver(home={str(self.home)!r})"

    # -- paths ----------------------------------------------------------------------

    def _dir(self, layer_id: str) -> Path:
        return self.home / _fs.validate_layer_id(layer_id, reserved=frozenset({_LINK_DIR}))

    def _layer(self, layer_id: str) -> Path:
        d = self._dir(layer_id)
        if not d.is_dir():
            raise LayerUnknown(f"overlay: no layer {layer_id} in {self.home}")
        return d

    def _link(self, d: Path) -> str:
        try:
            return (d / "link").read_text().strip()
        except OSError as exc:
            raise DriverError(f"overlay: layer {d.name} has no readable link file: {exc}") from exc

    def _lowers(self, d: Path) -> list[str]:
        try:
            text = (d / "lower").read_text().strip()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DriverError(f"overlay: cannot read {d / 'lower'}: {exc}") from exc
        return [x for x in text.split(":") if x]

    def _lower_for(self, parent: str | None) -> str:
        """The ``lower`` file of a child of ``parent``: its link, then its own lowers."""
        if parent is None:
            return ""
        pd = self._layer(parent)
        return ":".join([f"{_LINK_DIR}/{self._link(pd)}", *self._lowers(pd)])

    def _root_mode(self, parent: str | None) -> int:
        if parent is None:
            return _DEFAULT_ROOT_MODE
        return stat.S_IMODE(os.stat(self._layer(parent) / "diff").st_mode)

    # -- creating layers ------------------------------------------------------------

    def create(self, layer_id: str, parent: str | None, *,
               staging: Path | None = None, durable: bool = True) -> Path:
        """Make layer ``layer_id`` on top of ``parent``; return its ``diff`` directory.

        Without ``staging`` the diff starts empty (a container's writable layer).
        With ``staging``, a directory under ``<graphroot>/staging`` already holding
        the layer's changes in overlay form, that directory becomes the diff (c/storage
        ``ApplyDiffFromStagingDirectory``). The layer appears whole or not at all;
        with ``durable`` its files are on disk before it appears (see :meth:`apply_diff`).
        """
        d = self._dir(layer_id)
        if d.exists():
            raise LayerExists(f"overlay: layer {layer_id} already exists in {self.home}")
        lower = self._lower_for(parent)
        mode = self._root_mode(parent)
        if staging is not None:
            _fs.check_staging(self.home, staging)
        with _fs.staged(self.home, "overlay") as skel:
            diff = skel / "diff"
            try:
                if staging is None:
                    diff.mkdir()
                    os.chmod(diff, mode)
                else:
                    os.rename(staging, diff)
            except OSError as exc:
                raise DriverError(f"overlay: cannot prepare layer {layer_id}: {exc}") from exc
            self._install(layer_id, skel, lower, durable=durable)
        return d / "diff"

    def apply_diff(self, layer_id: str, parent: str | None, source: BinaryIO, *,
                   expected_diff_id: str | None = None, expected_digest: str | None = None,
                   allow_devices: bool = True, durable: bool = True) -> ApplyResult:
        """Create layer ``layer_id`` on ``parent`` from the layer tarball ``source``.

        The tar is extracted (overlay whiteouts) into a staging directory and the
        layer moved into place only after it matched ``expected_diff_id`` (the
        uncompressed tar's digest) and ``expected_digest`` (the blob's), so a
        mismatch raises :class:`DigestMismatch` with nothing visible; a failure or
        crash leaves nothing but staging debris. A parent directory the tar does not
        carry is copied up from the parent layers (read through a read-only mount of
        the parent, made only when needed), so it keeps its owner, mode and times,
        and a parent's symlink on the way is followed, as in one tree (see
        ``_archive_lower``). ``allow_devices=False`` refuses
        device nodes (:class:`UnsafeArchive`); overlay whiteouts are not devices.
        With ``durable`` (the default) the staged layer is synced to disk (one
        syncfs of the graphroot's filesystem) before the rename, and the rename
        after it, so a power loss leaves the layer whole or absent; ``False``
        skips both for throw-away stores.
        """
        from criolib.storage._archive import apply_layer

        d = self._dir(layer_id)
        if d.exists():
            raise LayerExists(f"overlay: layer {layer_id} already exists in {self.home}")
        lower = self._lower_for(parent)
        mode = self._root_mode(parent)
        with _fs.staged(self.home, "overlay") as skel:
            diff = skel / "diff"
            diff.mkdir()
            os.chmod(diff, mode)
            with self._lower_view(parent) as view:
                result = apply_layer(source, diff, whiteouts="overlay",
                                     expected_diff_id=expected_diff_id,
                                     expected_digest=expected_digest,
                                     allow_devices=allow_devices, lower=view)
            self._install(layer_id, skel, lower, durable=durable)
        return result

    def _install(self, layer_id: str, skel: Path, lower: str, *, durable: bool) -> None:
        """Finish the skeleton around ``skel/diff`` and rename it to ``<home>/<id>``."""
        target = self.home / layer_id
        links = self.home / _LINK_DIR
        try:
            (skel / "work").mkdir(mode=0o700)
            (skel / "merged").mkdir(mode=0o700)
            if lower:
                (skel / "lower").write_text(lower)
            else:
                (skel / "empty").mkdir(mode=0o700)
            links.mkdir(mode=0o755, parents=True, exist_ok=True)
            # The link goes in first, dangling until the rename: a crash between the
            # two leaves a stray link in l/, never a layer that children cannot name.
            while True:
                short = _overlay_links.new_short_name()
                try:
                    os.symlink(f"../{layer_id}/diff", links / short)
                    break
                except FileExistsError:
                    continue
            (skel / "link").write_text(short)
            if durable:
                # Files, directories, the link file and the l/ link, all before the
                # rename: after a power loss the layer is whole or still in staging.
                _fs.sync_tree(skel)
        except OSError as exc:
            raise DriverError(f"overlay: cannot assemble layer {layer_id}: {exc}") from exc
        try:
            _fs.rename_noreplace(skel, target)
        except OSError as exc:
            os.unlink(links / short)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise LayerExists(f"overlay: layer {layer_id} appeared in {self.home} "
                                  "while it was being created") from exc
            raise DriverError(f"overlay: cannot move layer {layer_id} into place: {exc}") from exc
        if durable:
            try:
                fsync_dir(self.home)
            except OSError as exc:
                raise DriverError(f"overlay: layer {layer_id}: cannot sync {self.home}: "
                                  f"{exc}") from exc
        log.debug("overlay: layer %s created (link %s, lower %r)", layer_id, short, lower)

    # -- checking and repairing -----------------------------------------------------

    def verify_layer(self, layer_id: str) -> list[str]:
        """What would keep the layer from mounting or exporting, one sentence each.

        A missing ``diff/``, ``link`` file or ``work/``, a lost ``l/<short>`` link
        (its children then fail to mount), a parent link in ``lower`` that leads
        nowhere. ``[]`` when the layer is sound.
        """
        with self._lock:
            return _overlay_links.verify(self.home, self._dir(layer_id).name)

    def repair_layer(self, layer_id: str) -> list[str]:
        """Rebuild what :meth:`verify_layer` reports and can be rebuilt; say what was done.

        The ``l/<short>`` link from the ``link`` file (c/storage recreates these at
        start-up), the ``link`` file from the ``l/`` entry still pointing at the
        layer (else a new short name), the parents' ``l/`` links named in ``lower``,
        ``work/``. A missing ``diff/`` cannot be rebuilt; :meth:`verify_layer` still
        reports it afterwards.
        """
        with self._lock:
            layer = self._dir(layer_id).name
            try:
                done = _overlay_links.repair(self.home, layer)
            except OSError as exc:
                raise DriverError(f"overlay: cannot repair layer {layer_id}: {exc}") from exc
            for line in done:
                log.info("overlay: layer %s: %s", layer_id, line)
            return done

    # -- reading layers -------------------------------------------------------------

    def diff_path(self, layer_id: str) -> Path:
        """The directory holding only this layer's changes."""
        return self._layer(layer_id) / "diff"

    def exists(self, layer_id: str) -> bool:
        """Whether layer ``layer_id`` is in this driver's home."""
        return self._dir(layer_id).is_dir()

    def layer_ids(self) -> list[str]:
        """Every layer in the home, sorted (``l/`` and dot names are not layers)."""
        try:
            names = os.listdir(self.home)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n != _LINK_DIR and _fs.ID_PATTERN.fullmatch(n)
                      and (self.home / n).is_dir())

    def parent_links(self, layer_id: str) -> list[str]:
        """The layer's ``lower`` entries (``l/<short>``, nearest parent first)."""
        return self._lowers(self._layer(layer_id))

    def export_diff(self, layer_id: str, parent: str | None, sink: BinaryIO, *,
                    compression: Compression = "none") -> ApplyResult:
        """Write this layer's changes to ``sink`` as an OCI layer tarball.

        ``parent`` must be the layer's real parent (overlay keeps only changes
        against it; a diff against another layer is not supported).
        """
        d = self._layer(layer_id)
        own = ":".join(self._lowers(d))
        if own != self._lower_for(parent):
            raise DriverError(
                f"overlay: cannot export layer {layer_id} against {parent or 'nothing'}: "
                "it is not the layer's parent"
            )
        from criolib.storage._archive import export_layer

        return export_layer(d / "diff", sink, whiteouts="overlay", compression=compression)

    # -- mounting -------------------------------------------------------------------

    def is_mounted(self, layer_id: str) -> bool:
        """Whether the layer's ``merged`` directory is a mount point (/proc/self/mountinfo)."""
        return _fs.is_mountpoint(self._layer(layer_id) / "merged")

    def mount(self, layer_id: str, *, options: Sequence[str] = ()) -> Path:
        """Mount the layer on its parents at ``<id>/merged`` and return that path.

        Writable (upperdir = the layer's diff) unless ``options`` has ``ro``, which
        stacks the layer itself as the top lower. ``options`` are mount options
        ("nodev", "volatile"); flag words become mount flags, the rest goes to
        overlay after the driver's ``mountopt``. Options that would make an export
        of the layer wrong (``metacopy=on``, ``redirect_dir=on``, ``index=on``,
        ``nfs_export=on``, ``userxattr``) raise :class:`InvalidDriverOption`; a
        kernel that turns metacopy, redirect_dir or index on by default gets
        ``=off`` for each. Mounting a mounted layer returns its path (the store
        keeps the reference counts).
        """
        with self._lock:
            d = self._layer(layer_id)
            merged = d / "merged"
            if _fs.is_mountpoint(merged):
                return merged
            merged.mkdir(mode=0o700, exist_ok=True)
            self._mount_at(layer_id, d, merged, options)
            return merged

    def _mount_at(self, layer_id: str, d: Path, merged: Path, options: Sequence[str]) -> None:
        """Mount layer ``layer_id`` (directory ``d``) on its parents at ``merged``."""
        flags, data_opts, readonly = self._mount_flags(layer_id, options)
        lowers = self._lowers(d)
        if any(not os.path.isdir(self.home / x) for x in lowers):
            # A parent's l/ link was lost (a crash before l/ was synced, a cleanup
            # by hand): make it again from the parent's link file, as c/storage
            # does when a mount finds one missing.
            log.warning("overlay: layer %s: a parent's short link is missing; "
                        "recreating it", layer_id)
            self.repair_layer(layer_id)
        if not lowers:
            # overlay wants a lower even under an upper, and two lowers when there
            # is no upper: a base layer gets an empty directory as its parent.
            (d / "empty").mkdir(mode=0o700, exist_ok=True)
            lowers = [f"{layer_id}/empty"]
        if readonly:
            lowerdir = [f"{_LINK_DIR}/{self._link(d)}", *lowers]
            dirs = ""
        else:
            lowerdir = lowers
            dirs = f",upperdir={layer_id}/diff,workdir={layer_id}/work"
        if len(lowerdir) > MAX_DEPTH:
            raise MountError(
                f"overlay: layer {layer_id} needs {len(lowerdir)} lower layers; "
                f"overlayfs stacks at most {MAX_DEPTH}", layer_id=layer_id)
        # A "volatile" mount leaves this behind, and overlay then refuses the
        # workdir until it is gone (c/storage removes it the same way).
        volatile = d / "work" / "work" / "incompat" / "volatile"
        if os.path.lexists(volatile):
            _fs.remove_tree(volatile, home=None)
        extra = "".join(f",{o}" for o in data_opts)
        data = f"lowerdir={':'.join(lowerdir)}{dirs}{extra}"
        if len(data) < _PAGE_SIZE:
            err, what = _fs.mount("overlay", merged, "overlay", flags, data, cwd=self.home)
        else:
            data, err, what = self._mount_by_fds(layer_id, lowerdir, readonly=readonly,
                                                 extra=extra, flags=flags, merged=merged)
        if err:
            hint = ""
            if err == errno.EINVAL and len(data) >= _PAGE_SIZE:
                hint = " (more than one page of mount data)"
            raise MountError(
                f"overlay: cannot mount layer {layer_id} at {merged}: {what} failed: "
                f"{os.strerror(err)}{hint}; mount data is {len(data)} bytes "
                f"({len(lowerdir)} lower layers): {data[:300]}",
                layer_id=layer_id, errno=err, options_length=len(data))
        log.debug("overlay: mounted %s at %s (%d lowers, %d bytes of options)", layer_id,
                  merged, len(lowerdir), len(data))

    @contextlib.contextmanager
    def _lower_view(self, parent: str | None) -> Iterator[Callable[[], Path | None] | None]:
        """A callable mounting ``parent`` read-only in staging when first called, for apply.

        The extractor asks it only when an entry's parent directory is missing from
        the layer (``_archive_lower``); the mount goes when the apply ends, and a
        crash leaves it under staging/, where repair() detaches it before removing.
        """
        if parent is None:
            yield None
            return
        with _fs.staged(self.home, "overlay-view") as where:
            target = where / "view"

            def view() -> Path | None:
                target.mkdir(mode=0o700)
                try:
                    self._mount_at(parent, self._layer(parent), target,
                                   ["ro", "nodev", "nosuid", "noexec"])
                except MountError as exc:
                    # The layer still applies; only headerless parents lose the lower
                    # metadata (plain 0755 directories, as containers/storage makes).
                    log.warning("overlay: cannot see the layers below %s to copy "
                                "directories up: %s", parent, exc)
                    return None
                return target

            try:
                yield view
            finally:
                if _fs.is_mountpoint(target) and _fs.umount(target):
                    _fs.umount(target, _fs.MNT_DETACH)

    def _mount_flags(self, layer_id: str, options: Sequence[str]) -> tuple[int, list[str], bool]:
        flags, data, readonly = 0, [], False
        opts = _overlay_opts.check_mount_options(
            [*self.mount_options, *options], f"mount options of layer {layer_id}")
        for o in [*opts, *_overlay_opts.kernel_default_offs(opts)]:
            if o in _fs.MS_FLAGS:
                on, off = _fs.MS_FLAGS[o]
                flags = (flags | on) & ~off
                readonly = o == "ro" or (readonly and o != "rw")
            elif o.startswith(("label=", "context=")):
                # SELinux mount labels: no SELinux on the machines criolib runs on, and
                # a kernel without it refuses context= outright.
                log.debug("overlay: ignoring mount label option %s", o)
            else:
                data.append(o)
        return flags, data, readonly

    def _mount_by_fds(self, layer_id: str, lowerdir: list[str], *, readonly: bool,
                      extra: str, flags: int, merged: Path) -> tuple[str, int, str]:
        """Mount with every directory named by an open descriptor (c/storage's mountfrom).

        ``/proc/self/fd`` as the working directory makes each lower cost 2-4 bytes.
        """
        fds: list[int] = []
        try:
            home_fd = os.open(self.home, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(home_fd)
            paths = [*lowerdir] + ([] if readonly else [f"{layer_id}/diff", f"{layer_id}/work"])
            named = []
            for p in paths:
                fd = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=home_fd)
                fds.append(fd)
                named.append(str(fd))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise MountError(f"overlay: cannot mount layer {layer_id}: cannot open "
                             f"{exc.filename}: {exc.strerror}", layer_id=layer_id,
                             errno=exc.errno) from exc
        try:
            lowers = named[:len(lowerdir)]
            data = f"lowerdir={':'.join(lowers)}"
            if not readonly:
                data += f",upperdir={named[-2]},workdir={named[-1]}"
            data += extra
            if len(data) >= _PAGE_SIZE:
                return data, errno.EINVAL, "mount"
            err, what = _fs.mount("overlay", merged, "overlay", flags, data,
                                  cwd="/proc/self/fd")
            return data, err, what
        finally:
            for fd in fds:
                os.close(fd)

    def unmount(self, layer_id: str) -> None:
        """Unmount the layer's ``merged`` directory; nothing to do when it is not mounted.

        A plain umount first, so that on return the overlay is gone and its upper and
        work directories are free; if something still uses it (EBUSY), the mount is
        detached lazily (MNT_DETACH, what c/storage always does) and a warning logged:
        the kernel then finishes the unmount when the last user lets go.
        """
        with self._lock:
            merged = self._layer(layer_id) / "merged"
            for _ in range(16):  # stacked mounts at one point, each unmounted in turn
                if not _fs.is_mountpoint(merged):
                    return
                err = _fs.umount(merged)
                if err == errno.EBUSY:
                    log.warning("overlay: layer %s is busy at %s; detaching it lazily",
                                layer_id, merged)
                    err = _fs.umount(merged, _fs.MNT_DETACH)
                if err and err != errno.EINVAL:
                    raise MountError(
                        f"overlay: cannot unmount layer {layer_id} at {merged}: "
                        f"{os.strerror(err)}", layer_id=layer_id, errno=err)
            raise MountError(f"overlay: layer {layer_id} is still mounted at {merged} after "
                             "16 unmounts", layer_id=layer_id)

    # -- removing -------------------------------------------------------------------

    def remove(self, layer_id: str) -> None:
        """Remove the layer: unmount it if mounted, then its directory and its ``l/`` link."""
        with self._lock:
            d = self._layer(layer_id)
            self.unmount(layer_id)
            try:
                short = (d / "link").read_text().strip()
            except OSError:
                short = ""
            _fs.remove_tree(d, home=self.home)
            link = self.home / _LINK_DIR / short
            try:
                if short and os.readlink(link) == f"../{layer_id}/diff":
                    os.unlink(link)
            except OSError as exc:  # already gone, or not ours: leave it to check()
                log.debug("overlay: layer %s: link %s not removed: %s", layer_id, link, exc)
            log.debug("overlay: layer %s removed", layer_id)

    # -- support --------------------------------------------------------------------

    def check_support(self) -> None:
        """Raise :class:`DriverUnsupported` unless overlay mounts can work under ``home``.

        Needs overlay in /proc/filesystems, CAP_SYS_ADMIN, and a backing filesystem
        overlay accepts as upper: not overlay itself (nesting), aufs or ecryptfs.
        """
        try:
            with open("/proc/filesystems", encoding="ascii") as f:
                known = {line.split()[-1] for line in f if line.strip()}
        except OSError as exc:
            raise DriverUnsupported(f"overlay: cannot read /proc/filesystems: {exc}") from exc
        if "overlay" not in known:
            raise DriverUnsupported(
                "overlay: the kernel has no overlay filesystem (not in /proc/filesystems); "
                "load it with `modprobe overlay` or use the vfs driver")
        if not _fs.has_cap_sys_admin():
            raise DriverUnsupported(
                "overlay: mounting needs CAP_SYS_ADMIN (run as root); rootless overlay "
                "(fuse-overlayfs) is not supported")
        backing = _fs.fs_type(self.home)
        if backing in _FS_REFUSED:
            raise DriverUnsupported(
                f"overlay: {self.home} is on {backing}, which overlay cannot use for its "
                "layers (an overlay inside an overlay); put the graphroot on ext4, xfs, "
                "btrfs or tmpfs, or use the vfs driver")
