"""The machine scripts/setup prepares: every part installed, and both OCI runtimes run.

Under CI (``CRIOLIB_REQUIRE_INTEGRATION=1``) a missing part fails here first, with
the Debian package to install. Running a container under crun proves setup's
cgroup fix (crun refuses hybrid cgroups while v2 holds a controller).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from criolib._exec import run
from criolib.testing import (
    TestImages,
    require_binaries,
    require_cni_plugins,
    require_root,
    unpack_test_image,
)

pytestmark = pytest.mark.integration

#: Every program scripts/setup installs (criolib's parts, the registry, the peers).
SETUP_BINARIES = ("runc", "crun", "conmon", "docker-registry", "skopeo", "umoci", "podman",
                  "ip", "iptables", "busybox")
SETUP_CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall", "tuning")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def test_every_part_setup_installs_is_here() -> None:
    require_binaries(*SETUP_BINARIES)
    plugin_dir = require_cni_plugins(*SETUP_CNI_PLUGINS)
    assert all(os.access(plugin_dir / p, os.X_OK) for p in SETUP_CNI_PLUGINS)


@pytest.fixture(scope="module")
def bundle(criolib_test_images: TestImages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle running ``/bin/busybox true`` from the busybox test image (``runc spec``)."""
    require_root()
    require_binaries("runc")
    path = tmp_path_factory.mktemp("bundle")
    unpack_test_image(criolib_test_images, "busybox", path / "rootfs")
    run(["runc", "spec", "--bundle", str(path)], env=ENV, timeout=10)
    config = json.loads((path / "config.json").read_bytes())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/busybox", "echo", "hello from the busybox image"]
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_runtime_runs_a_container(bundle: Path, runtime: str) -> None:
    require_root()
    require_binaries(runtime)
    cid = f"criolib-host-{runtime}-{uuid.uuid4().hex[:8]}"
    try:
        done = run([runtime, "run", "--bundle", str(bundle), cid], env=ENV, timeout=30,
                   what=f"container {cid}")
        assert done.stdout == b"hello from the busybox image\n"
    finally:
        run([runtime, "delete", "--force", cid], env=ENV, timeout=30, check=False)
