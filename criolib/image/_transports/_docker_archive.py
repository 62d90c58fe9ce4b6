"""The ``docker-archive:`` transport: ``docker save`` tarballs.

The format is Docker's image tarball (moby image/spec "Combined Image JSON +
Filesystem Changeset Format", docker save since 1.10): ``manifest.json`` lists each
image as ``{"Config", "RepoTags", "Layers"}`` with paths inside the archive; the
legacy ``repositories`` file and per-layer ``VERSION``/``json`` ride along.
Behaviour follows containers/image ``docker/archive`` and
``docker/internal/tarfile``::

    docker-archive:PATH                 the archive's only image
    docker-archive:PATH:NAME[:TAG]      the image tagged NAME:TAG (default tag latest)
    docker-archive:PATH:@N              the N-th image of manifest.json (sources only)

Reading produces a Docker schema 2 manifest on the fly: the config's digest and
size, and one ``application/vnd.docker.image.rootfs.diff.tar`` layer per diff_id,
served uncompressed whatever the archive holds (plain, gzip or zstd; Docker 25's
``blobs/sha256`` layout too, through its symlinks), so each layer's digest *is* its
diff_id. Sizes of compressed layers are found by decompressing once, which also
checks the diff_id. Writing is :mod:`criolib.image._transports._docker_archive_dest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, cast

import attrs

from criolib.image._errors import (
    BlobNotFound,
    CorruptImage,
    ImageNotFound,
    InvalidImageName,
    InvalidReference,
    ManifestError,
    TransportError,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER_TAR,
    MEDIA_TYPE_DOCKER_MANIFEST,
    Descriptor,
    DockerManifest,
    manifest_digest,
    manifest_to_bytes,
    parse_image_config,
)
from criolib.image._reference import parse_normalized
from criolib.image._transports._base import ImageDestination, SystemContext
from criolib.image._transports._files import (
    CHUNK,
    open_decompressed,
    split_digest,
)
from criolib.storage import detect_compression

__all__ = [
    "DOCKER_ARCHIVE_TRANSPORT",
    "ArchiveImage",
    "DockerArchiveReference",
    "DockerArchiveSource",
    "DockerArchiveTransport",
    "normalize_repo_tag",
    "read_archive_manifest",
]

log = logging.getLogger("criolib.image")

_INDEX_RE = re.compile(r"@(0|[1-9][0-9]{0,8})")
_MAX_LINKS = 16
_MAX_JSON = 16 << 20  # manifest.json and configs: containers/image iolimits


def normalize_repo_tag(text: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest``; digests are refused."""
    ref = parse_normalized(text).with_default_tag()
    if ref.digest is not None:
        raise InvalidReference(f"{text!r}: an archive tag cannot carry a digest")
    return ref.string()


@attrs.frozen
class DockerArchiveReference:
    """``docker-archive:PATH[:NAME:TAG|:@N]``; ``name`` is fully qualified and tagged."""

    path: Path
    name: str | None = None
    source_index: int | None = None

    @property
    def transport(self) -> DockerArchiveTransport:
        return DOCKER_ARCHIVE_TRANSPORT

    def string_within_transport(self) -> str:
        if self.name is not None:
            return f"{self.path}:{self.name}"
        if self.source_index is not None:
            return f"{self.path}:@{self.source_index}"
        return str(self.path)

    def policy_scope(self) -> str:
        """``""``: like containers/image, archives have no scopes, only the transport default."""
        return ""

    def new_source(self, ctx: SystemContext) -> DockerArchiveSource:
        return DockerArchiveSource(self)

    def new_destination(self, ctx: SystemContext) -> ImageDestination:
        if self.source_index is not None:
            raise InvalidImageName(f"{self}: @N selects an image to read; give NAME:TAG to "
                                   "write instead")
        from criolib.image._transports._docker_archive_dest import DockerArchiveDestination

        return DockerArchiveDestination(self)

    def __str__(self) -> str:
        return f"docker-archive:{self.string_within_transport()}"


@attrs.frozen
class DockerArchiveTransport:
    """``docker-archive:`` (containers/image ``docker/archive.Transport``)."""

    name: str = "docker-archive"

    def parse(self, reference: str) -> DockerArchiveReference:
        path, _, rest = reference.partition(":")
        if not path:
            raise InvalidImageName(f"docker-archive:{reference}: the archive path is empty")
        abspath = Path(os.path.abspath(path))
        if not rest:
            return DockerArchiveReference(abspath)
        if m := _INDEX_RE.fullmatch(rest):
            return DockerArchiveReference(abspath, source_index=int(m.group(1)))
        try:
            return DockerArchiveReference(abspath, normalize_repo_tag(rest))
        except InvalidReference as exc:
            raise InvalidImageName(f"docker-archive:{reference}: {exc}") from exc


