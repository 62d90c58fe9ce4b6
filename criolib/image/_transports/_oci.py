"""The ``oci:`` transport: images in an OCI image layout directory.

image-spec v1.1 image-layout.md (``oci-layout``, ``index.json``,
``blobs/<alg>/<hex>``) and annotations.md (``org.opencontainers.image.ref.name``);
behaviour as containers/image ``oci/layout``::

    oci:PATH            the layout's only image
    oci:PATH:NAME       the index.json entry whose ref name is NAME
    oci:PATH:@N         the N-th index.json entry (sources only)

PATH cannot contain ``:``. Reading picks one entry of index.json (an image manifest
or an index) and serves blobs from the layout. Writing puts verified blobs straight
into the layout (unreferenced blobs are harmless; image-layout.md allows them) and
updates index.json only at :meth:`OCILayoutDestination.commit`, under an ``flock``
of the layout directory, replacing an earlier entry that held the same name.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criolib._atomic import atomic_write_bytes, fsync_dir
from criolib.image._errors import (
    BlobNotFound,
    CorruptImage,
    DigestMismatch,
    ImageNotFound,
    InvalidImageName,
    ManifestError,
    TransportError,
    UnsupportedManifest,
)
from criolib.image._manifest import (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    OCIIndex,
    OCIManifest,
    detect_media_type,
    manifest_digest,
    manifest_to_bytes,
    parse_manifest,
)
from criolib.image._transports._base import SystemContext
from criolib.image._transports._files import layout_lock, split_digest, write_blob

__all__ = [
    "OCI_LAYOUT_VERSION",
    "OCI_TRANSPORT",
    "REF_NAME_ANNOTATION",
    "OCILayoutDestination",
    "OCILayoutSource",
    "OCIReference",
    "OCITransport",
    "blob_path",
    "parse_layout_reference",
    "read_index",
]

log = logging.getLogger("criolib.image")

#: image-layout.md "oci-layout file".
OCI_LAYOUT_VERSION = "1.0.0"
#: annotations.md: the name of an image inside a layout.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
# annotations.md "ref": component ("/" component)*, alphanumerics joined by [-._:@+] or "--".
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
#: containers/image iolimits.maxManifestBodySize: no manifest is read whole past this.
MAX_MANIFEST_SIZE = 4 << 20
_INDEX_RE = re.compile(r"@(0|[1-9][0-9]{0,8})")


def parse_layout_reference(text: str, transport: str) -> tuple[Path, str, int | None]:
    """``PATH[:NAME|:@N]`` → (absolute path, ref name or ``""``, index or ``None``)."""
    path, _, rest = text.partition(":")
    if not path:
        raise InvalidImageName(f"{transport}:{text}: the layout path is empty")
    index = None
    if rest and (m := _INDEX_RE.fullmatch(rest)):
        index, rest = int(m.group(1)), ""
    elif rest and not _REF_NAME_RE.fullmatch(rest):
        raise InvalidImageName(f"{transport}:{text}: {rest!r} is not a valid image name in a "
                               "layout (annotations.md ref grammar) nor @N")
    return Path(os.path.abspath(path)), rest, index


def _within(path: Path, image: str, index: int | None) -> str:
    text = str(path)
    if image:
        text += f":{image}"
    elif index is not None:
        text += f":@{index}"
    return text


def _ref_name(d: Descriptor) -> str | None:
    return (d.annotations or {}).get(REF_NAME_ANNOTATION)


@attrs.frozen
class OCIReference:
    """An image in an OCI layout: ``oci:PATH[:NAME]`` or ``oci:PATH:@N``."""

    path: Path
    image: str = ""
    source_index: int | None = None

    @property
    def transport(self) -> OCITransport:
        return OCI_TRANSPORT

    def string_within_transport(self) -> str:
        return _within(self.path, self.image, self.source_index)

    def policy_scope(self) -> str:
        """The resolved directory (containers/image ``PolicyConfigurationIdentity``).

        The name is left out: ``PATH:NAME`` and ``PATH`` may be the same image.
        """
        return str(self.path.resolve())

    def new_source(self, ctx: SystemContext) -> OCILayoutSource:
        return OCILayoutSource(self.path, self.image, self.source_index, reference=str(self))

    def new_destination(self, ctx: SystemContext) -> OCILayoutDestination:
        if self.source_index is not None:
            raise InvalidImageName(f"{self}: @N selects an image to read; name the image to "
                                   "write instead (oci:PATH:NAME)")
        return OCILayoutDestination(self.path, self.image, reference=str(self))

    def __str__(self) -> str:
        return f"oci:{self.string_within_transport()}"


@attrs.frozen
class OCITransport:
    """``oci:`` (containers/image ``oci/layout.Transport``)."""

    name: str = "oci"

    def parse(self, reference: str) -> OCIReference:
        path, image, index = parse_layout_reference(reference, self.name)
        return OCIReference(path, image, index)


OCI_TRANSPORT = OCITransport()


def blob_path(root: Path, digest: str) -> Path:
    """``root/blobs/<alg>/<hex>`` for a checked digest."""
    algorithm, encoded = split_digest(digest)
    return root / "blobs" / algorithm / encoded


def read_index(root: Path, reference: str) -> OCIIndex | None:
    """The layout's index.json, ``None`` if it has none yet."""
    try:
        data = (root / "index.json").read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TransportError(f"{reference}: cannot read {root}/index.json: {exc}") from exc
    try:
        index = parse_manifest(data, MEDIA_TYPE_OCI_INDEX)
    except ManifestError as exc:
        raise CorruptImage(f"{reference}: {root}/index.json: {exc}") from exc
    assert isinstance(index, OCIIndex)
    return index


