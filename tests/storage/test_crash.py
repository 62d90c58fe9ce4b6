"""Crash safety: SIGKILL a writer at random points; the store stays usable.

A child process loops over the work that writes: wipe the store, import the
multilayer image layer by layer, make a container, mount it, write, commit its
diff as a new image with big data, add more big data. The parent kills it after
a random delay (0-300 ms; one loop takes tens of milliseconds, so the kills land
all over it), then checks: :func:`check` is clean or :func:`repair` makes it
clean, and a fresh import succeeds and mounts with the right content.

The seed is random per run and printed on failure; ``CRIOLIB_CRASH_SEED`` repeats one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from criolib.storage import StorageError, Store, check, repair
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, layer_blob, require_root_for
from tests.storage.test_store import REPO, assert_multilayer_rootfs, import_image, make_store

KILLS_PER_DRIVER = 15
MAX_DELAY = 0.3

_CHILD = textwrap.dedent("""
    import io, json, os, sys
    from criolib.storage import Store, gc

    spec = json.loads(sys.argv[1])
    store = Store(spec["graphroot"], spec["runroot"], spec["driver"])
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        for c in store.containers():
            store.delete_container(c.id)
        for image in store.images():
            store.delete_image(image.id, force=True)
        gc(store, min_age=0)
        parent = None
        for path, diff_id, digest in spec["layers"]:
            with open(path, "rb") as f:
                parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                         expected_digest=digest).id
        image = store.create_image(spec["image_id"], parent, names=[spec["name"]],
                                   digest=spec["digest"], big_data=spec_big_data
                                   if (spec_big_data := {k: open(p, "rb").read()
                                       for k, p in spec["big_data"].items()}) else None)
        container = store.create_container(image.id, names=["crash-%d" % n])
        root = store.mount(container.id)
        with open(os.path.join(root, "data", "committed.txt"), "w") as f:
            f.write("commit %d" % n)
        store.unmount(container.id)
        with store.diff(container.id) as diff:
            layer = store.put_layer(diff, image.layer)
        config = json.dumps({"commit": n}).encode()
        store.create_image(os.urandom(32).hex(), layer.id, names=["committed:latest"],
                           big_data={"manifest": b"{}" * 100, "config": config})
        store.set_big_data("committed:latest", "signatures", os.urandom(64))
        store.set_big_data("committed:latest", "manifest", b"[]" * 50)
""")


def _spec(store: Store, images: TestImages) -> str:
    ml = images["multilayer"]
    assert ml.config_digest is not None
    return json.dumps({
        "graphroot": str(store.graphroot), "runroot": str(store.runroot),
        "driver": store.driver.name, "image_id": ml.config_digest.removeprefix("sha256:"),
        "name": "localhost/crash:latest", "digest": ml.digest,
        "layers": [[str(layer_blob(images, d.digest)), diff_id, d.digest]
                   for d, diff_id in zip(ml.layers, ml.diff_ids, strict=True)],
        "big_data": {"manifest": str(layer_blob(images, ml.digest)),
                     ml.config_digest: str(layer_blob(images, ml.config_digest))},
    })


def _kill_child_after(spec: str, delay: float) -> str:
    """Run the writer, SIGKILL it ``delay`` seconds after it is ready; its stderr if it died."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, spec], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None and child.stderr is not None
    try:
        ready = child.stdout.readline().strip()
        assert ready == "ready", child.stderr.read()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        code = child.wait(30)
        err = child.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()
    # The writer only ever stops by our SIGKILL; any other end is a bug it hit.
    return "" if code == -signal.SIGKILL else f"exit {code}: {err}"


@pytest.mark.parametrize("driver", DRIVERS)
def test_sigkill_at_random_points(driver: str, graphroot: Path,
                                  criolib_test_images: TestImages) -> None:
    require_root_for(driver)
    seed = int(os.environ.get("CRIOLIB_CRASH_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    images = criolib_test_images
    found: Counter[str] = Counter()
    repairs = 0
    with make_store(graphroot, driver) as store:
        spec = _spec(store, images)
        for kill in range(KILLS_PER_DRIVER):
            delay = rng.uniform(0, MAX_DELAY)
            where = f"seed {seed}, kill {kill} after {delay * 1000:.0f} ms"
            died = _kill_child_after(spec, delay)
            assert not died, f"{where}: the writer failed by itself: {died}"
            report = check(store)
            if not report.clean:
                found.update(report.kinds())
                repairs += 1
                repair(store)
                after = check(store)
                assert after.clean, f"{where}: after repair: {after}\nbefore: {report}"
            image = import_image(store, images, "multilayer")
            container = store.create_container(image.id)
            try:
                assert_multilayer_rootfs(store.mount(container.id))
            finally:
                store.unmount(container.id)
                store.delete_container(container.id)
            assert check(store).clean, where
        with contextlib.suppress(StorageError):
            store.shutdown(force=True)
    # Not an assertion (the kills are random), but what the run exercised.
    print(f"{driver}: seed {seed}, {repairs} of {KILLS_PER_DRIVER} kills needed repair: "
          f"{dict(found)}")
