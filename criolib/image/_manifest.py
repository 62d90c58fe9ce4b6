"""Manifests, indexes and image configs: typed models, one converter, conversions.

image-spec v1.1 manifest.md, image-index.md, descriptor.md, config.md and
media-types.md; Docker Image Manifest V2 Schema 2 and its manifest list
(distribution docs/spec/manifest-v2-2.md). Behaviour follows containers/image's
``manifest`` package where the specs leave room:

- **Kind.** The media type comes from the caller (an HTTP ``Content-Type``, an index
  entry); when that is missing or generic (``application/json``,
  ``application/octet-stream``...) it is read from the document's ``mediaType``, or
  guessed from its shape like ``GuessMIMEType``. A ``mediaType`` property that
  disagrees with the given type, or a manifest that also carries an index's
  ``manifests`` (and vice versa), is refused: such documents are ambiguous
  (CVE-2021-41190). Docker schema 1 raises :class:`UnsupportedManifest`.
- **Exact wire names, open documents.** One cattrs converter (``_manifest_codec``) reads and writes
  the spec's property names; properties criolib does not model are kept in each
  object's ``extra`` and written back (the specs say consumers MUST ignore unknown
  properties, and a copy must not lose them). Absent properties read as ``None``.
- **Checked.** Digests must be ``sha256:`` + 64 or ``sha512:`` + 128 lowercase hex
  digits (STYLE.md: checked by criolib), sizes non-negative, ``schemaVersion`` 2 and
  embedded ``data`` equal to what its digest names. Every fault raises
  :class:`ManifestError` naming the manifest's digest and the JSON path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Final, TypeAlias, TypeVar

import attrs

from criolib.image._errors import (
    InvalidDigest,
    ManifestError,
    UnsupportedConversion,
    UnsupportedManifest,
)
from criolib.image._imageconfig_model import ImageConfig
from criolib.image._manifest_codec import (
    _StructureError,
    describe,
    json_path,
    structure,
    unstructure,
)
from criolib.image._platform import Platform

__all__ = [
    "MEDIA_TYPE_DOCKER_CONFIG",
    "MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP",
    "MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR",
    "MEDIA_TYPE_DOCKER_LAYER_GZIP",
    "MEDIA_TYPE_DOCKER_LAYER_TAR",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_DOCKER_SCHEMA1",
    "MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_EMPTY",
    "MEDIA_TYPE_OCI_FOREIGN_LAYER_GZIP",
    "MEDIA_TYPE_OCI_FOREIGN_LAYER_TAR",
    "MEDIA_TYPE_OCI_FOREIGN_LAYER_ZSTD",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER_GZIP",
    "MEDIA_TYPE_OCI_LAYER_TAR",
    "MEDIA_TYPE_OCI_LAYER_ZSTD",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Descriptor",
    "DockerManifest",
    "DockerManifestList",
    "Manifest",
    "OCIIndex",
    "OCIManifest",
    "config_descriptor",
    "detect_media_type",
    "image_config_to_dict",
    "is_index",
    "layers",
    "manifest_digest",
    "manifest_to_bytes",
    "manifest_to_dict",
    "parse_image_config",
    "parse_manifest",
    "to_docker",
    "to_oci",
    "validate_digest",
]

_T = TypeVar("_T")


# The media types criolib knows (image-spec v1.1 media-types.md; manifest-v2-2.md).
MEDIA_TYPE_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
MEDIA_TYPE_OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_FOREIGN_LAYER_TAR: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_TYPE_OCI_FOREIGN_LAYER_GZIP: Final = MEDIA_TYPE_OCI_FOREIGN_LAYER_TAR + "+gzip"
MEDIA_TYPE_OCI_FOREIGN_LAYER_ZSTD: Final = MEDIA_TYPE_OCI_FOREIGN_LAYER_TAR + "+zstd"
MEDIA_TYPE_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST: Final = (
    "application/vnd.docker.distribution.manifest.list.v2+json")
MEDIA_TYPE_DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER_TAR: Final = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR: Final = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar")
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP: Final = MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR + ".gzip"
MEDIA_TYPE_DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: Final = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws")


#: Content types that say nothing about which manifest this is.
_GENERIC = frozenset({"", "application/json", "text/plain", "application/octet-stream",
                      "binary/octet-stream"})
_SCHEMA1 = frozenset({MEDIA_TYPE_DOCKER_SCHEMA1, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED})
_DIGEST_RE = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*")


# -- models ----------------------------------------------------------------------------


def _wire(name: str, **more: Any) -> dict[str, Any]:
    return {"wire": name, **more}


_REQUIRED: Final = {"required": True}


@attrs.frozen(kw_only=True)
class Descriptor:
    """A content descriptor (image-spec v1.1 descriptor.md; Docker's are a subset)."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] | None = None
    annotations: Mapping[str, str] | None = None
    data: str | None = None
    platform: Platform | None = None
    artifact_type: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class OCIManifest:
    """An OCI image manifest (image-spec v1.1 manifest.md)."""

    MEDIA_TYPE: ClassVar[str] = MEDIA_TYPE_OCI_MANIFEST
    schema_version: int = attrs.field(default=2, metadata=_REQUIRED)
    media_type: str | None = MEDIA_TYPE_OCI_MANIFEST
    artifact_type: str | None = None
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class OCIIndex:
    """An OCI image index (image-spec v1.1 image-index.md)."""

    MEDIA_TYPE: ClassVar[str] = MEDIA_TYPE_OCI_INDEX
    schema_version: int = attrs.field(default=2, metadata=_REQUIRED)
    media_type: str | None = MEDIA_TYPE_OCI_INDEX
    artifact_type: str | None = None
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: Mapping[str, str] | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class DockerManifest:
    """A Docker image manifest, schema 2 (manifest-v2-2.md "Image Manifest")."""

    MEDIA_TYPE: ClassVar[str] = MEDIA_TYPE_DOCKER_MANIFEST
    schema_version: int = attrs.field(default=2, metadata=_REQUIRED)
    media_type: str = attrs.field(default=MEDIA_TYPE_DOCKER_MANIFEST, metadata=_REQUIRED)
    config: Descriptor
    layers: tuple[Descriptor, ...]
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class DockerManifestList:
    """A Docker manifest list (manifest-v2-2.md "Manifest List")."""

    MEDIA_TYPE: ClassVar[str] = MEDIA_TYPE_DOCKER_MANIFEST_LIST
    schema_version: int = attrs.field(default=2, metadata=_REQUIRED)
    media_type: str = attrs.field(default=MEDIA_TYPE_DOCKER_MANIFEST_LIST, metadata=_REQUIRED)
    manifests: tuple[Descriptor, ...]
    extra: Mapping[str, Any] = attrs.field(factory=dict)


#: Any manifest :func:`parse_manifest` returns.
Manifest: TypeAlias = OCIManifest | OCIIndex | DockerManifest | DockerManifestList
_KINDS: dict[str, type[Manifest]] = {
    k.MEDIA_TYPE: k for k in (OCIManifest, OCIIndex, DockerManifest, DockerManifestList)}


def _structure(doc: Any, cls: type[_T], what: str, digest: str) -> _T:
    try:
        return structure(doc, cls)
    except _StructureError as exc:
        field = json_path(exc.path)
        at = f" at {field}" if field else ""
        raise ManifestError(f"{what} {digest}{at}: {exc.reason}", digest=digest,
                            field=field) from None


# -- digests and bytes ------------------------------------------------------------------


def validate_digest(digest: object) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase).

    image-spec v1.1 descriptor.md "Digests", narrowed to the registered algorithms;
    anything else raises :class:`InvalidDigest`. A digest that passes is also safe
    to use as a file name.
    """
    if isinstance(digest, str):
        algorithm, sep, encoded = digest.partition(":")
        pattern = _DIGEST_RE.get(algorithm)
        if sep and pattern is not None and pattern.fullmatch(encoded):
            return digest
    raise InvalidDigest(f"invalid digest {digest!r}: want sha256: and 64 lowercase hex digits "
                        "(or sha512: and 128)")


def manifest_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of manifest (or any blob) bytes, exactly as given (descriptor.md)."""
    if algorithm not in _DIGEST_RE:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} (sha256 or sha512)")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a JSON object with the spec's property names."""
    doc: dict[str, Any] = unstructure(manifest)
    return doc


