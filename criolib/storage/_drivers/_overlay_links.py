"""Checking and repairing an overlay layer's short name and its links to its parents.

Each overlay layer has a short name (``<id>/link``) and a symlink
``l/<short> -> ../<id>/diff``; children name their parents by these links in
``<id>/lower`` and mounts pass them to the kernel. A lost ``l/`` link (a crash
between creating it and syncing ``l/``, a hand-made cleanup) makes every child of
that layer fail to mount with ENOENT. containers/storage repairs these at start-up
(``recreateSymlinks`` in drivers/overlay/overlay.go): a missing link is made again
from the layer's ``link`` file, and a lost ``link`` file is recovered from the
``l/`` entry that still points at the layer. This module does the same, one
layer at a time, for :meth:`OverlayDriver.verify_layer` and
:meth:`OverlayDriver.repair_layer`.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from criolib._atomic import atomic_write_bytes, fsync_dir

__all__ = ["LINK_DIR", "new_short_name", "repair", "verify"]

LINK_DIR = "l"
_LINK_LENGTH = 26  # c/storage idLength: 128 lowers of "l/<26>:" fit a page with room left
_SHORT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_short_name() -> str:
    """A fresh random short name: 26 base32 characters, like containers/storage's."""
    return base64.b32encode(os.urandom(20)).decode()[:_LINK_LENGTH]


def _read_link_file(d: Path) -> str | None:
    try:
        short = (d / "link").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return short if _SHORT.fullmatch(short) else None


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _lowers(d: Path) -> list[str] | None:
    try:
        text = (d / "lower").read_text().strip()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError):
        return None
    return [x for x in text.split(":") if x]


def verify(home: Path, layer_id: str) -> list[str]:
    """What keeps the overlay layer ``layer_id`` from mounting or exporting; ``[]`` if nothing."""
    d = home / layer_id
    if not d.is_dir():
        return [f"layer directory {d} is missing"]
    problems = []
    if not (d / "diff").is_dir():
        problems.append(f"{d / 'diff'} is missing: the layer's files are gone")
    short = _read_link_file(d)
    if short is None:
        problems.append(f"{d / 'link'} is missing or does not hold a short name")
    else:
        target = _readlink(home / LINK_DIR / short)
        if target is None:
            problems.append(f"short link {home / LINK_DIR / short} is missing: children of "
                            "this layer cannot be mounted")
        elif target != f"../{layer_id}/diff":
            problems.append(f"short link {home / LINK_DIR / short} points at {target!r}, "
                            f"not ../{layer_id}/diff")
    lowers = _lowers(d)
    if lowers is None:
        problems.append(f"{d / 'lower'} cannot be read")
    for i, entry in enumerate(lowers or []):
        if not (home / entry).is_dir():
            problems.append(f"lower entry {entry} (parent {i + 1} of {len(lowers or [])}) "
                            "does not lead to a layer: the layer cannot be mounted")
    if not (d / "work").is_dir():
        problems.append(f"{d / 'work'} is missing: the layer cannot be mounted writable")
    return problems


def repair(home: Path, layer_id: str) -> list[str]:
    """Recreate what :func:`verify` finds missing and can be rebuilt; say what was done.

    Rebuilt: the ``l/`` link (from the ``link`` file), the ``link`` file (from an
    ``l/`` entry pointing at the layer, else a new short name), the ``l/`` links of
    the parents named in ``lower`` (from their ``link`` files) and ``work/``.
    A missing ``diff/`` cannot be rebuilt: that layer has to be pulled again.
    """
    d = home / layer_id
    if not (d / "diff").is_dir():
        return []
    done: list[str] = []
    links = home / LINK_DIR
    links.mkdir(mode=0o755, exist_ok=True)
    own = f"../{layer_id}/diff"
    short = _read_link_file(d)
    if short is None or _readlink(links / short) not in (None, own):
        short = _recover_short(links, own) or _claim_short(links, own)
        atomic_write_bytes(d / "link", short.encode())
        done.append(f"wrote {d / 'link'} ({short})")
    elif _readlink(links / short) is None:
        if os.path.lexists(links / short):  # not a symlink: in the way
            os.unlink(links / short)
        os.symlink(own, links / short)
        done.append(f"recreated short link {links / short} -> {own}")
    missing = [e for e in (_lowers(d) or []) if not (home / e).is_dir()]
    if missing:
        by_short = _short_names(home)
        for entry in missing:
            name = entry.removeprefix(f"{LINK_DIR}/")
            parent = by_short.get(name)
            if parent is None or "/" in name or _readlink(links / name) is not None:
                continue  # the parent is gone, or the link is there and broken otherwise
            os.symlink(f"../{parent}/diff", links / name)
            done.append(f"recreated short link {links / name} -> ../{parent}/diff")
    if not (d / "work").is_dir():
        (d / "work").mkdir(mode=0o700)
        done.append(f"made {d / 'work'}")
    if done:
        fsync_dir(links)
        fsync_dir(d)
    return done


def _recover_short(links: Path, own: str) -> str | None:
    """The name of an ``l/`` entry already pointing at ``own`` (a lost ``link`` file)."""
    for name in sorted(os.listdir(links)):
        if _readlink(links / name) == own:
            return name
    return None


def _claim_short(links: Path, own: str) -> str:
    while True:
        short = new_short_name()
        try:
            os.symlink(own, links / short)
            return short
        except FileExistsError:
            continue


def _short_names(home: Path) -> dict[str, str]:
    """Short name -> layer id, from every layer's ``link`` file."""
    out: dict[str, str] = {}
    for name in os.listdir(home):
        if name == LINK_DIR or not (home / name).is_dir():
            continue
        short = _read_link_file(home / name)
        if short is not None and (home / name / "diff").is_dir():
            out.setdefault(short, name)
    return out
