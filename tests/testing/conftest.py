"""Fixtures shared by the test bed's own tests."""

from __future__ import annotations

import pytest

from criolib.testing import TestImages, build_test_images

#: The large image at a scale a unit test can afford.
SMALL_LARGE = {"large": True, "large_size": 2 << 20, "large_files": 300, "large_layers": 2}


@pytest.fixture(scope="session")
def small_large_images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    """Every test image plus ``large`` at 2 MiB in 300 files over 2 layers."""
    return build_test_images(tmp_path_factory.mktemp("small-large"), **SMALL_LARGE)  # type: ignore[arg-type]
