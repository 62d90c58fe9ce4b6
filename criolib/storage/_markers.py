"""What a store writes about itself: its driver, and which graphroot a runroot serves.

``<graphroot>/driver``
    the graph driver's name, written when the store is first used. Records in
    ``layers.json`` name layer directories of that driver only; opening the
    store with another driver would make every layer look missing (and
    :func:`repair` remove every record), so it is refused with
    :class:`ConfigError` naming both. A store made before this file existed
    adopts the driver whose home holds its recorded layers.
``<runroot>/graphroot``
    the graphroot a runroot counts mounts for. Two stores sharing one runroot
    would count each other's mounts, so a runroot is claimed by the first
    graphroot that uses it and refused to any other.

:func:`runroot_for` derives a runroot of its own for a graphroot given without
one (``--graphroot`` alone), and :func:`refuse_foreign_store` keeps criolib out of
a containers/storage (podman, CRI-O) graphroot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from criolib._atomic import atomic_write_bytes
from criolib.storage._errors import ConfigError
from criolib.storage._lock import StoreLock
from criolib.storage._records import metadata_error

__all__ = [
    "DRIVER_FILE",
    "RUNROOT_MARKER",
    "claim_driver",
    "claim_runroot",
    "refuse_foreign_store",
    "runroot_for",
]

DRIVER_FILE = "driver"
RUNROOT_MARKER = "graphroot"
#: Entries of a graphroot that are not a driver's home.
_NOT_HOMES = {"staging", "images", "containers", "locks"}


def runroot_for(graphroot: Path, base: Path) -> Path:
    """A runroot of ``graphroot``'s own, next to ``base``: ``<base>-<sha256(graphroot)[:12]>``."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(graphroot))).hexdigest()[:12]
    return base.with_name(f"{base.name}-{digest}")


def refuse_foreign_store(graphroot: Path) -> None:
    """Refuse a graphroot that containers/storage (podman, CRI-O) owns.

    Both keep layers in ``<graphroot>/<driver>/`` but containers/storage keeps its
    metadata elsewhere (``<driver>-layers/layers.json``, one set per driver):
    criolib's check and gc would take its layers for debris.
    """
    for kind in ("layers", "images", "containers"):
        for marker in graphroot.glob(f"*-{kind}/{kind}.json"):
            raise ConfigError(
                f"{graphroot} is a containers/storage store (podman, CRI-O, buildah: it has "
                f"{marker.relative_to(graphroot)}); criolib keeps its own format and must "
                "not share it. Set another graphroot (storage.conf or --graphroot)")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def claim_driver(graphroot: Path, driver: str, lock: StoreLock) -> None:
    """Record ``driver`` as the store's on first use; :class:`ConfigError` on a mismatch."""
    path = graphroot / DRIVER_FILE
    recorded = _read_text(path)
    if recorded is None:
        with lock.exclusive():
            recorded = _read_text(path)
            if recorded is None:
                recorded = _legacy_driver(graphroot) or driver
                if recorded == driver:
                    try:
                        atomic_write_bytes(path, f"{driver}\n".encode(), mode=0o644)
                    except OSError as exc:
                        raise metadata_error(exc, path, f"record the driver {driver}"
                                             ) from exc
    if recorded != driver:
        raise ConfigError(
            f"{graphroot} is a store of the {recorded!r} graph driver (its layers are in "
            f"{graphroot / recorded}), not of {driver!r}: open it with driver "
            f"{recorded!r}, or use another graphroot for {driver!r}")


def _legacy_driver(graphroot: Path) -> str | None:
    """The driver whose home holds the layers ``layers.json`` records, if any are recorded."""
    try:
        records = json.loads((graphroot / "layers.json").read_bytes() or b"[]")
        ids = [str(r["id"]) for r in records if isinstance(r, dict) and "id" in r]
    except (OSError, ValueError, TypeError):
        return None
    if not ids:
        return None
    best, best_count = None, 0
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(graphroot)):
            home = graphroot / name
            if name in _NOT_HOMES or name.startswith(".") or not home.is_dir():
                continue
            count = sum(1 for i in ids if (home / i).is_dir())
            if count > best_count:
                best, best_count = name, count
    return best


def claim_runroot(runroot: Path, graphroot: Path) -> None:
    """Mark ``runroot`` as ``graphroot``'s; :class:`ConfigError` if another graphroot has it."""
    marker = runroot / RUNROOT_MARKER
    want = os.fspath(graphroot)
    owner = _read_text(marker)
    if owner is None:
        try:
            fd, tmp = tempfile.mkstemp(prefix=".graphroot.", suffix=".tmp", dir=runroot)
            try:
                os.write(fd, f"{want}\n".encode())
            finally:
                os.close(fd)
            try:
                os.link(tmp, marker)  # complete or absent, never half-written; never replaced
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise metadata_error(exc, marker, f"claim the runroot for {graphroot}") from exc
        owner = _read_text(marker)
    if owner != want:
        raise ConfigError(
            f"runroot {runroot} counts the mounts of graphroot {owner}, not of {want}: two "
            "stores cannot share a runroot. Give this graphroot its own runroot (or none, "
            "and one is derived from it)")
