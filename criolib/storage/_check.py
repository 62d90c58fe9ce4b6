"""Checking, repairing, collecting and measuring a store (containers/storage ``check.go``).

:func:`check` lists what is wrong: records whose files are gone, files no record
names (what a crash leaves: staging directories, a layer directory written
before its record, an image directory written before its record, temp files of
an interrupted atomic write), broken parent chains, images and containers whose
layers or images are missing, big data missing or changed, and mount counts for
mounts that are gone. :func:`repair` removes what is broken and never a healthy
object; :func:`gc` removes layers nothing uses and the debris; :func:`disk_usage`
measures layers, images and containers like ``podman system df -v``.

An unused layer is not a problem: an import stores layers before the image that
uses them, and a repeated import reuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from criolib.storage._drivers._fs import remove_tree
from criolib.storage._images import Image
from criolib.storage._layers import Layer
from criolib.storage._store import Store

__all__ = [
    "CheckReport",
    "ContainerUsage",
    "DiskUsage",
    "ImageUsage",
    "LayerUsage",
    "Problem",
    "check",
    "disk_usage",
    "gc",
    "repair",
]

log = logging.getLogger("criolib.storage")

#: What :func:`atomic_write_bytes` leaves when killed before its rename.
_TEMP = re.compile(r"^\..+\.tmp$")


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


# -- check ---------------------------------------------------------------------------


def check(store: Store) -> CheckReport:
    """Every problem in ``store`` (read under the shared lock: one consistent state)."""
    with store.reading():
        return CheckReport(tuple(_problems(store)))


def _problems(store: Store) -> list[Problem]:
    broken = _broken_layers(store)
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
        if layer.parent is not None and layer.parent not in layers:
            yield Problem("layer-parent-missing", layer.id,
                          f"parent {layer.parent} is not in layers.json")
    for orphan in sorted(on_disk - set(layers)):
        yield Problem("layer-dir-orphan", orphan,
                      f"{driver.home / orphan} has no record (left by a crash?)")


def _debris_problems(store: Store) -> Iterator[Problem]:
    for path in _dangling_links(store):
        yield Problem("driver-debris", str(path), "symlink to a layer that is gone")
    for path in _staging(store):
        yield Problem("staging-debris", str(path), "left by an interrupted write")
    for path in _temp_files(store):
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
            elif _data_changed(image, key, path):
                yield Problem("image-data-digest", image.id,
                              f"big data {key!r} does not match its recorded digest and size")
        listed = {ims.big_data_path(image.id, k).name for k in image.big_data_names}
        folder = ims.dir / image.id
        for name in _listdir(folder):
            if name not in listed and not _TEMP.match(name):
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
    for layer_id, (count, path) in ls.mounts().items():
        if layer_id not in ls or not ls.mount_is_live(layer_id):
            yield Problem("mount-stale", layer_id,
                          f"counted {count} mount(s) at {path}, but it is not mounted")


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _broken_layers(store: Store) -> set[str]:
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


def _staging(store: Store) -> list[Path]:
    root = store.graphroot / "staging"
    try:
        return sorted(root / n for n in os.listdir(root))
    except FileNotFoundError:
        return []


def _temp_files(store: Store) -> list[Path]:
    places = [store.graphroot, store.runroot, store.container_store.dir]
    places += [store.image_store.dir / n for n in store.image_store.dir_ids()]
    found = []
    for place in places:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found += [place / n for n in os.listdir(place) if _TEMP.match(n)]
    return sorted(found)


def _dangling_links(store: Store) -> list[Path]:
    """Links in a driver's ``l/`` whose layer is gone (overlay's short names)."""
    links = store.driver.home / "l"
    try:
        names = os.listdir(links)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(links / n for n in names
                  if os.path.islink(links / n) and not os.path.exists(links / n))


# -- repair --------------------------------------------------------------------------


def repair(store: Store) -> list[str]:
    """Remove what :func:`check` finds broken; return what was done, one line each.

    Removes records whose files are gone (layers, with their children, and the
    images and containers standing on them), files no record names, stale mount
    counts; re-records a big data item whose file was replaced whole (a crash
    between the file and the record); makes a missing userdata directory again.
    Healthy objects are never touched: unused layers are :func:`gc`'s business.
    """
    done: list[str] = []
    with store.writing():
        broken = _broken_layers(store)
        bad_images = _repair_images(store, broken, done)
        _repair_containers(store, broken, bad_images, done)
        ls = store.layer_store
        for image_id in sorted(bad_images):
            store.image_store.delete_image(image_id)
            done.append(f"image {image_id}: removed (a layer or big data item is gone)")
        doomed = [lay.id for lay in reversed(ls.layers()) if lay.id in broken]
        if doomed:
            ls.forget(doomed)  # records first (children before parents), one write
            ls.delete_dirs(doomed)
            done += [f"layer {i}: removed (its files or a parent's are gone)" for i in doomed]
        if ls.hidden:
            done += [f"layer {lay.id}: dropped its incomplete record" for lay in ls.hidden]
            ls.save()
        for layer_id in list(ls.mounts()):
            if not ls.mount_is_live(layer_id):
                ls.drop_mount_count(layer_id)
                done.append(f"layer {layer_id}: dropped a stale mount count")
        done += _remove_debris(store)
    for line in done:
        log.info("repair: %s", line)
    return done


def _repair_images(store: Store, broken: set[str], done: list[str]) -> set[str]:
    """Re-record changed big data; return the images to remove."""
    ls, ims = store.layer_store, store.image_store
    bad = set()
    for image in ims.images():
        if image.layer is not None and (image.layer in broken or image.layer not in ls):
            bad.add(image.id)
            continue
        for key in image.big_data_names:
            path = ims.big_data_path(image.id, key)
            if not path.is_file():
                bad.add(image.id)
                break
            if _data_changed(image, key, path):
                # The file was replaced whole (atomic write) and the record not yet.
                ims.resync_big_data(image.id, key)
                done.append(f"image {image.id}: re-recorded big data {key!r} from its file")
    return bad


def _repair_containers(store: Store, broken: set[str], bad_images: set[str],
                       done: list[str]) -> None:
    ls, ims, cs = store.layer_store, store.image_store, store.container_store
    for container in cs.containers():
        if container.layer is not None and (container.layer in broken
                                            or container.layer not in ls):
            cs.forget(container.id)
            cs.remove_dir(container.id)
            done.append(f"container {container.id}: removed (its layer is gone)")
            continue
        if container.image is not None and (container.image in bad_images
                                            or container.image not in ims):
            # Its own layers still work: keep the container, drop the dead reference.
            cs.detach_image(container.id)
            done.append(f"container {container.id}: no longer refers to missing image "
                        f"{container.image}")
        userdata = cs.dir / container.id / "userdata"
        if not userdata.is_dir():
            userdata.mkdir(parents=True, mode=0o700)
            done.append(f"container {container.id}: made {userdata} again")


def _data_changed(image: Image, key: str, path: Path) -> bool:
    """Whether the file of big data ``key`` differs from the record's digest or size."""
    data = path.read_bytes()
    want = image.big_data_digests.get(key)
    size = image.big_data_sizes.get(key)
    return ((want is not None and want != "sha256:" + hashlib.sha256(data).hexdigest())
            or (size is not None and size != len(data)))


