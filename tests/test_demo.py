"""The README's first command ends in examples/demo.py: it must run and say it worked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from criolib.testing import require_binaries

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


@pytest.mark.integration
def test_demo_pulls_and_runs_a_networked_pod() -> None:
    from criolib.testing import require_cni_plugins, require_root

    require_root()
    require_binaries("busybox", "docker-registry", "runc", "crun", "ip")
    require_cni_plugins("bridge", "host-local", "loopback")
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                            check=True).stdout
    proc = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("built 5 test images in ")
    assert "with token auth" in lines[1]
    assert lines[2].startswith("pulled 127.0.0.1:") and lines[2].endswith(", verified")
    assert lines[3].startswith("pod a: 10.252.0.") and lines[4].startswith("pod b: 10.252.0.")
    pod_a_ip = lines[3].split()[2]
    for runtime in ("runc", "crun"):
        section = proc.stdout.split(f"--- container in pod a under {runtime} ")[1].split("---")[0]
        assert ", exit 0" in section.splitlines()[0]
        assert section.splitlines()[1:4] == [
            "pod-a",
            pod_a_ip,
            "1 packets transmitted, 1 packets received, 0% packet loss",
        ]
    assert lines[-1].startswith("demo finished: pulled from the local registry, ran a container")
    assert proc.stderr == ""
    after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                           check=True).stdout
    assert "cni-demo" not in after and after.count("\n") <= before.count("\n")


@pytest.mark.integration
def test_run_container_example_runs_under_both_runtimes() -> None:
    from criolib.testing import require_root

    require_root()
    require_binaries("busybox", "runc", "crun")
    example = Path(__file__).parent.parent / "examples" / "run_container.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for runtime in ("runc", "crun"):
        section = proc.stdout.split(f"--- {runtime} ")[1].split("---")[0]
        assert section.startswith(tuple("0123456789")) and "exit 0" in section
        assert "uid=1000(tester) gid=1000(tester) groups=10(wheel),29(audio)" in section
        assert "criolib-example" in section
        assert "NoNewPrivs:\t1" in section and "Seccomp:\t2" in section


@pytest.mark.integration
def test_pull_image_example() -> None:
    from criolib.testing import require_root

    require_root()
    require_binaries("busybox", "docker-registry")
    example = Path(__file__).parent.parent / "examples" / "pull_image.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pulled docker://127.0.0.1:") and ", 3 layers, " in lines[0]
    assert lines[1].startswith("stored image ") and "/testbed/multilayer:latest" in lines[1]
    assert lines[2] == "second pull: 0 layers copied, 3 skipped"
    assert lines[3].endswith("['blobs', 'index.json', 'oci-layout']")


@pytest.mark.integration
def test_pod_network_example_pings_between_pods() -> None:
    from criolib.testing import require_cni_plugins, require_root

    require_root()
    require_binaries("ping")
    require_cni_plugins("bridge", "host-local", "loopback")
    example = Path(__file__).parent.parent / "examples" / "pod_network.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pod a: 10.251.0.") and lines[1].startswith("pod b: 10.251.0.")
    assert " 1 received" in lines[2]
    assert lines[3].endswith("ping worked")
    assert proc.stderr == ""
