"""Resolving a path inside a root directory as if that directory were ``/``.

The counterpart of cyphar/filepath-securejoin's ``SecureJoin``: every symlink met
on the way is resolved relative to the root, and ``..`` never climbs above it, so
``/etc/passwd`` looked up in a hostile rootfs whose ``etc`` is a symlink to ``/``
stays inside the rootfs. Used wherever criolib reads or creates a file in an
image's root filesystem.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from criolib.errors import CriolibError

__all__ = ["SymlinkLoop", "secure_join"]

_MAX_SYMLINKS = 255


class SymlinkLoop(CriolibError, OSError):
    """More than 255 symlinks were followed: a loop, or a hostile tree."""


def secure_join(root: str | os.PathLike[str], unsafe: str) -> Path:
    """``root`` joined with ``unsafe`` with every symlink resolved inside ``root``.

    Components that do not exist are kept as they are (so the result can be
    created). Raises :class:`SymlinkLoop` after 255 links.
    """
    root_path = Path(os.path.abspath(root))
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root_path.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                raise
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise SymlinkLoop(errno.ELOOP, "too many levels of symbolic links", str(candidate))
        if target.startswith("/"):
            resolved = []
        more = [p for p in target.split("/") if p not in ("", ".")]
        pending.extend(reversed(more))
    return root_path.joinpath(*resolved)
