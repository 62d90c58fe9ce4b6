"""Graph drivers: how layers sit on disk and become a container's root filesystem.

The :class:`GraphDriver` protocol, the registry (:func:`get_driver`,
:func:`register_driver`, :func:`driver_names`) and the two built-in drivers,
``overlay`` (:class:`OverlayDriver`) and ``vfs`` (:class:`VFSDriver`); see
containers/storage ``drivers/`` and docs/storage.md.
"""

from __future__ import annotations

from criolib.storage._drivers._base import (
    ENTRY_POINT_GROUP,
    DriverFactory,
    GraphDriver,
    driver_names,
    get_driver,
    register_driver,
)
from criolib.storage._drivers.overlay import OverlayDriver
from criolib.storage._drivers.vfs import VFSDriver

__all__ = [
    "ENTRY_POINT_GROUP",
    "DriverFactory",
    "GraphDriver",
    "OverlayDriver",
    "VFSDriver",
    "driver_names",
    "get_driver",
    "register_driver",
]

register_driver("overlay", OverlayDriver)
register_driver("vfs", VFSDriver)
