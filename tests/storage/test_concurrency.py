"""Two processes on one store: a writer applies layers and makes and deletes images in a
loop while a reader lists, checks, mounts and reads big data in a loop.

The reader must never see a half-written layer: every layer it lists has a complete
directory (the tar's last entry, a marker file, is there) and an id that matches its
diff_id; every image's big data matches its recorded digest; nothing it does fails
except finding something gone that it listed in an earlier, separate call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from criolib.storage import check
from tests.storage.conftest import DRIVERS, require_root_for
from tests.storage.test_store import REPO, make_store

DURATION = 2.5

_WRITER = textwrap.dedent("""
    import io, json, os, sys, time
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
        image = store.create_image(os.urandom(32).hex(), layer.id, names=[f"img:{n}"],
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
