"""Store round trips over overlay and vfs: layers, images, containers, names, mounts.

Also holds the helpers the crash and concurrency tests share (:func:`import_image`,
:func:`assert_multilayer_rootfs`), importable by their child processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage import (
    AmbiguousID,
    BigDataUnknown,
    ContainerUnknown,
    DigestMismatch,
    IDConflict,
    Image,
    ImageInUse,
    ImageUnknown,
    LayerInUse,
    LayerUnknown,
    NameConflict,
    StorageError,
    Store,
    check,
    layer_id_for,
)
from criolib.testing import Entry, TestImages, write_layer
from tests.storage.conftest import DRIVERS, chain_ids, layer_blob, require_root_for

REPO = Path(__file__).resolve().parents[2]


# -- helpers shared with test_crash and test_concurrency -------------------------------


def blob(images: TestImages, digest: str) -> bytes:
    return layer_blob(images, digest).read_bytes()


def import_image(store: Store, images: TestImages, name: str, *,
                 names: tuple[str, ...] | None = None) -> Image:
    """Pull test image ``name`` from the OCI layout into ``store``, as an image copy would."""
    image = images[name]
    assert image.config_digest is not None
    parent = None
    for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
        with open(layer_blob(images, desc.digest), "rb") as f:
            layer = store.put_layer(f, parent, expected_diff_id=diff_id,
                                    expected_digest=desc.digest)
        parent = layer.id
    return store.create_image(
        image.config_digest.removeprefix("sha256:"), parent,
        names=names if names is not None else (f"localhost/{image.reference}",),
        digest=image.digest,
        big_data={"manifest": blob(images, image.digest),
                  image.config_digest: blob(images, image.config_digest)})


def assert_multilayer_rootfs(root: Path) -> None:
    """``root`` shows the three multilayer layers applied in order (criolib.testing)."""
    data = root / "data"
    assert (data / "keep.txt").read_bytes() == b"kept from layer 1\n"
    assert (data / "overwritten.txt").read_bytes() == b"layer 2 version\n"
    assert not (data / "delete-me.txt").exists()
    assert sorted(os.listdir(data / "replaced")) == ["new.txt"]
    assert not (data / "removed-dir").exists()
    assert (data / "layer3.txt").read_bytes() == b"added by layer 3\n"
    assert (root / "etc" / "criolib-image").read_bytes() == b"multilayer\n"
    assert os.stat(data / "hardlink-src.txt").st_ino == os.stat(data / "hardlink-dst.txt").st_ino
    assert os.readlink(data / "abs-symlink") == "/data/keep.txt"
    assert os.stat(data / "setuid-bin").st_mode & stat.S_ISUID
    assert os.stat(data / "owned-by-tester.txt").st_uid == 1000
    assert (root / "bin" / "busybox").is_file()


def make_store(graphroot: Path, driver: str) -> Store:
    return Store(graphroot / "graph", graphroot / "run", driver)


def tar_of(files: dict[str, bytes]) -> tuple[bytes, str]:
    """An uncompressed layer tarball holding ``files`` and its diff_id."""
    buf = io.BytesIO()
    result = write_layer([Entry(p, data=d) for p, d in files.items()], buf, "none")
    return buf.getvalue(), result.diff_id


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest, graphroot: Path) -> Iterator[Store]:
    require_root_for(request.param)
    s = make_store(graphroot, request.param)
    yield s
    with contextlib.suppress(StorageError, RuntimeError):
        s.shutdown(force=True)


# -- layers and images -------------------------------------------------------------------


def test_import_multilayer(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = images["multilayer"]
    image = import_image(store, images, "multilayer")
    ids = chain_ids(ml.diff_ids)
    assert [lay.id for lay in store.layers()] == ids
    assert [lay.diff_id for lay in store.layers()] == list(ml.diff_ids)
    assert [lay.compressed_digest for lay in store.layers()] == [d.digest for d in ml.layers]
    assert [lay.parent for lay in store.layers()] == [None, *ids[:-1]]
    assert all(lay.compression == "gzip" and lay.created for lay in store.layers())
    assert ids[1] == layer_id_for(ids[0], ml.diff_ids[1])
    assert [lay.id for lay in store.image_layers(image.id)] == ids
    assert ml.config_digest is not None
    assert image.id == ml.config_digest.removeprefix("sha256:")
    assert image.layer == ids[-1] and image.digest == ml.digest
    assert store.big_data(image.id, ml.config_digest) == blob(images, ml.config_digest)
    assert json.loads(store.big_data(image.id, "manifest"))["schemaVersion"] == 2
    assert image.big_data_digests[ml.config_digest] == ml.config_digest
    # lookups: id, unique prefix, name, digest, repo@digest, sha256:id
    name = f"localhost/{ml.reference}"
    for ref in (image.id, image.id[:8], name, ml.digest, f"localhost/{ml.repository}@{ml.digest}",
                ml.config_digest):
        assert store.image(ref).id == image.id, ref
    assert store.layer(ids[0][:10]).id == ids[0]
    with pytest.raises(ImageUnknown) as info:
        store.image("localhost/nope:latest")
    assert isinstance(info.value, KeyError) and "nope" in str(info.value)
    with pytest.raises(BigDataUnknown) as missing:
        store.big_data(image.id, "signatures")
    assert isinstance(missing.value, KeyError) and missing.value.key == "signatures"
    assert image.id in str(missing.value) and "signatures" in str(missing.value)
    assert check(store).clean


def test_same_layers_are_stored_once(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    first = import_image(store, images, "multilayer")
    again = import_image(store, images, "multilayer")
    assert again.id == first.id and len(store.layers()) == 3 and len(store.images()) == 1
    # Same tar, other compression: same diff_ids, same config, so the same layers and image.
    zstd = import_image(store, images, "multilayer-zstd")
    assert zstd.id == first.id and len(store.layers()) == 3
    assert set(zstd.names) == {f"localhost/{images['multilayer'].reference}",
                               f"localhost/{images['multilayer-zstd'].reference}"}
    # Known by the blob's digest alone: found without reading the blob.
    with open(layer_blob(images, images["multilayer"].layers[1].digest), "rb") as f:
        found = store.put_layer(f, chain_ids(images["multilayer"].diff_ids)[0],
                                expected_digest=images["multilayer"].layers[1].digest)
        assert f.tell() == 0 and found.id == chain_ids(images["multilayer"].diff_ids)[1]
    # Without the diff_id up front (hashed first), from a file and from a pipe.
    ml = images["multilayer"]
    with open(layer_blob(images, ml.layers[0].digest), "rb") as f:
        assert store.put_layer(f).id == chain_ids(ml.diff_ids)[0]
    read_fd, write_fd = os.pipe()
    data = blob(images, images["busybox"].layers[0].digest)
    writer = subprocess.Popen([sys.executable, "-c",
                               "import os,sys; os.write(1, sys.stdin.buffer.read())"],
                              stdin=subprocess.PIPE, stdout=write_fd)
    os.close(write_fd)
    assert writer.stdin is not None
    writer.stdin.write(data)
    writer.stdin.close()
    with os.fdopen(read_fd, "rb") as pipe:
        layer = store.put_layer(pipe)
    writer.wait()
    assert layer.diff_id == images["busybox"].diff_ids[0]
    assert layer.id == images["busybox"].diff_ids[0].removeprefix("sha256:")
    assert len(store.layers()) == 4
    assert check(store).clean  # the spool left nothing behind


def test_bad_diffs_leave_nothing(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = images["multilayer"]
    with open(layer_blob(images, ml.layers[0].digest), "rb") as f, \
            pytest.raises(DigestMismatch):
        store.put_layer(f, expected_diff_id="sha256:" + "0" * 64)
    with open(layer_blob(images, ml.layers[0].digest), "rb") as f, \
            pytest.raises(DigestMismatch):
        store.put_layer(f, expected_diff_id=ml.diff_ids[0], expected_digest="sha256:" + "1" * 64)
    assert store.layers() == []
    assert check(store).clean
    with pytest.raises(LayerUnknown):
        store.put_layer(None, "no-such-parent")
    with pytest.raises(LayerUnknown):
        store.create_image("a" * 64, "no-such-layer")


def test_names_move_between_images(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer", names=("app:latest", "app:v1"))
    bb = import_image(store, images, "busybox", names=("busybox:latest",))
    store.add_names(bb.id, ["app:latest"])
    assert store.image("app:latest").id == bb.id
    assert store.image(ml.id).names == ("app:v1",)
    assert set(store.image(bb.id).names) == {"busybox:latest", "app:latest"}
    store.remove_names("app:latest", ["app:latest"])
    with pytest.raises(ImageUnknown):
        store.image("app:latest")
    store.set_names(ml.id, ["only:this"])
    assert store.image(ml.id).names == ("only:this",)
    # Container names never move.
    one = store.create_container(ml.id, names=["web"])
    with pytest.raises(NameConflict, match="web"):
        store.create_container(ml.id, names=["web"])
    two = store.create_container(ml.id)
    with pytest.raises(NameConflict):
        store.set_names(two.id, ["web"])
    assert store.container("web").id == one.id


def test_ambiguous_prefix(store: Store) -> None:
    store.create_layer(id="abc1")
    store.create_layer(id="abc2")
    with pytest.raises(AmbiguousID, match="abc"):
        store.layer("abc")
    assert store.layer("abc1").id == "abc1"


def test_delete_image_keeps_shared_layers(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    ids = chain_ids(images["multilayer"].diff_ids)
    derived = store.create_image("d" * 64, ids[1], names=["derived:1"])
    assert store.delete_image(ml.id) == [ids[2]]
    assert [lay.id for lay in store.layers()] == ids[:2]
    assert not (store.driver.home / ids[2]).exists()
    assert store.delete_image(derived.id) == [ids[1], ids[0]]
    assert store.layers() == [] and store.images() == []
    assert check(store).clean


def test_in_use_refusals(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    ids = chain_ids(images["multilayer"].diff_ids)
    container = store.create_container(ml.id, names=["c1"])
    with pytest.raises(ImageInUse) as info:
        store.delete_image(ml.id)
    assert info.value.containers == (container.id,) and container.id[:12] in str(info.value)
    with pytest.raises(LayerInUse, match="image"):
        store.delete_layer(ids[2])
    with pytest.raises(LayerInUse, match="layer"):
        store.delete_layer(ids[0])  # a child stands on it
    with pytest.raises(LayerInUse, match="container"):
        store.delete_layer(container.layer or "")
    with pytest.raises(IDConflict):
        store.create_image(ml.id, ids[0])  # same id, other layer
    with pytest.raises(IDConflict):
        store.create_container(ml.id, id=container.id)
    commit = store.create_layer(container.id)  # a layer on the container's
    with pytest.raises(LayerInUse, match=commit.id):
        store.delete_container("c1")
    assert store.container("c1") == container  # refused before anything changed
    store.delete_layer(commit.id)
    store.mount("c1")
    removed = store.delete_image(ml.id, force=True)  # takes the container with it
    assert removed == list(reversed(ids))
    assert store.containers() == [] and store.layers() == []
    with pytest.raises(ContainerUnknown):
        store.container("c1")
    assert check(store).clean


# -- containers and mounts ---------------------------------------------------------------


def test_container_lifecycle(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    ml = import_image(store, images, "multilayer")
    container = store.create_container(ml.id, names=["box"], metadata='{"pod": "x"}')
    assert container.image == ml.id and container.layer == container.id
    assert store.layer(container.id).parent == ml.layer
    userdata = store.container_dir("box")
    assert userdata.is_dir() and userdata == store.graphroot / "containers" / container.id / \
        "userdata"
    root = store.mount("box")
    assert store.mount(container.id) == root  # shared: one mount, two references
    assert store.mounted("box") == 2
    if store.driver.name == "overlay":
        assert os.path.ismount(root)
    assert_multilayer_rootfs(root)
    (root / "data" / "written.txt").write_bytes(b"by the container\n")
    (root / "data" / "keep.txt").unlink()
    assert store.unmount("box") is True  # one reference left
    assert store.unmount("box") is False
    assert store.mounted("box") == 0
    if store.driver.name == "overlay":
        assert not os.path.ismount(root)
    root = store.mount("box")
    assert (root / "data" / "written.txt").read_bytes() == b"by the container\n"
    assert not (root / "data" / "keep.txt").exists()
    # The image's own layers did not change.
    assert (store.layer_path(ml.layer or "") / "data" / "layer3.txt").exists()
    diff = store.diff(container.id)
    with tarfile.open(fileobj=diff) as tar:
        members = set(tar.getnames())
    diff.close()
    assert {"data/written.txt", "data/.wh.keep.txt"} <= {m.removeprefix("./")
                                                        for m in members}
    store.delete_container("box")  # unmounts first
    assert store.containers() == [] and not userdata.exists()
    assert [lay.id for lay in store.layers()] == chain_ids(images["multilayer"].diff_ids)
    assert not store.layer_store.mounts()
    assert check(store).clean


def test_shutdown_unmounts_everything(store: Store, criolib_test_images: TestImages) -> None:
    ml = import_image(store, criolib_test_images, "multilayer")
    c = store.create_container(ml.id)
    store.mount(c.id)
    with pytest.raises(LayerInUse, match="mounted"):
        store.shutdown()
    assert store.shutdown(force=True) == [c.id]
    with make_store(store.graphroot.parent, store.driver.name) as again:
        assert again.mounted(c.id) == 0


def test_diff_round_trips(store: Store, criolib_test_images: TestImages) -> None:
    images = criolib_test_images
    import_image(store, images, "multilayer")
    ids = chain_ids(images["multilayer"].diff_ids)
    with store.diff(ids[2]) as exported, tarfile.open(fileobj=exported) as tar:
        names = {m.removeprefix("./") for m in tar.getnames()}
    assert "data/layer3.txt" in names and "data/.wh.removed-dir" in names
    assert "data/keep.txt" not in names  # only this layer's changes


# -- across processes --------------------------------------------------------------------


_WRITER = textwrap.dedent("""
    import hashlib, sys
    from criolib.storage import Store
    with Store(sys.argv[1], sys.argv[2], sys.argv[3]) as store:
        layer = store.create_layer(names=["from-child"])
        store.create_image(hashlib.sha256(b"{}").hexdigest(), layer.id,
                           names=["child:latest"], big_data={"config": b"{}"})
