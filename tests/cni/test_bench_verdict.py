"""bench/cni_add_del.py: its exit status follows the target ratio."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cni_add_del.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cni_add_del", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exit_status_fails_at_or_over_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    assert bench.verdict(1.05, []) == 0
    assert bench.verdict(1.10, []) == 1
    assert bench.verdict(1.5, []) == 1
    assert "FAIL: ratio 1.500" in capsys.readouterr().out
    assert bench.verdict(1.0, [Path("left")]) == 1
