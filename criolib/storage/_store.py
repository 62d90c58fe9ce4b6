"""The store: layers, images and containers behind one lock (containers/storage ``store.go``).

:class:`Store` is the thin front door over :class:`LayerStore`,
:class:`ImageStore`, :class:`ContainerStore`, a graph driver and one
:class:`StoreLock` (``<graphroot>/storage.lock``):

- every call that changes records holds the lock exclusively, starts a new
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

Extracting a layer holds no store lock (see ``_put`` and ``_leases``): readers
never wait for a pull. Each outermost write first clears staging debris when no
extraction runs anywhere.
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

from criolib.storage._conf import DEFAULT_RUNROOT, StorageConfig, split_driver_options
from criolib.storage._containers import Container, ContainerStore
from criolib.storage._drivers import GraphDriver, get_driver
from criolib.storage._drivers._fs import remove_tree
from criolib.storage._errors import (
    ImageInUse,
    LayerInUse,
    LayerUnknown,
    StorageError,
    StoreCorrupt,
    UnknownReference,
)
from criolib.storage._images import Image, ImageStore
from criolib.storage._layers import Layer, LayerStore
from criolib.storage._leases import DEFAULT_LEASE_SECONDS, Locks
from criolib.storage._lock import StoreLock
from criolib.storage._markers import (
    claim_driver,
    claim_runroot,
    refuse_foreign_store,
    runroot_for,
)
from criolib.storage._put import create_empty_layer, put_layer
from criolib.storage._records import metadata_error

if TYPE_CHECKING:
    import datetime as dt

    from criolib.storage._archive import ApplyResult, Compression

__all__ = ["Store"]

log = logging.getLogger("criolib.storage")
_Named = ImageStore | ContainerStore | LayerStore


class Store:
    """Layers, images and containers in ``graphroot`` (and mounts counted in ``runroot``).

    ``runroot`` ``None`` derives one for this graphroot
    (``/run/criolib/storage-<sha256(graphroot)[:12]>``). ``driver`` is a driver
    name (``"overlay"``, ``"vfs"``, a plug-in) or a ready :class:`GraphDriver`;
    the first open records it in the graphroot and another is refused later
    (:class:`ConfigError`). ``driver_options`` are ``key=value`` strings (a
    ``<driver>.`` prefix is accepted; options for another driver are dropped).
    ``lock_timeout`` (seconds, ``None`` = wait forever) bounds every wait for a
    lock (:class:`LockTimeout`); ``lease_seconds`` how long a layer handed out
    by :meth:`put_layer` is kept from deletes until an image or container
    records it. Use as a context manager, or call :meth:`close`. Safe to share
    between threads; open one per graphroot in a process (two lock each other
    out, as two processes do). A graphroot or runroot that cannot be used raises
    :class:`MetadataIOError`.
    """

    def __init__(self, graphroot: str | os.PathLike[str],
                 runroot: str | os.PathLike[str] | None = None,
                 driver: str | GraphDriver = "overlay", driver_options: Sequence[str] = (), *,
                 lock_timeout: float | None = None,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.graphroot = Path(os.path.abspath(graphroot))
        self.runroot = Path(os.path.abspath(
            runroot if runroot is not None else runroot_for(self.graphroot, DEFAULT_RUNROOT)))
        refuse_foreign_store(self.graphroot)
        for place, what in ((self.graphroot, "graphroot"), (self.runroot, "runroot")):
            try:
                place.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not place.is_dir():
                    raise NotADirectoryError(20, "Not a directory", str(place))
            except OSError as exc:
                raise metadata_error(exc, place, f"use {place} as the store's {what}") from exc
        self.lock = StoreLock(self.graphroot / "storage.lock", timeout=lock_timeout)
        self.locks = Locks(self.graphroot, lease_seconds=lease_seconds)
        self.locks.ensure_dir()
        if isinstance(driver, str):
            self.driver: GraphDriver = get_driver(
                driver, self.graphroot / driver,
                options=split_driver_options(driver, driver_options))
        else:
            self.driver = driver
        try:
            claim_driver(self.graphroot, self.driver.name, self.lock)
        except OSError as exc:
            raise metadata_error(exc, self.lock.path, "open the store lock") from exc
        claim_runroot(self.runroot, self.graphroot)
        self.layer_store = LayerStore(self.graphroot, self.runroot, self.driver)
        self.image_store = ImageStore(self.graphroot)
        self.container_store = ContainerStore(self.graphroot, self.layer_store)
        self._seen: str | None = None
        self._mem = threading.RLock()
        self._depth = threading.local()

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
        """End this process's leases and let go of the lock file; mounts stay (:meth:`shutdown`)."""
        self.locks.release_all()
        self.lock.close()

    # -- locking ------------------------------------------------------------------

    def _refresh(self, *, tolerant: bool = False) -> list[StoreCorrupt]:
        """Reload the metadata if another writer moved the generation.

        ``tolerant`` (for :func:`check`): a file that cannot be read is skipped and
        returned, and the next call reloads again.
        """
        generation = self.lock.generation()
        if generation == self._seen:
            return []
        failed = []
        for part in (self.layer_store, self.image_store, self.container_store):
            try:
                part.load()
            except StoreCorrupt as exc:
                if not tolerant:
                    self._seen = None
                    raise
                failed.append(exc)
        self._seen = None if failed else generation
        return failed

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the lock shared with fresh metadata: several reads see one state."""
        with self.lock.shared(), self._mem:
            self._refresh()
            yield

    @contextlib.contextmanager
    def inspecting(self) -> Iterator[list[StoreCorrupt]]:
        """:meth:`reading` that yields the metadata files it could not read (for check)."""
        with self.lock.shared(), self._mem:
            yield self._refresh(tolerant=True)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock exclusively with fresh metadata, for a batch of changes."""
        with self.lock.exclusive(), self._mem:
            self._refresh()
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            ok = False
            try:
                # A new generation before the first write: readers reload even if
                # this process dies half way through.
                self._seen = self.lock.bump()
                if depth == 0:
                    self._depth.cleared = self._clear_staging()
                yield
                ok = True
            finally:
                self._depth.n = depth
                if not ok:
                    self._seen = None  # memory may be ahead of the disk: reload next time

    def cleared_staging(self) -> list[Path]:
        """What the calling thread's current :meth:`writing` removed from staging first."""
        cleared: list[Path] = getattr(self._depth, "cleared", [])
        return cleared

    def _clear_staging(self) -> list[Path]:
        """Remove staging debris when no extraction runs anywhere; return what went."""
        root = self.graphroot / "staging"
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            return []
        if not entries:
            return []
        removed = []
        with self.locks.staging_idle() as idle:
            if not idle:
                return []
            for name in entries:
                path = root / name
                try:
                    if path.is_dir() and not path.is_symlink():
                        remove_tree(path, home=None)
                    else:
                        path.unlink(missing_ok=True)
                except (OSError, StorageError) as exc:
                    log.warning("cannot remove staging debris %s: %s", path, exc)
                    continue
                log.info("removed staging debris %s", path)
                removed.append(path)
        return removed

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
        """Layers known to come from a blob with this digest (on any parent)."""
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
        already stored; a stored layer not yet known by that digest reads the blob
        once to verify it. Without either, the diff is hashed first (spooled when
        not seekable) to learn its id. ``diff=None`` makes an empty layer. The
        layer is leased to this thread until an image or container records it.
        Extraction holds no store lock: readers go on meanwhile.
        """
        if diff is None:
            return self.create_layer(parent, id=id, names=names, metadata=metadata)
        return put_layer(self, diff, parent, id=id, expected_diff_id=expected_diff_id,
                         expected_digest=expected_digest, names=names, metadata=metadata)

    def create_layer(self, parent: str | None = None, *, id: str | None = None,
                     names: Sequence[str] = (), metadata: str = "") -> Layer:
        """An empty layer on ``parent`` (random id unless given)."""
        return create_empty_layer(self, parent, id=id, names=names, metadata=metadata)

    def delete_layer(self, ref: str) -> None:
        """Delete a layer nothing uses: :class:`LayerInUse` names the users otherwise."""
        with self.writing():
            layer = self.layer_store.get(ref)
            users = [f"image {i.id}" for i in self.image_store.by_layer(layer.id)]
            users += [f"container {c.id}" for c in self.container_store.by_layer(layer.id)]
            leased = self.locks.leased_by_others().get(layer.id)
            if leased:
                users.append(f"a lease of {leased} (a pull not yet recorded)")
            self.layer_store.remove(layer.id, used_by=users)
            self.locks.release([layer.id], everyone=False)

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
        """Write the layer's (or container's) changes as an OCI layer tarball to ``sink``."""
        with self.reading():
            return self.layer_store.diff_to(self._layer_of(ref), sink, compression=compression)

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
        """Record image ``id`` (the config digest's 64 hex) on ``top_layer``.

        The layer must be stored (:class:`LayerUnknown`); ``big_data`` (manifest,
        config...) is written before the record, and a ``config`` must hash to the
        id (:class:`ImageIDMismatch`). Creating an image that exists on the same
        layer adds the names, digests and big data instead. The layers' leases end.
        """
        with self.writing():
            layer = self.layer_store.get(top_layer).id if top_layer is not None else None
            image, _ = self.image_store.create_image(
                id, layer, names=names, digest=digest, digests=digests, metadata=metadata,
                big_data=big_data, created=created)
            if layer is not None:
                self.locks.release([lay.id for lay in self.layer_store.chain(layer)])
            return image

    def set_big_data(self, ref: str, key: str, data: bytes) -> Image:
        """Store ``data`` under ``key`` for the image (file written before the record)."""
        with self.writing():
            return self.image_store.set_big_data(ref, key, data)

    def big_data(self, ref: str, key: str) -> bytes:
        """The image's big data item ``key``; :class:`BigDataUnknown` if there is none."""
        with self.reading():
            return self.image_store.big_data(ref, key)

    def delete_image(self, ref: str, *, force: bool = False) -> list[str]:
        """Delete the image and the layers only it used; return those layer ids.

        :class:`ImageInUse` names the containers using it, unless ``force``, which
        deletes them first. Layers another thread or process holds a lease on (a
        pull that has not recorded its image yet) stay, for :func:`gc` later.
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
        leased = self.locks.leased_by_others()
        doomed: list[str] = []
        current = top
        while current is not None and current in self.layer_store:
            layer = self.layer_store.get(current)
            others = [c for c in self.layer_store.children(layer.id) if c.id not in doomed]
            if (layer.id in used or others or self.layer_store.mounted(layer.id)
                    or layer.id in leased):
                if layer.id in leased:
                    log.info("keeping layer %s: leased by %s", layer.id, leased[layer.id])
                break
            doomed.append(layer.id)
            current = layer.parent
        if doomed:
            self.layer_store.forget(doomed)  # records first, in one write
            self.layer_store.delete_dirs(doomed)
            self.locks.release(doomed, everyone=False)
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
        raise UnknownReference(f"no image, container or layer {ref!r}")

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
            container = self.container_store.create_container(record, names=names, id=id,
                                                              metadata=metadata)
            if record is not None and record.layer is not None:
                self.locks.release([lay.id for lay in self.layer_store.chain(record.layer)])
            return container

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
        """The layer of container ``ref``, or layer ``ref`` itself."""
        if self.container_store.exists(ref):
            container = self.container_store.get(ref)
            if container.layer is None:
                raise LayerUnknown(f"container {container.id} has no layer")
            return container.layer
        try:
            return self.layer_store.get(ref).id
        except LayerUnknown:
            raise LayerUnknown(f"no container or layer {ref!r}") from None

    def is_container(self, ref: str) -> bool:
        """Whether ``ref`` names a container (else it may name a layer or image)."""
        with self.reading():
            return self.container_store.exists(ref)

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