""")


def test_reload_across_processes(store: Store) -> None:
    assert store.layers() == [] and store.images() == []
    subprocess.run([sys.executable, "-c", _WRITER, str(store.graphroot), str(store.runroot),
                    store.driver.name], check=True, cwd=REPO, timeout=60)
    assert [lay.names for lay in store.layers()] == [("from-child",)]
    assert store.image("child:latest").id == hashlib.sha256(b"{}").hexdigest()
    assert store.big_data("child:latest", "config") == b"{}"


def test_metadata_files_are_json_with_containers_storage_names(
        store: Store, criolib_test_images: TestImages) -> None:
    import_image(store, criolib_test_images, "multilayer")
    layers = json.loads((store.graphroot / "layers.json").read_text())
    assert {"id", "diff-digest", "compressed-diff-digest", "diff-size", "created"} <= set(
        layers[1])
    assert "parent" not in layers[0] and layers[1]["parent"] == layers[0]["id"]
    images = json.loads((store.graphroot / "images.json").read_text())
    assert {"id", "layer", "names", "big-data-names", "big-data-digests"} <= set(images[0])
    # Keys another tool wrote are kept through a rewrite.
    layers[0]["uidset"] = [0, 1000]
    (store.graphroot / "layers.json").write_text(json.dumps(layers))
    with store.writing():
        store.layer_store.load()
        store.layer_store.save()
    assert json.loads((store.graphroot / "layers.json").read_text())[0]["uidset"] == [0, 1000]


def test_tar_helper_layers(store: Store) -> None:
    data, diff_id = tar_of({"a.txt": b"A"})
    layer = store.put_layer(io.BytesIO(data), names=["small"])
    assert layer.diff_id == diff_id and layer.compression == "none"
    assert layer.compressed_digest == diff_id  # uncompressed: one digest
    assert (store.layer_path("small") / "a.txt").read_bytes() == b"A"
