"""Exit and OOM files (conmon's formats) and the memory cgroup's oom_kill counter.

docs/conmon-design.md "Run directory layout": ``oom`` before persist ``exit`` before
``exit_dir/<id>``; cgroup v1 ``memory.oom_control`` and v2 ``memory.events``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from criolib.conmon._exitfile import (
    memory_cgroup_dir,
    oom_kill_count,
    read_exit_file,
    write_exit_files,
)


def test_exit_files_in_order_with_oom(tmp_path: Path) -> None:
    persist = tmp_path / "persist"
    persist.mkdir()
    exit_file = tmp_path / "exit-id"
    write_exit_files(str(exit_file), str(persist), 137, 1_700_000_000_123_456_789, True)
    assert exit_file.read_bytes() == b"137"
    assert (persist / "exit").read_bytes() == b"137"
    assert (persist / "oom").read_bytes() == b""
    assert read_exit_file(str(exit_file)) == (137, 1_700_000_000_123_456_789)
    # The oom file is written before the exit files.
    assert (persist / "oom").stat().st_ctime_ns <= exit_file.stat().st_ctime_ns
    assert sorted(os.listdir(tmp_path)) == ["exit-id", "persist"]  # no temporaries


def test_a_missing_persist_dir_does_not_cost_the_exit_file(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit-id"
    with pytest.raises(FileNotFoundError):
        write_exit_files(str(exit_file), str(tmp_path / "removed"), 3, 1, True)
    assert exit_file.read_bytes() == b"3"


def test_an_unwritable_exit_dir_is_reported_after_the_persist_files(tmp_path: Path) -> None:
    persist = tmp_path / "persist"
    persist.mkdir()
    with pytest.raises(FileNotFoundError):
        write_exit_files(str(tmp_path / "nodir" / "id"), str(persist), 0, 1, False)
    assert (persist / "exit").read_bytes() == b"0"


def _fake_proc(root: Path, pid: int, text: str) -> str:
    (root / "proc" / str(pid)).mkdir(parents=True)
    (root / "proc" / str(pid) / "cgroup").write_text(text)
    return str(root / "proc")


def test_cgroup_v1_memory_controller(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, 42, "12:pids:/pod/ctr\n"
                      "4:memory:/pod/ctr\n1:name=systemd:/pod/ctr\n0::/pod/ctr\n")
    cg = tmp_path / "cgroup"
    (cg / "memory" / "pod" / "ctr").mkdir(parents=True)
    (cg / "memory" / "pod" / "ctr" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    found = memory_cgroup_dir(42, proc_root=proc, cgroup_root=str(cg))
    assert found == f"{cg}/memory/pod/ctr"
    assert oom_kill_count(found) == 2


@pytest.mark.parametrize("hybrid", [False, True])
def test_cgroup_v2_memory_events(tmp_path: Path, hybrid: bool) -> None:
    proc = _fake_proc(tmp_path, 7, "0::/kubepods/ctr\n")
    cg = tmp_path / "cgroup"
    base = cg / "unified" if hybrid else cg
    (base / "kubepods" / "ctr").mkdir(parents=True)
    (base / "kubepods" / "ctr" / "memory.events").write_text(
        "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
    found = memory_cgroup_dir(7, proc_root=proc, cgroup_root=str(cg))
    assert found == str(base / "kubepods" / "ctr")
    assert oom_kill_count(found) == 1


def test_no_memory_cgroup(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, 9, "0::/gone\n")
    assert memory_cgroup_dir(9, proc_root=proc, cgroup_root=str(tmp_path)) is None
    assert memory_cgroup_dir(10, proc_root=proc, cgroup_root=str(tmp_path)) is None
    assert oom_kill_count(None) is None
    assert oom_kill_count(str(tmp_path)) is None
