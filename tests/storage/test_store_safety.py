"""What a store refuses and how it fails: driver and runroot claims, ids, digests, full disks.

- The driver is recorded in the graphroot: another driver is refused (naming both)
  instead of every record looking broken to repair().
- A runroot is claimed by one graphroot; a graphroot alone gets a runroot of its own.
- Image ids are 64 hex and the config's sha256; big data, names and mounts of what
  is not there raise KeyErrors naming it.
- Blob digests: a layer is found by every verified blob digest, and a new digest is
  verified by reading, never taken on trust.
- Metadata I/O errors (a full filesystem, a graphroot that is a file) raise
  MetadataIOError naming the file and the object, and leave nothing half-made.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage import (
    BigDataUnknown,
    ConfigError,
    ContainerUnknown,
    DigestMismatch,
    ImageIDMismatch,
    ImageUnknown,
    InvalidID,
    InvalidLayerID,
    LayerUnknown,
    MetadataIOError,
    StorageError,
    Store,
    UnknownReference,
    check,
    repair,
)
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, chain_ids, layer_blob, require_root, require_root_for
from tests.storage.test_store import import_image, make_store, tar_of


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, graphroot: Path) -> Iterator[Store]:
    require_root_for(request.param)
    s = make_store(graphroot, request.param)
    yield s
    with contextlib.suppress(StorageError, RuntimeError):
        s.shutdown(force=True)


# -- the driver and the runroot ------------------------------------------------------


def test_the_driver_is_recorded_and_another_refused(graphroot: Path,
                                                    criolib_test_images: TestImages) -> None:
    require_root("overlay and vfs stores")
    with make_store(graphroot, "vfs") as store:
        import_image(store, criolib_test_images, "multilayer")
    assert (graphroot / "graph" / "driver").read_text().strip() == "vfs"
    with pytest.raises(ConfigError) as info:
        make_store(graphroot, "overlay")
    assert "'vfs'" in str(info.value) and "'overlay'" in str(info.value)
    with make_store(graphroot, "vfs") as store:  # what it was made with still opens
        assert len(store.layers()) == 3 and check(store).clean


def test_a_store_made_before_the_driver_file_adopts_its_driver(
        graphroot: Path, criolib_test_images: TestImages) -> None:
    require_root("vfs stores")
    with make_store(graphroot, "vfs") as store:
        import_image(store, criolib_test_images, "multilayer")
    (graphroot / "graph" / "driver").unlink()  # as an older criolib left it
    with pytest.raises(ConfigError, match="'vfs'"):
        make_store(graphroot, "overlay")  # its records are vfs layers: refused, not "repaired"
    assert not (graphroot / "graph" / "driver").exists()
    with make_store(graphroot, "vfs") as store:
        assert len(store.layers()) == 3
    assert (graphroot / "graph" / "driver").read_text().strip() == "vfs"


def test_check_looks_at_every_driver_home(store: Store) -> None:
    other = "vfs" if store.driver.name == "overlay" else "overlay"
    (store.graphroot / other / ("a" * 64) / "diff").mkdir(parents=True)
    report = check(store)
    assert report.kinds() == {"driver-home-foreign"}
    assert other in str(report) and store.driver.name in str(report)
    assert any(other in line for line in repair(store))
    assert check(store).clean and not (store.graphroot / other).exists()


def test_a_graphroot_alone_gets_its_own_runroot(graphroot: Path) -> None:
    one, two = graphroot / "one", graphroot / "two"
    with Store(one, driver="vfs") as a, Store(two, driver="vfs") as b:
        digest = hashlib.sha256(os.fsencode(one)).hexdigest()[:12]
        assert a.runroot == Path(f"/run/criolib/storage-{digest}")
        assert a.runroot != b.runroot
        assert (a.runroot / "graphroot").read_text().strip() == str(one)
    with Store(one, driver="vfs") as again:
        assert again.runroot == a.runroot


def test_a_runroot_serves_one_graphroot(graphroot: Path) -> None:
    run = graphroot / "run"
    with Store(graphroot / "one", run, "vfs"):
        pass
    with pytest.raises(ConfigError) as info:
        Store(graphroot / "two", run, "vfs")
    assert str(graphroot / "one") in str(info.value) and str(graphroot / "two") in str(info.value)
    with Store(graphroot / "one", run, "vfs"):
        pass


# -- ids, big data, names --------------------------------------------------------------


def test_image_ids_are_checked(graphroot: Path) -> None:
    config = b'{"architecture": "amd64"}'
    good = hashlib.sha256(config).hexdigest()
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        layer = store.create_layer()
        for bad in ("short", "A" * 64, "g" * 64, "sha256:" + good):
            with pytest.raises(InvalidID):
                store.create_image(bad, layer.id)
        with pytest.raises(ImageIDMismatch) as info:
            store.create_image("e" * 64, layer.id, big_data={"config": config})
        assert isinstance(info.value, DigestMismatch) and info.value.actual == good
        assert store.images() == [] and not (store.graphroot / "images" / ("e" * 64)).exists()
        image = store.create_image(good, layer.id, big_data={"config": config})
        with pytest.raises(ImageIDMismatch):
            store.set_big_data(image.id, "config", b"{}")
        assert store.big_data(image.id, "config") == config
        with pytest.raises(InvalidID):
            store.create_container(image.id, id="../escape")
        with pytest.raises(InvalidLayerID):
            store.create_layer(id="../escape")
        assert check(store).clean


def test_lookups_of_what_is_not_there_are_key_errors(graphroot: Path) -> None:
    config = b"{}"
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        layer = store.create_layer()
        image = store.create_image(hashlib.sha256(config).hexdigest(), layer.id,
                                   big_data={"config": config})
        for call in (store.set_names, store.add_names, store.remove_names):
            with pytest.raises(UnknownReference) as info:
                call("nothing-here", ["x"])
            err = info.value
            assert isinstance(err, (KeyError, ImageUnknown, ContainerUnknown, LayerUnknown))
            assert "nothing-here" in str(err)
        with pytest.raises(BigDataUnknown) as missing:
            store.big_data(image.id, "manifest")
        assert (missing.value.image_id, missing.value.key) == (image.id, "manifest")
        # A container whose record names no layer (another tool wrote it).
        container = store.create_container(image.id)
        path = store.graphroot / "containers.json"
        records = json.loads(path.read_text())
        del records[0]["layer"]
        path.write_text(json.dumps(records))
        with store.writing():
            store.container_store.load()
        with pytest.raises(LayerUnknown, match=container.id):
            store.mount(container.id)


# -- blob digests ----------------------------------------------------------------------


def test_every_verified_blob_digest_finds_the_layer(store: Store,
                                                   criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    gz, zst = images["multilayer"], images["multilayer-zstd"]
    import_image(store, images, "multilayer")
    base = chain_ids(gz.diff_ids)[0]
    # The zstd blob of the same diff: read once and verified, then known.
    with open(layer_blob(images, zst.layers[0].digest), "rb") as f:
        layer = store.put_layer(f, expected_diff_id=zst.diff_ids[0],
                                expected_digest=zst.layers[0].digest)
        assert f.tell() > 0  # it had to be read
    assert layer.id == base
    assert layer.known_digests == (gz.layers[0].digest, zst.layers[0].digest)
    on_disk = json.loads((store.graphroot / "layers.json").read_text())[0]
    assert on_disk["compressed-diff-digest"] == gz.layers[0].digest
    assert on_disk["compressed-diff-digests"] == [gz.layers[0].digest, zst.layers[0].digest]
    for digest in (gz.layers[0].digest, zst.layers[0].digest):
        assert [lay.id for lay in store.layers_by_compressed_digest(digest)] == [base]
        with open(layer_blob(images, zst.layers[0].digest), "rb") as f:
            assert store.put_layer(f, expected_digest=digest).id == base
            assert f.tell() == 0  # found by its digest alone


def test_a_wrong_digest_on_a_stored_layer_is_refused(store: Store,
                                                     criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = images["multilayer"]
    import_image(store, images, "multilayer")
    wrong = "sha256:" + "1" * 64
    with open(layer_blob(images, ml.layers[0].digest), "rb") as f, \
            pytest.raises(DigestMismatch) as info:
        store.put_layer(f, expected_diff_id=ml.diff_ids[0], expected_digest=wrong)
    assert info.value.expected == wrong
    # Another layer's blob claiming to be this diff: its bytes give another diff_id.
    with open(layer_blob(images, ml.layers[1].digest), "rb") as f, \
            pytest.raises(DigestMismatch):
        store.put_layer(f, expected_diff_id=ml.diff_ids[0],
                        expected_digest=ml.layers[1].digest)
    assert store.layer(chain_ids(ml.diff_ids)[0]).known_digests == (ml.layers[0].digest,)


# -- metadata I/O errors -----------------------------------------------------------------


@pytest.fixture
def tiny(storage_tmpfs: Path) -> Iterator[Path]:
    """A 600 kB tmpfs: room for a store's metadata and little else."""
    require_root("a tmpfs of its own")
    where = Path(tempfile.mkdtemp(prefix="tiny-", dir=storage_tmpfs))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        os.rmdir(where)


