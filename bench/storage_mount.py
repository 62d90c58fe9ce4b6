"""A container's root filesystem on overlay for a 10-layer image: create + mount.

For N rounds (default 50, ``python bench/storage_mount.py N``), interleaved:

criolib driver
    ``OverlayDriver.create(ctr, top)`` + ``mount(ctr)``: the container's writable
    layer on the image's 10 layers, mounted (lowerdir of ``l/`` links, one
    mount(2) from a thread with its own cwd). Unmount and remove are not timed.
criolib driver mount
    ``mount`` alone, on an existing container layer.
criolib Store
    ``Store.create_container(image)`` + ``Store.mount(ctr)``: what a user of the
    library pays, with the store lock taken twice, the layer and container records
    written atomically (fsync, rename, fsync dir), the layer synced before it
    appears, the userdata directory and the mount count in ``mounts.json``.
    ``Store.mount`` alone is reported too. Unmount and delete are not timed.
mount(8)
    the same overlay mount by running ``mount -t overlay`` with cwd=home: what the
    exec-based alternative to criolib's in-process mount(2) costs.
podman
    ``podman create`` + ``podman mount`` of the same image (loaded once from a
    docker-archive into podman's own overlay storage), each its own process as a
    user would run them; ``podman mount`` alone is reported too.

Everything lives on a tmpfs mounted for the run (MACHINE-NOTES.md: the root ext4
measures the disk). Needs root. Prints medians in ms and criolib/podman ratios.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from criolib.storage import Store
from criolib.storage._drivers import OverlayDriver, get_driver
from criolib.testing import Entry, write_layer
from criolib.testing._layout import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    OCILayoutWriter,
    write_docker_archive,
)
from criolib.testing._tar import LayerBlob

LAYERS = 10
FILES_PER_LAYER = 20
IMAGE = "localhost/criolib-bench/ten-layers:latest"


@contextlib.contextmanager
def tmpfs() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-storage-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-R", "-l", str(where)], check=False)
        where.rmdir()


def layer_entries(i: int) -> list[Entry]:
    entries = [Entry.directory(f"layer{i}")]
    entries += [Entry(f"layer{i}/file{j}", data=f"layer {i} file {j}\n".encode())
                for j in range(FILES_PER_LAYER)]
    if i == 0:
        entries += [Entry.directory("bin"), Entry.directory("etc"),
                    Entry("etc/hostname", data=b"bench\n")]
    return entries


def build_image(base: Path) -> tuple[list[tuple[bytes, str]], Path, str]:
    """The 10 layer tarballs (with diff_ids), the image as a docker-archive, its config hex."""
    layout = OCILayoutWriter(base / "oci")
    tars: list[tuple[bytes, str]] = []
    layers: list[tuple[Descriptor, LayerBlob]] = []
    for i in range(LAYERS):
        buf = io.BytesIO()
        blob = write_layer(layer_entries(i), buf, "none")
        tars.append((buf.getvalue(), blob.diff_id))
        layers.append(layout.add_layer(layer_entries(i), "none"))
    config = layout.add_json({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for _, b in layers]},
    }, MEDIA_TYPE_CONFIG)
    manifest = layout.add_json({
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST, "config": config.to_json(),
        "layers": [d.to_json() for d, _ in layers]}, MEDIA_TYPE_MANIFEST)
    archive = base / "ten-layers.tar"
    write_docker_archive(layout, manifest, diff_ids=[b.diff_id for _, b in layers],
                         uncompressed_sizes=[b.uncompressed_size for _, b in layers],
                         repo_tag=IMAGE, dest=archive)
    return tars, archive, config.digest.partition(":")[2]


class Podman:
    """podman with its own storage on the tmpfs, so the host's is never touched."""

    def __init__(self, base: Path) -> None:
        self.argv = ["podman", "--root", str(base / "podman-root"), "--runroot",
                     str(base / "podman-run"), "--storage-driver", "overlay",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "none",
                     "--log-level", "error"]

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([*self.argv, *args], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.strip()[-500:]}")
        return proc.stdout.strip()


def bench_podman(base: Path, archive: Path, n: int) -> tuple[list[float], list[float]] | str:
    if shutil.which("podman") is None:
        return "podman is not installed"
    podman = Podman(base)
    try:
        podman("load", "-q", "-i", str(archive))
    except RuntimeError as exc:
        return str(exc)
    both, mount_only = [], []
    for i in range(n + 3):
        name = f"bench{i}"
        t0 = time.perf_counter()
        podman("create", "--name", name, "--network", "none", IMAGE)
        t1 = time.perf_counter()
        podman("mount", name)
        t2 = time.perf_counter()
        podman("umount", name)
        podman("rm", name)
        if i >= 3:
            both.append((t2 - t0) * 1000)
            mount_only.append((t2 - t1) * 1000)
    with contextlib.suppress(RuntimeError):
        podman("system", "reset", "--force")
    return both, mount_only


