"""The ``containers-storage:`` transport: images in a :class:`criolib.storage.Store`.

containers/image ``storage/storage_transport.go`` (``ParseReference``,
``ParseStoreReference``) and ``storage_reference.go``: a reference is an
optional store specification and an image::

    containers-storage:[driver@graphroot+runroot:opt1,opt2]name[:tag]
    containers-storage:[graphroot]name@sha256:<manifest digest>
    containers-storage:name@<image id>      containers-storage:<image id>

Names are normalised like docker references (``busybox`` is
``docker.io/library/busybox:latest``; ``localhost/x`` stays); a name without tag or
digest gets ``:latest``. The store is the one the specification names (its
missing parts come from storage.conf), else :attr:`SystemContext.store`, else
storage.conf's. Stores opened here are shared by every reference to the same
graphroot in this process (two :class:`~criolib.storage.Store` objects on one
graphroot would lock each other out) and closed when the last user is done.

The source (pushing from storage) hands out each layer as criolib.storage
exports it, uncompressed; see :class:`StorageImageSource`. The destination is
:mod:`criolib.image._transports._storage_dest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from criolib.image._errors import ImageError, InvalidReference
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_LAYER_TAR,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_MANIFEST,
)
from criolib.image._reference import Reference, parse_normalized
from criolib.image._transports import register_transport
from criolib.image._transports._base import ImageDestination, ImageSource, SystemContext
from criolib.storage import ImageUnknown, StorageConfig, Store

if TYPE_CHECKING:
    from criolib.storage import Image, Layer

__all__ = [
    "STORAGE_TRANSPORT",
    "StorageImageSource",
    "StorageReference",
    "StorageTransport",
    "StoreSpec",
    "open_store",
]

log = logging.getLogger("criolib.image")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@attrs.frozen
class StoreSpec:
    """The ``[driver@graphroot+runroot:options]`` part; empty parts are ``None``/``()``."""

    driver: str | None = None
    graphroot: Path | None = None
    runroot: Path | None = None
    options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> StoreSpec:
        """Parse what is between the brackets (``ParseReference``'s rules)."""
        driver: str | None = None
        rest = text
        if "@" in rest:
            driver, _, rest = rest.partition("@")
            if not driver:
                raise InvalidReference(f"[{text}]: empty driver before '@'")
        if not rest:
            raise InvalidReference(f"[{text}]: no graph root")
        rest, colon, opts = rest.partition(":")
        options = tuple(o for o in opts.split(",") if o) if colon else ()
        graphroot, _, runroot = rest.partition("+")
        for label, path in (("graph root", graphroot), ("run root", runroot)):
            if path and not os.path.isabs(path):
                raise InvalidReference(f"[{text}]: the {label} {path!r} is not absolute")
        return cls(driver, Path(graphroot) if graphroot else None,
                   Path(runroot) if runroot else None, options)

    @property
    def empty(self) -> bool:
        return self == StoreSpec()

    def __str__(self) -> str:
        if self.empty:
            return ""
        text = f"{self.driver}@" if self.driver else ""
        text += str(self.graphroot or "")
        text += f"+{self.runroot}" if self.runroot else ""
        text += ":" + ",".join(self.options) if self.options else ""
        return f"[{text}]"


# -- shared stores -------------------------------------------------------------------


_stores_lock = threading.Lock()
_stores: dict[Path, list[Any]] = {}  # graphroot -> [Store, users]


@contextmanager
def open_store(spec: StoreSpec, ctx: SystemContext) -> Iterator[Store]:
    """The store ``spec`` names (or the context's, or storage.conf's), for the block."""
    given: Store | None = ctx.store
    if given is not None and (spec.graphroot is None
                              or Path(os.path.abspath(spec.graphroot)) == given.graphroot):
        yield given
        return
    config = StorageConfig.load() if (spec.graphroot is None or spec.runroot is None
                                      or spec.driver is None) else None
    graphroot = Path(os.path.abspath(spec.graphroot or (config.graphroot if config else "")))
    with _stores_lock:
        entry = _stores.get(graphroot)
        if entry is None:
            assert config is not None or (spec.runroot and spec.driver)
            runroot = spec.runroot or (config.runroot if config else None)
            driver = spec.driver or (config.driver if config else "overlay")
            options = list(spec.options) or list(
                config.driver_options if config and driver == config.driver else ())
            entry = [Store(graphroot, runroot or graphroot / "run", driver, options), 0]
            _stores[graphroot] = entry
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _stores_lock:
            entry[1] -= 1
            if entry[1] == 0:
                _stores.pop(graphroot, None)
                entry[0].close()


# -- references ----------------------------------------------------------------------


class StorageTransport:
    """``containers-storage:``."""

    name = "containers-storage"

    def parse(self, reference: str) -> StorageReference:
        """Parse what follows ``containers-storage:``."""
        return StorageReference.parse(reference)

    def __repr__(self) -> str:
        return "StorageTransport()"


STORAGE_TRANSPORT = StorageTransport()
register_transport(STORAGE_TRANSPORT)


@attrs.frozen
class StorageReference:
    """An image in a store: a normalised name (with tag and/or digest), an id, or both."""

    spec: StoreSpec
    name: Reference | None
    id: str | None = None

    @property
    def transport(self) -> StorageTransport:
        return STORAGE_TRANSPORT

    @classmethod
    def parse(cls, text: str) -> StorageReference:
        """``ParseStoreReference``: ``[spec]`` then ``name[:tag][@digest][@id]`` or an id."""
        spec = StoreSpec()
        if text.startswith("["):
            close = text.find("]")
            if close < 1:
                raise InvalidReference(f"containers-storage:{text}: '[' without ']'")
            spec = StoreSpec.parse(text[1:close])
            text = text[close + 1:]
        if not text:
            raise InvalidReference("containers-storage: reference without an image")
        image_id: str | None = None
        head, at, tail = text.rpartition("@")
        if at and not tail:
            raise InvalidReference(f"{text}: empty digest or id after '@'")
        if at and ":" not in tail:
            if not _HEX64.match(tail):
                raise InvalidReference(f"{text}: {tail!r} is neither an image id nor a "
                                            "digest")
            image_id, text = tail, head
        elif not at and _HEX64.match(text):
            return cls(spec, None, text)
        if not text:
            return cls(spec, None, image_id)
        try:
            name = parse_normalized(text)
        except InvalidReference as exc:
            raise InvalidReference(f"containers-storage:{text}: {exc}") from exc
        return cls(spec, name.with_default_tag(), image_id)

    def string_within_transport(self) -> str:
        """``[spec]name@id``, the form :meth:`parse` reads back."""
        text = str(self.spec)
        if self.name is not None:
            text += str(self.name)
            if self.id:
                text += f"@{self.id}"
        elif self.id:
            text += self.id
        return text

    def __str__(self) -> str:
        return f"{self.transport.name}:{self.string_within_transport()}"

    def policy_scope(self) -> str:
        """``[driver@graphroot]name`` (containers/image's ``PolicyConfigurationIdentity``)."""
        driver, graphroot = self.spec.driver, self.spec.graphroot
        if driver is None or graphroot is None:
            config = StorageConfig.load()
            driver, graphroot = driver or config.driver, graphroot or config.graphroot
        scope = f"[{driver}@{os.path.abspath(graphroot)}]"
        if self.name is not None:
            scope += str(self.name)
        if self.id:
            scope += f"@{self.id}"
        return scope

    @property
    def image_name(self) -> str | None:
        """The name the image gets in the store (``None``: digest-only or id-only)."""
        if self.name is None or self.name.tag is None:
            return None
        return str(attrs.evolve(self.name, digest=None))

    def lookup(self, store: Store) -> Image:
        """The stored image this reference names; :class:`ImageUnknown` if none."""
        if self.id is not None:
            image = store.image(self.id)
        elif self.name is not None and self.name.digest is not None:
            repo = str(self.name.name_only())
            image = store.image(f"{repo}@{self.name.digest}")
        elif self.name is not None:
            image = store.image(str(self.name))
        else:  # pragma: no cover - parse never makes one
            raise InvalidReference("containers-storage: reference without an image")
        if self.name is not None and self.id is not None and self.name.tag is not None \
                and str(self.name) not in image.names:
            raise ImageUnknown(f"image {self.id} is not named {self.name}")
        return image

    def new_source(self, ctx: SystemContext) -> ImageSource:
        return StorageImageSource(self, ctx)

    def new_destination(self, ctx: SystemContext) -> ImageDestination:
        from criolib.image._transports._storage_dest import StorageImageDestination

        return StorageImageDestination(self, ctx)


# -- source --------------------------------------------------------------------------


class StorageImageSource:
    """An image read from a store, for pushing or copying it elsewhere.

    containers/image's storage source with ``LayerInfosForCopy``: the stored
    manifest is rewritten so each layer is the uncompressed tarball
    criolib.storage exports (``digest`` = its diff_id). Every layer is exported
    once, into an anonymous file, when :meth:`get_manifest` is first called.
    criolib.storage keeps no tar-split, so an export is not always the
    byte-identical original: where a layer's export hashes differently from the
    config's diff_id, the config's ``rootfs.diff_ids`` are rewritten to match (the
    content is the same; the config digest, and so the image id, then change).
    """

    def __init__(self, ref: StorageReference, ctx: SystemContext) -> None:
        self.reference = str(ref)
        self._ref = ref
        self._opened = open_store(ref.spec, ctx)
        self._store = self._opened.__enter__()
        try:
            self.image = ref.lookup(self._store)
        except BaseException:
            self._opened.__exit__(None, None, None)
            raise
        self._exports: dict[str, BinaryIO] = {}
        self._config: tuple[str, bytes] | None = None
        self._manifest: tuple[bytes, str] | None = None

    def _stored_manifest(self) -> bytes | None:
        keys = []
        if self._ref.name is not None and self._ref.name.digest is not None:
            keys.append(f"manifest-{self._ref.name.digest}")
        keys.append("manifest")
        for key in keys:
            if key in self.image.big_data_names:
                return self._store.big_data(self.image.id, key)
        return None

    def get_manifest(self, instance: str | None = None) -> tuple[bytes, str]:
        """The manifest with each layer as exported (uncompressed), built on first call."""
        if instance is not None:
            raise ImageError(f"{self.reference}: a stored image has no instances ({instance})")
        if self._manifest is None:
            self._manifest = self._build_manifest()
        return self._manifest

    def _build_manifest(self) -> tuple[bytes, str]:
        config = self._store.big_data(self.image.id, "config")
        config_doc: dict[str, Any] = json.loads(config)
        stored = self._stored_manifest()
        doc: dict[str, Any] = json.loads(stored) if stored is not None else {}
        docker = doc.get("mediaType") == MEDIA_TYPE_DOCKER_MANIFEST
        media_type = MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
        layer_type = MEDIA_TYPE_DOCKER_LAYER_TAR if docker else MEDIA_TYPE_OCI_LAYER_TAR
        layers: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        old_layers: list[dict[str, Any]] = doc.get("layers") or []
        for index, layer in enumerate(self._store.image_layers(self.image.id)):
            digest, size = self._export(layer)
            old = old_layers[index] if index < len(old_layers) else {}
            entry = {"mediaType": layer_type, "digest": digest, "size": size}
            if old.get("annotations"):
                entry["annotations"] = old["annotations"]
            layers.append(entry)
            diff_ids.append(digest)
        stored_ids = list(config_doc.get("rootfs", {}).get("diff_ids") or [])
        if stored_ids != diff_ids:
            log.warning("%s: criolib.storage's export of the layers hashes to other diff_ids "
                        "than the image config's; the config is rewritten to match",
                        self.reference)
            config_doc.setdefault("rootfs", {"type": "layers"})["diff_ids"] = diff_ids
            config = json.dumps(config_doc, separators=(",", ":")).encode()
        config_digest = _sha256(config)
        self._config = (config_digest, config)
        old_config = doc.get("config") or {}
        manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                                    "config": {"mediaType": old_config.get(
                                        "mediaType", MEDIA_TYPE_OCI_CONFIG),
                                        "digest": config_digest, "size": len(config)},
                                    "layers": layers}
        if doc.get("annotations"):
            manifest["annotations"] = doc["annotations"]
        if stored is not None and json.loads(stored) == manifest:
            return stored, media_type  # nothing changed: keep the bytes (and digest)
        return json.dumps(manifest, indent=3).encode(), media_type

    def _export(self, layer: Layer) -> tuple[str, int]:
        """Export ``layer`` into an anonymous file; its (diff_id, size)."""
        staging = self._store.graphroot / "staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        sink = tempfile.TemporaryFile(dir=staging)  # noqa: SIM115 - closed in close()
        try:
            result = self._store.diff_to(layer.id, sink)
        except BaseException:
            sink.close()
            raise
        self._exports.setdefault(result.diff_id, sink)
        return result.diff_id, result.uncompressed_size

    def get_blob(self, digest: str, size: int = -1) -> BinaryIO:
        """The config, or an exported layer (a fresh stream from its start)."""
        self.get_manifest()
        if self._config is not None and digest == self._config[0]:
            return io.BytesIO(self._config[1])
        sink = self._exports.get(digest)
        if sink is None:
            raise ImageError(f"{self.reference}: no blob {digest} in this image")
        # A new open file description of the anonymous file: its own offset.
        return open(f"/proc/self/fd/{sink.fileno()}", "rb")

    def has_blob_cheaply(self, digest: str) -> bool:
        return True

    def close(self) -> None:
        for sink in self._exports.values():
            sink.close()
        self._exports.clear()
        self._opened.__exit__(None, None, None)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

