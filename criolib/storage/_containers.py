"""Container records and the container store over ``containers.json`` (containers/storage).

A container is an image plus its own read-write layer (whose id is the
container's) and a directory ``containers/<id>/userdata`` for the engine's files
(config.json, logs, ...). The layer and the directory exist before the record
that names them, and the record goes first when the container is deleted, so a
crash leaves at worst a layer or a directory no container names. Names are
unique among containers and, unlike image names, never move: a second container
asking for a taken name gets :class:`NameConflict`.

Mounting goes through the layer store, which keeps the reference counts in
``<runroot>/mounts.json``: two callers mounting one container share one mount and
the last unmount takes it down.

:class:`ContainerStore` does no locking: :class:`criolib.storage.Store` does.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib._atomic import fsync_dir
from criolib.storage._drivers._fs import remove_tree
from criolib.storage._errors import (
    ContainerUnknown,
    IDConflict,
    LayerInUse,
    LayerUnknown,
    NameConflict,
)
from criolib.storage._faults import crash_point
from criolib.storage._images import Image
from criolib.storage._layers import Layer, LayerStore
from criolib.storage._records import (
    load_records,
    lookup,
    make_converter,
    metadata_error,
    new_id,
    save_records,
    utcnow,
    validate_id,
)

__all__ = ["CONTAINER_FLAG", "Container", "ContainerStore"]

#: The flag on a container's own layer (containers/storage does not flag it; criolib
#: does, so that a layer a crash left without its container can be told apart).
CONTAINER_FLAG = "container"

log = logging.getLogger("criolib.storage")


@attrs.frozen
class Container:
    """One container's record (containers/storage ``Container``, the fields criolib uses).

    ``layer`` is its own read-write layer (the same id as the container),
    ``image`` the image it was made from.
    """

    id: str
    image: str | None = None
    layer: str | None = None
    names: tuple[str, ...] = ()
    created: dt.datetime | None = None
    metadata: str = ""
    flags: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as ``containers.json`` holds it (containers/storage's field names)."""
        return container_to_json(self)


_CONTAINER_WIRE = {
    "id": "id", "image": "image", "layer": "layer", "names": "names",
    "created": "created", "metadata": "metadata", "flags": "flags",
}
container_from_json, container_to_json = make_converter(Container, _CONTAINER_WIRE)


