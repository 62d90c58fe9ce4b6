"""Checking a store (containers/storage ``check.go``): what is broken or left over.

:func:`check` lists what is wrong: metadata files that cannot be read, records
whose files are gone, files no record names (what a crash leaves: staging
directories, a layer directory written before its record, an image directory
written before its record, temp files of an interrupted atomic write, a
container's layer without its container), broken parent chains, images and
containers whose layers or images are missing, layer directories the driver
finds damaged (:meth:`GraphDriver.verify_layer`), big data missing or changed,
mount counts for mounts that are gone and mounts nothing counts, and layer
directories of another driver's home. :func:`criolib.storage.repair` removes
them (``_repair``).

Work in progress is not debris: a layer directory whose creation lock a live
process holds, and staging while any extraction runs (see ``_leases``), are
left out. An unused layer is not a problem: an import stores layers before the
image that uses them, and a repeated import reuses them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

from criolib.storage._drivers import driver_names
from criolib.storage._images import Image
from criolib.storage._layers import Layer
from criolib.storage._mounts import live_mounts
from criolib.storage._store import Store

__all__ = ["CheckReport", "Problem", "check"]

log = logging.getLogger("criolib.storage")

#: What :func:`atomic_write_bytes` leaves when killed before its rename.
TEMP = re.compile(r"^\..+\.tmp$")


@attrs.frozen
class Problem:
    """One thing wrong: ``kind`` (a stable slug), the object's id or path, and why."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@attrs.frozen
class CheckReport:
    """What :func:`check` found; ``clean`` when nothing."""

    problems: tuple[Problem, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems)) or "clean"


def check(store: Store) -> CheckReport:
    """Every problem in ``store`` (read under the shared lock: one consistent state).

    A metadata file that cannot be read is reported (``metadata-unreadable``), not
    raised; what depends on it is then not checked.
    """
    with store.inspecting() as unreadable:
        problems = [Problem("metadata-unreadable", str(getattr(exc, "path", "metadata")),
                            str(exc)) for exc in unreadable]
        if not unreadable:
            problems += _problems(store)
        return CheckReport(tuple(problems))


def _problems(store: Store) -> list[Problem]:
    broken = broken_layers(store)
    return [*_layer_problems(store), *_debris_problems(store),
            *_image_problems(store, broken), *_container_problems(store, broken),
            *_mount_problems(store)]


def _layer_problems(store: Store) -> Iterator[Problem]:
    ls, driver = store.layer_store, store.driver
    layers = {lay.id: lay for lay in ls.layers()}
    on_disk = set(driver.layer_ids())
    for layer in ls.hidden:
        yield Problem("layer-incomplete", layer.id,
                      "record marked incomplete (a write that never finished)")
    for layer in layers.values():
        if layer.id not in on_disk:
            yield Problem("layer-dir-missing", layer.id, f"no directory in {driver.home}")
        elif damage := driver.verify_layer(layer.id):
            yield Problem("layer-damaged", layer.id, "; ".join(damage))
        if layer.parent is not None and layer.parent not in layers:
            yield Problem("layer-parent-missing", layer.id,
                          f"parent {layer.parent} is not in layers.json")
    for orphan in orphan_dirs(store):
        yield Problem("layer-dir-orphan", orphan,
                      f"{driver.home / orphan} has no record (left by a crash?)")
    for layer in orphan_container_layers(store):
        yield Problem("container-layer-orphan", layer.id,
                      "a container's layer without its container (a crash in create or "
                      "delete)")
    for home, count in foreign_homes(store):
        yield Problem("driver-home-foreign", str(home),
                      f"{count} layer director{'y' if count == 1 else 'ies'} of a driver this "
                      f"store does not use (it uses {driver.name})")


def _debris_problems(store: Store) -> Iterator[Problem]:
    with store.locks.staging_idle() as idle:
        if idle:  # else an extraction is running: staging and new links are its own
            for path in dangling_links(store):
                yield Problem("driver-debris", str(path), "symlink to a layer that is gone")
            for path in staging_entries(store):
                yield Problem("staging-debris", str(path), "left by an interrupted write")
    for path in temp_files(store):
        yield Problem("temp-file", str(path), "left by an interrupted atomic write")
    images = {i.id for i in store.image_store.images()}
    for name in store.image_store.dir_ids():
        if name not in images:
            yield Problem("image-dir-orphan", str(store.image_store.dir / name),
                          "no image record (left by a crash?)")
    containers = {c.id for c in store.container_store.containers()}
    for name in store.container_store.dir_ids():
        if name not in containers:
            yield Problem("container-dir-orphan", str(store.container_store.dir / name),
                          "no container record (left by a crash?)")


