"""RuntimeClient.run() against the runtimes' own ``run``, for /bin/true in busybox.

For each installed runtime (runc, crun), interleaved, N times each (default 100,
``python bench/runtime_client.py N``):

criolib
    ``RuntimeClient.run()``: the runtime's own ``run`` (create, start, wait,
    delete in one runtime process) with a JSON --log file read on failure, the
    exit code taken from the runtime's status and its log.
cli run
    ``runc run`` / ``crun run`` as one subprocess (it creates, starts, waits and
    deletes inside one runtime process).
criolib steps
    ``RuntimeClient.run(keep=True)`` + ``delete``: create, start, wait (waitid on
    the init, re-parented to us as subreaper), delete: four runtime processes,
    the path a monitor takes.
cli seq
    create, start, wait on a pidfd, delete by hand with subprocess: the same
    four-step lifecycle without criolib, the floor for "criolib steps".

Prints median and mean in ms and the ratios criolib / cli run (the issue's
target: under 1.10), criolib steps / cli seq (criolib's own overhead on the
four-step path) and criolib steps / cli run (what the four steps cost against
the runtime's one-process run).
The bundle and the state directories live on a tmpfs mounted for the run
(MACHINE-NOTES.md: the root ext4 measures the disk). Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from criolib.runtime_spec import RuntimeClient
from criolib.testing import build_test_images, unpack_test_image

CACHE = Path.home() / ".cache" / "criolib" / "testbed"


@contextlib.contextmanager
def tmpfs() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-runtime-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


def make_bundle(base: Path) -> Path:
    bundle = base / "bundle"
    unpack_test_image(build_test_images(CACHE), "busybox", bundle / "rootfs")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _wait_pidfd(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            sel.select()
    finally:
        os.close(fd)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    if os.geteuid() != 0:
        sys.exit("bench/runtime_client.py needs root")
    runtimes = [r for r in ("runc", "crun") if shutil.which(r)]
    dev = subprocess.DEVNULL
    with tmpfs() as base:
        bundle = make_bundle(base)
        clients = {r: RuntimeClient(r, root=base / f"state-criolib-{r}") for r in runtimes}
        cli_roots = {r: base / f"state-cli-{r}" for r in runtimes}

        def criolib(r: str, cid: str) -> None:
            code = clients[r].run(cid, bundle)
            assert code == 0, code

        def criolib_steps(r: str, cid: str) -> None:
            # The create + start + wait + delete path a monitor takes (run(keep=True)).
            code = clients[r].run(cid, bundle, keep=True)
            assert code == 0, code
            clients[r].delete(cid)

        def cli_run(r: str, cid: str) -> None:
            proc = subprocess.Popen([r, f"--root={cli_roots[r]}", "run", f"--bundle={bundle}",
                                     cid], stdin=dev, stdout=dev, stderr=dev)
            assert proc.wait() == 0  # no timeout: blocks in waitpid, no sleep-polling

        def cli_seq(r: str, cid: str) -> None:
            root = f"--root={cli_roots[r]}"
            pid_file = base / f"{cid}.pid"
            subprocess.run([r, root, "create", f"--bundle={bundle}", f"--pid-file={pid_file}",
                            cid], stdin=dev, stdout=dev, stderr=dev, check=True)
            pid = int(pid_file.read_text())
            subprocess.run([r, root, "start", cid], check=True)
            _wait_pidfd(pid)
            subprocess.run([r, root, "delete", cid], check=True)
            pid_file.unlink()

        ways: dict[str, Callable[[str, str], None]] = {
            "criolib": criolib, "cli run": cli_run, "criolib steps": criolib_steps,
            "cli seq": cli_seq}
        times: dict[tuple[str, str], list[float]] = {(r, w): [] for r in runtimes for w in ways}
        serial = 0
        order = [(r, w) for r in runtimes for w in ways]
        shuffle = random.Random(42).shuffle
        for i in range(n + 3):  # the first 3 rounds warm caches and are not counted
            # A new order each round, so no way always follows the same other one: what
            # a runtime leaves behind (runc's teardown) slows the next create by ms.
            shuffle(order)
            for r, way in order:
                fn = ways[way]
                serial += 1
                t0 = time.perf_counter()
                fn(r, f"bench-{serial}")
                if i >= 3:
                    times[(r, way)].append((time.perf_counter() - t0) * 1000)
        for c in clients.values():
            c.close()
        # A container init reparented to us (cli seq has no subreaper) is reaped by init;
        # criolib's are reaped by run() itself.

    print(f"N={n} per runtime and way, /bin/true in busybox, bundle and state on tmpfs")
    print(f"{'runtime':8} {'way':14} {'median ms':>10} {'mean ms':>9}")
    for r in runtimes:
        for way in ways:
            ms = times[(r, way)]
            print(f"{r:8} {way:14} {statistics.median(ms):10.1f} {statistics.fmean(ms):9.1f}")
        med = {w: statistics.median(times[(r, w)]) for w in ways}
        print(f"{r:8} ratio   criolib/cli run {med['criolib'] / med['cli run']:.2f}   "
              f"criolib steps/cli seq {med['criolib steps'] / med['cli seq']:.2f}   "
              f"criolib steps/cli run {med['criolib steps'] / med['cli run']:.2f}   (medians)")


if __name__ == "__main__":
    main()