def manifest_to_bytes(manifest: Manifest) -> bytes:
    """Compact JSON bytes of ``manifest``; hash these to get the new document's digest."""
    return json.dumps(manifest_to_dict(manifest), separators=(",", ":"),
                      ensure_ascii=False).encode()


def _load_object(data: bytes, what: str, digest: str) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{what} {digest} is not JSON: {exc}", digest=digest) from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} {digest}: expected a JSON object, got {describe(doc)}",
                            digest=digest)
    return doc


def _normalize_media_type(media_type: str | None) -> str:
    return (media_type or "").partition(";")[0].strip().lower()


def _guess(doc: Mapping[str, Any]) -> str | None:
    """containers/image ``GuessMIMEType`` on a parsed document."""
    field = doc.get("mediaType")
    if isinstance(field, str) and field:
        return field
    version = doc.get("schemaVersion")
    if version == 1 and not isinstance(version, bool):
        signed = "signatures" in doc
        return MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED if signed else MEDIA_TYPE_DOCKER_SCHEMA1
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    if config_type == MEDIA_TYPE_DOCKER_CONFIG:
        return MEDIA_TYPE_DOCKER_MANIFEST
    if config is not None:
        return MEDIA_TYPE_OCI_MANIFEST  # an image, or an artifact with its own config type
    if "manifests" in doc:
        return MEDIA_TYPE_OCI_INDEX
    return None


