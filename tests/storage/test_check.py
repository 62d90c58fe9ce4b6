"""check(), repair(), gc() and disk_usage() over overlay and vfs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage import StorageError, Store, check, disk_usage, gc, repair
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, chain_ids, require_root_for
from tests.storage.test_store import import_image, make_store


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, graphroot: Path) -> Iterator[Store]:
    require_root_for(request.param)
    s = make_store(graphroot, request.param)
    yield s
    with contextlib.suppress(StorageError, RuntimeError):
        s.shutdown(force=True)


def _fixed(store: Store) -> list[str]:
    done = repair(store)
    report = check(store)
    assert report.clean, str(report)
    return done


def test_missing_layer_dir_takes_children_and_images(store: Store,
                                                     criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    bb = import_image(store, images, "busybox")
    ids = chain_ids(images["multilayer"].diff_ids)
    container = store.create_container(ml.id)
    shutil.rmtree(store.driver.home / ids[1])
    kinds = check(store).kinds()
    assert {"layer-dir-missing", "image-layer-missing", "container-layer-missing"} <= kinds
    done = _fixed(store)
    assert any(container.id in line for line in done)
    assert [i.id for i in store.images()] == [bb.id]  # the healthy image stays
    assert {lay.id for lay in store.layers()} == {ids[0], *chain_ids(images["busybox"].diff_ids)}
    assert store.containers() == []


def test_debris_is_reported_and_removed(store: Store, criolib_test_images: TestImages) -> None:
    import_image(store, criolib_test_images, "multilayer")
    before = check(store)
    assert before.clean and str(before) == "clean"
    g = store.graphroot
    (g / "staging" / "overlay-abc" / "diff").mkdir(parents=True)
    (g / ".layers.json.x1y2.tmp").write_bytes(b"[")
    (g / "images" / ("e" * 64)).mkdir(parents=True, exist_ok=True)
    (g / "containers" / ("f" * 64)).mkdir(parents=True)
    store.driver.create("orphan", None)  # a directory written before its record
    image = store.images()[0]
    (g / "images" / image.id / "extra").write_bytes(b"?")
    (g / "images" / image.id / ".manifest.zz.tmp").write_bytes(b"?")
    kinds = check(store).kinds()
    assert {"staging-debris", "temp-file", "image-dir-orphan", "container-dir-orphan",
            "layer-dir-orphan", "image-data-unlisted"} <= kinds
    done = _fixed(store)
    assert len(done) >= 7
    assert store.images()[0] == image and len(store.layers()) == 3  # healthy: untouched


def test_big_data_problems(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    bb = import_image(store, images, "busybox")
    # A file replaced whole whose record was not updated (a crash between the two).
    manifest = store.image_store.big_data_path(ml.id, "manifest")
    manifest.write_bytes(b'{"schemaVersion": 2, "changed": true}')
    # A file that is gone.
    os.unlink(store.image_store.big_data_path(bb.id, "manifest"))
    assert {"image-data-digest", "image-data-missing"} <= check(store).kinds()
    _fixed(store)
    assert json.loads(store.big_data(ml.id, "manifest"))["changed"] is True
    assert [i.id for i in store.images()] == [ml.id]


def test_stale_mount_counts(store: Store, criolib_test_images: TestImages) -> None:
    ml = import_image(store, criolib_test_images, "multilayer")
    c = store.create_container(ml.id)
    store.mount(c.id)
    assert check(store).clean
    if store.driver.name == "overlay":
        store.driver.unmount(c.id)  # behind the store's back, as a reboot would
    else:
        shutil.rmtree(store.driver.home / c.id)
    assert "mount-stale" in check(store).kinds()
    _fixed(store)
    assert store.layer_store.mounts() == {}


def test_incomplete_records_from_containers_storage(store: Store) -> None:
    store.create_layer(id="good")
    layers = json.loads((store.graphroot / "layers.json").read_text())
    layers.append({"id": "half", "flags": {"incomplete": True}})
    (store.graphroot / "layers.json").write_text(json.dumps(layers))
    store.driver.create("half", None)
    with make_store(store.graphroot.parent, store.driver.name) as other, other.writing():
        pass  # another writer (as containers/storage would be): everyone reloads
    assert [lay.id for lay in store.layers()] == ["good"]  # never shown
    assert {"layer-incomplete", "layer-dir-orphan"} <= check(store).kinds()
    _fixed(store)
    assert not store.driver.exists("half")


def test_gc_removes_unused_layers(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    bb = import_image(store, images, "busybox")
    store.create_container(bb.id)
    unused = store.create_layer(ml.layer)
    stray = store.create_layer()
    assert gc(store) == []  # too young: another process may be about to use them
    done = gc(store, min_age=0)
    assert len(done) == 2 and any(unused.id in line for line in done)
    ids = {lay.id for lay in store.layers()}
    assert unused.id not in ids and stray.id not in ids
    assert set(chain_ids(images["multilayer"].diff_ids)) <= ids
    store.delete_image(ml.id)
    mounted = store.create_layer()
    store.mount(mounted.id)
    gc(store, min_age=0)  # a mounted layer stays
    assert [lay.id for lay in store.layers()][-1] == mounted.id
    assert check(store).clean


def test_disk_usage(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    derived = store.create_image("d" * 64, chain_ids(images["multilayer"].diff_ids)[1])
    c = store.create_container(ml.id, names=["c"])
    (store.mount(c.id) / "big").write_bytes(b"x" * 100_000)
    usage = disk_usage(store)
    assert len(usage.layers) == 4 and all(lay.size >= 0 for lay in usage.layers)
    by_id = {i.id: i for i in usage.images}
    assert by_id[ml.id].size > by_id[ml.id].unique_size > 0
    assert by_id[derived.id].unique_size == 0  # all its layers are ml's too
    assert by_id[ml.id].containers == 1
    assert usage.containers[0].size >= 100_000
    assert usage.total == sum(lay.size for lay in usage.layers)
    assert by_id[ml.id].size > 1_000_000  # busybox is in there


def test_a_mount_nothing_counts(store: Store, criolib_test_images: TestImages) -> None:
    ml = import_image(store, criolib_test_images, "multilayer")
    c = store.create_container(ml.id)
    store.mount(c.id)
    store.driver.mount(ml.layer or "", options=["ro"])  # behind the store's back
    if store.driver.name == "vfs":
        assert check(store).clean  # vfs mounts nothing: nothing can be uncounted
        return
    report = check(store)
    assert report.kinds() == {"mount-uncounted"} and ml.layer in str(report)
    done = _fixed(store)
    assert any("not counted" in line for line in done)
    assert not store.driver.is_mounted(ml.layer or "")
    assert store.driver.is_mounted(c.id) and store.mounted(c.id) == 1  # counted: kept


def test_a_container_layer_without_its_container(store: Store,
                                                 criolib_test_images: TestImages) -> None:
    ml = import_image(store, criolib_test_images, "multilayer")
    keep = store.create_container(ml.id, names=["keep"])
    lost = store.create_container(ml.id, names=["lost"])
    with store.writing():
        store.container_store.forget(lost.id)  # as a crash inside create or delete leaves it
    assert check(store).kinds() == {"container-layer-orphan", "container-dir-orphan"}
    _fixed(store)
    assert lost.id not in {lay.id for lay in store.layers()}
    assert [c.id for c in store.containers()] == [keep.id] and keep.id in {
        lay.id for lay in store.layers()}


def test_unreadable_metadata_is_reported_not_raised(store: Store) -> None:
    layer = store.create_layer()
    store.mount(layer.id)
    mounts = store.runroot / "mounts.json"
    mounts.write_text("{not json")
    with make_store(store.graphroot.parent, store.driver.name) as other, other.writing():
        pass  # another writer: everyone reloads
    assert store.mounted(layer.id) == 0  # a cache: unreadable counts as empty
    kinds = check(store).kinds()
    assert "mounts-unreadable" in kinds
    repair(store)
    assert check(store).clean and json.loads(mounts.read_text()) == []
    (store.graphroot / "images.json").write_text("[{")
    with store.lock.exclusive():
        store.lock.bump()  # as another writer would: everyone reloads
    report = check(store)
    assert report.kinds() == {"metadata-unreadable"}
    assert "images.json" in str(report)
    with pytest.raises(StorageError, match=r"images\.json"):
        store.images()


def test_the_next_writer_clears_staging_nobody_holds(store: Store) -> None:
    debris = store.graphroot / "staging" / "vfs-crashed"
    (debris / "diff").mkdir(parents=True)
    with store.locks.extracting(timeout=None):
        store.create_layer()  # an extraction is running: its staging is not debris
        assert debris.exists()
        assert "staging-debris" not in check(store).kinds()
    store.create_layer()
    assert not debris.exists()
    assert check(store).clean


def test_damaged_layers_are_rebuilt_or_removed(store: Store,
                                               criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    ids = chain_ids(images["multilayer"].diff_ids)
    if store.driver.name == "overlay":
        short = (store.driver.home / ids[0] / "link").read_text().strip()
        (store.driver.home / "l" / short).unlink()  # children can no longer name it
        report = check(store)
        assert report.kinds() == {"layer-damaged"} and ids[0] in str(report)
        _fixed(store)
        c = store.create_container(ml.id)
        assert (store.mount(c.id) / "data" / "layer3.txt").is_file()
        store.unmount(c.id)
    else:
        shutil.rmtree(store.driver.home / ids[2] / "diff")
        assert "layer-damaged" in check(store).kinds()
        _fixed(store)  # nothing to rebuild it from: it goes, with the image on it
        assert store.images() == [] and [lay.id for lay in store.layers()] == ids[:2]
