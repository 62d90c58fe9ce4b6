"""The ``oci-archive:`` transport: an OCI image layout in a tar file.

image-spec v1.1 image-layout.md, tarred at its root (``oci-layout``,
``index.json``, ``blobs/...``), as containers/image ``oci/archive`` reads and
writes it::

    oci-archive:PATH[:NAME]     oci-archive:PATH:@N (sources only)

A source extracts the archive into a private temporary directory on first use
(regular files and directories only, every name checked) and reads it as an
``oci:`` layout; :meth:`close` removes the copy. A destination builds a layout in a
temporary directory and, at :meth:`commit`, tars it reproducibly into a temporary
file beside PATH and renames that over PATH: the archive is replaced whole, as
containers/image replaces it, and never seen half-written.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criolib.image._errors import ImageNotFound, InvalidImageName, TransportError
from criolib.image._manifest import Descriptor
from criolib.image._transports._base import SystemContext
from criolib.image._transports._files import extract_tar, tar_directory
from criolib.image._transports._oci import (
    OCILayoutDestination,
    OCILayoutSource,
    parse_layout_reference,
)

__all__ = [
    "OCI_ARCHIVE_TRANSPORT",
    "OCIArchiveDestination",
    "OCIArchiveReference",
    "OCIArchiveSource",
    "OCIArchiveTransport",
]


@attrs.frozen
class OCIArchiveReference:
    """An image in an OCI archive: ``oci-archive:PATH[:NAME]`` or ``oci-archive:PATH:@N``."""

    path: Path
    image: str = ""
    source_index: int | None = None

    @property
    def transport(self) -> OCIArchiveTransport:
        return OCI_ARCHIVE_TRANSPORT

    def string_within_transport(self) -> str:
        text = str(self.path)
        if self.image:
            text += f":{self.image}"
        elif self.source_index is not None:
            text += f":@{self.source_index}"
        return text

    def policy_scope(self) -> str:
        """The resolved archive path (containers/image ``PolicyConfigurationIdentity``).

        The name is left out: ``PATH:NAME`` and ``PATH`` may be the same image.
        """
        return str(self.path.resolve())

    def new_source(self, ctx: SystemContext) -> OCIArchiveSource:
        return OCIArchiveSource(self)

    def new_destination(self, ctx: SystemContext) -> OCIArchiveDestination:
        if self.source_index is not None:
            raise InvalidImageName(f"{self}: @N selects an image to read; name the image to "
                                   "write instead (oci-archive:PATH:NAME)")
        return OCIArchiveDestination(self)

    def __str__(self) -> str:
        return f"oci-archive:{self.string_within_transport()}"


@attrs.frozen
class OCIArchiveTransport:
    """``oci-archive:`` (containers/image ``oci/archive.Transport``)."""

    name: str = "oci-archive"

    def parse(self, reference: str) -> OCIArchiveReference:
        path, image, index = parse_layout_reference(reference, self.name)
        return OCIArchiveReference(path, image, index)


OCI_ARCHIVE_TRANSPORT = OCIArchiveTransport()


class OCIArchiveSource:
    """Reads an image of an OCI archive through a lazily extracted private copy."""

    def __init__(self, ref: OCIArchiveReference) -> None:
        self.ref = ref
        self.reference = str(ref)
        if not ref.path.is_file():
            raise ImageNotFound(f"{self.reference}: no archive at {ref.path}")
        self._tmp: Path | None = None
        self._layout: OCILayoutSource | None = None
        self._lock = threading.Lock()  # the copy engine reads blobs from several threads

    def _source(self) -> OCILayoutSource:
        with self._lock:
            if self._layout is None:
                tmp = Path(tempfile.mkdtemp(prefix="criolib-oci-archive-"))
                try:
                    extract_tar(self.ref.path, tmp)
                    layout = OCILayoutSource(tmp, self.ref.image, self.ref.source_index,
                                             reference=self.reference)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                self._tmp, self._layout = tmp, layout
            return self._layout

    @property
    def descriptor(self) -> Descriptor:
        """The index.json entry this source reads."""
        return self._source().descriptor

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        return self._source().get_manifest(instance)

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        return self._source().get_blob(digest, size)

    def has_blob_cheaply(self, digest: str) -> bool:
        return self._source().has_blob_cheaply(digest)

    def close(self) -> None:
        """Remove the extracted copy."""
        with self._lock:
            self._layout = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def __enter__(self) -> OCIArchiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OCIArchiveSource({self.reference!r})"


class OCIArchiveDestination:
    """Builds a layout in a temporary directory and tars it over PATH at commit."""

    supported_manifest_types = OCILayoutDestination.supported_manifest_types

    def __init__(self, ref: OCIArchiveReference) -> None:
        self.ref = ref
        self.reference = str(ref)
        if ref.path.is_dir():
            raise TransportError(f"{self.reference}: {ref.path} is a directory, not an archive")
        if not ref.path.parent.is_dir():
            raise TransportError(f"{self.reference}: directory {ref.path.parent} does not exist")
        self._tmp = Path(tempfile.mkdtemp(prefix="criolib-oci-archive-"))
        self._layout = OCILayoutDestination(self._tmp, ref.image, reference=self.reference)

    def has_blob(self, digest: str, size: int = -1) -> bool:
        return self._layout.has_blob(digest, size)

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        self._layout.put_blob(stream, digest, size, media_type)

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        self._layout.put_layer(stream, descriptor, diff_id)

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None) -> None:
        self._layout.put_manifest(manifest, media_type, instance)

    def commit(self) -> None:
        """Finish the layout and replace PATH with its tar, atomically."""
        self._layout.commit()
        try:
            tar_directory(self._tmp, self.ref.path)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot write {self.ref.path}: {exc}") from exc

    def close(self) -> None:
        """Remove the temporary layout (PATH is untouched unless committed)."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OCIArchiveDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OCIArchiveDestination({self.reference!r})"