DOCKER_ARCHIVE_TRANSPORT = DockerArchiveTransport()


@attrs.frozen
class ArchiveImage:
    """One entry of an archive's manifest.json."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


@attrs.frozen
class _Member:
    offset: int
    size: int


class _Section(io.RawIOBase):
    """``size`` bytes of ``path`` from ``offset``: one tar member, read on its own fd."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:want])
        if not got:
            raise OSError(f"{self._file.name}: truncated archive")
        self._left -= got
        return got

    def close(self) -> None:
        self._file.close()
        super().close()


def _index_members(path: Path, shown: str) -> dict[str, _Member]:
    """Regular members by normalised name, links resolved to their targets."""
    regular: dict[str, _Member] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for m in tar:
                name = posixpath.normpath(m.name.lstrip("/"))
                if m.isreg() and m.type != tarfile.GNUTYPE_SPARSE:
                    regular[name] = _Member(m.offset_data, m.size)
                elif m.issym():
                    base = "" if m.linkname.startswith("/") else posixpath.dirname(name)
                    links[name] = posixpath.normpath(posixpath.join(base,
                                                                    m.linkname.lstrip("/")))
                elif m.islnk():
                    links[name] = posixpath.normpath(m.linkname.lstrip("/"))
    except tarfile.TarError as exc:
        raise CorruptImage(f"{shown}: not a readable tar archive: {exc}") from exc
    except OSError as exc:
        raise TransportError(f"{shown}: cannot read {path}: {exc}") from exc
    for name, first in links.items():
        target = first
        for _ in range(_MAX_LINKS):
            if target in regular:
                regular[name] = regular[target]
                break
            if target not in links:
                break
            target = links[target]
    return regular


