"""Mount reference counts in ``<runroot>/mounts.json`` and the mounts really there.

containers/storage keeps a layer's ``mountcount`` in ``mountpoints.json`` under its
runroot; here one file lists ``{"id", "path", "count"}`` per mounted layer. The
runroot is a tmpfs, so after a reboot nothing is mounted and nothing is counted.

The file is a cache that can be rebuilt: one that cannot be read is treated as
empty (every mount it counted then shows as uncounted, which
:func:`criolib.storage.check` reports and :func:`criolib.storage.repair`
unmounts) rather than making the store unusable. :func:`live_mounts` reads
``/proc/self/mountinfo`` for what is mounted under a driver's home, to compare.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import attrs

from criolib._atomic import atomic_write_bytes
from criolib.storage._drivers import GraphDriver
from criolib.storage._drivers._fs import mounts_under
from criolib.storage._records import metadata_error

__all__ = ["Mount", "MountTable", "live_mounts"]

log = logging.getLogger("criolib.storage")


@attrs.frozen
class Mount:
    """One counted mount: the layer, where it is mounted and how many callers hold it."""

    id: str
    path: str
    count: int


class MountTable:
    """The counts in ``<runroot>/mounts.json``; not locked (the store lock orders callers)."""

    def __init__(self, runroot: Path) -> None:
        self.runroot = runroot
        self.path = runroot / "mounts.json"
        self.entries: dict[str, Mount] = {}
        #: Why the file could not be read at the last load ("" when it could).
        self.unreadable = ""

    def load(self) -> None:
        """Read the file again; an unreadable one counts as empty (see :attr:`unreadable`)."""
        self.entries, self.unreadable = {}, ""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            self._give_up(f"cannot read it: {exc.strerror or exc}")
            return
        try:
            data = json.loads(raw) if raw.strip() else []
            if not isinstance(data, list):
                raise TypeError(f"a JSON list was expected, not {type(data).__name__}")
            self.entries = {str(e["id"]): Mount(str(e["id"]), str(e["path"]), int(e["count"]))
                            for e in data}
        except (ValueError, TypeError, KeyError) as exc:
            self._give_up(f"not a valid mount list: {exc}")

    def _give_up(self, why: str) -> None:
        self.entries, self.unreadable = {}, why
        log.warning("%s: %s; counting no mounts (check() reports what is mounted)",
                    self.path, why)

    def save(self, what: str) -> None:
        """Write the file atomically; :class:`MetadataIOError` names ``what`` changed."""
        entries = [{"id": m.id, "path": m.path, "count": m.count}
                   for m in self.entries.values() if m.count > 0]
        try:
            self.runroot.mkdir(parents=True, exist_ok=True)
            # The runroot is a tmpfs: no fsync to pay for.
            atomic_write_bytes(self.path, json.dumps(entries).encode(), mode=0o600,
                               durable=False)
        except OSError as exc:
            raise metadata_error(exc, self.path, f"count the mounts of {what}") from exc
        self.unreadable = ""

    def count(self, layer_id: str) -> int:
        mount = self.entries.get(layer_id)
        return mount.count if mount else 0

    def counted(self) -> dict[str, tuple[int, Path]]:
        """layer id -> (reference count, mount point) for every counted mount."""
        return {m.id: (m.count, Path(m.path)) for m in self.entries.values() if m.count > 0}


def live_mounts(driver: GraphDriver) -> dict[str, list[str]]:
    """What is mounted under ``driver.home``: layer id (the first path part) -> mount points.

    A mount point that is not inside a layer directory is listed under ``""``.
    """
    home = os.path.realpath(driver.home)
    found: dict[str, list[str]] = {}
    if not os.path.isdir(home):
        return found
    for entry in mounts_under(home):
        rel = os.path.relpath(entry.mountpoint, home)
        layer = "" if rel in {".", ""} or rel.startswith("..") else rel.split("/", 1)[0]
        found.setdefault(layer, []).append(entry.mountpoint)
    return found
