"""verify_layer / repair_layer on overlay: lost short links and link files (review item 13).

Children name their parents by ``l/<short>`` links; a lost one makes every child fail
to mount. containers/storage recreates them from each layer's ``link`` file at
start-up; the driver's :meth:`repair_layer` does the same for the store's repair().
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from criolib.storage._drivers import OverlayDriver, get_driver
from criolib.storage._errors import InvalidLayerID, MountError
from tests.storage.conftest import require_root

pytestmark = pytest.mark.usefixtures("_need_root")


@pytest.fixture
def _need_root() -> None:
    require_root("overlay mounts")


@pytest.fixture
def chain(graphroot: Path) -> OverlayDriver:
    """base <- mid <- ctr, each with a file of its own."""
    driver = get_driver("overlay", graphroot / "overlay")
    assert isinstance(driver, OverlayDriver)
    parent = None
    for name in ("base", "mid", "ctr"):
        (driver.create(name, parent) / f"{name}.txt").write_text(name)
        parent = name
    return driver


def _short(driver: OverlayDriver, layer_id: str) -> str:
    return (driver.home / layer_id / "link").read_text()


def _mounts_whole(driver: OverlayDriver, layer_id: str) -> list[str]:
    merged = driver.mount(layer_id)
    try:
        return sorted(os.listdir(merged))
    finally:
        driver.unmount(layer_id)


def test_sound_layers_have_no_problems(chain: OverlayDriver) -> None:
    assert [chain.verify_layer(x) for x in ("base", "mid", "ctr")] == [[], [], []]
    assert chain.repair_layer("ctr") == []


def test_a_lost_short_link_is_reported_and_recreated(chain: OverlayDriver) -> None:
    short = _short(chain, "base")
    os.unlink(chain.home / "l" / short)
    problems = chain.verify_layer("base")
    assert len(problems) == 1 and f"l/{short}" in problems[0] and "missing" in problems[0]
    # Its children name it in their lower files: they report it too.
    assert any(f"l/{short}" in p for p in chain.verify_layer("mid"))
    assert any(f"l/{short}" in p for p in chain.verify_layer("ctr"))
    done = chain.repair_layer("base")
    assert len(done) == 1 and short in done[0]
    assert os.readlink(chain.home / "l" / short) == "../base/diff"
    assert [chain.verify_layer(x) for x in ("base", "mid", "ctr")] == [[], [], []]
    assert _mounts_whole(chain, "ctr") == ["base.txt", "ctr.txt", "mid.txt"]


def test_repairing_a_child_recreates_its_parents_links(chain: OverlayDriver) -> None:
    for layer_id in ("base", "mid"):
        os.unlink(chain.home / "l" / _short(chain, layer_id))
    done = chain.repair_layer("ctr")
    assert len(done) == 2
    assert chain.verify_layer("ctr") == [] and chain.verify_layer("base") == []


def test_mount_recreates_a_lost_parent_link_itself(
    chain: OverlayDriver, caplog: pytest.LogCaptureFixture
) -> None:
    os.unlink(chain.home / "l" / _short(chain, "mid"))
    assert _mounts_whole(chain, "ctr") == ["base.txt", "ctr.txt", "mid.txt"]
    assert "short link" in caplog.text
    assert chain.verify_layer("mid") == []


def test_a_lost_link_file_is_recovered_from_its_short_link(chain: OverlayDriver) -> None:
    short = _short(chain, "mid")
    os.unlink(chain.home / "mid" / "link")
    assert any("link" in p for p in chain.verify_layer("mid"))
    chain.repair_layer("mid")
    assert _short(chain, "mid") == short  # the name the children use
    assert chain.verify_layer("mid") == [] and chain.verify_layer("ctr") == []


def test_both_lost_gives_a_new_name_and_the_children_still_say_so(chain: OverlayDriver) -> None:
    short = _short(chain, "mid")
    os.unlink(chain.home / "mid" / "link")
    os.unlink(chain.home / "l" / short)
    chain.repair_layer("mid")
    new = _short(chain, "mid")
    assert new != short and re.fullmatch(r"[A-Z2-7]{26}", new)
    assert chain.verify_layer("mid") == []
    # Nothing records which layer the old name meant: the child stays broken, and says so.
    assert any(f"l/{short}" in p for p in chain.verify_layer("ctr"))
    chain.repair_layer("ctr")
    with pytest.raises(MountError):
        chain.mount("ctr")


def test_a_missing_work_dir_is_remade(chain: OverlayDriver) -> None:
    os.rmdir(chain.home / "ctr" / "work")
    assert any("work" in p for p in chain.verify_layer("ctr"))
    chain.repair_layer("ctr")
    assert chain.verify_layer("ctr") == []
    assert "ctr.txt" in _mounts_whole(chain, "ctr")


def test_lost_files_cannot_be_repaired(chain: OverlayDriver) -> None:
    os.rename(chain.home / "mid" / "diff", chain.home / "mid" / "gone")
    assert any("diff" in p and "gone" in p for p in chain.verify_layer("mid"))
    assert chain.repair_layer("mid") == []
    assert chain.verify_layer("mid") != []


def test_unknown_and_bad_ids(chain: OverlayDriver) -> None:
    assert chain.verify_layer("nope") == [f"layer directory {chain.home / 'nope'} is missing"]
    with pytest.raises(InvalidLayerID):
        chain.verify_layer("../etc")
    with pytest.raises(InvalidLayerID):
        chain.repair_layer("l")