def bench_criolib(base: Path, tars: list[tuple[bytes, str]], n: int) -> tuple[list[float],
                                                                               list[float]]:
    driver = get_driver("overlay", base / "criolib" / "overlay")
    assert isinstance(driver, OverlayDriver)
    parent = None
    for i, (tar, diff_id) in enumerate(tars):
        driver.apply_diff(f"image{i}", parent, io.BytesIO(tar), expected_diff_id=diff_id)
        parent = f"image{i}"
    both, mount_only = [], []
    for i in range(n + 3):
        ctr = f"ctr{i}"
        t0 = time.perf_counter()
        driver.create(ctr, parent)
        root = driver.mount(ctr)
        t1 = time.perf_counter()
        assert (root / "layer9" / "file0").exists()
        driver.unmount(ctr)
        t2 = time.perf_counter()
        driver.mount(ctr)
        t3 = time.perf_counter()
        driver.remove(ctr)
        if i >= 3:
            both.append((t1 - t0) * 1000)
            mount_only.append((t3 - t2) * 1000)
    return both, mount_only


def bench_store(base: Path, tars: list[tuple[bytes, str]], config_hex: str,
                n: int) -> tuple[list[float], list[float]]:
    """Store.create_container + Store.mount, and Store.mount alone, in ms."""
    with Store(base / "store" / "graph", base / "store" / "run", driver="overlay") as store:
        parent = None
        for tar, diff_id in tars:
            parent = store.put_layer(io.BytesIO(tar), parent, expected_diff_id=diff_id).id
        store.create_image(config_hex, parent, names=[IMAGE])
        both, mount_only = [], []
        for i in range(n + 3):
            t0 = time.perf_counter()
            ctr = store.create_container(IMAGE)
            root = store.mount(ctr.id)
            t1 = time.perf_counter()
            assert (root / "layer9" / "file0").exists()
            store.unmount(ctr.id)
            t2 = time.perf_counter()
            store.mount(ctr.id)
            t3 = time.perf_counter()
            store.unmount(ctr.id)
            store.delete_container(ctr.id)
            if i >= 3:
                both.append((t1 - t0) * 1000)
                mount_only.append((t3 - t2) * 1000)
    return both, mount_only


def bench_mount8(base: Path, n: int) -> list[float]:
    """The same overlay mount through mount(8) with cwd=home: the exec-based way's cost."""
    driver = get_driver("overlay", base / "criolib" / "overlay")
    driver.create("ctr-mount8", "image9")
    home = driver.home
    data = (f"lowerdir={(home / 'ctr-mount8' / 'lower').read_text()},"
            "upperdir=ctr-mount8/diff,workdir=ctr-mount8/work")
    times = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, "ctr-mount8/merged"],
                       cwd=home, check=True)
        t1 = time.perf_counter()
        subprocess.run(["umount", "ctr-mount8/merged"], cwd=home, check=True)
        if i >= 3:
            times.append((t1 - t0) * 1000)
    driver.remove("ctr-mount8")
    return times


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    if os.geteuid() != 0:
        sys.exit("bench/storage_mount.py needs root")
    with tmpfs() as base:
        tars, archive, config_hex = build_image(base)
        ours, ours_mount = bench_criolib(base, tars, n)
        store, store_mount = bench_store(base, tars, config_hex, n)
        mount8 = bench_mount8(base, n)
        peer = bench_podman(base, archive, n)
    med = statistics.median
    print(f"N={n}, a {LAYERS}-layer image ({FILES_PER_LAYER} files a layer), stores on tmpfs, "
          f"medians in ms")
    print(f"{'':26s}{'create + mount':>16s}{'mount alone':>14s}")
    rows = [("criolib driver", med(ours), med(ours_mount)),
            ("criolib Store", med(store), med(store_mount))]
    if not isinstance(peer, str):
        rows.append(("podman create / mount", med(peer[0]), med(peer[1])))
    for name, both, alone in rows:
        print(f"{name:26s}{both:16.2f}{alone:14.2f}")
    print(f"{'mount(8), the same mount':26s}{'':16s}{med(mount8):14.2f}"
          "   (exec'ing the binary instead of mount(2) from a thread)")
    if isinstance(peer, str):
        print(f"podman: n/a ({peer})")
        return
    theirs, theirs_mount = peer
    for name, both, alone in rows[:2]:
        print(f"ratio {name}/podman  {both / med(theirs):10.3f}{alone / med(theirs_mount):14.3f}")


if __name__ == "__main__":
    main()
