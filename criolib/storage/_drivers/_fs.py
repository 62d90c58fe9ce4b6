"""Filesystem and mount helpers the graph drivers share.

mount(2) and umount2(2) through ctypes (Python has no binding), the mount table
from ``/proc/self/mountinfo`` (proc(5)), the filesystem type under a path, layer
id checks, staging directories under ``<graphroot>/staging`` and crash-safe
removal of layer directories.

Mounting with paths relative to a directory needs that directory as the current
one, and the current directory belongs to the whole process. :func:`mount` runs
the syscall in a short-lived thread that first calls ``unshare(CLONE_FS)``
(unshare(2)): that thread gets its own cwd, so it can ``chdir`` without touching
any other thread, and its fs context dies with it. No fork, no exec of mount(8).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from criolib.storage._errors import DriverError, InvalidDriverOption, InvalidLayerID

__all__ = [
    "ID_PATTERN",
    "MNT_DETACH",
    "MS_FLAGS",
    "MountEntry",
    "check_staging",
    "fs_type",
    "has_cap_sys_admin",
    "is_mountpoint",
    "mount",
    "mount_table",
    "mounts_under",
    "new_staging_dir",
    "parse_driver_options",
    "remove_tree",
    "rename_noreplace",
    "staged",
    "staging_root",
    "sync_tree",
    "umount",
    "validate_layer_id",
]

log = logging.getLogger("criolib.storage")

_CLONE_FS = 0x00000200  # linux/sched.h
MNT_DETACH = 2  # linux/mount.h
_CAP_SYS_ADMIN = 21  # linux/capability.h

#: mount(8) flag words and their MS_* bits (linux/mount.h); (set, clear).
MS_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (1, 0), "rw": (0, 1),
    "nosuid": (2, 0), "suid": (0, 2),
    "nodev": (4, 0), "dev": (0, 4),
    "noexec": (8, 0), "exec": (0, 8),
    "sync": (16, 0), "async": (0, 16),
    "dirsync": (128, 0),
    "noatime": (1024, 0), "atime": (0, 1024),
    "nodiratime": (2048, 0), "diratime": (0, 2048),
    "relatime": (1 << 21, 0), "norelatime": (0, 1 << 21),
    "strictatime": (1 << 24, 0), "nostrictatime": (0, 1 << 24),
    "lazytime": (1 << 25, 0), "nolazytime": (0, 1 << 25),
}

#: What a layer id may look like: one safe path component.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syncfs.restype = ctypes.c_int
_AT_FDCWD = -100  # linux/fcntl.h
_RENAME_NOREPLACE = 1  # linux/fs.h


def validate_layer_id(layer_id: str, *, reserved: frozenset[str] = frozenset()) -> str:
    """``layer_id`` if it can name one directory under a driver's home, else InvalidLayerID."""
    if not isinstance(layer_id, str) or not ID_PATTERN.fullmatch(layer_id) or layer_id in reserved:
        raise InvalidLayerID(
            f"layer id {layer_id!r} cannot name a layer directory: use letters, digits, "
            "'_', '.', '-' (starting with a letter or digit)"
            + (f", not one of {', '.join(sorted(reserved))}" if reserved else "")
        )
    return layer_id


#: containers/storage options criolib's drivers accept only at the value that asks for
#: what they do anyway (storage.conf files carry them; anything else is refused).
_NEUTRAL_OPTIONS = {
    "skip_mount_home": {"true", "false"},  # criolib never makes home a private mount
    "ignore_chown_errors": {"false"},
    "use_composefs": {"false"},
}


def parse_driver_options(driver: str, options: Sequence[str], *,
                         known: frozenset[str] = frozenset()) -> dict[str, str]:
    """``key=value`` driver options (``overlay.mountopt=``, ``.mountopt=`` prefixes allowed).

    Returns the ``known`` ones; options that ask for nothing different from what
    the driver does are accepted and dropped; any other raises InvalidDriverOption,
    as containers/storage does (a quota, a mount program, composefs: not supported).
    """
    out: dict[str, str] = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        key = key.strip().lower()
        for prefix in (f"{driver}.", "overlay2." if driver == "overlay" else "", "."):
            key = key.removeprefix(prefix) if prefix else key
        value = value.strip()
        if not sep:
            raise InvalidDriverOption(f"{driver}: driver option {opt!r} is not key=value")
        if key in known:
            out[key] = value
        elif value.lower() in _NEUTRAL_OPTIONS.get(key, ()):
            log.debug("%s: driver option %s accepted (nothing to do)", driver, opt)
        else:
            accepted = sorted(known | _NEUTRAL_OPTIONS.keys())
            raise InvalidDriverOption(
                f"{driver}: driver option {opt!r} is not supported by criolib's {driver} "
                f"driver (it takes {', '.join(accepted)})")
    return out


