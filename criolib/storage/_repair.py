"""Repairing and collecting a store: what :func:`check` reports, removed.

:func:`repair` removes what is broken and never a healthy object; :func:`gc`
removes layers nothing uses (and nobody leases) and the debris. Both run under
the exclusive store lock and leave alone what a live process is still making
(a layer under its creation lock, staging while an extraction runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from criolib.storage._check import (
    broken_layers,
    dangling_links,
    data_changed,
    foreign_homes,
    orphan_container_layers,
    orphan_dirs,
    staging_entries,
    temp_files,
    uncounted_mounts,
)
from criolib.storage._drivers._fs import MNT_DETACH, remove_tree, umount
from criolib.storage._errors import StorageError
from criolib.storage._layers import Layer
from criolib.storage._store import Store

__all__ = ["gc", "repair"]

log = logging.getLogger("criolib.storage")


def repair(store: Store) -> list[str]:
    """Remove what :func:`check` finds broken; return what was done, one line each.

    Lets the driver rebuild damaged layer directories (:meth:`GraphDriver.repair_layer`);
    removes records whose files are gone (layers, with their children, and the
    images and containers standing on them), container layers without their
    container, files no record names, other drivers' layer directories, stale
    mount counts and mounts nothing counts (unmounted); re-records a big data
    item whose file was replaced whole (a crash between the file and the record);
    makes a missing userdata directory again; rewrites an unreadable
    ``mounts.json``. Healthy objects are never touched: unused layers are
    :func:`gc`'s business. A ``layers.json``, ``images.json`` or
    ``containers.json`` that cannot be read raises :class:`StoreCorrupt`: there
    is nothing to rebuild it from.
    """
    done: list[str] = []
    with store.writing():
        done += [f"{path}: removed (staging debris)" for path in store.cleared_staging()]
        ls = store.layer_store
        if ls.mount_table.unreadable:
            ls.mount_table.save("the repair")
            done.append(f"{ls.mounts_path}: rewritten (it could not be read)")
        broken = broken_layers(store) | _repair_damaged(store, done)
        broken |= {lay.id for lay in ls.layers() if set(ls.chain_ids(lay.id)) & broken}
        bad_images = _repair_images(store, broken, done)
        _repair_containers(store, broken, bad_images, done)
        for image_id in sorted(bad_images):
            store.image_store.delete_image(image_id)
            done.append(f"image {image_id}: removed (a layer or big data item is gone)")
        doomed = [lay.id for lay in reversed(ls.layers()) if lay.id in broken]
        orphans = [lay.id for lay in orphan_container_layers(store) if lay.id not in broken]
        if doomed or orphans:
            ls.forget([*doomed, *orphans])  # records first (children before parents)
            ls.delete_dirs([*doomed, *orphans])
            done += [f"layer {i}: removed (its files or a parent's are gone)" for i in doomed]
            done += [f"layer {i}: removed (a container's layer without its container)"
                     for i in orphans]
        if ls.hidden:
            done += [f"layer {lay.id}: dropped its incomplete record" for lay in ls.hidden]
            ls.save("the removal of incomplete records")
        for layer_id in list(ls.mounts()):
            if not ls.mount_is_live(layer_id):
                ls.drop_mount_count(layer_id)
                done.append(f"layer {layer_id}: dropped a stale mount count")
        done += _unmount_uncounted(store)
        done += remove_debris(store)
    for line in done:
        log.info("repair: %s", line)
    return done


def _repair_damaged(store: Store, done: list[str]) -> set[str]:
    """Let the driver rebuild damaged layer directories; return those it could not."""
    lost = set()
    on_disk = set(store.driver.layer_ids())
    for layer in store.layer_store.layers():
        if layer.id not in on_disk or not store.driver.verify_layer(layer.id):
            continue
        done += [f"layer {layer.id}: {line}" for line in store.driver.repair_layer(layer.id)]
        if store.driver.verify_layer(layer.id):
            lost.add(layer.id)
    return lost


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
            try:
                changed = path.is_file() and data_changed(image, key, path)
            except OSError:
                changed = None
            if changed is None or not path.is_file():
                bad.add(image.id)
                break
            if changed:
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


def _unmount_uncounted(store: Store) -> list[str]:
    """Unmount what is mounted under the driver's home but counted nowhere."""
    done = []
    for layer_id, points in uncounted_mounts(store).items():
        if layer_id and store.driver.exists(layer_id):
            store.driver.unmount(layer_id)
        else:
            for point in points:
                umount(point, MNT_DETACH)
        done.append(f"{', '.join(points)}: unmounted (mounted, but not counted)")
    return done


def remove_debris(store: Store) -> list[str]:
    """Remove files and directories no record names; under the exclusive lock."""
    done = []
    cs = store.container_store
    for orphan in orphan_dirs(store):
        store.driver.remove(orphan)
        done.append(f"layer directory {orphan}: removed (no record)")
    for home, _count in foreign_homes(store):
        _rmtree(home)
        done.append(f"{home}: removed (layers of a driver this store does not use)")
    with store.locks.staging_idle() as idle:
        if idle:
            for link in dangling_links(store):
                link.unlink()
                done.append(f"{link}: removed (dangling)")
            for path in staging_entries(store):
                _rmtree(path)
                done.append(f"{path}: removed (staging debris)")
    for path in temp_files(store):
        path.unlink(missing_ok=True)
        done.append(f"{path}: removed (temp file)")
    done += _remove_image_debris(store)
    containers = {c.id for c in cs.containers()}
    for name in cs.dir_ids():
        if name not in containers:
            _rmtree(cs.dir / name)
            done.append(f"{cs.dir / name}: removed (no container record)")
    for path in store.locks.clean():
        log.debug("removed the stale lock or lease %s", path)
    return done


def _remove_image_debris(store: Store) -> list[str]:
    """Image directories without a record, files an image's record does not list."""
    ims, done = store.image_store, []
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


def gc(store: Store, *, min_age: float = 300.0) -> list[str]:
    """Remove layers no image or container uses, and crash debris; return what went.

    Layers younger than ``min_age`` seconds are kept, and so are leased ones:
    another process may have stored them for an image it has not recorded yet.
    Mounted layers are kept.
    """
    done: list[str] = []
    with store.writing():
        done += [f"{path}: removed (staging debris)" for path in store.cleared_staging()]
        ls = store.layer_store
        used = store.referenced_layers()
        leased = store.locks.leased_by_others()
        now = time.time()
        keep = set(used)
        for layer in ls.layers():
            young = layer.created is not None and now - layer.created.timestamp() < min_age
            if young or ls.mounted(layer.id) or layer.id in leased:
                keep.update(lay.id for lay in _ancestors(store, layer.id))
        doomed = [lay.id for lay in reversed(ls.layers()) if lay.id not in keep]
        if doomed:
            ls.forget(doomed)
            ls.delete_dirs(doomed)
            store.locks.release(doomed, everyone=False)
            done += [f"layer {i}: removed (unused)" for i in doomed]
        done += remove_debris(store)
    for line in done:
        log.info("gc: %s", line)
    return done


def _ancestors(store: Store, layer_id: str) -> list[Layer]:
    try:
        return store.layer_store.chain(layer_id)
    except StorageError:
        return []