class ContainerStore:
    """The containers of one store: ``<graphroot>/containers.json`` and their directories.

    Not locked by itself: :class:`criolib.storage.Store` holds the store lock.
    """

    def __init__(self, graphroot: Path, layers: LayerStore) -> None:
        self.graphroot = graphroot
        self.layers = layers
        self.path = graphroot / "containers.json"
        self.dir = graphroot / "containers"
        self._containers: dict[str, Container] = {}
        self._names: dict[str, str] = {}

    def load(self) -> None:
        """Read ``containers.json`` again."""
        self._containers = {c.id: c for c in load_records(self.path, container_from_json)}
        self._names = {n: c.id for c in self._containers.values() for n in c.names}

    def save(self, what: str = "the containers") -> None:
        save_records(self.path, self._containers.values(), container_to_json, what=what)

    # -- lookups ------------------------------------------------------------------

    def containers(self) -> list[Container]:
        return list(self._containers.values())

    def get(self, ref: str) -> Container:
        """The container with id, name or unique id prefix ``ref``."""
        return lookup("container", ref, self._containers, self._names, ContainerUnknown)

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except KeyError:
            return False
        return True

    def __contains__(self, container_id: object) -> bool:
        """Whether a container has exactly this id (no names or prefixes)."""
        return container_id in self._containers

    def by_image(self, image_id: str) -> list[Container]:
        return [c for c in self._containers.values() if c.image == image_id]

    def by_layer(self, layer_id: str) -> list[Container]:
        return [c for c in self._containers.values() if c.layer == layer_id]

    def orphan_layers(self) -> list[Layer]:
        """Container layers no container names (a crash inside create or delete)."""
        named = {c.layer for c in self._containers.values()}
        return [lay for lay in self.layers.layers()
                if lay.flags.get(CONTAINER_FLAG) and lay.id not in named]

    def userdata(self, ref: str) -> Path:
        """``containers/<id>/userdata``: the container's own directory."""
        return self.dir / self.get(ref).id / "userdata"

    # -- creating -----------------------------------------------------------------

    def create_container(self, image: Image | None, *, names: Sequence[str] = (),
                         id: str | None = None, metadata: str = "",
                         mount_label: str = "") -> Container:
        """A container on ``image`` (``None``: on an empty base) with a new rw layer.

        Order, for crash safety: the layer (directory, then its record), the
        userdata directory, then the container record. A container layer that a
        crash left without its container (same id) is removed first; a failed
        write removes what was made.
        """
        del mount_label  # SELinux labels: no SELinux on the machines criolib runs on
        if id is None:
            id = new_id()
        validate_id("container", id)
        wanted = tuple(dict.fromkeys(n for n in names if n))
        for name in wanted:
            if name in self._names:
                raise NameConflict(f"container name {name!r} is in use by container "
                                   f"{self._names[name]}")
        if id not in self._containers and id in self.layers and any(
                lay.id == id for lay in self.orphan_layers()):
            log.info("container %s: removing its layer left by a crash", id)
            self.layers.remove(id)
        if id in self._containers or id in self.layers:
            raise IDConflict(f"container id {id} is taken (by a container or a layer)")
        layer = self.layers.create_empty(id, image.layer if image else None,
                                         flags={CONTAINER_FLAG: True})
        crash_point("after-container-layer")
        userdata = self.dir / id / "userdata"
        try:
            try:
                userdata.mkdir(parents=True, exist_ok=True, mode=0o700)
                fsync_dir(self.dir)
            except OSError as exc:
                raise metadata_error(exc, userdata, f"make the directory of container {id}"
                                     ) from exc
            crash_point("after-container-dir")
            container = Container(id=id, image=image.id if image else None, layer=layer.id,
                                  names=wanted, created=utcnow(), metadata=metadata)
            self._containers[id] = container
            self._names.update(dict.fromkeys(wanted, id))
            try:
                self.save(f"new container {id}")
            except OSError:
                del self._containers[id]
                for name in wanted:
                    self._names.pop(name, None)
                raise
        except OSError:
            self.layers.remove(id)
            self.remove_dir(id)
            raise
        crash_point("after-container-record")
        return container

    # -- names --------------------------------------------------------------------

    def set_names(self, ref: str, names: Iterable[str]) -> Container:
        """Replace the container's names; :class:`NameConflict` if another has one."""
        container = self.get(ref)
        wanted = tuple(dict.fromkeys(n for n in names if n))
        for name in wanted:
            other = self._names.get(name)
            if other is not None and other != container.id:
                raise NameConflict(f"container name {name!r} is in use by container {other}")
        for name in container.names:
            self._names.pop(name, None)
        container = attrs.evolve(container, names=wanted)
        self._containers[container.id] = container
        self._names.update(dict.fromkeys(wanted, container.id))
        self.save(f"the names of container {container.id}")
        return container

    # -- mounts -------------------------------------------------------------------

    def mount(self, ref: str, *, options: Sequence[str] = ()) -> Path:
        """Mount the container's root filesystem (shared with other callers)."""
        container = self.get(ref)
        if container.layer is None:
            raise LayerUnknown(f"container {container.id} has no layer to mount")
        return self.layers.mount(container.layer, options=options)

    def unmount(self, ref: str, *, force: bool = False) -> bool:
        """Drop one mount reference (all with ``force``); whether it is still mounted."""
        container = self.get(ref)
        if container.layer is None:
            return False
        return self.layers.unmount(container.layer, force=force)

    # -- removing -----------------------------------------------------------------

    def delete_container(self, ref: str) -> Container:
        """Unmount, drop the record, then delete the layer and the directory.

        :class:`LayerInUse` before anything changes if a layer stands on the
        container's (a commit made with the container layer as parent).
        """
        container = self.get(ref)
        layer = container.layer if container.layer in self.layers else None
        if layer is not None:
            children = self.layers.children(layer)
            if children:
                ids = tuple(f"layer {c.id}" for c in children)
                raise LayerInUse(f"container {container.id}: its layer is the parent of "
                                 f"{', '.join(ids)}", layer_id=layer, users=ids)
            self.layers.unmount(layer, force=True)
        del self._containers[container.id]
        for name in container.names:
            self._names.pop(name, None)
        self.save(f"the removal of container {container.id}")
        crash_point("after-container-record-drop")
        if layer is not None:
            self.layers.remove(layer)
        self.remove_dir(container.id)
        return container

    def detach_image(self, container_id: str) -> None:
        """Make the container refer to no image (its image is gone; for repair)."""
        self._containers[container_id] = attrs.evolve(self._containers[container_id],
                                                      image=None)
        self.save()

    def forget(self, container_id: str) -> None:
        """Drop a record only (for repair); its layer and directory are handled apart."""
        container = self._containers.pop(container_id)
        for name in container.names:
            self._names.pop(name, None)
        self.save()

    def remove_dir(self, container_id: str) -> None:
        """Delete ``containers/<id>``, detaching what an engine mounted inside (shm)."""
        folder = self.dir / container_id
        if folder.exists():
            remove_tree(folder, home=None)

    def dir_ids(self) -> list[str]:
        """The names of the directories under ``containers/`` (records or debris)."""
        try:
            return sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
