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

import base64
import errno
import logging
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from criolib.storage._drivers import _fs
from criolib.storage._errors import (
    DriverError,
    DriverUnsupported,
    InvalidDriverOption,
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
_LINK_DIR = "l"
_LINK_LENGTH = 26  # c/storage idLength: 128 lowers of "l/<26>:" fit a page with room left
_DEFAULT_ROOT_MODE = 0o555  # c/storage defaultPerms for a base layer's diff/
_FS_REFUSED = {"overlay": "overlay", "aufs": "aufs", "ecryptfs": "ecryptfs"}
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: Mount options that would change which directories the mount uses.
_OWN_KEYS = {"lowerdir", "upperdir", "workdir", "datadir", "lowerdir+", "datadir+"}


def _short_name() -> str:
    return base64.b32encode(os.urandom(20)).decode()[:_LINK_LENGTH]


def _split_options(options: Sequence[str]) -> list[str]:
    out = []
    for opt in options:
        out += [o.strip() for o in opt.split(",") if o.strip()]
    return out


def _check_mount_options(options: Sequence[str], where: str) -> list[str]:
    opts = _split_options(options)
    for o in opts:
        if o.partition("=")[0] in _OWN_KEYS:
            raise InvalidDriverOption(
                f"overlay: {where} may not set {o.partition('=')[0]}= (the driver chooses "
                "the layer directories)"
            )
    return opts


class OverlayDriver:
    """Layers as overlayfs directories; see the module docstring for the layout.

    ``options``: ``mountopt=OPTS`` (or ``overlay.mountopt=``), comma-separated mount
    options added to every mount, like storage.conf's ``[storage.options.overlay]
    mountopt``; c/storage's ``skip_mount_home``, and ``ignore_chown_errors`` /
    ``use_composefs`` set to false, are accepted; any other option (a quota, a
    mount program) raises :class:`InvalidDriverOption`. Safe to share between
    threads; the caller's store lock orders processes.
    """

    name = "overlay"

    def __init__(self, home: str | os.PathLike[str], options: Sequence[str] = ()) -> None:
        self.home = Path(os.path.abspath(home))
        parsed = _fs.parse_driver_options("overlay", options, known=frozenset({"mountopt"}))
        self.mount_options: tuple[str, ...] = tuple(
            _check_mount_options([parsed.get("mountopt", "")], "mountopt"))
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
               staging: Path | None = None) -> Path:
        """Make layer ``layer_id`` on top of ``parent``; return its ``diff`` directory.

        Without ``staging`` the diff starts empty (a container's writable layer).
        With ``staging``, a directory under ``<graphroot>/staging`` already holding
        the layer's changes in overlay form, that directory becomes the diff (c/storage
        ``ApplyDiffFromStagingDirectory``). The layer appears whole or not at all.
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
            self._install(layer_id, skel, lower)
        return d / "diff"

    def apply_diff(self, layer_id: str, parent: str | None, source: BinaryIO, *,
                   expected_diff_id: str | None = None) -> ApplyResult:
        """Create layer ``layer_id`` on ``parent`` from the layer tarball ``source``.

        The tar is extracted (overlay whiteouts) into a staging directory and the
        layer moved into place only after it verified against ``expected_diff_id``;
        a failure or crash leaves nothing but staging debris.
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
            result = apply_layer(source, diff, whiteouts="overlay",
                                 expected_diff_id=expected_diff_id)
            self._install(layer_id, skel, lower)
        return result

    def _install(self, layer_id: str, skel: Path, lower: str) -> None:
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
                short = _short_name()
                try:
                    os.symlink(f"../{layer_id}/diff", links / short)
                    break
                except FileExistsError:
                    continue
            (skel / "link").write_text(short)
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
        log.debug("overlay: layer %s created (link %s, lower %r)", layer_id, short, lower)

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
        ("nodev", "metacopy=on"); flag words become mount flags, the rest goes to
        overlay after the driver's ``mountopt``. Mounting a mounted layer returns
        its path (the store keeps the reference counts).
        """
        with self._lock:
            d = self._layer(layer_id)
            merged = d / "merged"
            if _fs.is_mountpoint(merged):
                return merged
            flags, data_opts, readonly = self._mount_flags(options)
            lowers = self._lowers(d)
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
            merged.mkdir(mode=0o700, exist_ok=True)
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
            log.debug("overlay: mounted %s (%d lowers, %d bytes of options)", layer_id,
                      len(lowerdir), len(data))
            return merged

    def _mount_flags(self, options: Sequence[str]) -> tuple[int, list[str], bool]:
        flags, data, readonly = 0, [], False
        for o in _check_mount_options([*self.mount_options, *options], "mount options"):
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
