"""Comparable listings of directory trees, for "nothing outside dest changed" checks.

A listing holds, for every path below a root, what a layer keeps about it: type,
mode, owner, size and content hash, link target, device numbers, xattrs, mtime,
inode link count, and which paths share an inode. Two listings of an untouched
tree compare equal.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["listing", "outside_listing", "xattrs"]


def xattrs(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every xattr of ``path`` (not followed); ``{}`` where the fs has none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}


def _entry(path: str, st: os.stat_result, *, times: bool, dir_times: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                            "xattrs": xattrs(path)}
    if stat.S_ISREG(st.st_mode):
        info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        info["nlink"] = st.st_nlink
    elif stat.S_ISLNK(st.st_mode):
        info["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if times and (dir_times or not stat.S_ISDIR(st.st_mode)):
        info["mtime_ns"] = st.st_mtime_ns
    return info


def listing(root: str | os.PathLike[str], *, exclude: Path | None = None, times: bool = True,
            dir_times: bool = True) -> dict[str, Any]:
    """What is below ``root`` (``root`` itself as ``"."``), skipping the ``exclude`` subtree.

    Hard links show as ``same_as``: the first path (in sorted order) of the inode.
    """
    base = os.fspath(root)
    skip = os.fspath(exclude) if exclude is not None else None
    out: dict[str, Any] = {}
    first: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) != skip)
        names = ([] if dirpath != base else ["."]) + sorted(filenames) + dirnames
        for name in names:
            path = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            info = _entry(path, st, times=times, dir_times=dir_times)
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                info["same_as"] = first.setdefault((st.st_dev, st.st_ino), rel)
            out[rel] = info
    return out


def outside_listing(box: Path, dest: Path) -> dict[str, Any]:
    """The test box without ``dest``, plus the host files a breakout would aim at."""
    out = listing(box, exclude=dest)
    # Not /tmp: other processes change it all the time.
    for host in ("/etc/passwd", "/etc/group"):
        st = os.lstat(host)
        out[host] = (st.st_mode, st.st_nlink, st.st_size, st.st_mtime_ns, st.st_ino)
    return out
