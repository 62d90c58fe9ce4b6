"""criolib's container monitor against the conmon binary: memory, log throughput, exec.

``python bench/conmon_monitor.py [--runtime crun|runc] [--exec-runs N] [--log-mb M]``
(root). Everything (bundle, runtime state, run dirs, logs) lives on a tmpfs mounted
for the run (MACHINE-NOTES.md: the root ext4 measures the disk). Three figures, each
for criolib's monitor and conmon side by side in this one run, with their ratio:

memory
    RSS and PSS (``/proc/<pid>/smaps_rollup``) of the monitor processes for a pod of
    1 container and a pod of 10 sleeping containers: criolib's monitor is one process
    per pod (``group``), conmon one process per container (summed). The issue's
    target: criolib's pod of 10 well under 15 MB.
log throughput
    A container writes ``--log-mb`` MB of 100-byte lines to stdout as fast as it can,
    in 1 MiB writes (``dd``) and in small ones (``yes | head -c``); MB/s of CRI log from
    ``start`` to the exit being recorded (the create, which starts a monitor, is not
    timed). Target: at least conmon's.
exec sync latency
    ``exec_sync(["true"])`` in a running container, interleaved, median and p90.
    Target: within 20% of conmon.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from criolib.conmon import ConmonMonitor, ContainerConfig, CriolibMonitor, Monitor
from criolib.runtime_spec import Generator, RuntimeClient
from criolib.testing import build_test_images, unpack_test_image

CACHE = Path.home() / ".cache" / "criolib" / "testbed"
LINE = b"0123456789" * 9 + b"abcdefghi\n"  # 100 bytes


@contextlib.contextmanager
def tmpfs() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-conmon-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def make_bundle(base: Path, name: str, script: str, rootfs: Path) -> Path:
    bundle = base / "bundles" / name
    bundle.mkdir(parents=True)
    gen = Generator().set_root(str(rootfs), readonly=True).set_args(["/bin/sh", "-c", script])
    gen.save(bundle)
    return bundle


def smaps(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in kB."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


class Bench:
    def __init__(self, base: Path, runtime: RuntimeClient, rootfs: Path) -> None:
        self.base = base
        self.runtime = runtime
        self.rootfs = rootfs
        self.serial = 0
        self.made: list[tuple[Monitor, str]] = []

    def start(self, monitor: Monitor, script: str, *, group: str | None = None,
              log: bool = True) -> tuple[str, int]:
        cid, monitor_pid = self.create(monitor, script, group=group, log=log)
        self.runtime.start(cid)
        return cid, monitor_pid

    def create(self, monitor: Monitor, script: str, *, group: str | None = None,
               log: bool = True) -> tuple[str, int]:
        self.serial += 1
        cid = f"bench-{monitor.name}-{self.serial}"
        bundle = make_bundle(self.base, cid, script, self.rootfs)
        exits = self.base / "exits"
        exits.mkdir(exist_ok=True)
        created = monitor.create(ContainerConfig(
            container_id=cid, bundle=bundle, runtime=self.runtime, exit_dir=exits,
            log_path=self.base / "logs" / f"{cid}.log" if log else None, group=group))
        self.made.append((monitor, cid))
        return cid, created.monitor_pid

    def cleanup(self) -> None:
        for monitor, cid in self.made:
            with contextlib.suppress(Exception):
                self.runtime.delete(cid, force=True)
            with contextlib.suppress(Exception):
                monitor.wait(cid, timeout=10)
            with contextlib.suppress(Exception):
                monitor.forget(cid)
        self.made.clear()


def memory(bench: Bench, criolib: CriolibMonitor, conmon: ConmonMonitor) -> None:
    print("memory (kB): pod of N sleeping containers")
    print(f"{'N':>4} {'criolib RSS':>12} {'PSS':>8} {'conmon RSS':>12} {'PSS':>8} "
          f"{'RSS ratio':>10} {'PSS ratio':>10}")
    for n in (1, 10):
        pids = {bench.start(criolib, "sleep 600", group=f"pod{n}")[1] for _ in range(n)}
        assert len(pids) == 1, f"one criolib monitor per pod, got {pids}"
        cpids = {bench.start(conmon, "sleep 600")[1] for _ in range(n)}
        time.sleep(0.5)
        c_rss, c_pss = smaps(next(iter(pids)))
        k_rss = k_pss = 0
        for pid in cpids:
            rss, pss = smaps(pid)
            k_rss += rss
            k_pss += pss
        print(f"{n:>4} {c_rss:>12} {c_pss:>8} {k_rss:>12} {k_pss:>8} "
              f"{c_rss / k_rss:>10.2f} {c_pss / k_pss:>10.2f}")
        bench.cleanup()


def throughput(bench: Bench, criolib: CriolibMonitor, conmon: ConmonMonitor,
               megabytes: int) -> None:
    size = megabytes * 1_000_000
    lines = bench.rootfs / "bench-lines"
    with lines.open("wb") as f:
        for _ in range(size // (len(LINE) * 10_000)):
            f.write(LINE * 10_000)
    try:
        # dd writes 1 MiB at a time: the monitor's own speed. yes | head writes a few
        # KiB at a time as fast as busybox can: nearer what a chatty program does,
        # and on this 2-core VM bounded by the producer (about 250-300 MB/s measured
        # with a bare read loop as the consumer).
        _throughput(bench, criolib, conmon, size, "dd 1 MiB writes",
                    "dd if=/bench-lines bs=1048576")
        _throughput(bench, criolib, conmon, size, "yes | head small writes",
                    f"yes {LINE[:-1].decode()} | head -c {size}")
    finally:
        lines.unlink()


def _throughput(bench: Bench, criolib: CriolibMonitor, conmon: ConmonMonitor, size: int,
                label: str, script: str) -> None:
    megabytes = size // 1_000_000
    results: dict[str, list[float]] = {"criolib": [], "conmon": []}
    for _ in range(3):
        for monitor in (criolib, conmon):
            # From start to the exit recorded: the log's throughput, not the monitor's
            # start-up (a criolib monitor process per container here).
            cid, _ = bench.create(monitor, script)
            t0 = time.perf_counter()
            bench.runtime.start(cid)
            status = monitor.wait(cid, timeout=300)
            elapsed = time.perf_counter() - t0
            assert status is not None and status.exit_code == 0, status
            log = bench.base / "logs" / f"{cid}.log"
            assert log.stat().st_size > size, "the log holds less than was written"
            results[monitor.name].append(size / elapsed / 1e6)
            log.unlink()
            bench.cleanup()
    ours = statistics.median(results["criolib"])
    theirs = statistics.median(results["conmon"])
    print(f"log throughput, {label} ({megabytes} MB of 100-byte lines, median of 3): "
          f"criolib {ours:.1f} MB/s, conmon {theirs:.1f} MB/s, ratio {ours / theirs:.2f} "
          "(higher is better)")


def exec_latency(bench: Bench, criolib: CriolibMonitor, conmon: ConmonMonitor,
                 runs: int) -> None:
    targets = {m.name: (m, bench.start(m, "sleep 600")[0]) for m in (criolib, conmon)}
    times: dict[str, list[float]] = {"criolib": [], "conmon": []}
    for monitor, cid in targets.values():  # warm up
        monitor.exec_sync(cid, ["true"], timeout=30)
    for _ in range(runs):
        for name, (monitor, cid) in targets.items():
            t0 = time.perf_counter()
            result = monitor.exec_sync(cid, ["true"], timeout=30)
            times[name].append((time.perf_counter() - t0) * 1000)
            assert result.exit_code == 0, result
    bench.cleanup()

    def p90(xs: list[float]) -> float:
        return sorted(xs)[int(len(xs) * 0.9) - 1]

    ours, theirs = statistics.median(times["criolib"]), statistics.median(times["conmon"])
    print(f"exec sync `true` (N={runs}): criolib median {ours:.1f} ms p90 "
          f"{p90(times['criolib']):.1f}, conmon median {theirs:.1f} ms p90 "
          f"{p90(times['conmon']):.1f}, ratio {ours / theirs:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", default="crun", choices=["crun", "runc"])
    parser.add_argument("--exec-runs", type=int, default=30)
    parser.add_argument("--log-mb", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    with tmpfs() as base:
        rootfs = base / "rootfs"
        unpack_test_image(build_test_images(CACHE), "busybox", rootfs)
        (base / "logs").mkdir()
        runtime = RuntimeClient(args.runtime, root=base / "state")
        criolib = CriolibMonitor(base / "run-criolib")
        conmon = ConmonMonitor(base / "run-conmon")
        bench = Bench(base, runtime, rootfs)
        conmon_version = subprocess.run(["conmon", "--version"], capture_output=True, text=True,
                                        check=True).stdout.split()[2]
        print(f"runtime {args.runtime} {runtime.version()}, conmon {conmon_version}")
        try:
            memory(bench, criolib, conmon)
            throughput(bench, criolib, conmon, args.log_mb)
            exec_latency(bench, criolib, conmon, args.exec_runs)
        finally:
            bench.cleanup()
            shutil.rmtree(base / "bundles", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