def detect_media_type(data: bytes) -> str | None:
    """The manifest media type ``data`` declares or looks like; ``None`` if neither."""
    try:
        doc = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return _guess(doc) if isinstance(doc, dict) else None


# -- parsing and checking ----------------------------------------------------------------


def _check_descriptor(d: Descriptor, field: str, digest: str) -> None:
    def bad(sub: str, reason: str) -> ManifestError:
        return ManifestError(f"manifest {digest} at {field}.{sub}: {reason}", digest=digest,
                             field=f"{field}.{sub}")

    try:
        validate_digest(d.digest)
    except InvalidDigest as exc:
        raise bad("digest", str(exc)) from None
    if d.size < 0:
        raise bad("size", f"negative size {d.size}")
    if not _MEDIA_TYPE_RE.fullmatch(d.media_type):
        raise bad("mediaType", f"not a media type: {d.media_type!r}")
    if d.data is not None:
        try:
            raw = base64.b64decode(d.data, validate=True)
        except (binascii.Error, ValueError):
            raise bad("data", "not base64") from None
        if len(raw) != d.size or manifest_digest(raw, d.digest.partition(":")[0]) != d.digest:
            raise bad("data", "the embedded data does not match the digest and size")


def _check(manifest: Manifest, digest: str) -> None:
    if manifest.schema_version != 2:
        raise ManifestError(f"manifest {digest} at schemaVersion: must be 2, not "
                            f"{manifest.schema_version}", digest=digest, field="schemaVersion")
    if isinstance(manifest, DockerManifest | DockerManifestList) and (
            manifest.media_type != manifest.MEDIA_TYPE):
        raise ManifestError(f"manifest {digest} at mediaType: must be {manifest.MEDIA_TYPE}",
                            digest=digest, field="mediaType")
    if isinstance(manifest, OCIManifest | DockerManifest):
        _check_descriptor(manifest.config, "config", digest)
        for i, layer in enumerate(manifest.layers):
            _check_descriptor(layer, f"layers[{i}]", digest)
    else:
        for i, entry in enumerate(manifest.manifests):
            _check_descriptor(entry, f"manifests[{i}]", digest)
    subject = getattr(manifest, "subject", None)
    if subject is not None:
        _check_descriptor(subject, "subject", digest)


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest:
    """Parse and check a manifest or index (image-spec v1.1; manifest-v2-2.md).

    ``media_type`` is what the transport said (``Content-Type``, an index entry);
    when missing or generic the document's own ``mediaType`` decides, else its
    shape. Docker schema 1 and unknown types raise :class:`UnsupportedManifest`;
    anything malformed :class:`ManifestError` with the manifest digest and field.
    """
    digest = manifest_digest(bytes(data))
    doc = _load_object(data, "manifest", digest)
    declared = _normalize_media_type(media_type)
    effective = declared if declared not in _GENERIC else (_guess(doc) or "")
    if effective in _SCHEMA1 or (not declared and doc.get("schemaVersion") == 1):
        raise UnsupportedManifest(
            f"manifest {digest} is Docker schema 1, which criolib does not read (it is "
            "deprecated and unsigned-by-digest); push the image again as schema 2 or OCI",
            digest=digest)
    kind = _KINDS.get(effective)
    if kind is None:
        said = f"media type {effective!r}" if effective else "a document of unknown kind"
        raise UnsupportedManifest(
            f"manifest {digest}: {said} is not a manifest criolib reads (OCI manifest or "
            "index, Docker schema 2 manifest or manifest list)", digest=digest)
    field = doc.get("mediaType")
    if field is not None and field != effective:
        raise ManifestError(f"manifest {digest} at mediaType: the document says {field!r} "
                            f"but it was served as {effective}", digest=digest, field="mediaType")
    is_list = kind in (OCIIndex, DockerManifestList)
    for key in ("config", "layers") if is_list else ("manifests",):
        if key in doc:
            # containers/image ValidateUnambiguousManifestFormat: one document, one meaning.
            raise ManifestError(f"manifest {digest}: a {effective} must not have {key!r}; the "
                                "document is ambiguous", digest=digest, field=key)
    manifest = _structure(doc, kind, "manifest", digest)
    _check(manifest, digest)
    return manifest


