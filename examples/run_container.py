"""Run a busybox container under runc and crun with CRI-O's secure default spec.

Builds the test bed's busybox image, unpacks it into a bundle, generates
config.json with criolib.runtime_spec (user resolved from the image's
/etc/passwd, a hostname, memory and pids limits), validates it and runs it under
each installed runtime, printing what the container saw. Needs root.

    .venv/bin/python examples/run_container.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from criolib.errors import CriolibError
from criolib.runtime_spec import Generator, RuntimeClient, apply_image_config, check
from criolib.testing import build_test_images, unpack_test_image

SCRIPT = "id; hostname; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="criolib-example-") as tmp:
        images = build_test_images(Path(tmp) / "images")
        bundle = Path(tmp) / "bundle"
        rootfs = unpack_test_image(images, "busybox", bundle / "rootfs")

        gen = Generator()
        apply_image_config(gen, {"config": {"Cmd": ["sh", "-c", SCRIPT]}}, rootfs=rootfs,
                           user="tester")
        gen.set_hostname("criolib-example").set_memory_limit(64 << 20).set_pids_limit(32)
        check(gen.config(), rootfs=rootfs)
        gen.save(bundle)

        for name in ("runc", "crun"):
            if shutil.which(name) is None:
                print(f"{name}: not installed")
                continue
            with RuntimeClient(name) as runtime, tempfile.TemporaryFile() as out:
                code = runtime.run(f"criolib-example-{name}", bundle, stdout=out,
                                   stderr=out)
                out.seek(0)
                print(f"--- {name} {runtime.version()} exit {code}")
                print(out.read().decode(), end="")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CriolibError as exc:
        print(f"example failed: {exc}", file=sys.stderr)
        sys.exit(1)
