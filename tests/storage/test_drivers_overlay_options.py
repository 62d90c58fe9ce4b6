"""Overlay mount options that would make a layer's export wrong are refused (review item 1).

The overlay driver exports a layer by reading its upper directory. ``metacopy=on``
leaves a data-less placeholder there, ``redirect_dir=on`` an empty directory with a
redirect xattr, ``index=on`` ties copied-up hard links together outside it, and
``userxattr`` moves overlay's markers to another xattr namespace: a commit of such a
layer would silently differ from what the container saw.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from criolib.storage._drivers import OverlayDriver, _fs, _overlay_opts, get_driver
from criolib.storage._errors import InvalidDriverOption
from criolib.testing import Entry
from tests.storage.conftest import make_layer, require_root

pytestmark = pytest.mark.usefixtures("_need_root")

REFUSED = ["metacopy=on", "redirect_dir=on", "index=on", "nfs_export=on", "userxattr",
           "metacopy", "redirect_dir"]
ACCEPTED = ["metacopy=off", "redirect_dir=off", "redirect_dir=follow",
            "redirect_dir=nofollow", "index=off", "nfs_export=off", "volatile", "xino=off"]


@pytest.fixture
def _need_root() -> None:
    require_root("overlay mounts")


@pytest.fixture
def image(graphroot: Path) -> OverlayDriver:
    """A one-layer image (a file, a directory with a file) and a container layer on it."""
    driver = get_driver("overlay", graphroot / "overlay")
    assert isinstance(driver, OverlayDriver)
    blob, diff_id = make_layer([
        Entry("file", data=b"the content\n", mode=0o644),
        Entry.directory("dir"), Entry("dir/inside", data=b"inside\n"),
    ])
    driver.apply_diff("base", None, io.BytesIO(blob), expected_diff_id=diff_id)
    driver.create("ctr", "base")
    return driver


@pytest.mark.parametrize("option", REFUSED)
def test_driver_mountopt_refuses_options_that_break_exports(graphroot: Path,
                                                            option: str) -> None:
    key = option.partition("=")[0]
    with pytest.raises(InvalidDriverOption, match=rf"{option}.*not supported: \w+") as info:
        get_driver("overlay", graphroot / "overlay", options=[f"mountopt=nodev,{option}"])
    assert key in str(info.value) and "mountopt" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("option", REFUSED)
def test_per_mount_options_that_break_exports_are_refused(image: OverlayDriver,
                                                          option: str) -> None:
    with pytest.raises(InvalidDriverOption, match=f"layer ctr.*{option}.*not supported"):
        image.mount("ctr", options=["nodev", option])
    assert not image.is_mounted("ctr")
    with pytest.raises(InvalidDriverOption):  # read-only mounts too: one rule
        image.mount("base", options=["ro", option])


@pytest.mark.parametrize("option", ACCEPTED)
def test_harmless_variants_are_accepted(image: OverlayDriver, option: str) -> None:
    merged = image.mount("ctr", options=[option])
    try:
        assert (merged / "file").read_bytes() == b"the content\n"
    finally:
        image.unmount("ctr")


def _export_view(driver: OverlayDriver) -> dict[str, tuple[int, bytes]]:
    """The container layer exported, applied on the image in a new layer, and read back."""
    sink = io.BytesIO()
    driver.export_diff("ctr", "base", sink)
    driver.apply_diff("commit", "base", io.BytesIO(sink.getvalue()))
    root = driver.mount("commit", options=["ro"])
    try:
        out = {}
        for path in sorted(root.rglob("*")):
            st = os.lstat(path)
            data = path.read_bytes() if path.is_file() else b""
            out[str(path.relative_to(root))] = (st.st_mode, data)
        return out
    finally:
        driver.unmount("commit")


@pytest.mark.parametrize("option", ["", "metacopy=on", "redirect_dir=on"])
def test_a_commit_keeps_what_the_container_saw(image: OverlayDriver, option: str) -> None:
    """A chmod (metacopy's case) and a renamed lower directory (redirect_dir's) survive export.

    With either option on, the mount would leave a data-less file and a content-less
    directory in the layer's diff; the driver refuses the option instead.
    """
    try:
        merged = image.mount("ctr", options=[option] if option else [])
    except InvalidDriverOption:
        assert option, "a plain mount must work"
        return
    try:
        os.chmod(merged / "file", 0o600)
        shutil.move(merged / "dir", merged / "moved")  # EXDEV without redirects: copied
        seen = {str(p.relative_to(merged)): (os.lstat(p).st_mode,
                                             p.read_bytes() if p.is_file() else b"")
                for p in sorted(merged.rglob("*"))}
    finally:
        image.unmount("ctr")
    assert seen["file"] == (0o100600, b"the content\n")
    assert seen["moved/inside"][1] == b"inside\n" and "dir" not in seen
    assert _export_view(image) == seen


def test_kernel_defaults_that_are_on_are_turned_off(
    image: OverlayDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel built with metacopy/redirect_dir/index on by default gets =off on each mount."""
    params = tmp_path / "parameters"
    params.mkdir()
    for key, value in (("metacopy", "Y"), ("redirect_dir", "Y"), ("index", "Y"),
                       ("xino_auto", "Y")):
        (params / key).write_text(value + "\n")
    monkeypatch.setattr(_overlay_opts, "PARAMETERS", params)
    seen: list[str] = []
    real_mount = _fs.mount

    def spy(source: str, target: str | os.PathLike[str], fstype: str, flags: int, data: str,
            *, cwd: str | os.PathLike[str] | None = None) -> tuple[int, str]:
        seen.append(data)
        return real_mount(source, target, fstype, flags, data, cwd=cwd)

    monkeypatch.setattr(_fs, "mount", spy)
    image.mount("ctr", options=["redirect_dir=nofollow"])  # the caller's choice stands
    image.unmount("ctr")
    data = seen[-1].split(",")
    assert "metacopy=off" in data and "index=off" in data
    assert "redirect_dir=nofollow" in data and "redirect_dir=off" not in data
    (params / "metacopy").write_text("N\n")
    image.mount("ctr")
    image.unmount("ctr")
    assert "metacopy=off" not in seen[-1] and "redirect_dir=off" in seen[-1]


def test_the_real_module_parameters_are_read() -> None:
    # Whatever this kernel's defaults, the answer only ever turns features off.
    assert all(o.endswith("=off") for o in _overlay_opts.kernel_default_offs([]))
    assert _overlay_opts.kernel_default_offs(["metacopy=off", "redirect_dir=off",
                                              "index=off"]) == []


def test_volatile_is_accepted_and_exports_what_was_written(image: OverlayDriver) -> None:
    merged = image.mount("ctr", options=["volatile"])
    try:
        (merged / "new").write_bytes(b"volatile data\n")
    finally:
        image.unmount("ctr")
    sink = io.BytesIO()
    image.export_diff("ctr", "base", sink)
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        member = tar.extractfile("new")
        assert member is not None and member.read() == b"volatile data\n"