# -- the mount table -------------------------------------------------------------------


@attrs.frozen
class MountEntry:
    """One line of /proc/self/mountinfo (proc(5)): where, what and how."""

    mount_id: int
    device: str  # "major:minor"
    mountpoint: str
    fstype: str
    source: str
    options: str  # per-mount options
    super_options: str  # per-superblock options (overlay's lowerdir=... live here)


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash in paths as \ooo octal.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_table() -> list[MountEntry]:
    """This process's mounts, in the kernel's order (a later one covers an earlier one)."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            head, sep, tail = line.rstrip("\n").partition(" - ")
            fields, rest = head.split(" "), tail.split(" ")
            if not sep or len(fields) < 6 or len(rest) < 3:
                continue
            out.append(MountEntry(
                mount_id=int(fields[0]), device=fields[2], mountpoint=_unescape(fields[4]),
                fstype=rest[0], source=_unescape(rest[1]), options=fields[5],
                super_options=rest[2],
            ))
    return out


def mounts_under(path: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts at ``path`` or below it, deepest (and latest) first: the unmount order."""
    root = os.path.realpath(path)
    prefix = root.rstrip("/") + "/"
    found = [m for m in mount_table() if m.mountpoint == root or m.mountpoint.startswith(prefix)]
    found.reverse()  # the kernel lists children after parents, stacked mounts in order
    return sorted(found, key=lambda m: m.mountpoint.count("/"), reverse=True)


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted exactly at ``path`` (after resolving symlinks)."""
    target = os.path.realpath(path)
    return any(m.mountpoint == target for m in mount_table())


def fs_type(path: str | os.PathLike[str]) -> str:
    """The type of the filesystem ``path`` lives on (the nearest existing ancestor's).

    Matched by device number against the mount table, so bind mounts and stacked
    mounts are seen as what the kernel uses for that path.
    """
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.stat(p)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    found = [m for m in mount_table() if m.device == dev]
    if not found:
        return "unknown"
    real = os.path.realpath(p)
    # Several mounts may share a device (bind mounts); the deepest containing one wins.
    inside = [m for m in found if real == m.mountpoint
              or real.startswith(m.mountpoint.rstrip("/") + "/")]
    best = max(inside or found, key=lambda m: len(m.mountpoint))
    return best.fstype


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (needed for overlay mounts here)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


# -- mount(2) and umount2(2) -----------------------------------------------------------


def _in_own_cwd(cwd: str | None, call: Callable[[], int]) -> tuple[int, int, str]:
    """Run ``call`` (a raw syscall) with ``cwd`` as the current directory of that call only.

    Returns (result, errno, what failed). With ``cwd`` the call runs in a new thread
    that unshares its fs context first (see the module docstring).
    """
    if cwd is None:
        result = call()
        return result, ctypes.get_errno() if result != 0 else 0, "mount"
    outcome: list[tuple[int, int, str]] = []

    def body() -> None:
        if _libc.unshare(_CLONE_FS) != 0:
            outcome.append((-1, ctypes.get_errno(), "unshare(CLONE_FS)"))
            return
        try:
            os.chdir(cwd)
        except OSError as exc:
            outcome.append((-1, exc.errno or errno.EIO, f"chdir {cwd}"))
            return
        result = call()
        outcome.append((result, ctypes.get_errno() if result != 0 else 0, "mount"))

    thread = threading.Thread(target=body, name="criolib-storage-mount", daemon=True)
    thread.start()
    thread.join()
    return outcome[0] if outcome else (-1, errno.EIO, "mount thread")


def mount(source: str, target: str | os.PathLike[str], fstype: str, flags: int, data: str,
          *, cwd: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """mount(2); relative paths in ``data`` resolve against ``cwd``. Returns (errno, what).

    An errno of 0 means success; the caller words the error, since it knows the
    layer and the options.
    """
    args = (source.encode(), os.fsencode(target), fstype.encode(), flags,
            os.fsencode(data))
    result, err, what = _in_own_cwd(None if cwd is None else os.fspath(cwd),
                                    lambda: int(_libc.mount(*args)))
    return (0, "") if result == 0 else (err, what)


def umount(target: str | os.PathLike[str], flags: int = 0) -> int:
    """umount2(2); returns 0 or the errno."""
    if _libc.umount2(os.fsencode(target), flags) == 0:
        return 0
    return ctypes.get_errno()


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """renameat2(2) with RENAME_NOREPLACE: like rename, but never over an existing ``dst``.

    Plain rename(2) silently replaces an empty directory; a layer appearing twice
    must fail instead. Raises ``OSError`` (EEXIST when ``dst`` is there).
    """
    if _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                       _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


# -- durability ------------------------------------------------------------------------


def sync_tree(path: str | os.PathLike[str]) -> None:
    """Make everything written under ``path`` durable: syncfs(2) of its filesystem.

    One call for a whole staged layer: fsync of each of its files and directories
    costs a journal commit each (thousands for an image layer), while syncfs
    writes back the filesystem's dirty data once. It also flushes what other
    writers left dirty on that filesystem, which is work the kernel would do soon
    anyway; only this filesystem, never the whole machine (``os.sync``). Since
    Linux 5.8 it reports write-back errors, raised here as ``OSError``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", os.fspath(path))
    finally:
        os.close(fd)


# -- staging and removal ---------------------------------------------------------------


def staging_root(home: Path) -> Path:
    """``<graphroot>/staging``: where layers are assembled before they appear."""
    return home.parent / "staging"


def new_staging_dir(home: Path, what: str) -> Path:
    """A fresh, private directory under ``<graphroot>/staging`` (debris if we crash)."""
    root = staging_root(home)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{what}-", dir=root))
    except OSError as exc:
        raise DriverError(f"cannot make a staging directory under {root}: {exc}") from exc


def check_staging(home: Path, staging: Path) -> None:
    """Refuse a directory that is not directly under ``<graphroot>/staging``.

    A driver renames it into place: anything else could be on another
    filesystem, or be a directory the caller did not mean to give away.
    """
    root = os.path.realpath(staging_root(home))
    real = os.path.realpath(staging)
    if os.path.dirname(real) != root or not os.path.isdir(real):
        raise DriverError(
            f"{staging} is not a staging directory: it must be a directory directly "
            f"under {root}")


@contextlib.contextmanager
def staged(home: Path, what: str) -> Iterator[Path]:
    """A staging directory, removed on the way out unless the body moved it away."""
    path = new_staging_dir(home, what)
    try:
        yield path
    finally:
        if os.path.lexists(path):
            remove_tree(path, home=None)


def remove_tree(path: Path, *, home: Path | None) -> None:
    """Remove ``path`` and everything below it, never through a mount point.

    Anything mounted below is detached first: ``rmtree`` does not stop at mount
    points and would delete the files of lower layers through an overlay. With
    ``home``, the tree is first renamed into ``<graphroot>/staging``, so a crash
    part way leaves staging debris rather than a half-deleted layer.
    """
    for m in mounts_under(path):
        err = umount(m.mountpoint, MNT_DETACH)
        if err and err != errno.EINVAL:
            raise DriverError(
                f"cannot remove {path}: {m.mountpoint} is mounted and unmounting it failed: "
                f"{os.strerror(err)}"
            )
        log.warning("removing %s: detached a mount left at %s", path, m.mountpoint)
    victim = path
    if home is not None:
        try:
            root = staging_root(home)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            victim = root / f"removing-{path.name}-{os.urandom(4).hex()}"
            os.rename(path, victim)
        except FileNotFoundError:
            return
        except OSError as exc:
            # Another filesystem or a busy directory: delete in place instead.
            log.debug("removing %s in place (%s)", path, exc)
            victim = path
    try:
        shutil.rmtree(victim)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DriverError(f"cannot remove {path}: {exc}") from exc
