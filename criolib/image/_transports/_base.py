"""The seams between the copy engine and the transports: four Protocols and a context.

containers/image ``types.ImageSource``, ``types.ImageDestination``,
``types.ImageTransport``, ``types.ImageReference`` and ``types.SystemContext``,
cut down to what criolib's copy engine uses (docs/image.md "Contracts").

A transport parses the part of ``transport:name`` after the colon into an
:class:`ImageReference`; the reference opens an :class:`ImageSource` to read from
or an :class:`ImageDestination` to write to. Properties are declared read-only
here, so an implementation may provide them as plain attributes, attrs fields or
properties alike.

Who verifies what: a source hands out blob bytes as stored and its consumer (the
copy engine) checks digest and size; a destination checks every blob it is given
before keeping it and makes nothing visible before :meth:`ImageDestination.commit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

import attrs

from criolib.image._platform import Platform

if TYPE_CHECKING:
    from criolib.image._credentials import Credentials
    from criolib.image._registries_conf import RegistriesConf
    from criolib.storage import Store

__all__ = ["ImageDestination", "ImageReference", "ImageSource", "SystemContext", "Transport"]


@runtime_checkable
class ImageSource(Protocol):
    """An image to read: its manifest(s) and blobs (containers/image ``ImageSource``)."""

    @property
    def reference(self) -> str:
        """``transport:name`` as given."""

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        """(manifest bytes, media type); ``instance`` = a digest inside an index."""

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        """A stream of the blob's bytes; the copy engine verifies digest and size."""

    def has_blob_cheaply(self, digest: str) -> bool:
        """True if the blob is here and telling costs no download."""

    def close(self) -> None:
        """Release files, connections and temporary copies."""


@runtime_checkable
class ImageDestination(Protocol):
    """Where an image is written (containers/image ``ImageDestination``)."""

    @property
    def reference(self) -> str:
        """``transport:name`` as given."""

    @property
    def supported_manifest_types(self) -> tuple[str, ...]:
        """Manifest media types this destination stores; the first is preferred."""

    def has_blob(self, digest: str, size: int = -1) -> bool:
        """True if the destination already holds the blob (it need not be sent)."""

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        """Store a blob; must verify digest/size and commit nothing unverified."""

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        """Layers in order (index = position); default: put_blob. containers-storage applies."""

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None) -> None:
        """Store a manifest; ``instance`` = its digest when it is an entry of an index."""

    def commit(self) -> None:
        """Make the image visible (names, index.json, tar closed) — nothing before this."""

    def close(self) -> None:
        """Release resources; without a commit, discard everything written."""


@runtime_checkable
class Transport(Protocol):
    """A way to name and reach images: ``docker``, ``oci``, ``dir``... (``ImageTransport``)."""

    @property
    def name(self) -> str:
        """The prefix before the first colon of ``transport:name``."""

    def parse(self, reference: str) -> ImageReference:
        """Parse the part after ``name:``; :class:`InvalidImageName` if it does not."""


@runtime_checkable
class ImageReference(Protocol):
    """One image in one transport (containers/image ``ImageReference``)."""

    @property
    def transport(self) -> Transport:
        """The transport that parsed this reference."""

    def string_within_transport(self) -> str:
        """The reference without the ``transport:`` prefix; parses back to the same."""

    def policy_scope(self) -> str:
        """The scope policy.json's ``transports`` section matches (``""``: none)."""

    def new_source(self, ctx: SystemContext) -> ImageSource:
        """Open the image for reading."""

    def new_destination(self, ctx: SystemContext) -> ImageDestination:
        """Open the image for writing."""


@attrs.frozen
class SystemContext:
    """Settings every transport may consult (containers/image ``types.SystemContext``).

    ``credentials`` passed in code win over ``auth_file``; ``insecure`` allows plain
    HTTP and unverified TLS; ``platform`` picks an instance of an index (default:
    this machine); ``store`` is the :class:`criolib.storage.Store` that
    ``containers-storage:`` uses. ``spool_dir`` is where layers being downloaded
    are kept while the destination takes them (default: for a containers-storage
    destination its graph root's ``staging`` directory, on the same file system
    as the layers; else the temp directory); the files are unnamed (O_TMPFILE)
    and vanish with the copy.
    """

    registries_conf: RegistriesConf | None = None
    auth_file: Path | None = None
    credentials: Credentials | None = None
    insecure: bool = False
    platform: Platform | None = None
    store: Store | None = None
    timeout: float = 60.0
    retries: int = 3
    spool_dir: Path | None = None
