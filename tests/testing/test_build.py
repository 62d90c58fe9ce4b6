"""build_test_images as a neighbour: what it may replace, locking, the cache, its inputs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from criolib.testing import (
    BuildDirError,
    MissingHostPart,
    TestbedValueError,
    TestImages,
    _build,
    build_test_images,
)
from tests.testing.conftest import SMALL_LARGE


def _copy(images: TestImages, root: Path) -> TestImages:
    """A copy of a build at ``root`` (a build's paths are its own: reuse re-reads them)."""
    shutil.copytree(images.root, root, symlinks=True)
    return build_test_images(root)


@pytest.fixture(scope="module")
def built(criolib_test_images: TestImages, tmp_path_factory: pytest.TempPathFactory
          ) -> TestImages:
    """A private copy of the session's build, for tests that damage and repair it."""
    return _copy(criolib_test_images, tmp_path_factory.mktemp("built") / "bed")


def _stamp_mtime(root: Path) -> int:
    return (root / _build.STAMP).stat().st_mtime_ns


# -- what a build may replace -------------------------------------------------------------


def test_a_directory_it_did_not_make_is_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("precious")
    (home / "stamp.json").write_text("[]")  # someone else's stamp.json
    with pytest.raises(BuildDirError, match=f"{home} is not empty and holds no criolib"):
        build_test_images(home)
    assert (home / ".ssh" / "id_ed25519").read_text() == "precious"
    assert sorted(p.name for p in home.iterdir()) == [".ssh", "stamp.json"]
    assert not list(tmp_path.glob(".home.build-*"))


def test_an_empty_directory_and_an_own_stale_build_are_replaced(
    criolib_test_images: TestImages, tmp_path: Path
) -> None:
    # (Every fixture here builds into an empty directory from tmp_path_factory.)
    root = tmp_path / "bed"
    mtime = _stamp_mtime(criolib_test_images.root)
    images = _copy(criolib_test_images, root)
    assert _stamp_mtime(root) == mtime  # the copy is current: reused as it is
    stamp = json.loads((root / _build.STAMP).read_bytes())
    stamp["key"]["format"] = -1  # an older build of ours
    (root / _build.STAMP).write_text(json.dumps(stamp))
    (root / "leftover").write_text("from the old build")
    (tmp_path / ".bed.build-killed").mkdir()  # a build that was killed half-way
    again = build_test_images(root)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bed.lock", "bed"]
    assert again == images
    assert not (root / "leftover").exists()
    assert json.loads((root / _build.STAMP).read_bytes())["key"]["format"] == _build._FORMAT
    # Whoever reads it may be another user: the tree is world-readable.
    assert root.stat().st_mode & 0o777 == 0o755
    for image in images:
        if image.archive is not None:
            assert image.archive.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("case", ["file", "parent-is-file", "slash"])
def test_unusable_paths_are_build_dir_errors(tmp_path: Path, case: str) -> None:
    target = {"file": tmp_path / "f", "parent-is-file": tmp_path / "f" / "bed",
              "slash": Path("/")}[case]
    (tmp_path / "f").write_text("a file")
    with pytest.raises(BuildDirError) as info:
        build_test_images(target)
    if case == "parent-is-file":
        assert isinstance(info.value.__cause__, OSError)
        assert str(tmp_path / "f") in str(info.value)
    assert (tmp_path / "f").read_text() == "a file"


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_bad_large_parameters(tmp_path: Path, value: object) -> None:
    with pytest.raises(TestbedValueError, match="large_files must be a positive int") as info:
        build_test_images(tmp_path, large=True, large_files=value)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


# -- the cache ---------------------------------------------------------------------------------


def _blob(images: TestImages, digest: str) -> Path:
    return images.layout / "blobs" / "sha256" / digest.partition(":")[2]


def _damages(images: TestImages) -> dict[str, Path]:
    multiarch = images["multiarch"]
    return {
        "a layer": _blob(images, images["multilayer-zstd"].layers[1].digest),
        "a config": _blob(images, images["multilayer"].config_digest or ""),
        "an index child": _blob(images, multiarch.instances[1].digest),
        "an index child's layer": _blob(images, multiarch.instances[1].layers[-1].digest),
        "a docker archive": images["busybox"].archive or Path(),
    }


@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_cache_check_covers_every_blob_and_archive(
    built: TestImages, tmp_path: Path, how: str
) -> None:
    key = _build._cache_key(_build._busybox_bytes())
    assert _build._cached(built.root, key, None) == built
    for what, path in _damages(built).items():
        saved = tmp_path / "saved"
        shutil.copy2(path, saved)
        os.chmod(path, 0o644)
        if how == "missing":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[:-1])
        assert _build._cached(built.root, key, None) is None, what
        os.replace(saved, path)
    assert _build._cached(built.root, key, None) == built


