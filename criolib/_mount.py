"""mount(2), umount2(2) and /proc/<pid>/mountinfo, shared by criolib's packages.

Stdlib only (ctypes over libc). Failures are :class:`OSError` with the errno and
a message naming the target. :func:`mountinfo` parses proc(5)'s
``/proc/<pid>/mountinfo`` (see also the kernel's
Documentation/filesystems/proc.rst, "3.5 /proc/<pid>/mountinfo"):

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)

Path fields (root, mount point, source) have space, tab, newline and backslash
octal-escaped (``\\040``, ``\\011``, ``\\012``, ``\\134``); they are unescaped here.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os

__all__ = [
    "MNT_DETACH",
    "MNT_EXPIRE",
    "MNT_FORCE",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "UMOUNT_NOFOLLOW",
    "MountInfo",
    "is_mountpoint",
    "mount",
    "mountinfo",
    "parse_mountinfo",
    "umount",
    "unescape",
]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000

MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int

_Path = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _b(value: _Path | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: _Path | None, target: _Path, fstype: str | None = None, flags: int = 0,
          data: str | bytes | None = None) -> None:
    """mount(2); an :class:`OSError` (errno set, ``filename`` the target) on failure."""
    options = data.encode() if isinstance(data, str) else data
    if _libc.mount(_b(source), _b(target), fstype.encode() if fstype else None, flags,
                   options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount {os.fsdecode(source) if source else 'none'} "
                      f"({fstype or 'no type'}) on {os.fsdecode(target)}: {os.strerror(err)}",
                      os.fsdecode(target))


def umount(target: _Path, flags: int = 0) -> None:
    """umount2(2); an :class:`OSError` (errno set, ``filename`` the target) on failure.

    EINVAL means ``target`` is not a mount point, ENOENT that it does not exist.
    """
    if _libc.umount2(_b(target), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot unmount {os.fsdecode(target)}: {os.strerror(err)}",
                      os.fsdecode(target))


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` is a space)."""
    if "\\" not in field:
        return field
    out, i = bytearray(), 0
    raw = os.fsencode(field)
    while i < len(raw):
        chunk = raw[i + 1:i + 4]
        if raw[i:i + 1] == b"\\" and len(chunk) == 3 and all(48 <= c <= 55 for c in chunk):
            out.append(int(chunk, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MountInfo:
    """One line of /proc/<pid>/mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    optional: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    def tag(self, name: str) -> str | None:
        """The value of an optional field (``shared`` -> ``"5"`` for ``shared:5``;
        ``unbindable`` -> ``""``); None when absent."""
        for field in self.optional:
            key, sep, value = field.partition(":")
            if key == name:
                return value if sep else ""
        return None


def _options(text: str) -> tuple[str, ...]:
    return tuple(o for o in text.split(",") if o)


def _parse_line(line: str) -> MountInfo:
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
        major, minor = fields[2].split(":")
        return MountInfo(
            mount_id=int(fields[0]), parent_id=int(fields[1]), major=int(major),
            minor=int(minor), root=unescape(fields[3]), mount_point=unescape(fields[4]),
            options=_options(fields[5]), optional=tuple(fields[6:sep]),
            fstype=unescape(fields[sep + 1]), source=unescape(fields[sep + 2]),
            super_options=_options(fields[sep + 3]) if len(fields) > sep + 3 else ())
    except (ValueError, IndexError):
        raise ValueError(f"not a mountinfo line: {line.rstrip()!r}") from None


def parse_mountinfo(text: str) -> list[MountInfo]:
    """The entries of a mountinfo text; a malformed line is a :class:`ValueError`."""
    return [_parse_line(line) for line in text.splitlines() if line.strip()]


def mountinfo(pid: int | str = "self") -> list[MountInfo]:
    """The mounts of ``pid``'s mount namespace, parsed (see the module)."""
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse_mountinfo(os.fsdecode(f.read()))


def is_mountpoint(path: _Path, pid: int | str = "self") -> bool:
    """Whether something is mounted on ``path`` (its real path) per ``pid``'s mountinfo."""
    target = os.path.realpath(os.fsdecode(path))
    return any(m.mount_point == target for m in mountinfo(pid))
