"""The ``dir:`` transport: one image as plain files in a directory.

containers/image ``directory`` (Directory Transport Version 1.1)::

    dir:PATH
        version                 "Directory Transport Version: 1.1\\n"
        manifest.json           the image's manifest (or index), byte for byte
        <hex>.manifest.json     each instance of an index
        <hex>                   each blob, named by its digest's hex

The directory stores no media types: they are read from each manifest.
Writing builds the new tree in a hidden sibling directory and swaps it in at
:meth:`DirDestination.commit` (renameat2 ``RENAME_EXCHANGE``), so readers see the
old image or the new one; like containers/image it refuses to replace a non-empty
directory that is not a ``dir:`` image.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criolib._atomic import atomic_write_bytes
from criolib.image._errors import (
    BlobNotFound,
    CorruptImage,
    DigestMismatch,
    ImageNotFound,
    InvalidImageName,
    TransportError,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    DockerManifest,
    OCIManifest,
    detect_media_type,
    manifest_digest,
    parse_manifest,
)
from criolib.image._transports._base import SystemContext
from criolib.image._transports._files import exchange_or_rename, split_digest, write_blob

__all__ = ["DIR_TRANSPORT", "DIR_VERSION", "DirDestination", "DirReference", "DirSource",
           "DirTransport"]

#: The ``version`` file's content, as containers/image writes it.
DIR_VERSION = "Directory Transport Version: 1.1\n"
_READABLE_VERSIONS = ("Directory Transport Version: 1.0\n", DIR_VERSION)


@attrs.frozen
class DirReference:
    """``dir:PATH`` (PATH may contain ``:``)."""

    path: Path

    @property
    def transport(self) -> DirTransport:
        return DIR_TRANSPORT

    def string_within_transport(self) -> str:
        return str(self.path)

    def policy_scope(self) -> str:
        """containers/image: the resolved directory."""
        return str(self.path.resolve())

    def new_source(self, ctx: SystemContext) -> DirSource:
        return DirSource(self)

    def new_destination(self, ctx: SystemContext) -> DirDestination:
        return DirDestination(self)

    def __str__(self) -> str:
        return f"dir:{self.path}"


@attrs.frozen
class DirTransport:
    """``dir:`` (containers/image ``directory.Transport``)."""

    name: str = "dir"

    def parse(self, reference: str) -> DirReference:
        if not reference:
            raise InvalidImageName("dir: the directory path is empty")
        return DirReference(Path(os.path.abspath(reference)))


DIR_TRANSPORT = DirTransport()


def _blob_name(digest: str) -> str:
    return split_digest(digest)[1]


class DirSource:
    """Reads the image of a ``dir:`` directory."""

    def __init__(self, ref: DirReference) -> None:
        self.path = ref.path
        self.reference = str(ref)
        if not (self.path / "manifest.json").is_file():
            raise ImageNotFound(f"{self.reference}: no manifest.json in {self.path}")
        version = self.path / "version"
        if version.is_file() and version.read_text(errors="replace") not in _READABLE_VERSIONS:
            raise CorruptImage(f"{self.reference}: unknown {version} content "
                               f"{version.read_text(errors='replace')[:60]!r}")

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        name = "manifest.json" if instance is None else f"{_blob_name(instance)}.manifest.json"
        try:
            data = (self.path / name).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"{self.reference}: no manifest {instance}") from None
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot read {name}: {exc}") from exc
        if instance is not None and manifest_digest(data, instance.partition(":")[0]) != instance:
            raise DigestMismatch(f"{self.reference}: {name} does not hash to {instance}",
                                 what=self.reference, expected=instance)
        return data, detect_media_type(data) or ""

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        try:
            return (self.path / _blob_name(digest)).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"{self.reference}: no blob {digest}") from None
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot open blob {digest}: {exc}") from exc

    def has_blob_cheaply(self, digest: str) -> bool:
        return (self.path / _blob_name(digest)).is_file()

    def close(self) -> None:
        """Nothing to release: files are opened per call."""

    def __enter__(self) -> DirSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DirSource({self.reference!r})"


class DirDestination:
    """Writes one image as a ``dir:`` directory, swapped in whole at commit."""

    supported_manifest_types: tuple[str, ...] = (
        MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST)

    def __init__(self, ref: DirReference) -> None:
        self.path = ref.path
        self.reference = str(ref)
        if self.path.exists():
            if not self.path.is_dir():
                raise TransportError(f"{self.reference}: {self.path} exists and is not a "
                                     "directory")
            version = self.path / "version"
            if any(self.path.iterdir()) and not (
                    version.is_file() and version.read_text(errors="replace") in
                    _READABLE_VERSIONS):
                raise TransportError(f"{self.reference}: {self.path} is not empty and not a "
                                     "dir: image; refusing to overwrite it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stage = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.criolib-",
                                                dir=self.path.parent))
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot create a staging directory: "
                                 f"{exc}") from exc
        self._manifest: bytes | None = None
        self._media_type = ""
        self._committed = False

    def has_blob(self, digest: str, size: int = -1) -> bool:
        try:
            st = (self._stage / _blob_name(digest)).stat()
        except FileNotFoundError:
            return False
        return size < 0 or st.st_size == size

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        try:
            write_blob(stream, self._stage / _blob_name(digest), digest, size,
                       what=self.reference)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot write blob {digest}: {exc}") from exc

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        self.put_blob(stream, str(descriptor["digest"]), int(descriptor.get("size", -1)),
                      str(descriptor.get("mediaType", "")))

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None) -> None:
        parse_manifest(manifest, media_type)
        if instance is None:
            self._manifest, self._media_type = manifest, media_type
            name = "manifest.json"
        else:
            digest = manifest_digest(manifest, split_digest(instance)[0])
            if digest != instance:
                raise DigestMismatch(f"{self.reference}: instance {instance} hashes to {digest}",
                                     what=self.reference, expected=instance, actual=digest)
            name = f"{_blob_name(instance)}.manifest.json"
        try:
            write_blob(io.BytesIO(manifest), self._stage / name,
                       manifest_digest(manifest), len(manifest), what=self.reference)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot write {name}: {exc}") from exc

    def commit(self) -> None:
        """Check the image is whole, then swap the new directory in."""
        if self._manifest is None:
            raise TransportError(f"{self.reference}: commit without a manifest")
        top = parse_manifest(self._manifest, self._media_type)
        if isinstance(top, OCIManifest | DockerManifest):
            for d in (top.config, *top.layers):
                if not d.urls and not self.has_blob(d.digest, d.size):
                    raise TransportError(f"{self.reference}: commit without blob {d.digest} "
                                         "that the manifest names")
        try:
            atomic_write_bytes(self._stage / "version", DIR_VERSION.encode())
            os.chmod(self._stage, 0o755)  # noqa: S103 - mkdtemp made it 0700
            old = exchange_or_rename(self._stage, self.path)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot put the image in place: "
                                 f"{exc}") from exc
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        """Remove the staging directory unless it became the image."""
        if not self._committed:
            shutil.rmtree(self._stage, ignore_errors=True)

    def __enter__(self) -> DirDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DirDestination({self.reference!r})"
