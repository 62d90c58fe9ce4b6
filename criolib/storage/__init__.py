"""criolib.storage: layers, images and containers on disk (containers/storage).

- :class:`Store`, the front door: layers (content-addressed, parent chains,
  stored once), images (names, digests, big data), containers (a read-write layer
  and a directory each), mounts with reference counts, one cross-process lock
  and crash-safe metadata. :meth:`Store.from_config` reads storage.conf
  (:class:`StorageConfig`).
- :func:`check`, :func:`repair`, :func:`gc` and :func:`disk_usage` keep it healthy;
  ``CRIOLIB_STORAGE_CRASH_AT`` (:data:`ENV_CRASH_AT`, one of :data:`CRASH_POINTS`)
  makes a writer die at a named point, for crash tests.
- The graph drivers (:class:`GraphDriver`, :func:`get_driver`, ``overlay`` and
  ``vfs``) and the layer tarball engine (:func:`apply_layer`, :func:`export_layer`).

Every error is a :class:`StorageError`. See docs/storage.md.
"""

from __future__ import annotations

import logging

from criolib.storage._archive import (
    OPAQUE_XATTR,
    ApplyResult,
    Compression,
    WhiteoutMode,
    apply_layer,
    detect_compression,
    export_layer,
)
from criolib.storage._check import CheckReport, Problem, check
from criolib.storage._conf import StorageConfig
from criolib.storage._containers import Container, ContainerStore
from criolib.storage._drivers import (
    ENTRY_POINT_GROUP,
    DriverFactory,
    GraphDriver,
    OverlayDriver,
    VFSDriver,
    driver_names,
    get_driver,
    register_driver,
)
from criolib.storage._errors import (
    AmbiguousID,
    BigDataUnknown,
    ConfigError,
    ContainerUnknown,
    DigestMismatch,
    DriverError,
    DriverUnknown,
    DriverUnsupported,
    DuplicateDriver,
    IDConflict,
    ImageIDMismatch,
    ImageInUse,
    ImageUnknown,
    InvalidDriverOption,
    InvalidID,
    InvalidLayerID,
    LayerExists,
    LayerFormatError,
    LayerInUse,
    LayerIOError,
    LayerUnknown,
    LockTimeout,
    MetadataIOError,
    MountError,
    NameConflict,
    StorageError,
    StoreCorrupt,
    UnknownReference,
    UnsafeArchive,
)
from criolib.storage._faults import CRASH_POINTS, ENV_CRASH_AT
from criolib.storage._images import Image, ImageStore
from criolib.storage._layers import Layer, LayerStore
from criolib.storage._lock import StoreLock
from criolib.storage._records import layer_id_for
from criolib.storage._repair import gc, repair
from criolib.storage._store import Store
from criolib.storage._usage import (
    ContainerUsage,
    DiskUsage,
    ImageUsage,
    LayerUsage,
    disk_usage,
)

logging.getLogger("criolib.storage").addHandler(logging.NullHandler())

__all__ = [
    "CRASH_POINTS",
    "ENTRY_POINT_GROUP",
    "ENV_CRASH_AT",
    "OPAQUE_XATTR",
    "AmbiguousID",
    "ApplyResult",
    "BigDataUnknown",
    "CheckReport",
    "Compression",
    "ConfigError",
    "Container",
    "ContainerStore",
    "ContainerUnknown",
    "ContainerUsage",
    "DigestMismatch",
    "DiskUsage",
    "DriverError",
    "DriverFactory",
    "DriverUnknown",
    "DriverUnsupported",
    "DuplicateDriver",
    "GraphDriver",
    "IDConflict",
    "Image",
    "ImageIDMismatch",
    "ImageInUse",
    "ImageStore",
    "ImageUnknown",
    "ImageUsage",
    "InvalidDriverOption",
    "InvalidID",
    "InvalidLayerID",
    "Layer",
    "LayerExists",
    "LayerFormatError",
    "LayerIOError",
    "LayerInUse",
    "LayerStore",
    "LayerUnknown",
    "LayerUsage",
    "LockTimeout",
    "MetadataIOError",
    "MountError",
    "NameConflict",
    "OverlayDriver",
    "Problem",
    "StorageConfig",
    "StorageError",
    "Store",
    "StoreCorrupt",
    "StoreLock",
    "UnknownReference",
    "UnsafeArchive",
    "VFSDriver",
    "WhiteoutMode",
    "apply_layer",
    "check",
    "detect_compression",
    "disk_usage",
    "driver_names",
    "export_layer",
    "gc",
    "get_driver",
    "layer_id_for",
    "register_driver",
    "repair",
]
