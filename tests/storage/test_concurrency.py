"""Two processes on one store: a writer applies layers and makes and deletes images in a
loop while a reader lists, checks, mounts and reads big data in a loop. Also: readers
and writers go on while a layer extracts (no store lock held for it), two pulls of one
layer extract it once, and two processes pulling and deleting one image never take
layers from under each other (leases).

The reader must never see a half-written layer: every layer it lists has a complete
directory (the tar's last entry, a marker file, is there) and an id that matches its
diff_id; every image's big data matches its recorded digest; nothing it does fails
except finding something gone that it listed in an earlier, separate call.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from criolib.storage import check, layer_id_for
from criolib.testing import Entry, TestImages, write_layer
from tests.storage.conftest import DRIVERS, layer_blob, require_root_for
from tests.storage.test_store import REPO, make_store

DURATION = 2.5

_WRITER = textwrap.dedent("""
    import hashlib, io, json, os, sys, time
    from criolib.storage import Store, gc
    from criolib.testing import Entry, write_layer

    spec = json.loads(sys.argv[1])
    store = Store(spec["graphroot"], spec["runroot"], spec["driver"])
    deadline = time.monotonic() + spec["duration"]
    made, deleted, n = [], 0, 0
    base = None
    while time.monotonic() < deadline:
        n += 1
        token = os.urandom(8).hex()
        entries = [Entry.directory(f"files-{token}")]
        entries += [Entry(f"files-{token}/f{i}", data=os.urandom(64)) for i in range(150)]
        entries.append(Entry(f"complete-{token}", data=token.encode()))  # the last entry
        buf = io.BytesIO()
        blob = write_layer(entries, buf, "gzip" if n % 2 else "none")
        buf.seek(0)
        parent = base if n % 3 else None
        layer = store.put_layer(buf, parent, expected_diff_id=blob.diff_id,
                                names=[f"token-{token}"])
        if base is None:
            base = layer.id
        config = json.dumps({"diff_id": layer.diff_id, "token": token}).encode()
        image = store.create_image(hashlib.sha256(config).hexdigest(), layer.id,
                                   names=[f"img:{n}"],
                                   big_data={"config": config, "manifest": os.urandom(300)})
        made.append(image.id)
        if len(made) > 4:
            store.delete_image(made.pop(0))
            deleted += 1
        if n % 7 == 0:
            gc(store, min_age=0)
    print(json.dumps({"made": n, "deleted": deleted}), flush=True)
""")

_READER = textwrap.dedent("""
    import hashlib, json, os, sys, time
    from criolib.storage import LayerUnknown, ImageUnknown, Store, layer_id_for

    spec = json.loads(sys.argv[1])
    store = Store(spec["graphroot"], spec["runroot"], spec["driver"])
    deadline = time.monotonic() + spec["duration"] + 0.5
    seen_layers, states, mounts, gone, reads = set(), set(), 0, 0, 0
    while time.monotonic() < deadline:
        with store.reading():  # one consistent state for the whole look
            layers = store.layers()
            states.add(tuple(layer.id for layer in layers))
            for layer in layers:
                seen_layers.add(layer.id)
                assert layer.diff_id, layer
                assert layer.id == layer_id_for(layer.parent, layer.diff_id), layer
                token = [n for n in layer.names if n.startswith("token-")]
                if token:
                    marker = store.layer_path(layer.id) / f"complete-{token[0][6:]}"
                    assert marker.read_bytes() == token[0][6:].encode(), layer
            images = store.images()
            for image in images:
                config = store.big_data(image.id, "config")
                assert ("sha256:" + hashlib.sha256(config).hexdigest()
                        == image.big_data_digests["config"]), image
                assert json.loads(config)["diff_id"] == store.layer(image.layer).diff_id
                reads += 1
        if images:  # a separate call: the image may be gone by now, and that is fine
            image = images[len(states) % len(images)]
            try:
                root = store.mount(image.layer, options=["ro"])
            except (LayerUnknown, ImageUnknown):
                gone += 1
                continue
            try:
                token = json.loads(store.big_data(image.id, "config"))["token"]
            except ImageUnknown:
                token = None
                gone += 1
            if token is not None:
                assert (root / f"complete-{token}").read_bytes() == token.encode()
            mounts += 1
            store.unmount(image.layer)
    print(json.dumps({"states": len(states), "layers": len(seen_layers), "mounts": mounts,
                      "gone": gone, "reads": reads}), flush=True)
