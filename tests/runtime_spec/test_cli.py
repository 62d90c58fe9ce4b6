"""``criolib spec generate | validate | run`` from the shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from criolib.testing import build_test_images, require_binaries, require_root, unpack_test_image


def criolib(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "criolib", *args], capture_output=True,
                          text=True, check=check, timeout=120)


def test_generate_to_stdout_with_options() -> None:
    out = criolib("spec", "generate", "--hostname", "h", "--env", "A=1", "--memory", "1048576",
                  "--pids", "9", "--cap-add", "NET_ADMIN", "--cap-drop", "KILL", "--read-only",
                  "--bind", "/srv:/srv:ro", "--sysctl", "net.core.somaxconn=1024",
                  "--", "echo", "hi").stdout
    doc = json.loads(out)
    assert doc["process"]["args"] == ["echo", "hi"]
    assert doc["hostname"] == "h"
    assert "A=1" in doc["process"]["env"]
    assert doc["linux"]["resources"]["memory"]["limit"] == 1048576
    assert doc["linux"]["resources"]["pids"]["limit"] == 9
    assert "CAP_NET_ADMIN" in doc["process"]["capabilities"]["bounding"]
    assert "CAP_KILL" not in doc["process"]["capabilities"]["bounding"]
    assert doc["root"]["readonly"] is True
    assert {"destination": "/srv", "type": "bind", "source": "/srv",
            "options": ["rbind", "ro"]} in doc["mounts"]
    assert doc["linux"]["sysctl"] == {"net.core.somaxconn": "1024"}


def test_generate_then_validate_a_bundle(tmp_path: Path) -> None:
    criolib("spec", "generate", "-o", str(tmp_path), "--", "true")
    assert (tmp_path / "config.json").is_file()
    ok = criolib("spec", "validate", str(tmp_path), "--json")
    assert [p for p in json.loads(ok.stdout) if p["severity"] == "error"] == []
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["linux"]["namespaces"].append({"type": "pid"})
    doc["process"]["cwd"] = "relative"
    (tmp_path / "config.json").write_text(json.dumps(doc))
    bad = criolib("spec", "validate", str(tmp_path), check=False)
    assert bad.returncode == 1
    assert "$.linux.namespaces" in bad.stdout and "$.process.cwd" in bad.stdout


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    r = criolib("spec", "validate", str(tmp_path / "missing.json"), check=False)
    assert r.returncode == 1 and "cannot read" in r.stderr and "missing.json" in r.stderr
    (tmp_path / "x.json").write_text("{not json")
    r = criolib("spec", "validate", str(tmp_path / "x.json"), check=False)
    assert r.returncode == 1 and "not JSON" in r.stderr
    r = criolib("spec", "generate", "--bind", "nocolon", check=False)
    assert r.returncode == 1 and "--bind 'nocolon'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.integration
@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_run_a_bundle(tmp_path: Path, runtime: str) -> None:
    require_root()
    require_binaries(runtime)
    images = build_test_images(tmp_path / "images")
    bundle = tmp_path / "bundle"
    unpack_test_image(images, "busybox", bundle / "rootfs")
    criolib("spec", "generate", "-o", str(bundle), "--", "sh", "-c", "echo from-$0; exit 5",
            runtime)
    r = criolib("spec", "run", str(bundle), "--runtime", runtime, check=False)
    assert (r.returncode, r.stdout) == (5, f"from-{runtime}\n")