def test_a_tampered_manifest_of_the_right_size_is_noticed(built: TestImages,
                                                          tmp_path: Path) -> None:
    key = _build._cache_key(_build._busybox_bytes())
    path = _blob(built, built["busybox"].digest)
    data = path.read_bytes()
    os.chmod(path, 0o644)
    try:
        path.write_bytes(data.replace(b'"schemaVersion":2', b'"schemaVersion":3'))
        assert _build._cached(built.root, key, None) is None
    finally:
        path.write_bytes(data)
    assert _build._cached(built.root, key, None) == built


@pytest.mark.parametrize("change", ["python", "zlib", "zstandard"])
def test_library_versions_are_part_of_the_key(
    built: TestImages, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    key = _build._cache_key(_build._busybox_bytes())
    assert key["python"] == platform.python_version()
    assert key["zlib"] == zlib.ZLIB_RUNTIME_VERSION
    if change == "python":
        monkeypatch.setattr(platform, "python_version", lambda: "3.99.0")
    elif change == "zlib":
        monkeypatch.setattr(zlib, "ZLIB_RUNTIME_VERSION", "0.0.1")
    else:
        import zstandard

        monkeypatch.setattr(zstandard, "__version__", "0.0.1")
    other = _build._cache_key(_build._busybox_bytes())
    assert other != key
    assert _build._cached(built.root, other, None) is None


def test_the_large_image_survives_a_build_without_it(small_large_images: TestImages) -> None:
    root = small_large_images.root
    mtime = _stamp_mtime(root)
    plain = build_test_images(root)
    assert "large" not in plain.images  # not asked for, not returned...
    assert _stamp_mtime(root) == mtime  # ...but reused, not rebuilt
    assert set(plain.images) == set(small_large_images.images) - {"large"}
    again = build_test_images(root, **SMALL_LARGE)  # type: ignore[arg-type]
    assert again == small_large_images
    assert _stamp_mtime(root) == mtime


_PARALLEL = """
import json, sys
from criolib.testing import build_test_images
images = build_test_images(sys.argv[1])
print(json.dumps({i.name: i.digest for i in images}))
"""


def test_parallel_builds_of_one_directory_all_succeed(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-c", _PARALLEL, str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert all(r == results[0] for r in results)
    assert set(results[0]) == {"busybox", "multilayer", "multilayer-zstd",
                               "multilayer-uncompressed", "multiarch"}
    # One build happened; the others waited on the lock and reused it. No temp dirs left.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shared.lock", "shared"]


# -- the busybox input -------------------------------------------------------------------------


def _elf(*, bits: int, little: bool, interp: bytes | None) -> bytes:
    """A minimal ELF header with one program header: PT_INTERP or PT_LOAD."""
    end = "<" if little else ">"
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1]) + bytes(9)
    if bits == 64:
        ehdr = ident + struct.pack(end + "HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, 1,
                                   0, 0, 0)
        payload_at = 64 + 56
        ptype = 3 if interp else 1
        phdr = struct.pack(end + "IIQQQQQQ", ptype, 0, payload_at, 0, 0,
                           len(interp or b""), 0, 0)
    else:
        ehdr = ident + struct.pack(end + "HHIIIIIHHHHHH", 2, 3, 1, 0, 52, 0, 0, 52, 32, 1,
                                   0, 0, 0)
        payload_at = 52 + 32
        ptype = 3 if interp else 1
        phdr = struct.pack(end + "IIIIIIII", ptype, payload_at, 0, 0, len(interp or b""), 0,
                           0, 0)
    return ehdr + phdr + (interp or b"")


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("little", [True, False])
def test_elf_interpreter_is_found(bits: int, little: bool) -> None:
    loader = b"/lib/ld-linux.so.2\0"
    assert _build._elf_interpreter(_elf(bits=bits, little=little, interp=loader)) == (
        "/lib/ld-linux.so.2")
    assert _build._elf_interpreter(_elf(bits=bits, little=little, interp=None)) is None


def test_elf_interpreter_rejects_what_is_not_elf() -> None:
    with pytest.raises(ValueError, match="not an ELF"):
        _build._elf_interpreter(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="truncated"):
        _build._elf_interpreter(_elf(bits=64, little=True, interp=b"/x\0")[:70])


def test_real_busybox_is_static() -> None:
    if not _build.BUSYBOX.is_file():
        pytest.skip("no /bin/busybox")
    assert _build._elf_interpreter(_build.BUSYBOX.read_bytes()) is None


@pytest.mark.parametrize("fake", ["dynamic", "script"])
def test_a_dynamic_or_bogus_busybox_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: str
) -> None:
    if fake == "dynamic":
        binary = Path("/bin/ls")  # Debian's ls is dynamically linked
        match = "dynamically linked.*busybox-static"
    else:
        binary = tmp_path / "busybox"
        binary.write_text("#!/bin/sh\necho not busybox\n")
        match = "not a busybox executable.*busybox-static"
    monkeypatch.setattr(_build, "BUSYBOX", binary)
    with pytest.raises(MissingHostPart, match=match):
        build_test_images(tmp_path / "out")
    assert not (tmp_path / "out").exists()