""")


@pytest.mark.parametrize("driver", DRIVERS)
def test_writer_and_reader(driver: str, graphroot: Path) -> None:
    require_root_for(driver)
    with make_store(graphroot, driver) as store:
        spec = json.dumps({"graphroot": str(store.graphroot), "runroot": str(store.runroot),
                           "driver": driver, "duration": DURATION})
        procs = [subprocess.Popen([sys.executable, "-c", code, spec], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for code in (_WRITER, _READER)]
        results = []
        for proc, who in zip(procs, ("writer", "reader"), strict=True):
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"{who} failed:\n{err}"
            results.append(json.loads(out))
        writer, reader = results
        print(driver, writer, reader)
        assert writer["made"] >= 5 and writer["deleted"] >= 1
        # The reader really watched the store change under it, and read while it did.
        assert reader["states"] >= 3 and reader["reads"] >= 5 and reader["mounts"] >= 3, reader
        report = check(store)
        assert report.clean, str(report)
        assert store.layer_store.mounts() == {}


# -- extraction holds no store lock ------------------------------------------------------


class SlowBlob(io.RawIOBase):
    """A layer blob handed out in 64 kB pieces, ``pause`` seconds apart; counts its reads."""

    def __init__(self, data: bytes, pause: float) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.pause = pause
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        time.sleep(self.pause)
        n = min(len(b), 65536, len(self._data) - self._pos)
        b[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        self.bytes_read += n
        return n


def _big_layer(files: int = 48, size: int = 65536) -> tuple[bytes, str]:
    entries = [Entry(f"big/f{i}", data=os.urandom(size)) for i in range(files)]
    buf = io.BytesIO()
    blob = write_layer(entries, buf, "none")
    return buf.getvalue(), blob.diff_id


@pytest.mark.parametrize("driver", DRIVERS)
def test_readers_do_not_wait_for_an_extraction(driver: str, graphroot: Path) -> None:
    require_root_for(driver)
    data, diff_id = _big_layer()
    slow = SlowBlob(data, pause=0.03)  # ~50 reads: about 1.5 s of extraction
    with make_store(graphroot, driver) as store:
        base = store.create_layer(names=["base"])
        done = threading.Event()
        errors: list[BaseException] = []

        def pull() -> None:
            try:
                store.put_layer(io.BufferedReader(slow), base.id, expected_diff_id=diff_id)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=pull)
        thread.start()
        while slow.bytes_read == 0:
            time.sleep(0.005)
        waits = []
        pulled = layer_id_for(base.id, diff_id)
        while not done.is_set() and slow.bytes_read < len(data) // 2:
            t0 = time.monotonic()
            assert pulled not in {lay.id for lay in store.layers()}  # not there yet
            store.create_layer(names=[f"during-{len(waits)}"])  # writers go on too
            waits.append(time.monotonic() - t0)
            time.sleep(0.02)
        thread.join(60)
        assert not errors, errors
        assert len(waits) >= 5, waits
        # Holding the store lock for the apply would make these wait for ~1.5 s.
        assert max(waits) < 0.5, waits
        assert store.layer(pulled).diff_id == diff_id
        assert check(store).clean


def test_two_pulls_of_one_layer_extract_it_once(graphroot: Path) -> None:
    require_root_for("vfs")
    data, diff_id = _big_layer(files=16)
    first, second = SlowBlob(data, pause=0.02), SlowBlob(data, pause=0.0)
    with make_store(graphroot, "vfs") as store:
        results: list[str] = []

        def pull(blob: SlowBlob) -> None:
            results.append(store.put_layer(io.BufferedReader(blob),
                                           expected_diff_id=diff_id).id)

        one = threading.Thread(target=pull, args=(first,))
        one.start()
        while first.bytes_read == 0:
            time.sleep(0.005)
        two = threading.Thread(target=pull, args=(second,))
        two.start()
        one.join(60)
        two.join(60)
        assert results == [diff_id.removeprefix("sha256:")] * 2
        assert first.bytes_read == len(data)
        assert second.bytes_read == 0  # it waited for the first, then found the layer
        assert check(store).clean


_PULL_AND_DELETE = textwrap.dedent("""
    import json, sys, time
    from criolib.storage import Store
    spec = json.loads(sys.argv[1])
    store = Store(spec["graphroot"], spec["runroot"], spec["driver"])
    big_data = {k: open(p, "rb").read() for k, p in spec["big_data"].items()}
    deadline, rounds, removed = time.monotonic() + spec["duration"], 0, 0
    while time.monotonic() < deadline:
        parent = None
        for path, diff_id, digest in spec["layers"]:
            with open(path, "rb") as f:
                parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                         expected_digest=digest).id
        image = store.create_image(spec["image_id"], parent, big_data=big_data)
        try:
            removed += len(store.delete_image(image.id))
        except KeyError:
            pass  # the other process deleted it first: fine
        rounds += 1
    print(json.dumps({"rounds": rounds, "removed": removed}), flush=True)
""")


@pytest.mark.parametrize("driver", DRIVERS)
def test_two_pulls_and_deletes_of_one_image(driver: str, graphroot: Path,
                                            criolib_test_images: TestImages) -> None:
    """Each process pulls the image and deletes it; neither may lose layers it just pulled."""
    require_root_for(driver)
    images = criolib_test_images
    ml = images["multilayer"]
    assert ml.config_digest is not None
    with make_store(graphroot, driver) as store:
        spec = json.dumps({
            "graphroot": str(store.graphroot), "runroot": str(store.runroot),
            "driver": driver, "duration": 2.0,
            "image_id": ml.config_digest.removeprefix("sha256:"),
            "layers": [[str(layer_blob(images, d.digest)), diff_id, d.digest]
                       for d, diff_id in zip(ml.layers, ml.diff_ids, strict=True)],
            "big_data": {"config": str(layer_blob(images, ml.config_digest))},
        })
        procs = [subprocess.Popen([sys.executable, "-c", _PULL_AND_DELETE, spec], cwd=REPO,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"a writer failed:\n{err}"
            results.append(json.loads(out))
        print(driver, results)
        assert all(r["rounds"] >= 3 for r in results), results
        assert sum(r["removed"] for r in results) >= 3, results  # deletes did delete
        assert store.images() == []
        report = check(store)
        assert report.clean, str(report)
