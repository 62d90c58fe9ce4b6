"""The ``containers-storage:`` destination: pulling an image into a store.

containers/image ``storage/storage_dest.go``: each layer is applied on the one
before (``queueOrCommit``), layers already stored are reused without their bytes
(``TryReusingBlob``: by diff_id, by compressed digest, else by copying another
layer's diff onto the right parent), the config waits in memory, and
:meth:`commit` records the image: id = the config digest's hex, the reference's
name, the manifest digest, and the manifest and config as big data
(``manifest``, ``manifest-<digest>``, ``config``). An image already present with
that config only gains the name and digest. Layers this destination created for
a copy that is never committed are deleted again by :meth:`close`.

Only :mod:`criolib.storage`'s public API is used (ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any, BinaryIO

from criolib.image._copy_spool import read_verified
from criolib.image._errors import DigestMismatch, ImageError
from criolib.image._manifest import MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_MANIFEST
from criolib.image._transports._base import SystemContext
from criolib.image._transports._storage import StorageReference, open_store
from criolib.storage import DigestMismatch as StorageDigestMismatch
from criolib.storage import (
    ImageUnknown,
    LayerInUse,
    LayerUnknown,
    StorageError,
    Store,
    layer_id_for,
)

__all__ = ["StorageImageDestination"]

log = logging.getLogger("criolib.image")


class StorageImageDestination:
    """Writes one image into a :class:`~criolib.storage.Store` (see the module docstring)."""

    supported_manifest_types: tuple[str, ...] = (MEDIA_TYPE_OCI_MANIFEST,
                                                 MEDIA_TYPE_DOCKER_MANIFEST)

    def __init__(self, ref: StorageReference, ctx: SystemContext) -> None:
        self.reference = str(ref)
        self._ref = ref
        self._opened = open_store(ref.spec, ctx)
        self.store: Store = self._opened.__enter__()
        self._configs: dict[str, bytes] = {}
        self._top: str | None = None
        self._created: list[str] = []
        self._manifest: tuple[bytes, str] | None = None
        self._committed = False
        self._closed = False

    def __repr__(self) -> str:
        return f"StorageImageDestination({self.reference!r})"

    # -- blobs ---------------------------------------------------------------------

    def has_blob(self, digest: str, size: int = -1) -> bool:
        """Whether the store holds this blob: a config it has, a layer made from it."""
        if digest in self._configs or self.stored_config(digest) is not None:
            return True
        return bool(self.store.layers_by_compressed_digest(digest)
                    or self.store.layers_by_diff_id(digest))

    def put_blob(self, stream: BinaryIO, digest: str, size: int, media_type: str) -> None:
        """Keep a non-layer blob (the config) for :meth:`commit`, once verified."""
        self._configs[digest] = read_verified(stream, digest, size, what="config")

    def stored_config(self, digest: str) -> bytes | None:
        """The config of the stored image whose id is ``digest``'s hex, if there is one."""
        hex_ = digest.partition(":")[2]
        if not digest.startswith("sha256:") or len(hex_) != 64:
            return None
        try:
            data = self.store.big_data(hex_, "config")
        except (ImageUnknown, StorageError):
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    # -- layers --------------------------------------------------------------------

    def layer_present(self, descriptor: Mapping[str, Any], diff_id: str | None) -> bool:
        """Whether some stored layer has this diff_id or was made from this blob."""
        if diff_id and self.store.layers_by_diff_id(diff_id):
            return True
        return bool(self.store.layers_by_compressed_digest(str(descriptor["digest"])))

    def reuse_layer(self, descriptor: Mapping[str, Any], diff_id: str | None) -> bool:
        """Stack the stored layer at this position without its bytes; ``False`` if none fits."""
        digest = str(descriptor["digest"])
        if diff_id:
            wanted = layer_id_for(self._top, diff_id)
            try:
                self.store.layer(wanted)
            except (LayerUnknown, StorageError):
                pass
            else:
                self._top = wanted
                return True
        on_parent = [lay for lay in self.store.layers_by_compressed_digest(digest)
                     if lay.parent == self._top]
        if on_parent:
            self._top = on_parent[0].id
            return True
        others = (self.store.layers_by_diff_id(diff_id) if diff_id else []) or \
            self.store.layers_by_compressed_digest(digest)
        for other in others:
            # The same diff on another parent: copy it over (storage_dest.go does too).
            expected = diff_id or other.uncompressed_digest
            try:
                with self.store.diff(other.id) as diff:
                    layer = self.store.put_layer(diff, self._top, expected_diff_id=expected)
            except StorageDigestMismatch:
                # criolib.storage's export is not always the original tar (no tar-split).
                log.info("layer %s cannot be reproduced from %s; downloading it", digest,
                         other.id)
                continue
            except (LayerUnknown, StorageError) as exc:
                log.info("reusing layer %s for %s failed: %s", other.id, digest, exc)
                continue
            self._note_created(layer.id, created=True)
            return True
        return False

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any], diff_id: str) -> None:
        """Apply the layer blob on the previous layer, checking its digest and diff_id."""
        digest = str(descriptor["digest"])
        existed = self._exists(diff_id, digest)
        try:
            layer = self.store.put_layer(stream, self._top, expected_diff_id=diff_id or None,
                                         expected_digest=digest)
        except StorageDigestMismatch as exc:
            raise DigestMismatch(f"{self.reference}: layer {digest}: {exc}", what=digest,
                                 expected=exc.expected, actual=exc.actual) from exc
        self._note_created(layer.id, created=not existed)

    def _exists(self, diff_id: str, digest: str) -> bool:
        if diff_id:
            try:
                self.store.layer(layer_id_for(self._top, diff_id))
            except (LayerUnknown, StorageError):
                return False
            return True
        return any(lay.parent == self._top
                   for lay in self.store.layers_by_compressed_digest(digest))

    def _note_created(self, layer_id: str, *, created: bool) -> None:
        if created:
            self._created.append(layer_id)
        self._top = layer_id

    # -- manifest and commit -------------------------------------------------------

    def put_manifest(self, manifest: bytes, media_type: str, instance: str | None = None
                     ) -> None:
        """Keep the image's manifest for :meth:`commit`."""
        if media_type not in self.supported_manifest_types:
            raise ImageError(f"{self.reference}: containers-storage stores one image per "
                             f"name, not a {media_type}")
        self._manifest = (manifest, media_type)

    def commit(self) -> None:
        """Record the image (or add the name to the image already there)."""
        if self._manifest is None:
            raise ImageError(f"{self.reference}: commit without a manifest")
        manifest, _ = self._manifest
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        doc = json.loads(manifest)
        config_digest = str(doc["config"]["digest"])
        config = self._configs.get(config_digest) or self.stored_config(config_digest)
        if config is None:
            raise ImageError(f"{self.reference}: commit without the config {config_digest}")
        image_id = config_digest.partition(":")[2]
        if self._ref.id is not None and self._ref.id != image_id:
            raise ImageError(f"{self.reference}: the image's id would be {image_id}, not the "
                             f"{self._ref.id} the reference names")
        expected_layers = len(doc.get("layers") or [])
        if (self._top is None) != (expected_layers == 0):
            raise ImageError(f"{self.reference}: {expected_layers} layers in the manifest "
                             "but none were stored" if self._top is None else
                             f"{self.reference}: layers stored for a manifest without any")
        names = [self._ref.image_name] if self._ref.image_name else []
        self.store.create_image(
            image_id, self._top, names=names, digest=manifest_digest,
            big_data={"manifest": manifest, f"manifest-{manifest_digest}": manifest,
                      "config": config})
        self._committed = True
        log.info("%s: image %s committed", self.reference, image_id[:12])

    def close(self) -> None:
        """Forget an uncommitted copy: delete the layers it created, newest first."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._committed:
                for layer_id in reversed(self._created):
                    try:
                        self.store.delete_layer(layer_id)
                    except (LayerInUse, LayerUnknown) as exc:
                        log.info("keeping layer %s of an uncommitted copy: %s", layer_id, exc)
        finally:
            self._opened.__exit__(None, None, None)

