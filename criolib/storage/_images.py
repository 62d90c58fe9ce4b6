"""Image records and the image store over ``images.json`` (containers/storage ``images.go``).

An image is a top layer plus names, digests and "big data": the manifest, the
config, signatures, each kept in ``images/<id>/<base64url(key)>`` and listed in the
record with its digest and size. The id is the config digest's hex (image-spec
v1.1 config.md "ImageID"): 64 lowercase hex digits, and when the config itself is
stored as big data ``config``, its sha256 must be the id. Big data is
written (atomically) before the record that lists it, and an image's record only
after its layers exist, so a crash leaves at worst files no record names.

Names (``repo:tag``) are unique among images and move: giving a name to one image
takes it from the image that had it (a re-pulled tag). Digests
(``repo@sha256:...``) are looked up through the image's ``digests``.

:class:`ImageStore` does no locking: :class:`criolib.storage.Store` does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib._atomic import atomic_write_bytes, fsync_dir
from criolib.storage._errors import (
    BigDataUnknown,
    IDConflict,
    ImageIDMismatch,
    ImageUnknown,
    StorageError,
)
from criolib.storage._faults import crash_point
from criolib.storage._records import (
    load_records,
    lookup,
    make_converter,
    metadata_error,
    save_records,
    utcnow,
    validate_image_id,
)

__all__ = ["CONFIG_KEY", "Image", "ImageStore", "big_data_file_name", "repository_of"]

log = logging.getLogger("criolib.storage")

#: The big data key under which containers/image keeps an image's config.
CONFIG_KEY = "config"


def big_data_file_name(key: str) -> str:
    """The file name of big data item ``key`` (base64url: any key is a safe name)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=") or "="


