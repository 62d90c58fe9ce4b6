"""The attachment result cache, in libcni's on-disk layout.

libcni (containernetworking/cni ``libcni/api.go``, cache kind ``cniCacheV1``):
one JSON file per attachment at ``<cache_dir>/results/<network>-<container>-<ifname>``
holding ``kind``, ``containerId``, ``config`` (base64 of the network list
bytes), ``ifName``, ``networkName``, ``netns``, ``cniArgs``, ``capabilityArgs``
and ``result``. CRI-O, cnitool and criolib can read each other's entries.

:meth:`ResultCache.lock` serialises the processes working on one attachment
with an ``flock`` on ``<cache_dir>/locks/<network>-<container>-<ifname>`` (a
criolib addition: libcni leaves locking to its caller).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib._atomic import atomic_write_bytes

__all__ = ["CACHE_KIND", "CachedAttachment", "ResultCache"]

CACHE_KIND = "cniCacheV1"

log = logging.getLogger("criolib.cni")


@attrs.frozen
class CachedAttachment:
    """One cache entry: what ADD was given and what it returned."""

    network: str
    container_id: str
    ifname: str
    config: bytes
    netns: str = ""
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = attrs.field(factory=dict)
    result: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        """The libcni ``cachedInfo`` document."""
        doc: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network,
            "netns": self.netns,
        }
        if self.cni_args:
            doc["cniArgs"] = [list(kv) for kv in self.cni_args]
        if self.capability_args:
            doc["capabilityArgs"] = dict(self.capability_args)
        if self.result is not None:
            doc["result"] = dict(self.result)
        return json.dumps(doc).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CachedAttachment:
        """Parse a ``cachedInfo`` document; :class:`ValueError` when it is not one."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("kind") != CACHE_KIND:
            raise ValueError(f"not a {CACHE_KIND} cache entry")
        args: Sequence[Any] = doc.get("cniArgs") or ()
        result = doc.get("result")
        return cls(
            network=str(doc.get("networkName", "")),
            container_id=str(doc.get("containerId", "")),
            ifname=str(doc.get("ifName", "")),
            config=base64.b64decode(doc.get("config") or ""),
            netns=str(doc.get("netns", "")),
            cni_args=tuple((str(k), str(v)) for k, v in args),
            capability_args=dict(doc.get("capabilityArgs") or {}),
            result=result if isinstance(result, dict) else None,
        )


class ResultCache:
    """The ``results`` directory of a libcni cache dir."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / "results"
        self.lock_dir = Path(cache_dir) / "locks"

    def path(self, network: str, container_id: str, ifname: str) -> Path:
        """Where the entry of one attachment lives (libcni's ``getCacheFilePath``)."""
        return self.dir / f"{network}-{container_id}-{ifname}"

    @contextlib.contextmanager
    def lock(self, network: str, container_id: str, ifname: str, *,
             remove: bool = False) -> Iterator[None]:
        """Hold the attachment's exclusive lock; ``remove`` drops its file on success.

        The file is also dropped whenever the attachment has no cache entry when
        the lock is released (a failed ADD, a DEL or CHECK of an unknown one).

        The lock file is checked after locking (same inode as the path) so a
        process that waited on a file another one removed starts again on the new one.
        """
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.lock_dir / f"{network}-{container_id}-{ifname}"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    continue
                held = os.fstat(fd)
                if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
                    continue
                ok = False
                try:
                    yield
                    ok = True
                finally:
                    # no lock file outlives its attachment: a failed ADD or a DEL
                    # of an unknown attachment leaves none behind
                    if (remove and ok) or not self.path(network, container_id, ifname).exists():
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                return
            finally:
                os.close(fd)

    def get(self, network: str, container_id: str, ifname: str) -> CachedAttachment | None:
        """The entry, or ``None`` when absent or unreadable (logged)."""
        p = self.path(network, container_id, ifname)
        try:
            return CachedAttachment.from_json(p.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable CNI cache entry %s: %s", p, exc)
            return None

    def put(self, entry: CachedAttachment) -> None:
        """Write an entry atomically."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(self.path(entry.network, entry.container_id, entry.ifname),
                           entry.to_json(), mode=0o600)

    def remove(self, network: str, container_id: str, ifname: str) -> None:
        """Delete an entry; absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.path(network, container_id, ifname).unlink()

    def entries(self, network: str | None = None) -> Iterator[CachedAttachment]:
        """Every readable entry (of ``network`` when given)."""
        try:
            files = sorted(self.dir.iterdir())
        except FileNotFoundError:
            return
        for p in files:
            if p.name.startswith("."):
                continue
            try:
                entry = CachedAttachment.from_json(p.read_bytes())
            except (OSError, ValueError):
                continue
            if network is None or entry.network == network:
                yield entry
