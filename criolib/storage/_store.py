"""The store: layers, images and containers behind one lock (containers/storage ``store.go``).

:class:`Store` is the thin front door over :class:`LayerStore`,
:class:`ImageStore`, :class:`ContainerStore`, a graph driver and one
:class:`StoreLock` (``<graphroot>/storage.lock``):

- every call that changes something holds the lock exclusively, starts a new
  write generation *before* its first write (so a writer killed half way still
  makes every reader reload) and writes each metadata file atomically;
- every call that only reads holds the lock shared and first reloads the
  metadata if the generation moved (another process wrote);
- objects appear bottom-up and disappear top-down: a layer's directory is
  complete before its record, an image's layers before the image, a container's
  layer and directory before the container; deleting drops the record first. A
  crash therefore leaves at worst things no record names, which
  :func:`~criolib.storage.check` reports and :func:`~criolib.storage.repair` or
  :func:`~criolib.storage.gc` remove. Nothing blocks a restart: the lock is an
  ``flock`` that dies with its process.

Applying a layer holds the exclusive lock for the whole extraction, as
containers/storage's ``ApplyDiff`` does: readers wait rather than see a layer
that is not there yet, and two processes never extract the same layer at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from criolib.storage._conf import StorageConfig, split_driver_options
from criolib.storage._containers import Container, ContainerStore
from criolib.storage._drivers import GraphDriver, get_driver
from criolib.storage._errors import (
    ConfigError,
    ContainerUnknown,
    ImageInUse,
    LayerInUse,
    LayerUnknown,
    StorageError,
)
from criolib.storage._images import Image, ImageStore
from criolib.storage._layers import Layer, LayerStore
from criolib.storage._lock import StoreLock

if TYPE_CHECKING:
    import datetime as dt

    from criolib.storage._archive import ApplyResult, Compression

__all__ = ["Store"]

log = logging.getLogger("criolib.storage")
_Named = ImageStore | ContainerStore | LayerStore


class Store:
    """Layers, images and containers in ``graphroot`` (and mounts counted in ``runroot``).

    ``driver`` is a driver name (``"overlay"``, ``"vfs"``, a plug-in) or a ready
    :class:`GraphDriver`; ``driver_options`` are ``key=value`` strings (a
    ``<driver>.`` prefix is accepted; options for another driver are dropped).
    ``lock_timeout`` (seconds, ``None`` = wait forever) bounds every wait for the
    store lock (:class:`LockTimeout`). Use as a context manager, or call
    :meth:`close`. Safe to share between threads; open one per graphroot in a
    process (two lock each other out, as two processes do).
    """

    def __init__(self, graphroot: str | os.PathLike[str], runroot: str | os.PathLike[str],
                 driver: str | GraphDriver = "overlay", driver_options: Sequence[str] = (), *,
                 lock_timeout: float | None = None) -> None:
        self.graphroot = Path(os.path.abspath(graphroot))
        self.runroot = Path(os.path.abspath(runroot))
        _refuse_foreign_store(self.graphroot)
        self.graphroot.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runroot.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = StoreLock(self.graphroot / "storage.lock", timeout=lock_timeout)
        if isinstance(driver, str):
            self.driver: GraphDriver = get_driver(
                driver, self.graphroot / driver,
                options=split_driver_options(driver, driver_options))
        else:
            self.driver = driver
        self.layer_store = LayerStore(self.graphroot, self.runroot, self.driver)
        self.image_store = ImageStore(self.graphroot)
        self.container_store = ContainerStore(self.graphroot, self.layer_store)
        self._seen: str | None = None
        self._mem = threading.RLock()

    @classmethod
    def from_config(cls, config: StorageConfig | None = None, *,
                    lock_timeout: float | None = None) -> Store:
        """The store storage.conf describes (:meth:`StorageConfig.load` when ``None``)."""
        config = config if config is not None else StorageConfig.load()
        return cls(config.graphroot, config.runroot, config.driver, config.driver_options,
                   lock_timeout=lock_timeout)

    def __repr__(self) -> str:
        return f"Store({str(self.graphroot)!r}, driver={self.driver.name!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the lock file; mounts stay (see :meth:`shutdown`)."""
        self.lock.close()

    # -- locking ------------------------------------------------------------------

    def _refresh(self) -> None:
        generation = self.lock.generation()
        if generation != self._seen:
            self.layer_store.load()
            self.image_store.load()
            self.container_store.load()
            self._seen = generation

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared with fresh metadata: several reads see one state."""
        with self.lock.shared(), self._mem:
            self._refresh()
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock exclusively with fresh metadata, for a batch of changes."""
        with self.lock.exclusive(), self._mem:
            self._refresh()
            ok = False
            try:
                # A new generation before the first write: readers reload even if
                # this process dies half way through.
                self._seen = self.lock.bump()
                yield
                ok = True
            finally:
                if not ok:
                    self._seen = None  # memory may be ahead of the disk: reload next time

    # -- layers -------------------------------------------------------------------

    def layers(self) -> list[Layer]:
        """Every layer, parents before children."""
        with self.reading():
            return self.layer_store.layers()

    def layer(self, ref: str) -> Layer:
        """The layer with this id, name or unique id prefix; :class:`LayerUnknown` if none."""
        with self.reading():
            return self.layer_store.get(ref)

    def layers_by_diff_id(self, diff_id: str) -> list[Layer]:
        """Layers whose uncompressed diff has this digest (on any parent)."""
        with self.reading():
            return self.layer_store.by_diff_id(diff_id)

    def layers_by_compressed_digest(self, digest: str) -> list[Layer]:
        """Layers made from a blob with this digest (on any parent)."""
        with self.reading():
            return self.layer_store.by_compressed_digest(digest)

    def layer_path(self, ref: str) -> Path:
        """The directory holding the layer's files (overlay: its changes; vfs: all)."""
        with self.reading():
            return self.driver.diff_path(self.layer_store.get(ref).id)

    def put_layer(self, diff: BinaryIO | None, parent: str | None = None, *,
                  id: str | None = None, expected_diff_id: str | None = None,
                  expected_digest: str | None = None, names: Sequence[str] = (),
                  metadata: str = "") -> Layer:
        """Store the layer tarball ``diff`` (gzip, zstd or plain) on ``parent``.

        With ``expected_diff_id`` (from the image config) the id is known before
        reading: an existing layer is returned without reading ``diff``, else the
        diff must match it (:class:`DigestMismatch`). ``expected_digest`` is the
        blob's digest (the manifest's): checked too, and used to find the layer
        already stored. Without either, the diff is hashed first (spooled when
        not seekable) to learn its id. ``diff=None`` makes an empty layer.
        """
        with self.writing():
            layer, _ = self.layer_store.create_layer(
                diff, parent, id=id, expected_diff_id=expected_diff_id,
                expected_digest=expected_digest, names=names, metadata=metadata)
            return layer

    def create_layer(self, parent: str | None = None, *, id: str | None = None,
                     names: Sequence[str] = (), metadata: str = "") -> Layer:
        """An empty layer on ``parent`` (random id unless given)."""
        return self.put_layer(None, parent, id=id, names=names, metadata=metadata)

    def delete_layer(self, ref: str) -> None:
        """Delete a layer nothing uses: :class:`LayerInUse` names the users otherwise."""
        with self.writing():
            layer = self.layer_store.get(ref)
            users = [f"image {i.id}" for i in self.image_store.by_layer(layer.id)]
            users += [f"container {c.id}" for c in self.container_store.by_layer(layer.id)]
            self.layer_store.remove(layer.id, used_by=users)

    def diff(self, ref: str, *, compression: Compression = "none") -> BinaryIO:
        """The layer's changes as an OCI layer tarball, in a file positioned at its start.

        Exported while the lock is held (so the layer cannot go meanwhile) into an
        anonymous temporary file, which the caller reads and closes.
        """
        staging = self.graphroot / "staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        # O_TMPFILE on the store's filesystem: room like the layers', no debris on a crash.
        sink = tempfile.TemporaryFile(dir=staging)  # noqa: SIM115 - handed to the caller
        try:
            self.diff_to(ref, sink, compression=compression)
            sink.seek(0)
        except BaseException:
            sink.close()
            raise
        return sink

    def diff_to(self, ref: str, sink: BinaryIO, *, compression: Compression = "none"
                ) -> ApplyResult:
        """Write the layer's changes as an OCI layer tarball to ``sink``."""
        with self.reading():
            return self.layer_store.diff_to(ref, sink, compression=compression)

    # -- images -------------------------------------------------------------------

    def images(self) -> list[Image]:
        """Every image, oldest first."""
        with self.reading():
            return self.image_store.images()

    def image(self, ref: str) -> Image:
        """The image with this id, unique id prefix, name, ``repo@digest`` or digest."""
        with self.reading():
            return self.image_store.get(ref)

    def image_layers(self, ref: str) -> list[Layer]:
        """The image's layers, base first."""
        with self.reading():
            image = self.image_store.get(ref)
            if image.layer is None:
                return []
            return list(reversed(self.layer_store.chain(image.layer)))

    def create_image(self, id: str, top_layer: str | None, *, names: Sequence[str] = (),
                     digest: str | None = None, digests: Sequence[str] = (),
                     metadata: str = "", big_data: Mapping[str, bytes] | None = None,
                     created: dt.datetime | None = None) -> Image:
        """Record image ``id`` (the config digest's hex) on ``top_layer``.

        The layer must be stored (:class:`LayerUnknown`); ``big_data`` (manifest,
        config...) is written before the record. Creating an image that exists on
        the same layer adds the names, digests and big data instead.
        """
        with self.writing():
            layer = self.layer_store.get(top_layer).id if top_layer is not None else None
            image, _ = self.image_store.create_image(
                id, layer, names=names, digest=digest, digests=digests, metadata=metadata,
                big_data=big_data, created=created)
            return image

    def set_big_data(self, ref: str, key: str, data: bytes) -> Image:
        """Store ``data`` under ``key`` for the image (file written before the record)."""
        with self.writing():
            return self.image_store.set_big_data(ref, key, data)

    def big_data(self, ref: str, key: str) -> bytes:
        """The image's big data item ``key``; :class:`ImageUnknown` if there is none."""
        with self.reading():
            return self.image_store.big_data(ref, key)

    def delete_image(self, ref: str, *, force: bool = False) -> list[str]:
        """Delete the image and the layers only it used; return those layer ids.

        :class:`ImageInUse` names the containers using it, unless ``force``, which
        deletes them first.
        """
        with self.writing():
            image = self.image_store.get(ref)
            users = self.container_store.by_image(image.id)
            if users and not force:
                ids = tuple(c.id for c in users)
                raise ImageInUse(
                    f"image {image.id} is in use by {len(ids)} container(s): "
                    f"{', '.join(i[:12] for i in ids)}", image_id=image.id, containers=ids)
            for container in users:
                self.container_store.delete_container(container.id)
            self.image_store.delete_image(image.id)
            return self._drop_unused_chain(image.layer)

    def _drop_unused_chain(self, top: str | None) -> list[str]:
        """Remove ``top`` and its ancestors, down to the first one something else uses."""
        used = self.referenced_layers()
        doomed: list[str] = []
        current = top
        while current is not None and current in self.layer_store:
            layer = self.layer_store.get(current)
            others = [c for c in self.layer_store.children(layer.id) if c.id not in doomed]
            if layer.id in used or others or self.layer_store.mounted(layer.id):
                break
            doomed.append(layer.id)
            current = layer.parent
        if doomed:
            self.layer_store.forget(doomed)  # records first, in one write
            self.layer_store.delete_dirs(doomed)
        return doomed

    def referenced_layers(self) -> set[str]:
        """Layers some image or container needs (their whole parent chains)."""
        with self.reading():
            tops = [i.layer for i in self.image_store.images() if i.layer is not None]
            tops += [c.layer for c in self.container_store.containers() if c.layer is not None]
            used: set[str] = set()
            for top in tops:
                current: str | None = top
                while current is not None and current not in used:
                    used.add(current)
                    try:
                        current = self.layer_store.get(current).parent
                    except LayerUnknown:
                        break
            return used

    # -- names --------------------------------------------------------------------

    def set_names(self, ref: str, names: Sequence[str]) -> None:
        """Replace the names of the image, container or layer ``ref`` (in that order)."""
        with self.writing():
            self._names_target(ref, lambda s, i: s.set_names(i, names))

    def add_names(self, ref: str, names: Sequence[str]) -> None:
        """Add names to an image (taking them from others) or a container or layer."""
        with self.writing():
            self._names_target(ref, lambda s, i: s.set_names(i, [*_names(s, i), *names]))

    def remove_names(self, ref: str, names: Sequence[str]) -> None:
        """Take these names from the image, container or layer ``ref``."""
        drop = set(names)
        with self.writing():
            self._names_target(ref, lambda s, i: s.set_names(
                i, [n for n in _names(s, i) if n not in drop]))

    def _names_target(self, ref: str, change: Callable[[_Named, str], object]) -> None:
        stores: list[_Named] = [
            self.image_store, self.container_store, self.layer_store]
        for store in stores:
            if store.exists(ref):
                change(store, store.get(ref).id)
                return
        raise StorageError(f"no image, container or layer {ref!r}")

    # -- containers ---------------------------------------------------------------

    def containers(self) -> list[Container]:
        """Every container, oldest first."""
        with self.reading():
            return self.container_store.containers()

    def container(self, ref: str) -> Container:
        """The container with this id, name or unique id prefix."""
        with self.reading():
            return self.container_store.get(ref)

    def create_container(self, image: str | None, *, names: Sequence[str] = (),
                         id: str | None = None, metadata: str = "") -> Container:
        """A container on ``image`` (any image reference; ``None`` for an empty root)."""
        with self.writing():
            record = self.image_store.get(image) if image is not None else None
            return self.container_store.create_container(record, names=names, id=id,
                                                         metadata=metadata)

    def container_dir(self, ref: str) -> Path:
        """``containers/<id>/userdata``: the container's own directory."""
        with self.reading():
            return self.container_store.userdata(ref)

    def delete_container(self, ref: str) -> None:
        """Unmount and delete the container, its layer and its directory."""
        with self.writing():
            self.container_store.delete_container(ref)

    # -- mounts -------------------------------------------------------------------

    def _layer_of(self, ref: str) -> str:
        if self.container_store.exists(ref):
            layer = self.container_store.get(ref).layer
            if layer is None:
                raise ContainerUnknown(f"container {ref} has no layer")
            return layer
        try:
            return self.layer_store.get(ref).id
        except LayerUnknown:
            raise LayerUnknown(f"no container or layer {ref!r}") from None

    def mount(self, ref: str, *, options: Sequence[str] = ()) -> Path:
        """Mount a container's (or a layer's) root filesystem; callers share one mount.

        A layer is mounted writable unless ``options`` has ``"ro"``: mount a layer
        that images or children stand on only read-only, or they change too.
        """
        with self.writing():
            return self.layer_store.mount(self._layer_of(ref), options=options)

    def unmount(self, ref: str, *, force: bool = False) -> bool:
        """Drop one mount reference (every one with ``force``); whether still mounted."""
        with self.writing():
            return self.layer_store.unmount(self._layer_of(ref), force=force)

    def mounted(self, ref: str) -> int:
        """How many mount references the container or layer has."""
        with self.reading():
            return self.layer_store.mounted(self._layer_of(ref))

    def shutdown(self, force: bool = False) -> list[str]:
        """Unmount everything mounted (``force``), then :meth:`close`; return the layer ids.

        Without ``force``, :class:`LayerInUse` if anything is still mounted.
        """
        with self.writing():
            mounts = self.layer_store.mounts()
            if mounts and not force:
                ids = tuple(mounts)
                raise LayerInUse(f"{len(ids)} layer(s) still mounted: "
                                 f"{', '.join(i[:12] for i in ids)}", layer_id=ids[0],
                                 users=ids)
            for layer_id in mounts:
                self.layer_store.unmount(layer_id, force=True)
        self.close()
        return list(mounts)


def _names(store: _Named, id_: str) -> tuple[str, ...]:
    return store.get(id_).names


def _refuse_foreign_store(graphroot: Path) -> None:
    """Refuse a graphroot that containers/storage (podman, CRI-O) owns.

    Both keep layers in ``<graphroot>/<driver>/`` but containers/storage keeps its
    metadata elsewhere (``<driver>-layers/layers.json``, one set per driver):
    criolib's check and gc would take its layers for debris.
    """
    for kind in ("layers", "images", "containers"):
        for marker in graphroot.glob(f"*-{kind}/{kind}.json"):
            raise ConfigError(
                f"{graphroot} is a containers/storage store (podman, CRI-O, buildah: it has "
                f"{marker.relative_to(graphroot)}); criolib keeps its own format and must "
                "not share it. Set another graphroot (storage.conf or --graphroot)")