def parse_image_config(data: bytes) -> ImageConfig:
    """Parse an image config blob (image-spec v1.1 config.md); :class:`ManifestError` if bad.

    Each ``rootfs.diff_ids`` entry must be a valid digest.
    """
    digest = manifest_digest(bytes(data))
    config = _structure(_load_object(data, "image config", digest), ImageConfig,
                        "image config", digest)
    for i, diff_id in enumerate(config.rootfs.diff_ids):
        try:
            validate_digest(diff_id)
        except InvalidDigest as exc:
            field = f"rootfs.diff_ids[{i}]"
            raise ManifestError(f"image config {digest} at {field}: {exc}", digest=digest,
                                field=field) from None
    return config


def image_config_to_dict(config: ImageConfig) -> dict[str, Any]:
    """The image config as a JSON object with the spec's property names."""
    doc: dict[str, Any] = unstructure(config)
    return doc


# -- views -------------------------------------------------------------------------------


def is_index(manifest: Manifest) -> bool:
    """True for an OCI index or a Docker manifest list."""
    return isinstance(manifest, OCIIndex | DockerManifestList)


def layers(manifest: Manifest) -> tuple[Descriptor, ...]:
    """The layer descriptors of an image manifest, bottom first."""
    if isinstance(manifest, OCIIndex | DockerManifestList):
        raise ManifestError(f"a {manifest.MEDIA_TYPE} has no layers; choose an instance first")
    return manifest.layers


def config_descriptor(manifest: Manifest) -> Descriptor:
    """The config descriptor of an image manifest."""
    if isinstance(manifest, OCIIndex | DockerManifestList):
        raise ManifestError(f"a {manifest.MEDIA_TYPE} has no config; choose an instance first")
    return manifest.config


# -- conversions (containers/image manifest/oci.go, docker_schema2.go) ----------------------

_TO_OCI = {
    MEDIA_TYPE_DOCKER_LAYER_TAR: MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_DOCKER_LAYER_GZIP: MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_TAR: MEDIA_TYPE_OCI_FOREIGN_LAYER_TAR,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP: MEDIA_TYPE_OCI_FOREIGN_LAYER_GZIP,
}
_TO_DOCKER = {oci: docker for docker, oci in _TO_OCI.items()}


def _oci_layer(layer: Descriptor, i: int) -> Descriptor:
    if layer.media_type in _TO_OCI:
        return attrs.evolve(layer, media_type=_TO_OCI[layer.media_type])
    if layer.media_type in _TO_DOCKER:
        return layer  # already an OCI layer type
    raise UnsupportedConversion(f"layers[{i}] has media type {layer.media_type!r}, which has "
                                "no OCI layer counterpart", field=f"layers[{i}].mediaType")


