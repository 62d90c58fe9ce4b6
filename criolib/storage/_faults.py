"""Deterministic crash points for tests: ``CRIOLIB_STORAGE_CRASH_AT=<point>[:<n>]``.

A store's writes pass named points between the steps that must survive a crash
(a layer's directory in place but not recorded, a record dropped but its
directory not yet deleted...). With the variable set, the process ends with
``os._exit(137)`` (what a SIGKILL looks like to a parent) at the ``n``-th time
(default 1st) it reaches that point: no ``finally`` runs, no file is closed
cleanly, exactly like a kill. Tests run a writer in a child process with the
variable set, then check that :func:`criolib.storage.check` and
:func:`criolib.storage.repair` cope. Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO, cast

__all__ = ["CRASH_POINTS", "ENV_CRASH_AT", "crash_point", "tripwire"]

ENV_CRASH_AT = "CRIOLIB_STORAGE_CRASH_AT"

#: Every point, in the order a pull-run-delete cycle meets them.
CRASH_POINTS = (
    "in-layer-extract",                     # half the layer's tar read into staging
    "after-layer-rename",                   # layer directory in place, no record yet
    "after-layer-record",                   # layers.json written (lock file still there)
    "after-bigdata",                        # big data files written, no image record
    "after-image-record",                   # images.json written
    "after-container-layer",                # container's layer recorded, no container
    "after-container-dir",                  # userdata made, no container record
    "after-container-record",               # containers.json written
    "after-mount-before-count",             # mounted, mounts.json not written
    "after-unmount-before-count",           # unmounted, mounts.json still counts it
    "after-container-record-drop",          # container record gone, its layer not
    "after-image-record-drop",              # image record gone, its directory not
    "after-record-drop-before-dir-delete",  # layer records gone, their directories not
)

_hits: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """End the process here if ``$CRIOLIB_STORAGE_CRASH_AT`` names this point (and count)."""
    wanted = os.environ.get(ENV_CRASH_AT)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        reached = _hits[name] >= (int(count) if count else 1)
    if reached:
        os._exit(137)


class _Tripwire:
    """A blob reader that reaches ``in-layer-extract`` on each read after its first."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._reads = 0

    def read(self, n: int = -1) -> bytes:
        self._reads += 1
        if self._reads > 1:
            crash_point("in-layer-extract")
        return self._source.read(n)

    def readable(self) -> bool:
        return True


def tripwire(source: BinaryIO) -> BinaryIO:
    """``source``, or a reader that crashes part way when ``in-layer-extract`` is asked for."""
    if not os.environ.get(ENV_CRASH_AT, "").startswith("in-layer-extract"):
        return source
    return cast(BinaryIO, _Tripwire(source))
