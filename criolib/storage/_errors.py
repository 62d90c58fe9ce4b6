"""Errors of :mod:`criolib.storage` (layers, images and containers on disk).

::

    criolib.errors.CriolibError
    └── StorageError
        ├── LayerUnknown (KeyError)        no layer with that id (in the driver or the store)
        │   └── UnknownReference           no image, container or layer by that reference (also
        │                                  an ImageUnknown and a ContainerUnknown)
        ├── LayerExists (FileExistsError)  a layer with that id is already there
        ├── InvalidLayerID (ValueError)    an id that cannot name a directory (empty, "/", "l")
        ├── InvalidID (ValueError)         an image or container id that is not valid (an image
        │                                  id must be 64 lowercase hex digits)
        ├── ImageUnknown (KeyError)        no image by that id, id prefix, name or digest
        ├── BigDataUnknown (KeyError)      an image has no big data item by that key; names both
        ├── ContainerUnknown (KeyError)    no container by that id, id prefix or name
        ├── AmbiguousID (KeyError)         an id prefix that several objects share
        ├── LayerInUse                     a layer that a child, image, container or mount uses
        ├── ImageInUse                     an image that containers use (names them)
        ├── NameConflict (ValueError)      a container name another container has
        ├── IDConflict (FileExistsError)   an id already taken by a different object
        ├── StoreCorrupt                   a metadata file that cannot be read; names it
        ├── ConfigError (ValueError)       a bad storage.conf; names the file and the key
        ├── LockTimeout (TimeoutError)     the store lock was not free in time; names the file
        ├── LayerFormatError (ValueError)  a layer blob that is not a readable tar: bad or
        │                                  truncated compression, a broken header; names
        │                                  the layer, the entry and the offset
        ├── UnsafeArchive (ValueError)     a tar entry refused as hostile or impossible
        │                                  (escapes the root, links outside, a device when
        │                                  devices are not allowed); names the entry, says why
        ├── DigestMismatch (ValueError)    a layer's diff_id or digest is not the expected
        │                                  one; .expected and .actual hold both
        │   └── ImageIDMismatch            an image id that is not the sha256 of its config
        ├── LayerIOError (OSError)         writing or reading a layer's files failed (disk
        │                                  full, permission, an xattr the fs refuses);
        │                                  names the entry; the OSError is the __cause__
        ├── MetadataIOError (OSError)      reading or writing a metadata file, a big data item,
        │                                  a directory of the store failed (disk full, a
        │                                  graphroot that is a file); names the file and the
        │                                  object; the OSError is the __cause__
        └── DriverError                    a graph driver failed; an OSError is the __cause__
            ├── DriverUnknown (ValueError)     no driver by that name; lists the known ones
            ├── DuplicateDriver (ValueError)   two drivers registered under one name
            ├── InvalidDriverOption (ValueError)   a driver option it does not know
            ├── DriverUnsupported          the driver cannot work here (no overlay in the
            │                              kernel, overlay on overlay, no CAP_SYS_ADMIN)
            └── MountError                 mount(2)/umount(2) failed: names the layer, the
                                           errno text and the length of the mount options
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = [
    "AmbiguousID",
    "BigDataUnknown",
    "ConfigError",
    "ContainerUnknown",
    "DigestMismatch",
    "DriverError",
    "DriverUnknown",
    "DriverUnsupported",
    "DuplicateDriver",
    "IDConflict",
    "ImageIDMismatch",
    "ImageInUse",
    "ImageUnknown",
    "InvalidDriverOption",
    "InvalidID",
    "InvalidLayerID",
    "LayerExists",
    "LayerFormatError",
    "LayerIOError",
    "LayerInUse",
    "LayerUnknown",
    "LockTimeout",
    "MetadataIOError",
    "MountError",
    "NameConflict",
    "StorageError",
    "StoreCorrupt",
    "UnknownReference",
    "UnsafeArchive",
]


class StorageError(CriolibError):
    """Base class of every error raised by :mod:`criolib.storage`."""


class LayerUnknown(StorageError, KeyError):
    """No layer with that id; the message names it and where it was looked for."""

    def __str__(self) -> str:
        # KeyError would quote the message (repr of its argument).
        return str(self.args[0]) if self.args else ""


class LayerExists(StorageError, FileExistsError):
    """A layer with that id is already there (in the driver's home or the store)."""

    def __str__(self) -> str:
        # OSError would format (errno, strerror) pairs; keep the message as written.
        return str(self.args[0]) if self.args else ""


class InvalidLayerID(StorageError, ValueError):
    """A layer id that cannot name a directory: empty, with "/", a dot name, or "l"."""


class DriverError(StorageError):
    """A graph driver (overlay, vfs, a plug-in) failed; an ``OSError`` is the ``__cause__``."""


class DriverUnknown(DriverError, ValueError):
    """No graph driver is registered under that name; the message lists the known ones."""


class DuplicateDriver(DriverError, ValueError):
    """Two graph drivers were registered (or found as entry points) under one name."""


class InvalidDriverOption(DriverError, ValueError):
    """A driver option (``mountopt=...``) the driver does not know or cannot use."""


class DriverUnsupported(DriverError):
    """The driver cannot work on this machine or backing filesystem; says why."""


class MountError(DriverError):
    """Mounting or unmounting a layer failed.

    ``layer_id`` names the layer, ``errno`` is the kernel's error number (``None``
    when no syscall failed) and ``options_length`` the bytes of mount data passed
    (the kernel reads at most one page of it).
    """

    def __init__(self, message: str, *, layer_id: str, errno: int | None = None,
                 options_length: int | None = None) -> None:
        super().__init__(message)
        self.layer_id = layer_id
        self.errno = errno
        self.options_length = options_length


class _KeyErrorMessage(KeyError):
    """A KeyError that prints its message as written, not quoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ImageUnknown(StorageError, _KeyErrorMessage):
    """No image by that id, unique id prefix, name or digest; the message names the reference."""


class ContainerUnknown(StorageError, _KeyErrorMessage):
    """No container by that id, unique id prefix or name."""


class AmbiguousID(StorageError, _KeyErrorMessage):
    """An id prefix that matches several objects; the message names them."""


class LayerInUse(StorageError):
    """A layer that cannot go: a child layer, an image, a container or a mount uses it.

    ``users`` names what uses it (``"layer <id>"``, ``"image <id>"``, ...).
    """

    def __init__(self, message: str, *, layer_id: str, users: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.layer_id = layer_id
        self.users = users


class ImageInUse(StorageError):
    """An image that containers use; ``containers`` holds their ids."""

    def __init__(self, message: str, *, image_id: str, containers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.image_id = image_id
        self.containers = containers


class NameConflict(StorageError, ValueError):
    """A container name that another container already has (container names never move)."""


class IDConflict(StorageError, FileExistsError):
    """An id already taken by a different object (an image on another layer, a container)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreCorrupt(StorageError):
    """A metadata file (layers.json, images.json, ...) that cannot be read; names the file."""


class ConfigError(StorageError, ValueError):
    """A storage.conf that cannot be used: names the file and the key, says what was wrong."""


class LockTimeout(StorageError, TimeoutError):
    """The store lock was not free within the timeout; ``path`` is the lock file."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LayerFormatError(StorageError, ValueError):
    """A layer blob that cannot be read as a tar archive (image-spec v1.1 layer.md).

    Bad or truncated gzip/zstd data, a broken or truncated tar header, a PAX record
    that does not parse, a sparse file. The message names the layer, the entry and
    its offset in the uncompressed stream.
    """


class UnsafeArchive(StorageError, ValueError):
    """A tar entry refused because applying it could reach outside the layer root.

    Names that climb above the root after cleaning (containers/storage's
    ``breakoutError``), hard links to something outside the root or not in it,
    whiteouts of ``.``/``..``, over-long names, device nodes when they are not
    allowed, unknown entry types. ``entry`` is the name as stored in the tar.
    """

    def __init__(self, message: str, *, entry: str = "") -> None:
        super().__init__(message)
        self.entry = entry


class DigestMismatch(StorageError, ValueError):
    """A layer's computed diff_id or compressed digest differs from the expected one."""

    def __init__(self, message: str, *, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LayerIOError(StorageError, OSError):
    """Creating or reading a layer's files failed (ENOSPC, EPERM, an xattr the fs refuses).

    ``errno`` is the failed call's; the message names the entry; the ``OSError``
    is the ``__cause__``.
    """

    def __str__(self) -> str:
        # OSError would format (errno, strerror) pairs; keep the message as written.
        return str(self.args[0]) if self.args else ""


class MetadataIOError(StorageError, OSError):
    """Reading or writing the store's own files failed: a metadata file (layers.json...),
    a big data item, ``mounts.json``, a container's directory, the graphroot itself.

    ``errno`` is the failed call's, ``filename`` the file; the message names the file
    and the object (layer, image, container) being changed; the ``OSError`` is the
    ``__cause__``. Nothing was recorded: the change did not happen.
    """

    def __init__(self, message: str, *, filename: object = None,
                 errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = None if filename is None else str(filename)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidID(StorageError, ValueError):
    """An image or container id that cannot be used (an image id is 64 lowercase hex)."""


class ImageIDMismatch(DigestMismatch):
    """An image id that is not the sha256 of the config given with it (image-spec: the
    image id is the config's digest); ``expected`` is the id, ``actual`` the config's."""


class BigDataUnknown(StorageError, _KeyErrorMessage):
    """An image without a big data item by that key; ``image_id`` and ``key`` name both."""

    def __init__(self, message: str, *, image_id: str = "", key: str = "") -> None:
        super().__init__(message)
        self.image_id = image_id
        self.key = key


class UnknownReference(ImageUnknown, ContainerUnknown, LayerUnknown):
    """No image, container or layer by that id, name or prefix (a call that takes any).

    It is each of :class:`ImageUnknown`, :class:`ContainerUnknown` and
    :class:`LayerUnknown` (and so a ``KeyError``): catch whichever fits.
    """
