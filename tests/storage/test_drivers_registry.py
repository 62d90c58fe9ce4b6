"""The graph driver registry: names, duplicates, options and third-party entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from criolib.storage._drivers import (
    GraphDriver,
    OverlayDriver,
    VFSDriver,
    _base,
    driver_names,
    get_driver,
    register_driver,
)
from criolib.storage._errors import (
    DriverError,
    DriverUnknown,
    DuplicateDriver,
    InvalidDriverOption,
    StorageError,
)


def test_builtin_drivers_are_known() -> None:
    assert {"overlay", "vfs"} <= set(driver_names())


def test_unknown_driver_is_an_error_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DriverUnknown) as info:
        get_driver("btrfs", tmp_path / "btrfs")
    assert isinstance(info.value, ValueError) and isinstance(info.value, StorageError)
    message = str(info.value)
    assert "btrfs" in message and "overlay" in message and "vfs" in message
    assert not (tmp_path / "btrfs").exists()


def test_a_duplicate_name_is_an_error() -> None:
    with pytest.raises(DuplicateDriver, match="overlay"):
        register_driver("overlay", VFSDriver)
    assert get_driver.__name__  # the registry still works afterwards
    assert "overlay" in driver_names()


def test_vfs_takes_no_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidDriverOption):
        get_driver("vfs", tmp_path / "vfs", options=["mountopt=nodev"])
    assert isinstance(InvalidDriverOption("x"), ValueError)


def test_overlay_rejects_unknown_options(tmp_path: Path) -> None:
    for bad in ("overlay.size=10G", "mount_program=/usr/bin/fuse-overlayfs",
                "ignore_chown_errors=true", "nonsense"):
        with pytest.raises(InvalidDriverOption, match=bad.partition(".")[2] or bad):
            OverlayDriver(tmp_path / "overlay", [bad])
    with pytest.raises(InvalidDriverOption, match="lowerdir"):
        OverlayDriver(tmp_path / "overlay", ["mountopt=lowerdir=/x"])


def test_options_storage_conf_files_carry_are_accepted(tmp_path: Path) -> None:
    driver = OverlayDriver(tmp_path / "overlay", [
        ".mountopt=nodev,metacopy=off", "skip_mount_home=true", "ignore_chown_errors=false",
        "use_composefs=false"])
    assert driver.mount_options == ("nodev", "metacopy=off")
    VFSDriver(tmp_path / "vfs", ["vfs.ignore_chown_errors=false", "skip_mount_home=false"])


def test_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    driver = get_driver("vfs", "vfs")
    assert driver.home == tmp_path / "vfs" and driver.name == "vfs"
    assert isinstance(driver, GraphDriver)


# -- third-party drivers through entry points ----------------------------------------


class _PluginDriver(VFSDriver):
    name = "plugin"


def plugin_factory(home: Path, options: Sequence[str]) -> GraphDriver:
    """The factory a fake third-party distribution publishes."""
    return _PluginDriver(home, options)


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding a .dist-info with criolib.storage.drivers entries."""
    site = tmp_path / "site"
    dist = site / "criolib_fake_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: criolib-fake-plugin\n"
                                   "Version: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    _base._reset_entry_points_for_tests()
    yield dist
    sys.path_importer_cache.clear()
    monkeypatch.undo()
    _base._reset_entry_points_for_tests()


def _entry_points(dist: Path, lines: str) -> None:
    (dist / "entry_points.txt").write_text(f"[criolib.storage.drivers]\n{lines}\n")


def test_a_third_party_driver_is_found_by_entry_point(
    fake_distribution: Path, tmp_path: Path
) -> None:
    _entry_points(fake_distribution, f"plugin = {__name__}:plugin_factory")
    assert "plugin" in driver_names()
    driver = get_driver("plugin", tmp_path / "plugin")
    assert isinstance(driver, _PluginDriver) and driver.home == tmp_path / "plugin"
    with pytest.raises(DuplicateDriver):
        register_driver("plugin", VFSDriver)


def test_an_entry_point_may_not_take_a_builtin_name(fake_distribution: Path) -> None:
    _entry_points(fake_distribution, f"vfs = {__name__}:plugin_factory")
    with pytest.raises(DuplicateDriver, match="vfs"):
        driver_names()


def test_a_broken_plugin_names_its_entry_point(fake_distribution: Path, tmp_path: Path) -> None:
    _entry_points(fake_distribution, "broken = criolib_no_such_module:factory")
    with pytest.raises(DriverError, match="criolib_no_such_module"):
        get_driver("broken", tmp_path / "broken")
