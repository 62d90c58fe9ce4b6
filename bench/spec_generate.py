"""Generating and validating a default config.json, vs one OCI runtime call.

Target (issue 3): each well under the time of one runtime call. The peer figure
is ``runc run`` of ``/bin/true`` (one container's whole life through the runtime),
with ``runc spec`` and ``runc state`` of a missing container (the cheapest runtime
process starts there are) for scale.

    .venv/bin/python bench/spec_generate.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from criolib.runtime_spec import Generator, dump_spec, validate

_CLEANUP: list[Callable[[], object]] = []


def _time(fn: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    config = Generator().config()
    validate(config)  # compile the schema once, as a long-running service would
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("criolib Generator().config()", _time(lambda: Generator().config(), n)),
            ("criolib Generator().spec() + dump_spec", _time(
                lambda: dump_spec(Generator().spec()), n)),
            ("criolib validate(default config)", _time(lambda: validate(config), n)),
            ("criolib generate + validate + save", _time(
                lambda: _generate_save(Path(tmp)), n)),
            ("peer: runc spec", _time(lambda: _runc(["spec"], tmp), max(n // 4, 20))),
            ("peer: runc state (missing)", _time(
                lambda: _runc(["state", "criolib-bench-none"], tmp), max(n // 4, 20))),
            ("peer: runc run /bin/true", _time(_runc_run(Path(tmp)), 20)),
        ]
        for cleanup in _CLEANUP:
            cleanup()
    peer = statistics.median(rows[-1][1])
    print(f"{'what':<42} {'median ms':>10} {'p90 ms':>8} {'vs runc run':>12}")
    for name, samples in rows:
        med = statistics.median(samples)
        p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
        print(f"{name:<42} {med:>10.3f} {p90:>8.3f} {med / peer:>12.2f}x")
    return 0


def _generate_save(bundle: Path) -> None:
    gen = Generator().set_args(["/bin/true"])
    validate(gen.config())
    gen.save(bundle)


def _runc_run(tmp: Path) -> Callable[[], object]:
    from criolib.testing import build_test_images, unpack_test_image

    images = build_test_images(tmp / "images")
    # On a tmpfs: the root ext4 here measures the disk, not runc (MACHINE-NOTES.md).
    fast = tmp / "tmpfs"
    fast.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(fast)], check=True)
    _CLEANUP.append(lambda: subprocess.run(["umount", "-l", str(fast)], check=False))
    bundle = fast / "bundle"
    unpack_test_image(images, "busybox", bundle / "rootfs")
    Generator().set_args(["/bin/true"]).save(bundle)
    ids = iter(range(10**6))
    root = fast / "state"
    return lambda: subprocess.run(["runc", f"--root={root}", "run", "--bundle", str(bundle),
                                   f"criolib-bench-{next(ids)}"], check=True)


def _runc(args: list[str], cwd: str) -> None:
    Path(cwd, "config.json").unlink(missing_ok=True)
    subprocess.run(["runc", *args], cwd=cwd, capture_output=True, check=False)


if __name__ == "__main__":
    sys.exit(main())
