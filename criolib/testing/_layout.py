"""Writing OCI image layouts and docker-archive tarballs for the test bed.

The OCI side follows image-spec v1.1 image-layout.md: an ``oci-layout`` file,
``index.json`` naming each image with ``org.opencontainers.image.ref.name``, and
content-addressed ``blobs/sha256/<hex>``. The docker side writes what
``docker save`` wrote before Docker 25: ``manifest.json`` with Config, RepoTags and
Layers, the config as ``<hex>.json`` and each layer uncompressed as
``<diff hex>/layer.tar``, which skopeo and podman read as ``docker-archive:``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import attrs

from criolib._atomic import atomic_write_bytes
from criolib.testing._errors import ImageBuildError
from criolib.testing._tar import (
    EPOCH,
    Compression,
    Entry,
    LayerBlob,
    import_zstandard,
    write_layer,
)

__all__ = [
    "REF_NAME_ANNOTATION",
    "Descriptor",
    "OCILayoutWriter",
    "canonical_json",
    "is_sha256_digest",
    "open_uncompressed",
    "write_docker_archive",
]

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"

_CHUNK = 1 << 20
# image-spec descriptor.md "Digests", narrowed to what criolib accepts (STYLE.md):
# sha256 and exactly 64 lowercase hex digits. It also keeps a blob path inside blobs/.
_SHA256_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_sha256_digest(value: object) -> bool:
    """True for ``sha256:`` and 64 lowercase hex digits, the only digests criolib takes."""
    return isinstance(value, str) and _SHA256_DIGEST_RE.fullmatch(value) is not None


def canonical_json(doc: Any) -> bytes:
    """Compact JSON in insertion order: the same document gives the same bytes."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@attrs.frozen
class Descriptor:
    """An OCI content descriptor (image-spec descriptor.md)."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            doc["platform"] = self.platform
        if self.annotations:
            doc["annotations"] = self.annotations
        return doc


class OCILayoutWriter:
    """Builds an OCI image layout in ``root``, one blob at a time.

    Blobs are written atomically under their digest; :meth:`finish` writes
    ``index.json`` last, so a half-built layout names no missing blob.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._refs: list[Descriptor] = []
        atomic_write_bytes(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', durable=False)

    def blob_path(self, digest: str) -> Path:
        """``blobs/sha256/<hex>``; anything but a sha256 digest is refused."""
        if not is_sha256_digest(digest):
            raise ImageBuildError(
                f"OCI layout {self.root}: unsupported digest {digest!r} "
                "(want sha256: and 64 lowercase hex digits)"
            )
        return self.blobs / digest[len("sha256:"):]

    def add_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        path = self.blob_path(digest)
        if not path.exists():
            atomic_write_bytes(path, data, mode=0o444, durable=False)
        return Descriptor(media_type, digest, len(data))

    def add_json(self, doc: Any, media_type: str) -> Descriptor:
        return self.add_bytes(canonical_json(doc), media_type)

    def add_layer(self, entries: Sequence[Entry] | Iterator[Entry], compression: Compression) -> (
        tuple[Descriptor, LayerBlob]
    ):
        """Stream a layer into the layout; memory stays flat for large layers."""
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".layer.")
        try:
            with os.fdopen(fd, "wb") as f:
                blob = write_layer(entries, f, compression)
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.blob_path(blob.digest))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Descriptor(blob.media_type, blob.digest, blob.size), blob

    def tag(self, descriptor: Descriptor, ref_name: str) -> None:
        """Name ``descriptor`` in index.json (replacing an earlier holder of the name)."""
        self._refs = [d for d in self._refs if (d.annotations or {}).get(REF_NAME_ANNOTATION)
                      != ref_name]
        self._refs.append(attrs.evolve(descriptor, annotations={REF_NAME_ANNOTATION: ref_name}))

    def finish(self) -> None:
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [d.to_json() for d in self._refs],
        }
        atomic_write_bytes(self.root / "index.json", canonical_json(index), durable=False)


def open_uncompressed(path: Path, media_type: str) -> IO[bytes]:
    """Open layer blob ``path`` and decompress by its media type (image-spec layer.md)."""
    if media_type.endswith("+gzip"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if media_type.endswith("+zstd"):
        zstandard = import_zstandard()
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(path.open("rb"))
        return reader
    return path.open("rb")


def write_docker_archive(
    layout: OCILayoutWriter,
    manifest: Descriptor,
    *,
    diff_ids: Sequence[str],
    uncompressed_sizes: Sequence[int],
    repo_tag: str,
    dest: Path,
) -> None:
    """Write the image ``manifest`` of ``layout`` as a docker-archive tarball.

    Layers are stored uncompressed, as ``docker save`` does; they are decompressed
    from the layout while the archive is written, so nothing is held in memory.
    """
    doc = json.loads(layout.blob_path(manifest.digest).read_bytes())
    config_hex = doc["config"]["digest"].partition(":")[2]
    layer_names = [f"{d.partition(':')[2]}/layer.tar" for d in diff_ids]
    archive_manifest = [
        {"Config": f"{config_hex}.json", "RepoTags": [repo_tag], "Layers": layer_names}
    ]
    repo, _, tag = repo_tag.rpartition(":")
    repositories = {repo: {tag: diff_ids[-1].partition(":")[2]}} if diff_ids else {}

    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(
            fileobj=f, mode="w", format=tarfile.PAX_FORMAT
        ) as tar:
            seen: set[str] = set()
            for name, layer, size in zip(layer_names, doc["layers"], uncompressed_sizes,
                                         strict=True):
                if name in seen:  # the same diff twice in one image is stored once
                    continue
                seen.add(name)
                _add(tar, Entry.directory(name.partition("/")[0]))
                with open_uncompressed(layout.blob_path(layer["digest"]),
                                        layer["mediaType"]) as src:
                    _add(tar, Entry(name, size=size), src)
            config = layout.blob_path(doc["config"]["digest"]).read_bytes()
            _add(tar, Entry(f"{config_hex}.json", data=config))
            _add(tar, Entry("manifest.json", data=canonical_json(archive_manifest)))
            _add(tar, Entry("repositories", data=canonical_json(repositories)))
        # mkstemp makes 0600; the archive is for every user's tools, like the blobs.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, entry: Entry, src: IO[bytes] | None = None) -> None:
    info = tarfile.TarInfo(entry.path)
    info.type = tarfile.DIRTYPE if entry.kind == "dir" else tarfile.REGTYPE
    info.mode = entry.mode if entry.kind != "dir" else 0o755
    info.mtime = EPOCH
    info.uname = info.gname = ""
    if entry.kind == "file":
        if src is None:
            assert isinstance(entry.data, bytes)
            src = io.BytesIO(entry.data)
            info.size = len(entry.data)
        else:
            assert entry.size is not None
            info.size = entry.size
    tar.addfile(info, src)
