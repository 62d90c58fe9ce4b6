"""overlay.apply_diff copies headerless parent directories up from the layers below.

A layer with ``etc/new`` and no ``etc/`` header must not give ``/etc`` a new owner
and mode in the merged tree; a layer with ``lib/x`` over a lower ``lib -> usr/lib``
must not turn the symlink into a directory (see ``_archive_lower``).
"""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path

import pytest

from criolib.storage._drivers import OverlayDriver, get_driver
from criolib.storage._errors import MountError
from criolib.testing import Entry
from tests.storage.conftest import make_layer, require_root

pytestmark = pytest.mark.usefixtures("_need_root")


@pytest.fixture
def _need_root() -> None:
    require_root("overlay mounts")


@pytest.fixture
def base(graphroot: Path) -> OverlayDriver:
    driver = get_driver("overlay", graphroot / "overlay")
    assert isinstance(driver, OverlayDriver)
    blob, diff_id = make_layer([
        Entry.directory("etc", mode=0o750, uid=5, gid=6), Entry("etc/a", data=b"a"),
        Entry.directory("usr"), Entry.directory("usr/lib", mode=0o700),
        Entry.symlink("lib", "usr/lib")])
    driver.apply_diff("base", None, io.BytesIO(blob), expected_diff_id=diff_id)
    return driver


def _staging(driver: OverlayDriver) -> list[str]:
    root = driver.home.parent / "staging"
    return sorted(os.listdir(root)) if root.exists() else []


def test_headerless_parents_keep_what_the_lower_layers_say(base: OverlayDriver) -> None:
    blob, diff_id = make_layer([Entry("etc/b", data=b"b"), Entry("lib/x.so", data=b"x")])
    base.apply_diff("top", "base", io.BytesIO(blob), expected_diff_id=diff_id)
    assert _staging(base) == []  # the view was unmounted and removed
    assert str(base.home.parent / "staging") not in Path("/proc/self/mountinfo").read_text()
    root = base.mount("top", options=["ro"])
    try:
        st = os.stat(root / "etc")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 5, 6)
        assert sorted(os.listdir(root / "etc")) == ["a", "b"]
        assert os.readlink(root / "lib") == "usr/lib"
        assert (root / "usr" / "lib" / "x.so").read_bytes() == b"x"
    finally:
        base.unmount("top")


def test_a_view_that_cannot_be_mounted_only_costs_the_metadata(
    base: OverlayDriver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = base._mount_at

    def refuse(layer_id: str, d: Path, merged: Path, options: object) -> None:
        if "view" in str(merged):
            raise MountError("no view today", layer_id=layer_id)
        real(layer_id, d, merged, options)  # type: ignore[arg-type]

    monkeypatch.setattr(base, "_mount_at", refuse)
    blob, _ = make_layer([Entry("etc/b", data=b"b")])
    with caplog.at_level(logging.WARNING, "criolib.storage"):
        base.apply_diff("top", "base", io.BytesIO(blob))
    assert "no view today" in caplog.text and _staging(base) == []
    st = os.stat(base.diff_path("top") / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 0)


def test_layers_with_headers_never_mount_a_view(
    base: OverlayDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise AssertionError("no view was needed")

    monkeypatch.setattr(base, "_mount_at", boom)
    blob, _ = make_layer([Entry.directory("etc", mode=0o750, uid=5, gid=6),
                          Entry("etc/b", data=b"b"), Entry("new", data=b"n")])
    base.apply_diff("top", "base", io.BytesIO(blob))
    assert (base.diff_path("top") / "etc" / "b").exists()
