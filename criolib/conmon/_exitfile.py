"""Exit and OOM files, in conmon's formats: written by the monitor, read by anyone.

Stdlib only (the monitor process imports it). ``exit_dir/<id>`` holds the exit code in
decimal without a newline, its mtime the exit time; the persist dir gets ``exit`` (the
same) and an empty ``oom`` when the OOM killer struck, written before the exit files so a
reader that sees an exit also sees the OOM.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["memory_cgroup_dir", "oom_kill_count", "read_exit_file", "write_exit_files"]


def _write_atomic(path: str, data: bytes, when_ns: int) -> None:
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(tmp, ns=(when_ns, when_ns))
    os.rename(tmp, path)
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write_exit_files(exit_file: str, persist_dir: str | None, exit_code: int, when_ns: int,
                     oom: bool) -> None:
    """Record a container's exit: ``oom`` first, then persist ``exit``, then ``exit_file``.

    Each file is tried on its own, in that order: a persist dir that cannot be written
    (removed, full) must not cost the exit file, which is what waiters and the
    CRI read. The first ``OSError`` is raised after all were tried (the monitor logs it).
    """
    data = str(exit_code).encode()
    targets: list[tuple[str, bytes]] = []
    if persist_dir is not None:
        if oom:
            targets.append((os.path.join(persist_dir, "oom"), b""))
        targets.append((os.path.join(persist_dir, "exit"), data))
    targets.append((exit_file, data))
    first: OSError | None = None
    for path, content in targets:
        try:
            _write_atomic(path, content, when_ns)
        except OSError as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


def read_exit_file(path: str) -> tuple[int, int] | None:
    """(exit code, mtime in ns) from an exit file; None when there is none (yet).

    A file that does not hold a decimal integer raises ValueError naming it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        return int(data.strip()), st.st_mtime_ns
    except ValueError:
        raise ValueError(f"exit file {path} does not hold an exit code: {data[:32]!r}") from None


def memory_cgroup_dir(pid: int, *, proc_root: str = "/proc",
                      cgroup_root: str = "/sys/fs/cgroup") -> str | None:
    """The memory cgroup directory of ``pid`` (v1 memory controller, else v2), or None.

    ``proc_root`` and ``cgroup_root`` are where procfs and the cgroup mounts are (tests
    point them at fake trees). v1: the ``memory`` line of ``/proc/<pid>/cgroup`` under
    ``<cgroup_root>/memory``; v2: the ``0::`` line under ``<cgroup_root>/unified``
    (hybrid) or ``<cgroup_root>`` (unified), where ``memory.events`` exists.
    """
    try:
        with open(f"{proc_root}/{pid}/cgroup", "rb") as f:
            lines = f.read().decode().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            candidate = f"{cgroup_root}/memory{path}"
            if os.path.isdir(candidate):
                return candidate
        if hierarchy == "0" and controllers == "":
            v2 = path
    if v2 is not None:
        for base in (f"{cgroup_root}/unified", cgroup_root):
            candidate = f"{base}{v2}"
            if os.path.exists(f"{candidate}/memory.events"):
                return candidate
    return None


def oom_kill_count(cgroup_dir: str | None) -> int | None:
    """The ``oom_kill`` counter of a memory cgroup (v1 memory.oom_control, v2 memory.events)."""
    if cgroup_dir is None:
        return None
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError, ValueError), \
                open(os.path.join(cgroup_dir, name), "rb") as f:
            for line in f.read().decode().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return None
