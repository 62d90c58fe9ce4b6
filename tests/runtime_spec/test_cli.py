"""``criolib spec generate | validate | run`` from the shell."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from criolib.cli import main
from criolib.testing import (
    TestImages,
    build_test_images,
    require_binaries,
    require_root,
    unpack_test_image,
)

RUNTIMES = ["runc", "crun"]


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


def _generate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["spec", "generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cap_add_reaches_the_seccomp_profile(capsys: pytest.CaptureFixture[str]) -> None:
    def allowed(doc: dict[str, object], name: str) -> bool:
        for rule in doc["linux"]["seccomp"]["syscalls"]:  # type: ignore[index]
            if name in rule["names"] and "args" not in rule:
                return bool(rule["action"] == "SCMP_ACT_ALLOW")
        return False

    _, out, _ = _generate(capsys, "--", "true")
    assert not allowed(json.loads(out), "sethostname")
    _, out, _ = _generate(capsys, "--cap-add", "SYS_ADMIN", "--", "true")
    assert allowed(json.loads(out), "sethostname")


def test_output_a_bundle_a_file_or_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # An existing directory is a bundle.
    assert _generate(capsys, "-o", str(tmp_path), "--", "true")[0] == 0
    assert json.loads((tmp_path / "config.json").read_text())["process"]["args"] == ["true"]
    # A new path ending in "/" is a new bundle directory.
    assert _generate(capsys, "-o", f"{tmp_path}/new/bundle/", "--", "true")[0] == 0
    assert (tmp_path / "new" / "bundle" / "config.json").is_file()
    # Anything else is the file itself, not a directory named after it.
    assert _generate(capsys, "-o", str(tmp_path / "spec.json"), "--", "true")[0] == 0
    assert json.loads((tmp_path / "spec.json").read_text())["process"]["args"] == ["true"]
    # A file in a directory that does not exist: an error that says so.
    code, _, err = _generate(capsys, "-o", str(tmp_path / "missing" / "config.json"))
    assert code == 1
    assert f"directory {tmp_path / 'missing'} does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_output_is_replaced_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")
    before = target.stat().st_ino
    assert _generate(capsys, "-o", str(target), "--", "true")[0] == 0
    # A new file renamed over the old one: readers see old or new, never half.
    assert target.stat().st_ino != before
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_rootfs_sets_root_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _generate(capsys, "-o", str(bundle), "--rootfs", str(bundle / "rootfs"))
    assert json.loads((bundle / "config.json").read_text())["root"]["path"] == "rootfs"
    _generate(capsys, "-o", str(bundle), "--rootfs", str(elsewhere))
    assert json.loads((bundle / "config.json").read_text())["root"]["path"] == str(elsewhere)
    monkeypatch.chdir(tmp_path)
    _, out, _ = _generate(capsys, "--rootfs", "elsewhere")
    assert json.loads(out)["root"]["path"] == str(elsewhere)


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
    r = criolib("spec", "generate", "-o", str(tmp_path / "no" / "such" / "file"), check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


# -- spec run: real runc and crun -------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    require_root()
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    require_binaries(request.param)
    return str(request.param)


def _bundle(images: TestImages, where: Path, *command: str) -> Path:
    bundle = where / "bundle"
    unpack_test_image(images, "busybox", bundle / "rootfs")
    assert main(["spec", "generate", "-o", str(bundle), "--", *command]) == 0
    return bundle


@pytest.mark.integration
def test_run_a_bundle(tmp_path: Path, runtime: str, images: TestImages) -> None:
    bundle = tmp_path / "bundle"
    unpack_test_image(images, "busybox", bundle / "rootfs")
    criolib("spec", "generate", "-o", str(bundle), "--", "sh", "-c", "echo from-$0; exit 5",
            runtime)
    r = criolib("spec", "run", str(bundle), "--runtime", runtime, "--root",
                str(tmp_path / "state"), check=False)
    assert (r.returncode, r.stdout) == (5, f"from-{runtime}\n")


@pytest.mark.integration
def test_run_validates_first_unless_told_not_to(
    tmp_path: Path, runtime: str, images: TestImages, capfd: pytest.CaptureFixture[str],
) -> None:
    bundle = _bundle(images, tmp_path, "touch", "/ran")
    doc = json.loads((bundle / "config.json").read_text())
    doc["process"]["cwd"] = "relative"  # runtime-spec: cwd MUST be absolute
    (bundle / "config.json").write_text(json.dumps(doc))
    capfd.readouterr()
    run = ["spec", "run", str(bundle), "--runtime", runtime, "--root", str(tmp_path / "state"),
           "--id", "criolib-cli-validate"]
    assert main(run) == 1
    err = capfd.readouterr().err
    assert "$.process.cwd" in err and "--no-validate" in err  # the validator's words
    assert not (bundle / "rootfs" / "ran").exists()  # refused before the runtime ran
    log = tmp_path / "runtime.log"
    code = main([*run, "--no-validate", "--log", str(log)])
    err = capfd.readouterr().err
    assert "$.process.cwd" not in err
    if runtime == "runc":  # runc refuses it in its own words, logged to --log
        assert code == 1 and "criolib-cli-validate" in err
        assert any(json.loads(line)["level"] == "error"
                   for line in log.read_text().splitlines())
    else:  # crun 1.8.1 runs what the spec forbids
        assert code == 0 and (bundle / "rootfs" / "ran").exists()


@pytest.mark.integration
def test_run_timeout_and_systemd_cgroup(
    tmp_path: Path, runtime: str, images: TestImages, capfd: pytest.CaptureFixture[str],
) -> None:
    bundle = _bundle(images, tmp_path, "sleep", "30")
    base = ["spec", "run", str(bundle), "--runtime", runtime, "--root", str(tmp_path / "state")]
    capfd.readouterr()
    started = time.monotonic()
    assert main([*base, "--id", "criolib-cli-slow", "--timeout", "0.5"]) == 1
    assert time.monotonic() - started < 10
    assert "did not finish within 0.5 s and was killed" in capfd.readouterr().err
    # No systemd on these machines: the runtime's words, the container and the fix.
    assert main([*base, "--id", "criolib-cli-sd", "--systemd-cgroup"]) == 1
    err = capfd.readouterr().err
    assert "'criolib-cli-sd'" in err and "needs a running systemd" in err
