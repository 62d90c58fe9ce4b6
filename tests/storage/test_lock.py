"""StoreLock: shared/exclusive across processes, reentrant per thread, write generations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage import LockTimeout, StorageError, Store, StoreLock

_HOLDER = textwrap.dedent("""
    import sys
    from criolib.storage import StoreLock
    lock = StoreLock(sys.argv[1])
    with (lock.exclusive() if sys.argv[2] == "exclusive" else lock.shared()):
        if len(sys.argv) > 3:
            lock.bump()
        print("held", flush=True)
        sys.stdin.readline()
""")


class Holder:
    """A child process holding the lock until told to let go (or killed)."""

    def __init__(self, path: Path, mode: str, *, bump: bool = False) -> None:
        argv = [sys.executable, "-c", _HOLDER, str(path), mode, *(["bump"] if bump else [])]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(10) == 0

    @staticmethod
    def try_lock(path: Path) -> str:
        """"free" or "busy": whether another process can take the lock exclusively now."""
        code = ("import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR)\n"
                "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                "except OSError: print('busy')\nelse: print('free')")
        return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, check=True).stdout.strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "storage.lock"


@pytest.fixture
def lock(lock_path: Path) -> Iterator[StoreLock]:
    lk = StoreLock(lock_path)
    yield lk
    lk.close()


def test_exclusive_excludes_other_processes(lock: StoreLock, lock_path: Path) -> None:
    holder = Holder(lock_path, "exclusive")
    try:
        for take in (lock.exclusive, lock.shared):
            with pytest.raises(LockTimeout) as info, take(timeout=0.1):
                pass
            assert str(lock_path) in str(info.value)
            assert isinstance(info.value, StorageError) and isinstance(info.value, TimeoutError)
            assert info.value.path == lock_path
    finally:
        holder.release()
    with lock.exclusive(timeout=1):
        pass


def test_a_timed_wait_gets_the_lock_when_it_frees(lock: StoreLock, lock_path: Path) -> None:
    holder = Holder(lock_path, "exclusive")
    threading.Timer(0.2, holder.release).start()
    start = time.monotonic()
    with lock.exclusive(timeout=10):
        assert 0.1 < time.monotonic() - start < 5
        assert Holder.try_lock(lock_path) == "busy"  # and it really is held here
    assert Holder.try_lock(lock_path) == "free"


def test_readers_share_and_writers_wait(lock: StoreLock, lock_path: Path) -> None:
    holder = Holder(lock_path, "shared")
    try:
        with lock.shared(timeout=1):
            pass  # two readers at once
        with pytest.raises(LockTimeout), lock.exclusive(timeout=0.1):
            pass
    finally:
        holder.release()


def test_a_killed_holder_leaves_no_stale_lock(lock: StoreLock, lock_path: Path) -> None:
    holder = Holder(lock_path, "exclusive")
    holder.kill()
    start = time.monotonic()
    with lock.exclusive(timeout=5):
        pass
    assert time.monotonic() - start < 1


def test_reentrant_within_a_thread(lock: StoreLock) -> None:
    with lock.exclusive():
        with lock.exclusive(), lock.shared():
            assert lock.held_exclusive  # a writer may read
        assert lock.held_exclusive
    assert not lock.held
    with lock.shared(), lock.shared():
        assert lock.held and not lock.held_exclusive
        with pytest.raises(RuntimeError, match="upgrade"), lock.exclusive():
            pass
    assert not lock.held


def test_threads_exclude_each_other(lock: StoreLock) -> None:
    inside = 0
    worst = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, worst
        for _ in range(20):
            with lock.exclusive():
                with guard:
                    inside += 1
                    worst = max(worst, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert worst == 1


def test_thread_timeout_while_another_thread_writes(lock: StoreLock) -> None:
    entered, leave = threading.Event(), threading.Event()

    def writer() -> None:
        with lock.exclusive():
            entered.set()
            leave.wait(5)

    t = threading.Thread(target=writer)
    t.start()
    entered.wait(5)
    try:
        with pytest.raises(LockTimeout), lock.shared(timeout=0.05):
            pass
    finally:
        leave.set()
        t.join()


def test_generation_moves_with_each_write(lock: StoreLock, lock_path: Path) -> None:
    with lock.shared():
        first = lock.generation()
    with lock.exclusive():
        second = lock.bump()
        assert lock.generation() == second != first
    other = StoreLock(lock_path)  # another open file: what another process would see
    with other.shared():
        assert other.generation() == second
    Holder(lock_path, "exclusive", bump=True).release()  # a writer in another process
    with other.shared():
        third = other.generation()
    assert third != second
    assert int(third.split()[0]) == int(second.split()[0]) + 1
    other.close()
    with pytest.raises(RuntimeError, match="exclusive"):
        lock.bump()
    with pytest.raises(RuntimeError, match="held"):
        lock.generation()


def test_a_forked_child_gets_its_own_lock(lock: StoreLock) -> None:
    with lock.exclusive():
        pid = os.fork()
        if pid == 0:  # the child: the parent's flock must still exclude it
            code = 1
            try:
                with lock.exclusive(timeout=0.1):
                    code = 2
            except LockTimeout:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.held_exclusive  # and the child's attempt did not unlock the parent


def test_close_refuses_while_held(lock: StoreLock) -> None:
    with lock.shared(), pytest.raises(RuntimeError, match="held"):
        lock.close()


def test_store_calls_time_out_naming_the_lock(tmp_path: Path) -> None:
    with Store(tmp_path / "g", tmp_path / "r", "vfs", lock_timeout=0.2) as store:
        holder = Holder(tmp_path / "g" / "storage.lock", "exclusive")
        try:
            with pytest.raises(LockTimeout, match=r"storage\.lock"):
                store.layers()
        finally:
            holder.release()
        assert store.layers() == []
