"""``criolib testbed``: the installed command, its arguments, and SIGTERM at any moment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from criolib.cli import _testbed, build_parser
from criolib.errors import CriolibError
from criolib.testing import (
    RegistryServer,
    TestImages,
    _build,
    require_binaries,
)

CRIOLIB = Path(sys.executable).parent / "criolib"  # the entry point pip installed


@pytest.fixture(scope="module")
def bed(criolib_test_images: TestImages) -> TestImages:
    """The session's build: the commands below find it current and reuse it."""
    return criolib_test_images


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


# -- the installed command ---------------------------------------------------------------------


def test_build_json(bed: TestImages) -> None:
    assert CRIOLIB.is_file(), f"{CRIOLIB}: is criolib installed in this venv (scripts/setup)?"
    out = subprocess.run([str(CRIOLIB), "testbed", "build", "--json", str(bed.root)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    doc = json.loads(out)
    assert doc["layout"] == str(bed.layout)
    assert {(r["name"], r["reference"], r["digest"]) for r in doc["images"]} == {
        (i.name, i.reference, i.digest) for i in bed}
    assert {r["archive"] for r in doc["images"]} == {
        str(i.archive) if i.archive else None for i in bed}


@pytest.mark.integration
def test_serve_answers_and_stops_clean_on_sigterm(bed: TestImages) -> None:
    require_binaries("docker-registry")
    proc = subprocess.Popen([str(CRIOLIB), "testbed", "serve", "--dir", str(bed.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"registry: (http://127\.0\.0\.1:\d+) \(auth: none\)\n", first)
        assert match, first + (proc.stderr.read() if proc.stderr else "")
        with httpx.Client(trust_env=False) as http:
            assert http.get(f"{match.group(1)}/v2/").status_code == 200
        (registry,) = _children(proc.pid)
        config = Path(Path(f"/proc/{registry}/cmdline").read_bytes().split(b"\0")[2].decode())
        workdir = config.parent
        assert workdir.is_dir()
        for line in proc.stdout:  # every image is listed before it says how to stop
            if line.startswith("Ctrl-C or SIGTERM"):
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not _alive(registry)
        assert not workdir.exists()
    finally:
        proc.kill()
        proc.wait()


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("port, message", [
    ("0", "port must be 1..65535, not 0"),
    ("65536", "port must be 1..65535, not 65536"),
    ("http", "not a port number: 'http'"),
])
def test_port_is_checked(capsys: pytest.CaptureFixture[str], port: str, message: str) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["testbed", "serve", "--port", port])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


class _Stop(CriolibError):
    pass


@pytest.mark.parametrize("argv, large", [
    (["build", "--large", "/x"], True),
    (["build", "/x"], False),
    (["serve", "--large", "--dir", "/x"], True),
    (["serve", "--dir", "/x"], False),
])
def test_large_reaches_the_builder(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                   large: bool) -> None:
    calls: list[dict[str, Any]] = []

    def fake(root: Path, **kwargs: Any) -> TestImages:
        calls.append({"root": root, **kwargs})
        raise _Stop("stop here")

    monkeypatch.setattr(_testbed, "build_test_images", fake)
    args = build_parser().parse_args(["testbed", *argv])
    with pytest.raises(_Stop):
        args.handler(args)
    assert calls == [{"root": Path("/x"), "large": large}]


# -- SIGTERM while building and while starting -----------------------------------------------------


def _serve_args(root: Path) -> Any:
    return build_parser().parse_args(["testbed", "serve", "--dir", str(root)])


def test_sigterm_during_the_build_cleans_up(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    require_binaries("busybox")
    real = _build._applets

    def applets() -> list[str]:  # called half-way: the temporary build dir exists
        assert [p.name for p in tmp_path.glob(".bed.build-*")]
        os.kill(os.getpid(), signal.SIGTERM)
        return real()

    monkeypatch.setattr(_build, "_applets", applets)
    before = signal.getsignal(signal.SIGTERM)
    assert _testbed._serve(_serve_args(tmp_path / "bed")) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bed.lock"]


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, Path]]]:
    """SIGTERM as the registry has just been spawned; yields its (pid, workdir)."""
    seen: list[tuple[int, Path]] = []
    real = RegistryServer._wait_ready

    def wait_ready(self: RegistryServer) -> None:
        assert self.pid is not None
        seen.append((self.pid, self.workdir))
        os.kill(os.getpid(), signal.SIGTERM)
        real(self)

    monkeypatch.setattr(RegistryServer, "_wait_ready", wait_ready)
    yield seen


@pytest.mark.integration
def test_sigterm_during_the_registry_start_cleans_up(
    bed: TestImages, spawned: list[tuple[int, Path]]
) -> None:
    require_binaries("docker-registry")
    assert _testbed._serve(_serve_args(bed.root)) == 0
    ((pid, workdir),) = spawned
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)
    assert not workdir.exists()