def _image_problems(store: Store, broken: set[str]) -> Iterator[Problem]:
    ls, ims = store.layer_store, store.image_store
    for image in ims.images():
        if image.layer is not None and (image.layer not in ls or image.layer in broken):
            yield Problem("image-layer-missing", image.id,
                          f"top layer {image.layer} is missing or broken")
        for key in image.big_data_names:
            path = ims.big_data_path(image.id, key)
            if not path.is_file():
                yield Problem("image-data-missing", image.id,
                              f"big data {key!r}: no file {path.name}")
                continue
            try:
                changed = data_changed(image, key, path)
            except OSError as exc:
                yield Problem("image-data-unreadable", image.id, f"big data {key!r}: {exc}")
                continue
            if changed:
                yield Problem("image-data-digest", image.id,
                              f"big data {key!r} does not match its recorded digest and size")
        listed = {ims.big_data_path(image.id, k).name for k in image.big_data_names}
        folder = ims.dir / image.id
        for name in listdir(folder):
            if name not in listed and not TEMP.match(name):
                yield Problem("image-data-unlisted", str(folder / name),
                              "a big data file the record does not list")


def _container_problems(store: Store, broken: set[str]) -> Iterator[Problem]:
    ls, ims, cs = store.layer_store, store.image_store, store.container_store
    for container in cs.containers():
        if container.image is not None and container.image not in ims:
            yield Problem("container-image-missing", container.id,
                          f"image {container.image} is not in images.json")
        if container.layer is not None and (container.layer not in ls
                                            or container.layer in broken):
            yield Problem("container-layer-missing", container.id,
                          f"layer {container.layer} is missing or broken")
        if not (cs.dir / container.id / "userdata").is_dir():
            yield Problem("container-dir-missing", container.id,
                          f"no {cs.dir / container.id / 'userdata'}")


def _mount_problems(store: Store) -> Iterator[Problem]:
    ls = store.layer_store
    if ls.mount_table.unreadable:
        yield Problem("mounts-unreadable", str(ls.mounts_path),
                      f"{ls.mount_table.unreadable}; no mount is counted")
    for layer_id, (count, path) in ls.mounts().items():
        if layer_id not in ls or not ls.mount_is_live(layer_id):
            yield Problem("mount-stale", layer_id,
                          f"counted {count} mount(s) at {path}, but it is not mounted")
    for layer_id, points in uncounted_mounts(store).items():
        yield Problem("mount-uncounted", layer_id or str(store.driver.home),
                      f"mounted at {', '.join(points)} but mounts.json does not count it")


# -- scans shared with repair --------------------------------------------------------


def listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def broken_layers(store: Store) -> set[str]:
    """Layers whose directory, or some ancestor's, is missing (children inherit it)."""
    ls = store.layer_store
    layers = {lay.id: lay for lay in ls.layers()}
    on_disk = set(store.driver.layer_ids())
    broken: set[str] = set()
    for layer in layers.values():
        chain: list[str] = []
        current: str | None = layer.id
        while current is not None:
            if current in layers:
                chain.append(current)  # a record: broken itself, or standing on the break
            if current in broken or current not in layers or current not in on_disk:
                broken.update(chain)
                break
            current = layers[current].parent
    return broken


def orphan_dirs(store: Store) -> list[str]:
    """Layer directories without a record that no live process is creating."""
    known = {lay.id for lay in store.layer_store.layers()}
    return [i for i in store.driver.layer_ids()
            if i not in known and not store.locks.being_created(i)]


def orphan_container_layers(store: Store) -> list[Layer]:
    """Container layers without their container, that nothing stands on."""
    ls = store.layer_store
    return [lay for lay in store.container_store.orphan_layers() if not ls.children(lay.id)]


def foreign_homes(store: Store) -> list[tuple[Path, int]]:
    """Other drivers' homes in the graphroot that hold layer directories: (home, count)."""
    out = []
    for name in driver_names():
        home = store.graphroot / name
        if name == store.driver.name or home == store.driver.home or not home.is_dir():
            continue
        count = sum(1 for n in listdir(home) if n != "l" and (home / n).is_dir())
        if count:
            out.append((home, count))
    return out


def uncounted_mounts(store: Store) -> dict[str, list[str]]:
    """Mounts under the driver's home that ``mounts.json`` does not count: layer -> points."""
    counted = store.layer_store.mounts()
    return {layer: points for layer, points in live_mounts(store.driver).items()
            if layer not in counted}


def staging_entries(store: Store) -> list[Path]:
    root = store.graphroot / "staging"
    return [root / n for n in listdir(root)]


def temp_files(store: Store) -> list[Path]:
    places = [store.graphroot, store.runroot, store.container_store.dir]
    places += [store.image_store.dir / n for n in store.image_store.dir_ids()]
    found = []
    for place in places:
        found += [place / n for n in listdir(place) if TEMP.match(n)]
    return sorted(found)


def dangling_links(store: Store) -> list[Path]:
    """Links in a driver's ``l/`` whose layer is gone (overlay's short names)."""
    links = store.driver.home / "l"
    return [links / n for n in listdir(links)
            if os.path.islink(links / n) and not os.path.exists(links / n)]


def data_changed(image: Image, key: str, path: Path) -> bool:
    """Whether the file of big data ``key`` differs from the record's digest or size."""
    data = path.read_bytes()
    want = image.big_data_digests.get(key)
    size = image.big_data_sizes.get(key)
    return ((want is not None and want != "sha256:" + hashlib.sha256(data).hexdigest())
            or (size is not None and size != len(data)))