class OCILayoutSource:
    """Reads one image of an OCI layout (containers/image ``ociImageSource``)."""

    def __init__(self, root: Path, image: str = "", source_index: int | None = None, *,
                 reference: str | None = None) -> None:
        self.root = root
        self.reference = reference or f"oci:{_within(root, image, source_index)}"
        if not (root / "oci-layout").is_file():
            raise ImageNotFound(f"{self.reference}: {root} is not an OCI image layout "
                                "(no oci-layout file)")
        self._check_layout_version()
        index = read_index(root, self.reference)
        if index is None:
            raise ImageNotFound(f"{self.reference}: the layout has no index.json")
        self.index = index
        #: The index.json entry this source reads.
        self.descriptor = self._choose(image, source_index)

    def _check_layout_version(self) -> None:
        try:
            doc = json.loads((self.root / "oci-layout").read_bytes())
        except (OSError, ValueError) as exc:
            raise CorruptImage(f"{self.reference}: unreadable oci-layout file: {exc}") from exc
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise CorruptImage(f"{self.reference}: unsupported imageLayoutVersion {version!r} "
                               "(criolib reads 1.x)")

    def _choose(self, image: str, source_index: int | None) -> Descriptor:
        entries = self.index.manifests
        names = sorted({n for e in entries if (n := _ref_name(e))})
        listing = f"names here: {', '.join(names)}" if names else "it names no images"
        if source_index is not None:
            if source_index >= len(entries):
                raise ImageNotFound(f"{self.reference}: index.json has {len(entries)} entries, "
                                    f"no @{source_index}")
            return entries[source_index]
        if image:
            found = [e for e in entries if _ref_name(e) == image]
            if not found:
                raise ImageNotFound(f"{self.reference}: no image named {image!r} in the "
                                    f"layout; {listing}")
            if len(found) > 1:
                raise CorruptImage(f"{self.reference}: {len(found)} index.json entries are "
                                   f"named {image!r}")
            return found[0]
        if len(entries) != 1:
            raise ImageNotFound(f"{self.reference}: the layout holds {len(entries)} images; "
                                f"name one (oci:PATH:NAME or oci:PATH:@N); {listing}")
        return entries[0]

    def _read(self, digest: str) -> bytes:
        path = blob_path(self.root, digest)
        try:
            if path.stat().st_size > MAX_MANIFEST_SIZE:
                raise CorruptImage(f"{self.reference}: manifest {digest} is larger than "
                                   f"{MAX_MANIFEST_SIZE} bytes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"{self.reference}: no blob {digest} in the layout") from None
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot read blob {digest}: {exc}") from exc
        actual = manifest_digest(data, digest.partition(":")[0])
        if actual != digest:
            raise DigestMismatch(f"{self.reference}: blob {digest} on disk hashes to {actual}",
                                 what=self.reference, expected=digest, actual=actual)
        return data

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        """The chosen manifest, or ``instance`` of it when it is an index; verified."""
        if instance is None:
            return self._read(self.descriptor.digest), self.descriptor.media_type
        data = self._read(instance)
        for entry in self._instances():
            if entry.digest == instance:
                return data, entry.media_type
        return data, detect_media_type(data) or ""

    def _instances(self) -> tuple[Descriptor, ...]:
        if self.descriptor.media_type != MEDIA_TYPE_OCI_INDEX:
            return ()
        top = parse_manifest(self._read(self.descriptor.digest), MEDIA_TYPE_OCI_INDEX)
        return top.manifests if isinstance(top, OCIIndex) else ()

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        try:
            return blob_path(self.root, digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"{self.reference}: no blob {digest} in the layout") from None
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot open blob {digest}: {exc}") from exc

    def has_blob_cheaply(self, digest: str) -> bool:
        return blob_path(self.root, digest).is_file()

    def close(self) -> None:
        """Nothing to release: blobs are opened per call."""

    def __enter__(self) -> OCILayoutSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OCILayoutSource({self.reference!r})"


class OCILayoutDestination:
    """Writes one image into an OCI layout (containers/image ``ociImageDestination``)."""

    supported_manifest_types: tuple[str, ...] = (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_INDEX)

    def __init__(self, root: Path, image: str = "", *, reference: str | None = None) -> None:
        self.root = root
        self.image = image
        self.reference = reference or f"oci:{_within(root, image, None)}"
        self._top: Descriptor | None = None
        self._manifests: dict[str, bytes] = {}
        if root.exists() and not (root / "oci-layout").is_file() and (
                not root.is_dir() or any(root.iterdir())):
            raise TransportError(f"{self.reference}: {root} exists and is not an OCI image "
                                     "layout; refusing to write into it")
        try:
            (root / "blobs").mkdir(parents=True, exist_ok=True)
            if not (root / "oci-layout").is_file():
                atomic_write_bytes(root / "oci-layout",
                                   json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot create the layout: {exc}") from exc

    def has_blob(self, digest: str, size: int = -1) -> bool:
        try:
            st = blob_path(self.root, digest).stat()
        except FileNotFoundError:
            return False
        return size < 0 or st.st_size == size

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        try:
            write_blob(stream, blob_path(self.root, digest), digest, size, what=self.reference,
                       tmp_dir=self.root)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot write blob {digest}: {exc}") from exc

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        self.put_blob(stream, str(descriptor["digest"]), int(descriptor.get("size", -1)),
                      str(descriptor.get("mediaType", "")))

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None) -> None:
        if media_type not in self.supported_manifest_types:
            raise UnsupportedManifest(f"{self.reference}: an OCI layout stores OCI manifests and "
                                      f"indexes, not {media_type}; convert it first")
        parse_manifest(manifest, media_type)
        digest = manifest_digest(manifest)
        if instance is not None and instance != digest:
            raise DigestMismatch(f"{self.reference}: instance {instance} hashes to {digest}",
                                 what=self.reference, expected=instance, actual=digest)
        self.put_blob(io.BytesIO(manifest), digest, len(manifest), media_type)
        self._manifests[digest] = manifest
        if instance is None:
            self._top = Descriptor(media_type=media_type, digest=digest, size=len(manifest))

    def _check_complete(self) -> None:
        assert self._top is not None
        top = parse_manifest(self._manifests[self._top.digest], self._top.media_type)
        if isinstance(top, OCIManifest):
            for d in (top.config, *top.layers):
                if not d.urls and not self.has_blob(d.digest, d.size):
                    raise TransportError(f"{self.reference}: commit without blob {d.digest} "
                                         "that the manifest names")

    def commit(self) -> None:
        """Add the image to index.json (atomically, under the layout lock)."""
        if self._top is None:
            raise TransportError(f"{self.reference}: commit without a manifest")
        self._check_complete()
        entry = self._top
        if self.image:
            entry = attrs.evolve(entry, annotations={REF_NAME_ANNOTATION: self.image})
        try:
            with layout_lock(self.root):
                fsync_dir(self.root / "blobs")
                index = read_index(self.root, self.reference) or OCIIndex(manifests=())
                index = attrs.evolve(index, manifests=_add_entry(index.manifests, entry))
                atomic_write_bytes(self.root / "index.json", manifest_to_bytes(index))
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot update index.json: {exc}") from exc
        log.debug("%s: committed %s", self.reference, entry.digest)

    def close(self) -> None:
        """Nothing to discard: uncommitted blobs are unreferenced, which layouts allow."""

    def __enter__(self) -> OCILayoutDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OCILayoutDestination({self.reference!r})"


def _add_entry(entries: tuple[Descriptor, ...], new: Descriptor) -> tuple[Descriptor, ...]:
    """containers/image ``addManifest``: a name moves to the new entry; unnamed repeats merge."""
    name = _ref_name(new)
    out = list(entries)
    for i, old in enumerate(out):
        if (name is not None and _ref_name(old) == name) or (
                name is None and _ref_name(old) is None and old.digest == new.digest):
            out[i] = new
            return tuple(out)
    return (*out, new)
