"""docs/storage.md's runnable example, examples/storage_tour.py, runs and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from criolib.testing import require_binaries

from .conftest import DRIVERS, require_root_for

TOUR = Path(__file__).parent.parent.parent / "examples" / "storage_tour.py"
DOC = Path(__file__).parent.parent.parent / "docs" / "storage.md"


@pytest.mark.integration
@pytest.mark.parametrize("driver", DRIVERS)
def test_storage_tour_runs(driver: str) -> None:
    require_root_for(driver)
    require_binaries("busybox")
    proc = subprocess.run([sys.executable, str(TOUR), driver], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("built the test image testbed/multilayer:latest (3 layers)")
    assert lines[1].endswith(f"with the {driver} driver")
    assert all(x.startswith("stored layer ") and "bytes of tar" in x for x in lines[2:5])
    assert lines[5].startswith("created image ")
    assert "keep.txt says 'kept from layer 1'" in proc.stdout
    assert "the container layer's diff: data/.wh.keep.txt, data/hello.txt" in lines
    assert "check: clean" in lines
    assert "deleted the container, then the image and its 3 layers" in lines
    assert lines[-1] == "tour finished"


def test_the_doc_page_shows_the_tour() -> None:
    text = DOC.read_text()
    assert "examples/storage_tour.py" in text
    assert "check: clean" in text  # the output shown is the output it prints