def repository_of(name: str) -> str:
    """``docker.io/library/busybox`` of ``...busybox:tag`` or ``...busybox@sha256:...``."""
    name = name.partition("@")[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@attrs.frozen
class Image:
    """One image's record (containers/storage ``Image``, the fields criolib uses).

    ``layer`` is the top layer's id (``None`` for an image without layers);
    ``big_data_digests``/``big_data_sizes`` describe the files in ``images/<id>/``.
    """

    id: str
    digest: str | None = None
    digests: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    layer: str | None = None
    created: dt.datetime | None = None
    metadata: str = ""
    big_data_names: tuple[str, ...] = ()
    big_data_sizes: Mapping[str, int] = attrs.field(factory=dict)
    big_data_digests: Mapping[str, str] = attrs.field(factory=dict)
    flags: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as ``images.json`` holds it (containers/storage's field names)."""
        return image_to_json(self)


_IMAGE_WIRE = {
    "id": "id", "digest": "digest", "digests": "digests", "names": "names",
    "layer": "layer", "created": "created", "metadata": "metadata",
    "big_data_names": "big-data-names", "big_data_sizes": "big-data-sizes",
    "big_data_digests": "big-data-digests", "flags": "flags",
}
image_from_json, image_to_json = make_converter(Image, _IMAGE_WIRE)


class ImageStore:
    """The images of one store: ``<graphroot>/images.json`` and ``images/<id>/``.

    Not locked by itself: :class:`criolib.storage.Store` holds the store lock.
    """

    def __init__(self, graphroot: Path) -> None:
        self.graphroot = graphroot
        self.path = graphroot / "images.json"
        self.dir = graphroot / "images"
        self._images: dict[str, Image] = {}
        self._names: dict[str, str] = {}

    def load(self) -> None:
        """Read ``images.json`` again."""
        self._images = {i.id: i for i in load_records(self.path, image_from_json)}
        self._names = {n: i.id for i in self._images.values() for n in i.names}

    def save(self, what: str = "the images") -> None:
        save_records(self.path, self._images.values(), image_to_json, what=what)

    # -- lookups ------------------------------------------------------------------

    def images(self) -> list[Image]:
        return list(self._images.values())

    def get(self, ref: str) -> Image:
        """The image ``ref`` names: id, name, ``repo@digest``, digest, or unique id prefix.

        ``sha256:<hex>`` matches an image's manifest digests; bare hex is an id or
        a prefix of one. :class:`ImageUnknown` if nothing matches.
        """
        if ref in self._images or ref in self._names:
            return lookup("image", ref, self._images, self._names, ImageUnknown)
        repo, at, digest = ref.partition("@")
        if at:
            for image in self._images.values():
                if digest in image.digests and any(repository_of(n) == repo
                                                   for n in image.names):
                    return image
            raise ImageUnknown(f"image {ref!r} not known")
        if ref.startswith("sha256:"):
            hex_ = ref.removeprefix("sha256:")
            for image in self._images.values():
                if ref in image.digests or ref == image.digest:
                    return image
            if hex_ in self._images:
                return self._images[hex_]
            raise ImageUnknown(f"image {ref!r} not known")
        return lookup("image", ref, self._images, self._names, ImageUnknown)

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except (ImageUnknown, KeyError):
            return False
        return True

    def __contains__(self, image_id: object) -> bool:
        """Whether an image has exactly this id (no names, digests or prefixes)."""
        return image_id in self._images

    def by_layer(self, layer_id: str) -> list[Image]:
        """Images whose top layer is ``layer_id``."""
        return [i for i in self._images.values() if i.layer == layer_id]

    def by_digest(self, digest: str) -> list[Image]:
        return [i for i in self._images.values() if digest in i.digests or digest == i.digest]

    # -- creating -----------------------------------------------------------------

    def create_image(self, id: str, layer: str | None, *, names: Sequence[str] = (),
                     digest: str | None = None, digests: Sequence[str] = (),
                     metadata: str = "", created: dt.datetime | None = None,
                     big_data: Mapping[str, bytes] | None = None) -> tuple[Image, bool]:
        """Record an image; ``(image, created)``.

        The caller has checked that ``layer`` exists. ``id`` must be 64 lowercase
        hex (:class:`InvalidID`) and, when ``big_data`` has a ``config``, its
        sha256 (:class:`ImageIDMismatch`). ``big_data`` files are written before
        the record. An image with this id on the same layer is updated (names and
        digests added, big data set) rather than refused, so an import can be
        repeated; on another layer it raises :class:`IDConflict`.
        """
        validate_image_id(id)
        if big_data and CONFIG_KEY in big_data:
            check_config(id, big_data[CONFIG_KEY])
        all_digests = tuple(dict.fromkeys([*([digest] if digest else []), *digests]))
        existing = self._images.get(id)
        if existing is not None:
            if existing.layer != layer:
                raise IDConflict(f"image {id} exists with top layer {existing.layer}, "
                                 f"not {layer}")
            image = attrs.evolve(
                existing, digest=existing.digest or digest,
                digests=tuple(dict.fromkeys([*existing.digests, *all_digests])))
            created_now = False
        else:
            image = Image(id=id, layer=layer, digest=digest, digests=all_digests,
                          metadata=metadata, created=created or utcnow())
            created_now = True
        folder_was_there = (self.dir / id).is_dir()
        try:
            for key, data in (big_data or {}).items():
                image = self._write_big_data(image, key, data)
        except OSError:
            if created_now and not folder_was_there:
                self.remove_dir(id)
            raise
        if big_data:
            crash_point("after-bigdata")
        before = dict(self._images), dict(self._names)
        self._images[id] = image
        self._set_names(id, [*image.names, *names], save=False)
        try:
            self.save(f"image {id}")
        except OSError:
            self._images, self._names = before
            raise
        crash_point("after-image-record")
        return self._images[id], created_now

    # -- big data -----------------------------------------------------------------

    def big_data_path(self, image_id: str, key: str) -> Path:
        return self.dir / image_id / big_data_file_name(key)

    def _write_big_data(self, image: Image, key: str, data: bytes) -> Image:
        """Write one item's file (atomically) and return the record that lists it."""
        if not key:
            raise StorageError(f"image {image.id}: big data needs a non-empty key")
        folder = self.dir / image.id
        path = self.big_data_path(image.id, key)
        try:
            new_dir = not folder.is_dir()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if new_dir:
                fsync_dir(folder.parent)
            atomic_write_bytes(path, data, mode=0o600)
        except OSError as exc:
            raise metadata_error(exc, path, f"write big data {key!r} of image {image.id}"
                                 ) from exc
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        names = image.big_data_names if key in image.big_data_names else (
            *image.big_data_names, key)
        return attrs.evolve(
            image, big_data_names=names,
            big_data_sizes={**image.big_data_sizes, key: len(data)},
            big_data_digests={**image.big_data_digests, key: digest})

    def set_big_data(self, ref: str, key: str, data: bytes) -> Image:
        """Store ``data`` under ``key`` for the image: file first, then the record."""
        image = self.get(ref)
        if key == CONFIG_KEY:
            check_config(image.id, data)
        image = self._write_big_data(image, key, data)
        old = self._images[image.id]
        self._images[image.id] = image
        try:
            self.save(f"big data {key!r} of image {image.id}")
        except OSError:
            self._images[image.id] = old
            raise
        return image

    def big_data(self, ref: str, key: str) -> bytes:
        """The bytes stored under ``key``; :class:`BigDataUnknown` (a KeyError) if none."""
        image = self.get(ref)
        if key not in image.big_data_names:
            raise BigDataUnknown(f"image {image.id} has no big data {key!r} "
                                 f"(it has: {', '.join(image.big_data_names) or 'none'})",
                                 image_id=image.id, key=key)
        path = self.big_data_path(image.id, key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise metadata_error(exc, path, f"read big data {key!r} of image {image.id}"
                                 ) from exc

    def forget_big_data(self, image_id: str, key: str) -> None:
        """Drop ``key`` from the record and delete its file (for repair)."""
        image = self._images[image_id]
        self._images[image_id] = attrs.evolve(
            image, big_data_names=tuple(k for k in image.big_data_names if k != key),
            big_data_sizes={k: v for k, v in image.big_data_sizes.items() if k != key},
            big_data_digests={k: v for k, v in image.big_data_digests.items() if k != key})
        self.save()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.big_data_path(image_id, key))

    def resync_big_data(self, image_id: str, key: str) -> None:
        """Make the record's digest and size those of the file (for repair)."""
        data = self.big_data_path(image_id, key).read_bytes()
        image = self._images[image_id]
        self._images[image_id] = attrs.evolve(
            image, big_data_sizes={**image.big_data_sizes, key: len(data)},
            big_data_digests={**image.big_data_digests,
                              key: "sha256:" + hashlib.sha256(data).hexdigest()})
        self.save()

    # -- names --------------------------------------------------------------------

    def add_names(self, ref: str, names: Iterable[str]) -> Image:
        """Give the image these names; a name another image had moves here."""
        image = self.get(ref)
        self._set_names(image.id, [*image.names, *names])
        return self._images[image.id]

    def remove_names(self, ref: str, names: Iterable[str]) -> Image:
        image = self.get(ref)
        drop = set(names)
        self._set_names(image.id, [n for n in image.names if n not in drop])
        return self._images[image.id]

    def set_names(self, ref: str, names: Iterable[str]) -> Image:
        image = self.get(ref)
        self._set_names(image.id, list(names))
        return self._images[image.id]

    def _set_names(self, image_id: str, names: list[str], *, save: bool = True) -> None:
        wanted = tuple(dict.fromkeys(n for n in names if n))
        for name in wanted:
            other = self._names.get(name)
            if other is not None and other != image_id:
                o = self._images[other]
                self._images[other] = attrs.evolve(
                    o, names=tuple(n for n in o.names if n != name))
                log.debug("name %s moved from image %s to %s", name, other, image_id)
        for name in self._images[image_id].names:
            self._names.pop(name, None)
        self._images[image_id] = attrs.evolve(self._images[image_id], names=wanted)
        self._names.update(dict.fromkeys(wanted, image_id))
        if save:
            self.save(f"the names of image {image_id}")

    # -- removing -----------------------------------------------------------------

    def delete_image(self, image_id: str) -> Image:
        """Drop the record (first) and then the big data directory.

        In-use checks are the caller's (the store knows the containers).
        """
        image = self._images.pop(image_id)
        for name in image.names:
            self._names.pop(name, None)
        self.save(f"the removal of image {image_id}")
        crash_point("after-image-record-drop")
        self.remove_dir(image_id)
        return image

    def remove_dir(self, image_id: str) -> None:
        folder = self.dir / image_id
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)

    def dir_ids(self) -> list[str]:
        """The names of the directories under ``images/`` (records or debris)."""
        try:
            return sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []


def check_config(image_id: str, config: bytes) -> None:
    """Refuse a config whose sha256 is not ``image_id`` (:class:`ImageIDMismatch`)."""
    actual = hashlib.sha256(config).hexdigest()
    if actual != image_id:
        raise ImageIDMismatch(
            f"image id {image_id} is not the digest of its config (sha256:{actual}); an "
            "image's id is its config's sha256", expected=image_id, actual=actual)
