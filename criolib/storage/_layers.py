"""Layer records and the layer store over ``layers.json`` (containers/storage ``layers.go``).

A layer is a directory the graph driver keeps plus a record here: its parent,
names, when it was made and the digests and sizes of the diff it came from
(``compressed-diff-digest``, ``diff-digest`` = the diff_id, containers/storage's
wire names). A record is written only after the driver's directory is complete,
so every layer in ``layers.json`` can be mounted; a crash in between leaves a
directory no record names, which :func:`criolib.storage.check` reports.

One diff may come as several blobs (gzip, zstd, uncompressed): every blob digest
that was verified to decompress to the layer's diff is kept in
``compressed-diff-digests`` (``compressed-diff-digest`` keeps the first, as
containers/storage has it), so the layer is found by any of them without reading.

Ids follow containers/image: a base layer's id is its diff_id hex, any other is
``sha256(parent_id + "+" + diff_id_hex)``, so one diff on one parent is stored
once. Mount reference counts live in ``<runroot>/mounts.json`` (see ``_mounts``).

:class:`LayerStore` does no locking: :class:`criolib.storage.Store` holds the
store lock around every call that reads or changes records (extracting a new
layer's directory happens outside it, under the layer's own creation lock).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criolib.storage._archive import ApplyResult, Compression
from criolib.storage._drivers import GraphDriver
from criolib.storage._errors import (
    AmbiguousID,
    DigestMismatch,
    LayerInUse,
    LayerUnknown,
)
from criolib.storage._faults import crash_point, tripwire
from criolib.storage._mounts import Mount, MountTable
from criolib.storage._records import (
    layer_id_for,
    load_records,
    lookup,
    make_converter,
    save_records,
    utcnow,
)

__all__ = ["INCOMPLETE_FLAG", "Layer", "LayerStore", "layer_id_for"]

log = logging.getLogger("criolib.storage")

#: containers/storage marks layers still being written; such a record is never shown.
INCOMPLETE_FLAG = "incomplete"


@attrs.frozen
class Layer:
    """One layer's record (containers/storage ``Layer``, the fields criolib uses).

    ``uncompressed_digest`` is the diff_id; ``compressed_digest`` the digest of the
    first blob it was made from (the same as the diff_id for an uncompressed
    blob) and ``compressed_digests`` every blob digest known to give this diff.
    """

    id: str
    parent: str | None = None
    names: tuple[str, ...] = ()
    created: dt.datetime | None = None
    compressed_digest: str | None = None
    compressed_size: int | None = None
    uncompressed_digest: str | None = None
    uncompressed_size: int | None = None
    compression: str | None = None
    compressed_digests: tuple[str, ...] = ()
    metadata: str = ""
    flags: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def diff_id(self) -> str | None:
        """The digest of the uncompressed diff (image-spec's DiffID)."""
        return self.uncompressed_digest

    @property
    def known_digests(self) -> tuple[str, ...]:
        """Every blob digest known to decompress to this layer's diff."""
        first = (self.compressed_digest,) if self.compressed_digest else ()
        return tuple(dict.fromkeys([*first, *self.compressed_digests]))

    def to_json(self) -> dict[str, Any]:
        """The record as ``layers.json`` holds it (containers/storage's field names)."""
        return layer_to_json(self)


_LAYER_WIRE = {
    "id": "id", "parent": "parent", "names": "names", "created": "created",
    "compressed_digest": "compressed-diff-digest", "compressed_size": "compressed-size",
    "uncompressed_digest": "diff-digest", "uncompressed_size": "diff-size",
    "compression": "compression", "compressed_digests": "compressed-diff-digests",
    "metadata": "metadata", "flags": "flags",
}
layer_from_json, layer_to_json = make_converter(Layer, _LAYER_WIRE)


class LayerStore:
    """The layers of one store: ``<graphroot>/layers.json`` and the driver's directories.

    Not locked and not thread-safe by itself: :class:`criolib.storage.Store`
    serialises access with its :class:`~criolib.storage.StoreLock`.
    """

    def __init__(self, graphroot: Path, runroot: Path, driver: GraphDriver) -> None:
        self.graphroot = graphroot
        self.runroot = runroot
        self.driver = driver
        self.path = graphroot / "layers.json"
        self.mount_table = MountTable(runroot)
        self.mounts_path = self.mount_table.path
        self._layers: dict[str, Layer] = {}
        self._names: dict[str, str] = {}
        self.hidden: list[Layer] = []  # records flagged incomplete: debris for check()

    # -- loading and saving -------------------------------------------------------

    def load(self) -> None:
        """Read ``layers.json`` and ``mounts.json`` again."""
        layers: dict[str, Layer] = {}
        hidden = []
        for layer in load_records(self.path, layer_from_json):
            if layer.flags.get(INCOMPLETE_FLAG):
                hidden.append(layer)
            else:
                layers[layer.id] = layer
        self._layers, self.hidden = layers, hidden
        self._names = {n: lay.id for lay in layers.values() for n in lay.names}
        self.mount_table.load()

    def save(self, what: str = "the layers") -> None:
        """Write ``layers.json`` atomically (incomplete records are dropped here)."""
        save_records(self.path, self._layers.values(), layer_to_json, what=what)
        self.hidden = []

    # -- lookups ------------------------------------------------------------------

    def layers(self) -> list[Layer]:
        """Every layer, oldest first (parents before children)."""
        return list(self._layers.values())

    def get(self, ref: str) -> Layer:
        """The layer with id, name or unique id prefix ``ref``; :class:`LayerUnknown` if none."""
        return lookup("layer", ref, self._layers, self._names, LayerUnknown)

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except (LayerUnknown, AmbiguousID):
            return False
        return True

    def __contains__(self, layer_id: object) -> bool:
        """Whether a layer has exactly this id (no names, no prefixes)."""
        return layer_id in self._layers

    def by_diff_id(self, diff_id: str) -> list[Layer]:
        """Layers whose uncompressed diff has this digest (any parent)."""
        return [lay for lay in self._layers.values() if lay.uncompressed_digest == diff_id]

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        """Layers known to come from a blob with this digest (any parent)."""
        return [lay for lay in self._layers.values() if digest in lay.known_digests]

    def children(self, layer_id: str) -> list[Layer]:
        return [lay for lay in self._layers.values() if lay.parent == layer_id]

    def chain(self, layer_id: str) -> list[Layer]:
        """``layer_id`` and its ancestors, nearest first."""
        out = []
        current: str | None = layer_id
        while current is not None:
            layer = self.get(current)
            out.append(layer)
            current = layer.parent
        return out

    def chain_ids(self, layer_id: str) -> list[str]:
        """``layer_id`` and the ids of its recorded ancestors, nearest first (no error)."""
        out = []
        current: str | None = layer_id
        while current is not None and current in self._layers and current not in out:
            out.append(current)
            current = self._layers[current].parent
        return out

    def find_existing(self, parent: str | None, *, layer_id: str | None = None,
                      diff_id: str | None = None, digest: str | None = None) -> Layer | None:
        """A stored layer that already is what would be created, if any (dedup)."""
        if layer_id is not None and layer_id in self._layers:
            return self._layers[layer_id]
        for layer in self._layers.values():
            if layer.parent != parent:
                continue
            if diff_id is not None and layer.uncompressed_digest == diff_id:
                return layer
            if digest is not None and digest in layer.known_digests:
                return layer
        return None

    # -- creating -----------------------------------------------------------------

    def extract(self, layer_id: str, parent: str | None, diff: BinaryIO, *,
                expected_diff_id: str | None, expected_digest: str | None) -> ApplyResult:
        """Make layer ``layer_id``'s directory from the tarball ``diff``; no record yet.

        The caller holds the layer's creation lock (and need not hold the store
        lock): a directory already there without a record is a crash's debris
        and goes first. The driver applies in staging and renames into place.
        """
        self.discard_debris(layer_id)
        result = self.driver.apply_diff(layer_id, parent, tripwire(diff),
                                        expected_diff_id=expected_diff_id,
                                        expected_digest=expected_digest)
        if expected_digest is not None and result.digest != expected_digest:
            # The driver checks before the rename; a plug-in that does not still must not
            # leave a layer under a digest it does not have.
            self.driver.remove(layer_id)
            raise DigestMismatch(f"layer {layer_id}: blob has digest {result.digest}, "
                                 f"expected {expected_digest}", expected=expected_digest,
                                 actual=result.digest)
        crash_point("after-layer-rename")
        return result

    def record(self, layer_id: str, parent: str | None, result: ApplyResult | None, *,
               names: Sequence[str] = (), metadata: str = "",
               flags: Mapping[str, Any] | None = None) -> Layer:
        """Record a layer whose directory is complete; on a failed write, remove it again."""
        self._layers[layer_id] = Layer(
            id=layer_id, parent=parent, created=utcnow(), metadata=metadata,
            flags=dict(flags or {}),
            compressed_digest=result.digest if result else None,
            compressed_size=result.compressed_size if result else None,
            uncompressed_digest=result.diff_id if result else None,
            uncompressed_size=result.uncompressed_size if result else None,
            compression=result.compression if result else None,
            compressed_digests=(result.digest,) if result else ())
        self.add_names(layer_id, names, save=False)
        try:
            self.save(f"new layer {layer_id}")
        except OSError:
            self._layers.pop(layer_id)
            self._names = {n: i for n, i in self._names.items() if i != layer_id}
            self.driver.remove(layer_id)
            raise
        return self._layers[layer_id]

    def create_empty(self, layer_id: str, parent: str | None, *, names: Sequence[str] = (),
                     metadata: str = "", flags: Mapping[str, Any] | None = None) -> Layer:
        """An empty layer on ``parent`` (a container's): directory, then record."""
        self.discard_debris(layer_id)
        self.driver.create(layer_id, parent)
        return self.record(layer_id, parent, None, names=names, metadata=metadata,
                           flags=flags)

    def add_digest(self, layer_id: str, digest: str) -> Layer:
        """Remember that blob ``digest`` (verified by the caller) gives this layer's diff."""
        layer = self._layers[layer_id]
        if digest not in layer.known_digests:
            self._layers[layer_id] = attrs.evolve(
                layer, compressed_digests=(*layer.known_digests, digest))
            self.save(f"blob digest {digest} of layer {layer_id}")
        return self._layers[layer_id]

    def discard_debris(self, layer_id: str) -> None:
        """Remove a directory left for ``layer_id`` by a crash (it has no record)."""
        if layer_id not in self._layers and self.driver.exists(layer_id):
            log.info("removing layer directory %s left without a record", layer_id)
            self.driver.remove(layer_id)  # unmounts first

    def diff_to(self, ref: str, sink: BinaryIO, *, compression: Compression = "none"
                ) -> ApplyResult:
        """Write the layer's changes (against its parent) to ``sink`` as a layer tarball."""
        layer = self.get(ref)
        return self.driver.export_diff(layer.id, layer.parent, sink, compression=compression)

    # -- names --------------------------------------------------------------------

    def add_names(self, layer_id: str, names: Iterable[str], *, save: bool = True) -> None:
        """Give ``layer_id`` these names; a name another layer had moves here."""
        self._set_names(layer_id, [*self._layers[layer_id].names, *names], save=save)

    def set_names(self, layer_id: str, names: Iterable[str]) -> None:
        self._set_names(self.get(layer_id).id, list(names))

    def _set_names(self, layer_id: str, names: list[str], *, save: bool = True) -> None:
        wanted = tuple(dict.fromkeys(names))
        if wanted == self._layers[layer_id].names:
            return
        for name in wanted:
            other = self._names.get(name)
            if other is not None and other != layer_id:
                o = self._layers[other]
                self._layers[other] = attrs.evolve(
                    o, names=tuple(n for n in o.names if n != name))
        for name in self._layers[layer_id].names:
            self._names.pop(name, None)
        self._layers[layer_id] = attrs.evolve(self._layers[layer_id], names=wanted)
        self._names.update(dict.fromkeys(wanted, layer_id))
        if save:
            self.save(f"the names of layer {layer_id}")

    # -- removing -----------------------------------------------------------------

    def remove(self, ref: str, *, used_by: Sequence[str] = ()) -> Layer:
        """Forget and delete a layer; :class:`LayerInUse` if anything still uses it.

        ``used_by`` names users the caller knows of (images, containers, leases);
        children and mounts are checked here. The record goes first, then the
        directory: a crash in between leaves a directory without a record, never
        the reverse.
        """
        layer = self.get(ref)
        users = [*used_by, *(f"layer {c.id}" for c in self.children(layer.id))]
        if self.mounted(layer.id):
            path = self.mount_table.entries[layer.id].path
            users.append(f"{self.mounted(layer.id)} mount(s) at {path}")
        if users:
            raise LayerInUse(f"layer {layer.id} is in use by {', '.join(users)}",
                             layer_id=layer.id, users=tuple(users))
        self.forget([layer.id])
        self.delete_dirs([layer.id])
        return layer

    def forget(self, layer_ids: Iterable[str]) -> None:
        """Drop records (one atomic write); the directories stay for :meth:`delete_dirs`."""
        counted = False
        ids = list(layer_ids)
        for layer_id in ids:
            layer = self._layers.pop(layer_id)
            for name in layer.names:
                self._names.pop(name, None)
            counted |= self.mount_table.entries.pop(layer_id, None) is not None
        self.save(f"the removal of layer(s) {', '.join(i[:12] for i in ids)}")
        if counted:
            self.mount_table.save("removed layers")
        crash_point("after-record-drop-before-dir-delete")

    def delete_dirs(self, layer_ids: Iterable[str]) -> None:
        """Unmount and delete the driver's directories of layers that have no record."""
        for layer_id in layer_ids:
            if self.driver.exists(layer_id):
                self.driver.remove(layer_id)  # unmounts first

    # -- mounts -------------------------------------------------------------------

    def mounted(self, layer_id: str) -> int:
        """How many times the layer is mounted (by every process of this boot)."""
        return self.mount_table.count(layer_id)

    def mounts(self) -> dict[str, tuple[int, Path]]:
        """layer id -> (reference count, mount point) for every counted mount."""
        return self.mount_table.counted()

    def mount_is_live(self, layer_id: str) -> bool:
        """Whether the counted mount of ``layer_id`` is really there.

        A driver that does not mount (vfs) hands out the layer's own directory,
        which is "mounted" as long as it exists.
        """
        current = self.mount_table.entries.get(layer_id)
        if current is None or not self.driver.exists(layer_id):
            return False
        if self.driver.is_mounted(layer_id):
            return True
        return Path(current.path) == self.driver.diff_path(layer_id)

    def mount(self, ref: str, *, options: Sequence[str] = ()) -> Path:
        """Mount the layer with its parents; shares one mount between callers."""
        layer_id = self.get(ref).id
        table = self.mount_table.entries
        current = table.get(layer_id)
        if current is not None and current.count > 0 and self.mount_is_live(layer_id):
            table[layer_id] = attrs.evolve(current, count=current.count + 1)
            path = Path(current.path)
        else:
            # No count, or a count for a mount that is gone (a reboot without a
            # tmpfs runroot, or an unmount behind our back): start again.
            path = self.driver.mount(layer_id, options=options)
            crash_point("after-mount-before-count")
            table[layer_id] = Mount(layer_id, str(path), 1)
        try:
            self.mount_table.save(f"layer {layer_id}")
        except OSError:
            if table[layer_id].count == 1:
                del table[layer_id]
                self.driver.unmount(layer_id)
            raise
        return path

    def unmount(self, ref: str, *, force: bool = False) -> bool:
        """Drop one reference (all with ``force``); unmount at zero. Whether still mounted."""
        layer_id = self.get(ref).id
        table = self.mount_table.entries
        current = table.get(layer_id)
        count = 0 if current is None or force else current.count - 1
        if count > 0 and current is not None:
            table[layer_id] = attrs.evolve(current, count=count)
        else:
            table.pop(layer_id, None)
            if self.driver.exists(layer_id) and self.driver.is_mounted(layer_id):
                self.driver.unmount(layer_id)
        crash_point("after-unmount-before-count")
        self.mount_table.save(f"layer {layer_id}")
        return count > 0

    def drop_mount_count(self, layer_id: str) -> None:
        """Forget a stale count (its mount is gone); for repair."""
        if self.mount_table.entries.pop(layer_id, None) is not None:
            self.mount_table.save(f"layer {layer_id}")