def _fill(where: Path) -> Path:
    """Fill the filesystem at ``where``; returns the filler to remove."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_big_data_on_a_full_disk(tiny: Path) -> None:
    with Store(tiny / "g", tiny / "r", "vfs") as store:
        layer = store.create_layer()
        config = os.urandom(200_000)  # fits once...
        big = hashlib.sha256(config).hexdigest()
        store.create_image(big, layer.id, big_data={"config": config})
        other = os.urandom(500_000)  # ...this does not
        with pytest.raises(MetadataIOError) as info:
            store.create_image(hashlib.sha256(other).hexdigest(), layer.id,
                               big_data={"config": other})
        err = info.value
        assert isinstance(err, OSError) and err.errno == errno.ENOSPC
        assert "config" in str(err) and err.filename and "images" in err.filename
        assert len(store.images()) == 1
        assert check(store).clean  # nothing half-made left behind


def test_records_on_a_full_disk(tiny: Path) -> None:
    with Store(tiny / "g", tiny / "r", "vfs") as store:
        layer = store.create_layer()
        config = b"{}"
        image = store.create_image(hashlib.sha256(config).hexdigest(), layer.id,
                                   big_data={"config": config})
        filler = _fill(tiny)
        data, _ = tar_of({"a.txt": b"A"})
        with pytest.raises((MetadataIOError, StorageError)) as info:
            store.put_layer(io.BytesIO(data), names=["n" * 50])
        assert isinstance(info.value, OSError)
        with pytest.raises(MetadataIOError) as info:
            store.create_layer(names=["x" * 4000])
        assert "layers.json" in str(info.value) and info.value.errno == errno.ENOSPC
        with pytest.raises(MetadataIOError):
            store.create_container(image.id, names=["c" * 4000])
        filler.unlink()
        assert [lay.id for lay in store.layers()] == [layer.id]
        assert store.containers() == []
        assert check(store).clean


def test_mount_counts_on_a_full_runroot(graphroot: Path, tiny: Path) -> None:
    with Store(graphroot / "g", tiny / "run", "vfs") as store:
        layer = store.create_layer()
        filler = _fill(tiny)
        with pytest.raises(MetadataIOError) as info:
            store.mount(layer.id)
        assert "mounts.json" in str(info.value) and layer.id in str(info.value)
        filler.unlink()
        assert store.mounted(layer.id) == 0


def test_a_graphroot_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(MetadataIOError) as info:
        Store(tmp_path / "file", tmp_path / "run", "vfs")
    assert str(tmp_path / "file") in str(info.value) and "graphroot" in str(info.value)
    with pytest.raises(MetadataIOError):
        Store(tmp_path / "file" / "below", tmp_path / "run", "vfs")


def test_put_layer_inside_a_write_batch(graphroot: Path) -> None:
    data, diff_id = tar_of({"a.txt": b"A"})
    config = b"{}"
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        with store.writing():  # one batch: the layer and its image under one lock hold
            layer = store.put_layer(io.BytesIO(data), expected_diff_id=diff_id)
            store.create_image(hashlib.sha256(config).hexdigest(), layer.id,
                               big_data={"config": config})
        assert store.layer(layer.id).diff_id == diff_id and len(store.images()) == 1
        assert check(store).clean