def _remove_debris(store: Store) -> list[str]:
    """Remove files and directories no record names; under the exclusive lock."""
    done = []
    ls, ims, cs = store.layer_store, store.image_store, store.container_store
    known = {lay.id for lay in ls.layers()}
    for orphan in sorted(set(store.driver.layer_ids()) - known):
        store.driver.remove(orphan)
        done.append(f"layer directory {orphan}: removed (no record)")
    for link in _dangling_links(store):
        link.unlink()
        done.append(f"{link}: removed (dangling)")
    for path in _staging(store):
        _rmtree(path)
        done.append(f"{path}: removed (staging debris)")
    for path in _temp_files(store):
        path.unlink(missing_ok=True)
        done.append(f"{path}: removed (temp file)")
    images = {i.id: i for i in ims.images()}
    for name in ims.dir_ids():
        folder = ims.dir / name
        if name not in images:
            _rmtree(folder)
            done.append(f"{folder}: removed (no image record)")
            continue
        listed = {ims.big_data_path(name, k).name for k in images[name].big_data_names}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(folder):
                if entry not in listed:
                    _rmtree(folder / entry)
                    done.append(f"{folder / entry}: removed (not listed)")
    containers = {c.id for c in cs.containers()}
    for name in cs.dir_ids():
        if name not in containers:
            _rmtree(cs.dir / name)
            done.append(f"{cs.dir / name}: removed (no container record)")
    return done


