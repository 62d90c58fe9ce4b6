"""Crash safety: a writer dies at every named point, and at random ones; the store stays usable.

Deterministic: a child process runs one pull-run-delete cycle (import the
multilayer image layer by layer, record it with its big data, make a container,
mount it, write, unmount, mount again, delete the container, delete the image)
with ``CRIOLIB_STORAGE_CRASH_AT=<point>[:<n>]``, which ends it with
``os._exit(137)`` at that point (every point of :data:`CRASH_POINTS`, on both
drivers). Then: :func:`check` is clean or :func:`repair` makes it so, what is
mounted under the driver's home is exactly what ``mounts.json`` counts, and a
fresh import, container and mount give the right tree.

Random: the child loops over the same kind of work and is SIGKILLed after a
random delay (0-300 ms); the same checks follow. The seed is random per run and
printed on failure; ``CRIOLIB_CRASH_SEED`` repeats one.
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

from criolib.storage import CRASH_POINTS, ENV_CRASH_AT, StorageError, Store, check, repair
from criolib.storage._mounts import live_mounts
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, layer_blob, require_root_for
from tests.storage.test_store import REPO, assert_multilayer_rootfs, import_image, make_store

KILLS_PER_DRIVER = 12
MAX_DELAY = 0.3

_CYCLE = textwrap.dedent("""
    import json, os, sys
    from criolib.storage import Store

    spec = json.loads(sys.argv[1])
    store = Store(spec["graphroot"], spec["runroot"], spec["driver"])
    big_data = {k: open(p, "rb").read() for k, p in spec["big_data"].items()}

    def cycle(n):
        parent = None
        for path, diff_id, digest in spec["layers"]:
            with open(path, "rb") as f:
                parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                         expected_digest=digest).id
        image = store.create_image(spec["image_id"], parent, names=[spec["name"]],
                                   digest=spec["digest"], big_data=big_data)
        container = store.create_container(image.id, names=["crash-%d" % n])
        root = store.mount(container.id)
        with open(os.path.join(root, "data", "committed.txt"), "w") as f:
            f.write("commit %d" % n)
        store.unmount(container.id)
        store.mount(container.id)
        return image, container
""")

_ONCE = _CYCLE + textwrap.dedent("""
    image, container = cycle(1)
    store.delete_container(container.id)
    store.delete_image(image.id)
    print("survived", flush=True)
""")

_LOOP = _CYCLE + textwrap.dedent("""
    import hashlib
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        for c in store.containers():
            store.delete_container(c.id)
        for image in store.images():
            store.delete_image(image.id, force=True)
        image, container = cycle(n)
        store.unmount(container.id)
        with store.diff(container.id) as diff:
            layer = store.put_layer(diff, image.layer)
        config = json.dumps({"commit": n}).encode()
        store.create_image(hashlib.sha256(config).hexdigest(), layer.id,
                           names=["committed:latest"],
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
                     "config": str(layer_blob(images, ml.config_digest))},
    })


def assert_mounts_are_counted(store: Store) -> None:
    """What is mounted under the driver's home is exactly what mounts.json counts."""
    live = live_mounts(store.driver)
    counted = store.layer_store.mounts()
    if store.driver.name == "vfs":
        assert live == {}, live  # vfs never mounts
        assert all(store.layer_store.mount_is_live(i) for i in counted), counted
    else:
        assert set(live) == set(counted), f"live {live}, counted {counted}"


def _recover_and_use(store: Store, images: TestImages, where: str) -> set[str]:
    """check → repair → check clean, mounts counted, then a fresh import works; the kinds."""
    report = check(store)
    kinds = report.kinds()
    if not report.clean:
        repair(store)
        after = check(store)
        assert after.clean, f"{where}: after repair: {after}\nbefore: {report}"
    assert_mounts_are_counted(store)
    image = import_image(store, images, "multilayer")
    container = store.create_container(image.id)
    try:
        assert_multilayer_rootfs(store.mount(container.id))
        assert_mounts_are_counted(store)
    finally:
        store.unmount(container.id)
        store.delete_container(container.id)
    assert check(store).clean, where
    assert_mounts_are_counted(store)
    return kinds


_POINTS = [*CRASH_POINTS, "after-layer-rename:3", "after-layer-record:2",
           "after-record-drop-before-dir-delete:2", "in-layer-extract:3"]


@pytest.mark.parametrize("point", _POINTS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_crash_at_each_point(driver: str, point: str, graphroot: Path,
                             criolib_test_images: TestImages) -> None:
    require_root_for(driver)
    images = criolib_test_images
    with make_store(graphroot, driver) as store:
        env = {**os.environ, ENV_CRASH_AT: point}
        child = subprocess.run([sys.executable, "-c", _ONCE, _spec(store, images)],
                               capture_output=True, text=True, cwd=REPO, env=env,
                               timeout=120, check=False)
        assert child.returncode == 137, (
            f"the writer did not stop at {point}: exit {child.returncode}\n{child.stdout}"
            f"{child.stderr}")
        _recover_and_use(store, images, f"{driver}, crashed at {point}")
        with contextlib.suppress(StorageError):
            store.shutdown(force=True)


@pytest.mark.parametrize("point", ["after-container-layer", "after-container-dir"])
def test_a_container_id_can_be_used_again_after_a_crash(point: str, graphroot: Path,
                                                        criolib_test_images: TestImages
                                                        ) -> None:
    require_root_for("vfs")
    images = criolib_test_images
    code = textwrap.dedent("""
        import sys
        from criolib.storage import Store
        store = Store(sys.argv[1], sys.argv[2], "vfs")
        store.create_container(sys.argv[3], id="c" * 64, names=["again"])
    """)
    with make_store(graphroot, "vfs") as store:
        image = import_image(store, images, "multilayer")
        child = subprocess.run(
            [sys.executable, "-c", code, str(store.graphroot), str(store.runroot), image.id],
            env={**os.environ, ENV_CRASH_AT: point}, cwd=REPO, timeout=60, check=False)
        assert child.returncode == 137
        assert "container-layer-orphan" in check(store).kinds()
        # No repair first: the same id and name are free again.
        container = store.create_container(image.id, id="c" * 64, names=["again"])
        assert store.container("again").id == container.id
        assert check(store).clean


def _kill_child_after(spec: str, delay: float) -> str:
    """Run the writer, SIGKILL it ``delay`` seconds after it is ready; its stderr if it died."""
    child = subprocess.Popen([sys.executable, "-c", _LOOP, spec], stdout=subprocess.PIPE,
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
    with make_store(graphroot, driver) as store:
        spec = _spec(store, images)
        for kill in range(KILLS_PER_DRIVER):
            delay = rng.uniform(0, MAX_DELAY)
            where = f"seed {seed}, kill {kill} after {delay * 1000:.0f} ms"
            died = _kill_child_after(spec, delay)
            assert not died, f"{where}: the writer failed by itself: {died}"
            found.update(_recover_and_use(store, images, where))
        with contextlib.suppress(StorageError):
            store.shutdown(force=True)
    # Not an assertion (the kills are random), but what the run exercised.
    print(f"{driver}: seed {seed}: {dict(found)}")