def read_archive_manifest(data: bytes, shown: str) -> list[ArchiveImage]:
    """Parse manifest.json; :class:`CorruptImage` naming the fault if it is malformed."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptImage(f"{shown}: manifest.json is not JSON: {exc}") from exc

    def strings(value: Any, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CorruptImage(f"{shown}: manifest.json {what} must be an array of strings")
        return tuple(value)

    if not isinstance(doc, list):
        raise CorruptImage(f"{shown}: manifest.json must be an array of images")
    images = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise CorruptImage(f"{shown}: manifest.json[{i}] has no Config path")
        images.append(ArchiveImage(item["Config"], strings(item.get("RepoTags"), f"[{i}].RepoTags"),
                                   strings(item.get("Layers"), f"[{i}].Layers")))
    return images


class DockerArchiveSource:
    """Reads one image of a ``docker save`` archive as a Docker schema 2 image."""

    def __init__(self, ref: DockerArchiveReference) -> None:
        self.reference = str(ref)
        self._tmp: Path | None = None
        self._path = self._plain_tar(ref.path)
        try:
            self._members = _index_members(self._path, self.reference)
            self.images = read_archive_manifest(self._read_small("manifest.json"), self.reference)
            self.image = self._choose(ref)
            self._config = self._read_small(self.image.config)
            config = parse_image_config(self._config)
        except ManifestError as exc:
            self.close()
            raise CorruptImage(f"{self.reference}: config {self.image.config}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.config_digest = manifest_digest(self._config)
        self.diff_ids = config.rootfs.diff_ids
        if len(self.diff_ids) != len(self.image.layers):
            self.close()
            raise CorruptImage(f"{self.reference}: {len(self.image.layers)} layers in "
                               f"manifest.json but {len(self.diff_ids)} diff_ids in the config")
        self._layers: dict[str, str] = {}
        for diff_id, layer in zip(self.diff_ids, self.image.layers, strict=True):
            self._layers.setdefault(diff_id, posixpath.normpath(layer))
        self._manifest: bytes | None = None

    def _plain_tar(self, path: Path) -> Path:
        """``path``, or an uncompressed temporary copy when the archive is compressed."""
        try:
            with path.open("rb") as f:
                if detect_compression(f.read(4)) == "none":
                    return path
                f.seek(0)
                fd, tmp = tempfile.mkstemp(prefix="criolib-docker-archive-", suffix=".tar")
                self._tmp = Path(tmp)
                with os.fdopen(fd, "wb") as out, open_decompressed(cast(BinaryIO, f)) as src:
                    shutil.copyfileobj(src, out, CHUNK)
                return self._tmp
        except FileNotFoundError:
            self.close()
            raise ImageNotFound(f"{self.reference}: no archive at {path}") from None
        except OSError as exc:
            self.close()
            raise TransportError(f"{self.reference}: cannot read {path}: {exc}") from exc

    def _open(self, name: str) -> io.BufferedReader:
        member = self._members.get(posixpath.normpath(name.lstrip("/")))
        if member is None:
            raise CorruptImage(f"{self.reference}: the archive has no file {name}")
        return io.BufferedReader(_Section(self._path, member.offset, member.size), CHUNK)

    def _read_small(self, name: str) -> bytes:
        member = self._members.get(posixpath.normpath(name.lstrip("/")))
        if member is not None and member.size > _MAX_JSON:
            raise CorruptImage(f"{self.reference}: {name} is too big ({member.size} bytes)")
        with self._open(name) as f:
            return f.read()

    def _choose(self, ref: DockerArchiveReference) -> ArchiveImage:
        def tags(image: ArchiveImage) -> list[str]:
            out = []
            for tag in image.repo_tags:
                try:
                    out.append(normalize_repo_tag(tag))
                except InvalidReference:
                    log.debug("%s: ignoring unparsable RepoTag %r", self.reference, tag)
            return out

        listing = ", ".join(t for i in self.images for t in i.repo_tags) or "no tags"
        if ref.source_index is not None:
            if ref.source_index >= len(self.images):
                raise ImageNotFound(f"{self.reference}: the archive holds {len(self.images)} "
                                    f"images, no @{ref.source_index}")
            return self.images[ref.source_index]
        if ref.name is not None:
            found = [i for i in self.images if ref.name in tags(i)]
            if len(found) != 1:
                what = "no image" if not found else f"{len(found)} images"
                raise ImageNotFound(f"{self.reference}: {what} tagged {ref.name} in the "
                                    f"archive (it has {listing})")
            return found[0]
        if len(self.images) != 1:
            raise ImageNotFound(f"{self.reference}: the archive holds {len(self.images)} images; "
                                f"pick one with :NAME:TAG or :@N ({listing})")
        return self.images[0]

    def _layer_size(self, diff_id: str) -> int:
        name = self._layers[diff_id]
        with self._open(name) as raw:
            if detect_compression(raw.peek(4)[:4]) == "none":
                return self._members[name].size
        # Compressed in the archive: served uncompressed, so count (and check) once.
        hasher, size = hashlib.new(split_digest(diff_id)[0]), 0
        with self._open(name) as raw, open_decompressed(cast(BinaryIO, raw)) as src:
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        if f"{hasher.name}:{hasher.hexdigest()}" != diff_id:
            raise CorruptImage(f"{self.reference}: layer {name} does not match diff_id {diff_id}")
        return size

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        """A Docker schema 2 manifest made from manifest.json and the config (cached)."""
        if instance is not None:
            raise BlobNotFound(f"{self.reference}: an archive image has no index, so no "
                               f"instance {instance}")
        if self._manifest is None:
            sizes = {d: self._layer_size(d) for d in self._layers}
            manifest = DockerManifest(
                config=Descriptor(media_type=MEDIA_TYPE_DOCKER_CONFIG, digest=self.config_digest,
                                  size=len(self._config)),
                layers=tuple(Descriptor(media_type=MEDIA_TYPE_DOCKER_LAYER_TAR, digest=d,
                                        size=sizes[d]) for d in self.diff_ids))
            self._manifest = manifest_to_bytes(manifest)
        return self._manifest, MEDIA_TYPE_DOCKER_MANIFEST

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        """The config, or a layer (by diff_id) uncompressed."""
        if digest == self.config_digest:
            return io.BytesIO(self._config)
        name = self._layers.get(digest)
        if name is None:
            raise BlobNotFound(f"{self.reference}: no blob {digest} in this image")
        return open_decompressed(cast(BinaryIO, self._open(name)))

    def has_blob_cheaply(self, digest: str) -> bool:
        return digest == self.config_digest or digest in self._layers

    def close(self) -> None:
        """Remove the uncompressed copy of a compressed archive, if one was made."""
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> DockerArchiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DockerArchiveSource({self.reference!r})"
