"""Progress events and spool files of copy_image: outside the shared lock, in the right place."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from criolib.image import ProgressEvent, SystemContext, copy_image
from criolib.image import _copy_spool as spool_module
from criolib.image._copy_layers import Reporter
from criolib.storage import Store
from criolib.testing import TestImages, require_root
from tests.image.copy_support import open_test_store, storage_name, write_policy

LAYER = {"digest": "sha256:" + "a" * 64, "size": 3}


def test_a_slow_callback_does_not_hold_up_other_threads() -> None:
    entered, release = threading.Event(), threading.Event()
    seen: list[int | None] = []

    def callback(event: ProgressEvent) -> None:
        seen.append(event.index)
        if event.index == 0:
            entered.set()
            release.wait(10)

    report = Reporter(callback)
    first = threading.Thread(target=report, args=("started", LAYER, 0))
    first.start()
    assert entered.wait(10)
    # The callback is busy in `first`: another thread's events queue up at once.
    other = threading.Thread(target=lambda: [report("started", LAYER, i) for i in (1, 2)])
    other.start()
    other.join(2)
    assert not other.is_alive(), "reporting blocked behind a running callback"
    assert seen == [0]
    release.set()
    first.join(10)
    report.flush()
    assert seen == [0, 1, 2]  # in order, one at a time, all before flush returned


@pytest.fixture
def spool_dirs(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    made: list[str | None] = []
    real = tempfile.TemporaryFile

    def recording(*args: Any, dir: str | Path | None = None, **kwargs: Any) -> Any:
        made.append(None if dir is None else str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(spool_module.tempfile, "TemporaryFile", recording)
    return made


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


@pytest.mark.integration
def test_spool_files_go_to_the_store_staging_area_or_spool_dir(
        criolib_test_images: TestImages, store: Store, tmp_path: Path,
        spool_dirs: list[str | None]) -> None:
    source = f"oci:{criolib_test_images.layout}:multilayer"
    policy = write_policy(tmp_path)
    copy_image(source, storage_name(store, "localhost/spool:1"), policy=policy)
    assert spool_dirs and set(spool_dirs) == {str(Path(store.graphroot) / "staging")}
    spool_dirs.clear()
    copy_image(source, f"oci:{tmp_path / 'out'}:x", policy=policy)
    assert spool_dirs and set(spool_dirs) == {None}
    spool_dirs.clear()
    mine = tmp_path / "spool"
    mine.mkdir()
    copy_image(source, f"oci:{tmp_path / 'out2'}:x", policy=policy,
               ctx=SystemContext(spool_dir=mine))
    assert spool_dirs and set(spool_dirs) == {str(mine)}
