"""apply_layer against umoci, unpacking the test bed's large image onto a tmpfs.

The large image (busybox plus 300 MiB in 20,000 files over four gzip layers,
``build_test_images(~/.cache/criolib/testbed, large=True)``, built on first use)
is unpacked into one root filesystem, N times each, interleaved (default 3,
``python bench/storage_unpack.py N``):

criolib apply_layer
    :func:`criolib.storage.apply_layer` for each layer in order (``remove``
    whiteouts, the vfs way: one directory), checking every blob's digest and
    diff_id, as root (owners, modes, xattrs restored).
Store.put_layer overlay / vfs
    a fresh :class:`criolib.storage.Store` taking the four layers with
    ``put_layer(blob, parent, expected_diff_id=, expected_digest=)``: staging,
    the store lock, the layer synced (syncfs) before it appears, records written
    atomically. vfs copies each parent layer (``cp -a``) before applying, so four
    layers write the base three more times.
umoci
    ``umoci unpack --image LAYOUT:large BUNDLE``: the same layers, digests
    checked, into BUNDLE/rootfs, plus its config.json and mtree manifest.
umoci raw
    ``umoci raw unpack``: the rootfs alone, without the config and the mtree
    manifest (the closer peer of apply_layer).

Prints the median seconds of each and the ratios of each criolib row to umoci and
umoci raw (the issue's target: at most 1.0). Everything lives on a tmpfs mounted
for the run (MACHINE-NOTES.md: the root ext4 measures the disk). Needs root.

``--durability [DIR]`` instead measures what syncing a layer before it appears
costs: ``OverlayDriver.apply_diff`` of the four layers with ``durable=True`` and
``False``, on the tmpfs and on disk in DIR (default /var/tmp, the root ext4), each
run after an untimed ``sync`` so no run pays for another's dirty pages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from criolib.storage import Store, apply_layer
from criolib.storage._drivers import get_driver
from criolib.testing import TestImages, build_test_images

CACHE = Path.home() / ".cache" / "criolib" / "testbed"


@contextlib.contextmanager
def tmpfs() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-unpack-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


def criolib_unpack(images: TestImages, dest: Path) -> None:
    image = images["large"]
    blobs = images.layout / "blobs" / "sha256"
    dest.mkdir()
    for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
        with open(blobs / desc.digest.partition(":")[2], "rb", buffering=0) as f:
            apply_layer(f, dest, whiteouts="remove", expected_diff_id=diff_id,
                        expected_digest=desc.digest)


def _blobs(images: TestImages) -> list[tuple[Path, str, str]]:
    image = images["large"]
    blobs = images.layout / "blobs" / "sha256"
    return [(blobs / desc.digest.partition(":")[2], desc.digest, diff_id)
            for desc, diff_id in zip(image.layers, image.diff_ids, strict=True)]


def store_put(driver: str) -> Callable[[TestImages, Path], None]:
    def put(images: TestImages, dest: Path) -> None:
        with Store(dest / "graph", dest / "run", driver=driver) as store:
            parent = None
            for path, digest, diff_id in _blobs(images):
                with open(path, "rb", buffering=0) as f:
                    parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                             expected_digest=digest).id
    return put


def driver_apply(durable: bool) -> Callable[[TestImages, Path], None]:
    def apply(images: TestImages, dest: Path) -> None:
        driver = get_driver("overlay", dest / "overlay")
        parent = None
        for i, (path, digest, diff_id) in enumerate(_blobs(images)):
            with open(path, "rb", buffering=0) as f:
                driver.apply_diff(f"layer{i}", parent, f, expected_diff_id=diff_id,
                                  expected_digest=digest, durable=durable)
            parent = f"layer{i}"
    return apply


def umoci_unpack(images: TestImages, dest: Path) -> None:
    subprocess.run(["umoci", "unpack", "--image", f"{images.layout}:large", str(dest)],
                   check=True, capture_output=True)


def umoci_raw_unpack(images: TestImages, dest: Path) -> None:
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{images.layout}:large", str(dest)],
                   check=True, capture_output=True)


def timed(fn: Callable[[TestImages, Path], None], images: TestImages, where: Path, *,
          settle: bool = False) -> float:
    dest = where / "out"
    if settle:
        # Untimed: write back what earlier runs left dirty, so a run that does not
        # sync its own data is not charged for another's (or hides its own cost).
        os.sync()
    start = time.perf_counter()
    fn(images, dest)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def run(peers: dict[str, Callable[[TestImages, Path], None]], images: TestImages,
        where: Path, runs: int, *, settle: bool = False) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(runs):
        for name, fn in peers.items():
            times[name].append(timed(fn, images, where, settle=settle))
    return times


def report(times: dict[str, list[float]]) -> dict[str, float]:
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, value in median.items():
        print(f"{name:24s} {value:7.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    return median


def main() -> None:
    args = sys.argv[1:]
    durability = "--durability" in args
    if durability:
        at = args.index("--durability")
        disk = Path(args[at + 1]) if len(args) > at + 1 else Path("/var/tmp")
        args = args[:at]
    runs = int(args[0]) if args else 3
    images = build_test_images(CACHE, large=True, large_size=300 << 20, large_files=20000)
    if durability:
        peers = {"apply_diff durable": driver_apply(True),
                 "apply_diff not durable": driver_apply(False)}
        with tmpfs() as where:
            print("overlay apply_diff of the large image, tmpfs:")
            on_tmpfs = report(run(peers, images, where, runs, settle=True))
        disk_dir = Path(tempfile.mkdtemp(prefix="criolib-bench-durable-", dir=disk))
        try:
            print(f"the same on disk ({disk}):")
            on_disk = report(run(peers, images, disk_dir, runs, settle=True))
        finally:
            shutil.rmtree(disk_dir)
        for label, m in (("tmpfs", on_tmpfs), ("disk", on_disk)):
            extra = m["apply_diff durable"] - m["apply_diff not durable"]
            print(f"durable costs {extra:+.3f} s on {label} "
                  f"({m['apply_diff durable'] / m['apply_diff not durable']:.2f}x)")
        return
    if shutil.which("umoci") is None:
        sys.exit("umoci is not installed (Debian package umoci)")
    peers = {"criolib apply_layer": criolib_unpack,
             "Store.put_layer overlay": store_put("overlay"),
             "Store.put_layer vfs": store_put("vfs"),
             "umoci unpack": umoci_unpack, "umoci raw unpack": umoci_raw_unpack}
    with tmpfs() as where:
        median = report(run(peers, images, where, runs))
    for name in ("criolib apply_layer", "Store.put_layer overlay", "Store.put_layer vfs"):
        print(f"ratio {name:24s} / umoci {median[name] / median['umoci unpack']:5.2f}"
              f"   / umoci raw {median[name] / median['umoci raw unpack']:5.2f}")


if __name__ == "__main__":
    main()