def _docker_layer(layer: Descriptor, i: int) -> Descriptor:
    if layer.media_type in (MEDIA_TYPE_OCI_LAYER_ZSTD, MEDIA_TYPE_OCI_FOREIGN_LAYER_ZSTD):
        raise UnsupportedConversion(
            f"layers[{i}] is zstd-compressed ({layer.media_type}); Docker schema 2 has no "
            "zstd layers: keep the OCI manifest, or recompress the layer with gzip",
            field=f"layers[{i}].mediaType")
    media_type = _TO_DOCKER.get(layer.media_type, layer.media_type)
    if media_type not in _TO_OCI:
        raise UnsupportedConversion(f"layers[{i}] has media type {layer.media_type!r}, which "
                                    "Docker schema 2 cannot hold", field=f"layers[{i}].mediaType")
    return Descriptor(media_type=media_type, digest=layer.digest, size=layer.size,
                      urls=layer.urls)


@typing.overload
def to_oci(manifest: OCIManifest | DockerManifest) -> OCIManifest: ...
@typing.overload
def to_oci(manifest: OCIIndex | DockerManifestList) -> OCIIndex: ...
def to_oci(manifest: Manifest) -> OCIManifest | OCIIndex:
    """The OCI form of a Docker schema 2 manifest or list (media-types.md compatibility).

    Config and layer media types are mapped; list entries are kept as they are (the
    instances themselves are converted by whoever copies them).
    """
    if isinstance(manifest, OCIManifest | OCIIndex):
        return manifest
    if isinstance(manifest, DockerManifestList):
        return OCIIndex(manifests=manifest.manifests)
    config = manifest.config
    if config.media_type == MEDIA_TYPE_DOCKER_CONFIG:
        config = attrs.evolve(config, media_type=MEDIA_TYPE_OCI_CONFIG)
    return OCIManifest(config=config,
                       layers=tuple(_oci_layer(d, i) for i, d in enumerate(manifest.layers)))


@typing.overload
def to_docker(manifest: OCIManifest | DockerManifest) -> DockerManifest: ...
@typing.overload
def to_docker(manifest: OCIIndex | DockerManifestList) -> DockerManifestList: ...
def to_docker(manifest: Manifest) -> DockerManifest | DockerManifestList:
    """The Docker schema 2 form of an OCI manifest or index.

    Annotations, ``artifactType`` and ``data`` have no place in schema 2 and are
    dropped; artifacts (a ``subject``, an ``artifactType``, a config that is not an
    image config), zstd layers and index entries without a platform raise
    :class:`UnsupportedConversion`.
    """
    if isinstance(manifest, DockerManifest | DockerManifestList):
        return manifest
    if manifest.artifact_type is not None or manifest.subject is not None:
        raise UnsupportedConversion(f"a {manifest.MEDIA_TYPE} with an artifactType or subject "
                                    "is an artifact; Docker schema 2 cannot hold it")
    if isinstance(manifest, OCIIndex):
        for i, entry in enumerate(manifest.manifests):
            if entry.platform is None:
                raise UnsupportedConversion(
                    f"manifests[{i}] ({entry.digest}) has no platform, which every Docker "
                    "manifest list entry needs", field=f"manifests[{i}].platform")
        return DockerManifestList(manifests=tuple(
            Descriptor(media_type=e.media_type, digest=e.digest, size=e.size, urls=e.urls,
                       platform=e.platform) for e in manifest.manifests))
    config = manifest.config
    if config.media_type not in (MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG):
        raise UnsupportedConversion(f"config media type {config.media_type!r} is not an image "
                                    "config; Docker schema 2 cannot hold artifacts",
                                    field="config.mediaType")
    return DockerManifest(
        config=Descriptor(media_type=MEDIA_TYPE_DOCKER_CONFIG, digest=config.digest,
                          size=config.size),
        layers=tuple(_docker_layer(d, i) for i, d in enumerate(manifest.layers)))

