"""What only the overlay driver does: its on-disk format, deep stacks, mounts and support."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage._drivers import OverlayDriver, get_driver
from criolib.storage._errors import (
    DriverError,
    DriverUnsupported,
    InvalidDriverOption,
    MountError,
)
from criolib.testing import Entry
from tests.storage.conftest import is_root, make_layer, require_root, unmount_all_under

pytestmark = pytest.mark.usefixtures("_need_root")

_PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def _need_root() -> None:
    require_root("overlay mounts")


@pytest.fixture
def overlay(graphroot: Path) -> OverlayDriver:
    driver = get_driver("overlay", graphroot / "overlay")
    assert isinstance(driver, OverlayDriver)
    return driver


def _mountinfo(point: Path) -> str:
    lines = [x for x in Path("/proc/self/mountinfo").read_text().splitlines()
             if x.split(" ")[4] == str(point)]
    assert len(lines) == 1, lines
    return lines[0]


def _chain(driver: OverlayDriver, depth: int, *, apply: bool) -> list[str]:
    ids, parent = [], None
    for i in range(depth):
        layer_id = f"layer{i:04d}"
        if apply:
            blob, diff_id = make_layer([Entry(f"f{i:04d}", data=str(i).encode())])
            driver.apply_diff(layer_id, parent, io.BytesIO(blob), expected_diff_id=diff_id)
        else:
            (driver.create(layer_id, parent) / f"f{i:04d}").write_text(str(i))
        ids.append(layer_id)
        parent = layer_id
    return ids


def test_on_disk_format_is_containers_storage(overlay: OverlayDriver) -> None:
    for layer_id, parent in (("a", None), ("b", "a"), ("c", "b")):
        overlay.create(layer_id, parent)
    home = overlay.home
    links = {x: (home / x / "link").read_text() for x in "abc"}
    for layer_id, short in links.items():
        assert re.fullmatch(r"[A-Z2-7]{26}", short)
        assert os.readlink(home / "l" / short) == f"../{layer_id}/diff"
        for sub in ("diff", "work", "merged"):
            assert (home / layer_id / sub).is_dir()
    assert not (home / "a" / "lower").exists() and (home / "a" / "empty").is_dir()
    assert (home / "b" / "lower").read_text() == f"l/{links['a']}"
    assert (home / "c" / "lower").read_text() == f"l/{links['b']}:l/{links['a']}"
    assert overlay.parent_links("c") == [f"l/{links['b']}", f"l/{links['a']}"]
    assert oct(os.stat(home / "a" / "diff").st_mode & 0o7777) == oct(0o555)
    assert sorted(os.listdir(home / "l")) == sorted(links.values())


def test_mount_uses_short_relative_lowers(overlay: OverlayDriver) -> None:
    ids = _chain(overlay, 3, apply=False)
    overlay.create("ctr", ids[-1])
    merged = overlay.mount("ctr")
    try:
        assert merged == overlay.home / "ctr" / "merged"
        info = _mountinfo(merged)
        assert " - overlay overlay " in info
        lowers = re.search(r"lowerdir=([^,]*)", info)
        assert lowers is not None
        assert lowers.group(1) == (overlay.home / "ctr" / "lower").read_text()
        assert "upperdir=ctr/diff" in info and "workdir=ctr/work" in info
        assert sorted(os.listdir(merged)) == ["f0000", "f0001", "f0002"]
    finally:
        overlay.unmount("ctr")


def test_a_base_layer_mounts_read_only_and_writable(overlay: OverlayDriver) -> None:
    (overlay.create("base", None) / "file").write_text("x")
    ro = overlay.mount("base", options=["ro"])
    try:
        assert (ro / "file").read_text() == "x"
        with pytest.raises(OSError, match="Read-only"):
            (ro / "new").write_text("y")
    finally:
        overlay.unmount("base")
    rw = overlay.mount("base")
    try:
        (rw / "new").write_text("y")
    finally:
        overlay.unmount("base")
    assert (overlay.diff_path("base") / "new").read_text() == "y"


def test_deep_chain_of_120_applied_layers_mounts(overlay: OverlayDriver) -> None:
    ids = _chain(overlay, 120, apply=True)
    overlay.create("ctr", ids[-1])
    merged = overlay.mount("ctr")
    try:
        assert len(os.listdir(merged)) == 120
        options = _mountinfo(merged).split(" - ")[1].split(" ")[2]
        assert "lowerdir=l/" in options  # still the l/ links: it fits one page
        assert len(options) < _PAGE
    finally:
        overlay.unmount("ctr")


def test_deeper_chains_mount_through_descriptors(overlay: OverlayDriver) -> None:
    ids = _chain(overlay, 300, apply=False)
    overlay.create("ctr", ids[-1])
    assert len((overlay.home / "ctr" / "lower").read_text()) > _PAGE  # too long as l/ links
    merged = overlay.mount("ctr", options=["nodev"])
    try:
        assert len(os.listdir(merged)) == 300
        assert (merged / "f0000").read_text() == "0"
    finally:
        overlay.unmount("ctr")


def test_500_lowers_mount_and_501_are_a_mount_error(overlay: OverlayDriver) -> None:
    ids = _chain(overlay, 502, apply=False)
    with pytest.raises(MountError, match=r"501 lower layers.*at most 500") as info:
        overlay.mount(ids[-1])
    assert info.value.layer_id == ids[-1]
    assert not overlay.is_mounted(ids[-1])
    merged = overlay.mount(ids[-2])  # overlayfs's limit exactly
    try:
        assert len(os.listdir(merged)) == 501
    finally:
        overlay.unmount(ids[-2])


def test_mount_options_from_the_driver_and_the_caller(graphroot: Path) -> None:
    driver = get_driver("overlay", graphroot / "overlay", options=["mountopt=nodev"])
    assert isinstance(driver, OverlayDriver)
    driver.create("base", None)
    driver.create("ctr", "base")
    merged = driver.mount("ctr", options=["nosuid,redirect_dir=nofollow", "label=system_u:x",
                                          "context=system_u:y"])
    try:
        info = _mountinfo(merged)
        flags, super_opts = info.split(" ")[5], info.split(" - ")[1]
        assert "nodev" in flags and "nosuid" in flags
        assert "redirect_dir=nofollow" in super_opts and "system_u" not in super_opts
    finally:
        driver.unmount("ctr")
    with pytest.raises(InvalidDriverOption, match="workdir"):
        driver.mount("ctr", options=["workdir=/tmp"])


def test_a_volatile_mount_can_be_mounted_again(overlay: OverlayDriver) -> None:
    overlay.create("base", None)
    overlay.create("ctr", "base")
    for _ in range(2):  # overlay refuses a workdir a volatile mount used, unless cleaned
        merged = overlay.mount("ctr", options=["volatile"])
        assert "volatile" in _mountinfo(merged)
        overlay.unmount("ctr")


def test_mount_errors_name_the_layer_errno_and_length(overlay: OverlayDriver) -> None:
    overlay.create("base", None)
    overlay.create("ctr", "base")
    # The parent's files gone (its l/ link dangles): nothing can rebuild that.
    os.rename(overlay.home / "base" / "diff", overlay.home / "base" / "lost")
    with pytest.raises(MountError) as info:
        overlay.mount("ctr")
    err = info.value
    assert err.layer_id == "ctr" and err.errno is not None and err.options_length
    assert "ctr" in str(err) and os.strerror(err.errno) in str(err)
    assert f"{err.options_length} bytes" in str(err)
    assert not overlay.is_mounted("ctr")


def test_unmount_of_a_busy_layer_detaches_it_lazily(
    overlay: OverlayDriver, caplog: pytest.LogCaptureFixture
) -> None:
    overlay.create("base", None)
    overlay.create("ctr", "base")
    merged = overlay.mount("ctr")
    (merged / "held").write_text("open")
    with open(merged / "held") as held, caplog.at_level(logging.WARNING, "criolib.storage"):
        overlay.unmount("ctr")
        assert not overlay.is_mounted("ctr")
        assert held.read() == "open"  # the detached mount lives on for its last user
    assert "busy" in caplog.text and "ctr" in caplog.text


def test_export_against_a_layer_that_is_not_the_parent_is_refused(
    overlay: OverlayDriver,
) -> None:
    overlay.create("a", None)
    overlay.create("b", "a")
    overlay.create("c", "b")
    with pytest.raises(DriverError, match="not the layer's parent"):
        overlay.export_diff("c", "a", io.BytesIO())


# -- support -------------------------------------------------------------------------


@pytest.fixture
def overlay_mount(graphroot: Path) -> Iterator[Path]:
    """An overlay mounted by hand, to put a graphroot inside it."""
    base = graphroot / "nested"
    for sub in ("lower", "upper", "work", "merged"):
        (base / sub).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work",
                    str(base / "merged")], check=True)
    try:
        yield base / "merged"
    finally:
        unmount_all_under(base / "merged")


def test_overlay_refuses_an_overlay_backing_filesystem(overlay_mount: Path) -> None:
    home = overlay_mount / "graph" / "overlay"
    with pytest.raises(DriverUnsupported, match="overlay inside an overlay"):
        get_driver("overlay", home)
    with pytest.raises(DriverUnsupported, match=str(home)):
        OverlayDriver(home).check_support()
    # vfs is the driver that works there; it is never chosen silently.
    assert get_driver("vfs", overlay_mount / "graph" / "vfs").name == "vfs"


def test_check_support_passes_here(overlay: OverlayDriver) -> None:
    overlay.check_support()
    assert is_root()
