"""Writing ``docker-archive:`` tarballs in the classic ``docker save`` format.

moby image/spec v1.2 "Combined Image JSON + Filesystem Changeset Format", as
containers/image ``docker/internal/tarfile.Writer`` writes it and ``docker load``,
podman and skopeo read it::

    <layer id>/VERSION          "1.0"
    <layer id>/json             legacy v1 layer config (id, parent; the top one
                                also the image's architecture, config, os...)
    <layer id>/layer.tar        the layer, uncompressed (a repeat is a symlink)
    <config hex>.json           the image config, byte for byte
    manifest.json               [{"Config", "RepoTags", "Layers"}]
    repositories                {"name": {"tag": "<top layer id>"}}

Blobs arrive compressed or not, are verified as they are written to a private
temporary directory, and are decompressed at :meth:`commit`, where each layer's
uncompressed digest must equal the config's diff_id. The tarball is written
reproducibly (sorted as above, owner 0, mtime 0) to a temporary file beside PATH
and renamed over it. Like containers/image, an existing non-empty PATH is refused:
a docker archive is written whole, never appended to.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from criolib._atomic import fsync_dir
from criolib.image._errors import (
    DigestMismatch,
    ManifestError,
    TransportError,
    UnsupportedManifest,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    DockerManifest,
    OCIManifest,
    parse_image_config,
    parse_manifest,
)
from criolib.image._transports._docker_archive import DockerArchiveReference
from criolib.image._transports._files import CHUNK, open_decompressed, split_digest, write_blob

__all__ = ["DockerArchiveDestination", "legacy_layer_ids"]

# containers/image writer.go: the image config keys copied into the top legacy layer.
_LEGACY_KEYS = ("architecture", "config", "container", "container_config", "created",
                "docker_version", "os")


def _compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def legacy_layer_ids(diff_ids: Sequence[str], config: Mapping[str, Any]) -> list[
        tuple[str, bytes]]:
    """``(layer id, v1 json)`` per layer, as containers/image's ``writeLegacyMetadata``.

    Each id is the sha256 of the layer's v1 config with its chain id; chained
    through ``parent``, so the same layers under another config get other ids.
    """
    out: list[tuple[str, bytes]] = []
    chain = ""
    parent = ""
    for i, diff_id in enumerate(diff_ids):
        layer: dict[str, Any] = {"parent": parent} if parent else {}
        if i == len(diff_ids) - 1:
            layer.update({k: config[k] for k in _LEGACY_KEYS if k in config})
        chain = diff_id if not chain else (
            "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest())
        layer_id = hashlib.sha256(_compact({**layer, "layer_id": chain})).hexdigest()
        layer["id"] = layer_id
        out.append((layer_id, _compact(layer)))
        parent = layer_id
    return out


def _info(name: str, *, size: int = 0, kind: bytes = tarfile.REGTYPE,
          link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class DockerArchiveDestination:
    """Writes one image as a ``docker save`` tarball (containers/image docker/archive)."""

    supported_manifest_types: tuple[str, ...] = (MEDIA_TYPE_DOCKER_MANIFEST,
                                                 MEDIA_TYPE_OCI_MANIFEST)

    def __init__(self, ref: DockerArchiveReference) -> None:
        self.ref = ref
        self.reference = str(ref)
        path = ref.path
        if path.is_dir():
            raise TransportError(f"{self.reference}: {path} is a directory, not an archive")
        if path.exists() and path.stat().st_size > 0:
            raise TransportError(f"{self.reference}: {path} already exists; docker-archive "
                                 "writes whole archives and does not modify existing ones")
        if not path.parent.is_dir():
            raise TransportError(f"{self.reference}: directory {path.parent} does not exist")
        self._tmp = Path(tempfile.mkdtemp(prefix="criolib-docker-archive-"))
        self._blobs: dict[str, Path] = {}
        self._diff_ids: dict[str, str] = {}
        self._manifest: DockerManifest | OCIManifest | None = None

    def has_blob(self, digest: str, size: int = -1) -> bool:
        path = self._blobs.get(digest)
        return path is not None and (size < 0 or path.stat().st_size == size)

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        final = self._tmp / split_digest(digest)[1]
        try:
            write_blob(stream, final, digest, size, what=self.reference)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot store blob {digest}: {exc}") from exc
        self._blobs[digest] = final

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        digest = str(descriptor["digest"])
        self.put_blob(stream, digest, int(descriptor.get("size", -1)),
                      str(descriptor.get("mediaType", "")))
        self._diff_ids[digest] = diff_id

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None) -> None:
        if instance is not None or media_type not in self.supported_manifest_types:
            raise UnsupportedManifest(f"{self.reference}: a docker archive holds single images "
                                      f"(Docker schema 2 or OCI manifests), not {media_type}; "
                                      "choose a platform first")
        parsed = parse_manifest(manifest, media_type)
        assert isinstance(parsed, DockerManifest | OCIManifest)
        self._manifest = parsed

    def _uncompressed(self, digest: str, diff_id: str) -> Path:
        """The layer as a plain tar, checked against its diff_id."""
        raw = self._blobs.get(digest)
        if raw is None:
            raise TransportError(f"{self.reference}: commit without layer {digest}")
        if digest == diff_id:
            return raw  # stored uncompressed: its digest was checked as it arrived
        out = self._tmp / f"{split_digest(diff_id)[1]}.tar"
        hasher = hashlib.new(split_digest(diff_id)[0])
        with open_decompressed(cast(BinaryIO, raw.open("rb"))) as src, out.open("wb") as dst:
            while chunk := src.read(CHUNK):
                hasher.update(chunk)
                dst.write(chunk)
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        if actual != diff_id:
            out.unlink()
            raise DigestMismatch(f"{self.reference}: layer {digest} uncompresses to {actual}, "
                                 f"but the config's diff_id is {diff_id}", what=self.reference,
                                 expected=diff_id, actual=actual)
        return out

    def commit(self) -> None:
        """Check every layer against the config's diff_ids, then write PATH in one rename."""
        m = self._manifest
        if m is None:
            raise TransportError(f"{self.reference}: commit without a manifest")
        config_path = self._blobs.get(m.config.digest)
        if config_path is None:
            raise TransportError(f"{self.reference}: commit without the config {m.config.digest}")
        config_bytes = config_path.read_bytes()
        try:
            config = parse_image_config(config_bytes)
        except ManifestError as exc:
            raise TransportError(f"{self.reference}: {exc}") from exc
        diff_ids = config.rootfs.diff_ids
        if len(diff_ids) != len(m.layers):
            raise TransportError(f"{self.reference}: {len(m.layers)} layers in the manifest but "
                                 f"{len(diff_ids)} diff_ids in the config")
        for layer, diff_id in zip(m.layers, diff_ids, strict=True):
            if self._diff_ids.get(layer.digest, diff_id) != diff_id:
                raise DigestMismatch(f"{self.reference}: layer {layer.digest} was sent as "
                                     f"{self._diff_ids[layer.digest]}, the config says {diff_id}",
                                     what=self.reference, expected=diff_id)
        layers = [self._uncompressed(layer.digest, d) for layer, d in zip(m.layers, diff_ids,
                                                                          strict=True)]
        try:
            self._write(config_bytes, json.loads(config_bytes), diff_ids, layers)
        except OSError as exc:
            raise TransportError(f"{self.reference}: cannot write {self.ref.path}: {exc}") from exc

    def _write(self, config_bytes: bytes, config: Mapping[str, Any], diff_ids: Sequence[str],
               layers: Sequence[Path]) -> None:
        ids = legacy_layer_ids(diff_ids, config)
        config_name = f"{split_digest(self._manifest_config_digest())[1]}.json"
        name = self.ref.name
        items = [{"Config": config_name, "RepoTags": [name] if name else [],
                  "Layers": [f"{i}/layer.tar" for i, _ in ids]}]
        repositories: dict[str, dict[str, str]] = {}
        if name and ids:
            repo, _, tag = name.rpartition(":")
            repositories[repo] = {tag: ids[-1][0]}
        dest = self.ref.path
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    first_of: dict[str, str] = {}
                    for (layer_id, v1), diff_id, path in zip(ids, diff_ids, layers, strict=True):
                        tar.addfile(_info(f"{layer_id}/", kind=tarfile.DIRTYPE))
                        tar.addfile(_info(f"{layer_id}/VERSION", size=3), io.BytesIO(b"1.0"))
                        tar.addfile(_info(f"{layer_id}/json", size=len(v1)), io.BytesIO(v1))
                        if diff_id in first_of:  # docker save links repeats to the first copy
                            tar.addfile(_info(f"{layer_id}/layer.tar", kind=tarfile.SYMTYPE,
                                              link=f"../{first_of[diff_id]}/layer.tar"))
                            continue
                        first_of[diff_id] = layer_id
                        with path.open("rb") as f:
                            tar.addfile(_info(f"{layer_id}/layer.tar",
                                              size=path.stat().st_size), f)
                    for fname, data in ((config_name, config_bytes),
                                        ("manifest.json", _compact(items)),
                                        ("repositories", _compact(repositories))):
                        tar.addfile(_info(fname, size=len(data)), io.BytesIO(data))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(dest.parent)

    def _manifest_config_digest(self) -> str:
        assert self._manifest is not None
        return self._manifest.config.digest

    def close(self) -> None:
        """Remove the temporary blobs (PATH is untouched unless committed)."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DockerArchiveDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DockerArchiveDestination({self.reference!r})"
