"""apply_layer against umoci, unpacking the test bed's large image onto a tmpfs.

The large image (busybox plus 300 MiB in 20,000 files over four gzip layers,
``build_test_images(~/.cache/criolib/testbed, large=True)``, built on first use)
is unpacked into one root filesystem, N times each, interleaved (default 3,
``python bench/storage_unpack.py N``):

criolib
    :func:`criolib.storage.apply_layer` for each layer in order (``remove``
    whiteouts, the vfs way: one directory), checking every blob's digest and
    diff_id, as root (owners, modes, xattrs restored).
umoci
    ``umoci unpack --image LAYOUT:large BUNDLE``: the same layers, digests
    checked, into BUNDLE/rootfs, plus its config.json and mtree manifest.
umoci raw
    ``umoci raw unpack``: the rootfs alone, without the config and the mtree
    manifest (the closer peer of apply_layer).

Prints the median seconds of each and the ratios criolib / umoci and criolib /
umoci raw (the issue's target: at most 1.0). Everything lives on a tmpfs mounted
for the run (MACHINE-NOTES.md: the root ext4 measures the disk). Needs root.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from criolib.storage import apply_layer
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


def umoci_unpack(images: TestImages, dest: Path) -> None:
    subprocess.run(["umoci", "unpack", "--image", f"{images.layout}:large", str(dest)],
                   check=True, capture_output=True)


def umoci_raw_unpack(images: TestImages, dest: Path) -> None:
    subprocess.run(["umoci", "raw", "unpack", "--image", f"{images.layout}:large", str(dest)],
                   check=True, capture_output=True)


def timed(fn: Callable[[TestImages, Path], None], images: TestImages, where: Path) -> float:
    dest = where / "out"
    start = time.perf_counter()
    fn(images, dest)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if shutil.which("umoci") is None:
        sys.exit("umoci is not installed (Debian package umoci)")
    images = build_test_images(CACHE, large=True, large_size=300 << 20, large_files=20000)
    peers = {"criolib": criolib_unpack, "umoci": umoci_unpack, "umoci raw": umoci_raw_unpack}
    times: dict[str, list[float]] = {name: [] for name in peers}
    with tmpfs() as where:
        for _ in range(runs):
            for name, fn in peers.items():
                times[name].append(timed(fn, images, where))
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, value in median.items():
        print(f"{name:10s} {value:7.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"ratio criolib/umoci     {median['criolib'] / median['umoci']:.2f}")
    print(f"ratio criolib/umoci raw {median['criolib'] / median['umoci raw']:.2f}")


if __name__ == "__main__":
    main()