def _rmtree(path: Path) -> None:
    """Remove a file or a tree, detaching anything mounted below it first.

    ``rmtree`` would walk into a mount left inside (a container's shm, an overlay
    in a half-removed layer) and delete what it shows.
    """
    if path.is_dir() and not path.is_symlink():
        remove_tree(path, home=None)
    else:
        path.unlink(missing_ok=True)


# -- gc ------------------------------------------------------------------------------


def gc(store: Store, *, min_age: float = 300.0) -> list[str]:
    """Remove layers no image or container uses, and crash debris; return what went.

    Layers younger than ``min_age`` seconds are kept: another process may have
    stored them for an image it has not recorded yet. Mounted layers are kept.
    """
    done: list[str] = []
    with store.writing():
        ls = store.layer_store
        used = store.referenced_layers()
        now = time.time()
        keep = set(used)
        for layer in ls.layers():
            young = layer.created is not None and now - layer.created.timestamp() < min_age
            if young or ls.mounted(layer.id):
                keep.update(lay.id for lay in _ancestors(store, layer.id))
        doomed = [lay.id for lay in reversed(ls.layers()) if lay.id not in keep]
        if doomed:
            ls.forget(doomed)
            ls.delete_dirs(doomed)
            done += [f"layer {i}: removed (unused)" for i in doomed]
        done += _remove_debris(store)
    for line in done:
        log.info("gc: %s", line)
    return done


def _ancestors(store: Store, layer_id: str) -> list[Layer]:
    try:
        return store.layer_store.chain(layer_id)
    except KeyError:
        return []


# -- disk usage ----------------------------------------------------------------------


@attrs.frozen
class LayerUsage:
    """A layer's own directory: bytes of its files (hard links once)."""

    id: str
    size: int
    parent: str | None = None


@attrs.frozen
class ImageUsage:
    """An image's layers: all of them, those shared with others, those only it has.

    ``containers`` counts the containers made from it; ``layers`` are its layer ids.
    """

    id: str
    names: tuple[str, ...]
    size: int
    shared_size: int
    unique_size: int
    containers: int
    layers: tuple[str, ...] = ()


@attrs.frozen
class ContainerUsage:
    """A container's writable layer."""

    id: str
    names: tuple[str, ...]
    image: str | None
    size: int


@attrs.frozen
class DiskUsage:
    """Bytes used, per layer, image and container; ``total`` counts each layer once."""

    layers: tuple[LayerUsage, ...]
    images: tuple[ImageUsage, ...]
    containers: tuple[ContainerUsage, ...]
    total: int


def disk_usage(store: Store) -> DiskUsage:
    """Measure every layer, image and container (``podman system df -v``)."""
    with store.reading():
        ls, ims, cs = store.layer_store, store.image_store, store.container_store
        sizes = {}
        for layer in ls.layers():
            try:
                sizes[layer.id] = _tree_size(store.driver.diff_path(layer.id))
            except (KeyError, OSError):
                sizes[layer.id] = 0
        chains = {}
        for image in ims.images():
            chains[image.id] = ({lay.id for lay in ls.chain(image.layer)}
                                if image.layer is not None and image.layer in ls else set())
        images = []
        for image in ims.images():
            others: set[str] = set()
            for other, chain in chains.items():
                if other != image.id:
                    others |= chain
            mine = chains[image.id]
            size = sum(sizes.get(i, 0) for i in mine)
            shared = sum(sizes.get(i, 0) for i in mine & others)
            images.append(ImageUsage(image.id, image.names, size, shared, size - shared,
                                     len(cs.by_image(image.id)), tuple(sorted(mine))))
        containers = tuple(ContainerUsage(c.id, c.names, c.image, sizes.get(c.layer or "", 0))
                           for c in cs.containers())
        return DiskUsage(
            layers=tuple(LayerUsage(lay.id, sizes[lay.id], lay.parent) for lay in ls.layers()),
            images=tuple(images), containers=containers, total=sum(sizes.values()))


def _tree_size(root: Path) -> int:
    """Bytes of the files under ``root`` (apparent sizes; each inode once)."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
