"""Shared fixtures of tests/conmon: real containers under both monitor backends.

Every fixture that runs containers needs root, runc and crun, and (for the
``"conmon"`` backend) the conmon binary; without them the test skips, or fails under
``CRIOLIB_REQUIRE_INTEGRATION=1``.

``busybox_rootfs`` (session)
    A root filesystem unpacked from the test bed's ``busybox`` image (busybox-static
    and its applets). Read only: bundles copy it.
``runtime`` (parametrised: ``"runc"``, ``"crun"``)
    A :class:`~criolib.runtime_spec.RuntimeClient` whose ``--root`` is in the test's
    tmp dir; at the end every container left in that root is force-deleted.
``make_bundle``
    ``make_bundle(cmd, *, terminal=False, configure=None, name=None) -> Path``: a new
    bundle directory ``<tmp>/bundles/<name or "b">.<n>`` (a copy of ``busybox_rootfs``
    and a config.json written by :class:`~criolib.runtime_spec.Generator`, CRI-O's
    default profile). ``cmd`` is a shell script (run as ``/bin/sh -c cmd``) or an argv
    list; ``configure(gen)`` edits the spec before it is saved (memory limits,
    namespaces...). Use the path it returns; each call makes a new directory. The
    root filesystems are removed at the end of the test.
``monitor_backend`` / ``monitor`` (parametrised: ``"criolib"``, ``"conmon"``)
    The backend name, and ``open_monitor(name, run_dir=<tmp>/run)``. A test meant for
    one backend narrows it with
    ``@pytest.mark.parametrize("monitor_backend", ["criolib"], indirect=True)``, a
    module for one backend by overriding ``monitor_backend`` with a plain fixture.
``monitor_run_dir``
    The run dir the ``monitor`` fixture uses (a second monitor object on the same dir
    finds the same containers).
``containers``
    A :class:`Containers` factory bound to ``monitor`` and ``runtime``:
    ``containers.create(cmd, stdin=..., terminal=..., group=..., start=True)`` writes
    a bundle, creates the container under the monitor, starts it with the runtime and
    returns a :class:`Ctr` (id, config, :class:`~criolib.conmon.Created`, log_path,
    exit_file); ``containers.config(cmd, ...)`` only builds the ContainerConfig (logs
    in ``containers.log_dir``, exit files in ``containers.exit_dir``) and
    ``containers.create_config(config)`` creates from one; ``containers.wait(ctr)`` is
    ``monitor.wait`` that fails the test on a timeout; ``containers.adopt(id,
    monitor_pid)`` tracks a container made some other way. At the end it
    force-deletes every tracked container with the runtime, lets the monitor record
    the exit, forgets it, and then checks that no monitor process of the test is left
    running: every monitor pid it saw (``Created.monitor_pid``), and any process
    whose command line, cwd or open files point into the test's tmp dir. A monitor
    still alive after 10 s is killed and the test errors in teardown.

Container ids are ``cm<pytest pid>-<n>`` (:func:`new_container_id`): unique on the
machine, since runc and crun name cgroups after them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.conmon import (
    ContainerConfig,
    Created,
    ExitStatus,
    Monitor,
    MonitorError,
    UnknownContainer,
    open_monitor,
)
from criolib.runtime_spec import Generator, RuntimeClient, RuntimeSpecError
from criolib.testing import TestImages, require_binaries, require_root, unpack_test_image

RUNTIMES = ["runc", "crun"]
MONITOR_BACKENDS = ["criolib", "conmon"]
#: How long teardown waits for a monitor to go once its containers are gone (the
#: criolib monitor idles 1 s before it exits).
MONITOR_EXIT_TIMEOUT = 10.0

_ids = itertools.count()

Configure = Callable[[Generator], object]


def new_container_id(prefix: str = "cm") -> str:
    """An id no other test (nor a parallel pytest run) uses."""
    return f"{prefix}{os.getpid()}-{next(_ids)}"


# -- images, runtimes, bundles -------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_rootfs(criolib_test_images: TestImages,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox test image unpacked once per session; bundles copy it."""
    require_root()
    return unpack_test_image(criolib_test_images, "busybox",
                             tmp_path_factory.mktemp("conmon-rootfs") / "rootfs")


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeClient]:
    """runc or crun with its state (``--root``) in the test's tmp dir."""
    require_root()
    require_binaries(request.param)
    client = RuntimeClient(request.param, root=tmp_path / f"{request.param}-root")
    yield client
    for state in client.list():
        with contextlib.suppress(RuntimeSpecError):
            client.delete(state.id, force=True)


MakeBundle = Callable[..., Path]


@pytest.fixture
def make_bundle(busybox_rootfs: Path, tmp_path: Path) -> Iterator[MakeBundle]:
    """Factory of bundles: ``make_bundle(cmd, *, terminal=False, configure=None, name=None)``."""
    bundles = tmp_path / "bundles"
    counter = itertools.count()

    def make(cmd: str | Sequence[str], *, terminal: bool = False,
             configure: Configure | None = None, name: str | None = None) -> Path:
        bundle = bundles / f"{name or 'b'}.{next(counter)}"
        bundle.mkdir(parents=True)
        # cp -a keeps what the image holds: symlinked applets, modes, owners.
        subprocess.run(["cp", "-a", str(busybox_rootfs), str(bundle / "rootfs")], check=True)
        gen = Generator()
        gen.set_root(str(bundle / "rootfs"))
        gen.set_args(["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd))
        gen.set_terminal(terminal)
        if configure is not None:
            configure(gen)
        gen.save(bundle)
        return bundle

    yield make
    # Teardown runs after the fixtures that use the bundles (containers) have deleted
    # their containers. The root filesystems go (2 MB each, and pytest keeps the tmp
    # dirs of three runs); config.json stays for a post-mortem.
    for rootfs in bundles.glob("*/rootfs"):
        shutil.rmtree(rootfs, ignore_errors=True)


# -- monitors ------------------------------------------------------------------------------


@pytest.fixture(params=MONITOR_BACKENDS)
def monitor_backend(request: pytest.FixtureRequest) -> str:
    """``"criolib"`` or ``"conmon"``."""
    name: str = request.param
    require_root()
    if name == "conmon":
        require_binaries("conmon")
    return name


@pytest.fixture
def monitor_run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def monitor(monitor_backend: str, monitor_run_dir: Path) -> Monitor:
    """The backend under test, on a run dir of the test's own."""
    return open_monitor(monitor_backend, run_dir=monitor_run_dir)


@attrs.define
class Ctr:
    """A container the :class:`Containers` factory made."""

    config: ContainerConfig
    created: Created

    @property
    def id(self) -> str:
        return self.config.container_id

    @property
    def log_path(self) -> Path:
        assert self.config.log_path is not None
        return self.config.log_path

    @property
    def exit_file(self) -> Path:
        return self.config.exit_dir / self.id


class Containers:
    """Creates containers under one monitor and one runtime, and cleans them all up."""

    def __init__(self, monitor: Monitor, runtime: RuntimeClient, make_bundle: MakeBundle,
                 tmp_path: Path) -> None:
        self.monitor = monitor
        self.runtime = runtime
        self.make_bundle = make_bundle
        self.tmp_path = tmp_path
        self.exit_dir = tmp_path / "exits"
        self.log_dir = tmp_path / "logs"
        self.exit_dir.mkdir(exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.ids: list[str] = []
        self.monitor_pidfds: dict[int, int] = {}

    def config(self, cmd: str | Sequence[str], *, container_id: str | None = None,
               terminal: bool = False, stdin: bool = False, stdin_once: bool = False,
               log: bool = True, group: str | None = None, log_size_max: int = -1,
               persist_dir: Path | None = None,
               configure: Configure | None = None) -> ContainerConfig:
        """A ContainerConfig for ``cmd`` on a new bundle (nothing is created)."""
        cid = container_id or new_container_id()
        bundle = self.make_bundle(cmd, terminal=terminal, configure=configure, name=cid)
        return ContainerConfig(
            container_id=cid, bundle=bundle, runtime=self.runtime, exit_dir=self.exit_dir,
            log_path=self.log_dir / f"{cid}.log" if log else None, terminal=terminal,
            stdin=stdin, stdin_once=stdin_once, log_size_max=log_size_max, group=group,
            persist_dir=persist_dir)

    def create(self, cmd: str | Sequence[str], *, start: bool = True, **kwargs: Any) -> Ctr:
        """Create (and by default start) a container running ``cmd``."""
        return self.create_config(self.config(cmd, **kwargs), start=start)

    def create_config(self, config: ContainerConfig, *, start: bool = True) -> Ctr:
        self.ids.append(config.container_id)
        created = self.monitor.create(config)
        self.track_monitor(created.monitor_pid)
        if start:
            self.runtime.start(config.container_id)
        return Ctr(config, created)

    def adopt(self, container_id: str, monitor_pid: int | None = None) -> None:
        """Clean up (and check the monitor of) a container made some other way."""
        self.ids.append(container_id)
        self.track_monitor(monitor_pid)

    def track_monitor(self, pid: int | None) -> None:
        if pid is None or pid in self.monitor_pidfds:
            return
        with contextlib.suppress(ProcessLookupError):
            self.monitor_pidfds[pid] = os.pidfd_open(pid)

    def wait(self, ctr: Ctr, timeout: float = 20.0) -> ExitStatus:
        """The container's exit, failing the test if it takes longer than ``timeout``."""
        status = self.monitor.wait(ctr.id, timeout)
        assert status is not None, f"container {ctr.id} did not exit within {timeout} s"
        return status

    # -- teardown ------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Delete, let the monitor record, forget; return what is still wrong."""
        problems: list[str] = []
        for cid in self.ids:
            with contextlib.suppress(RuntimeSpecError):
                self.runtime.delete(cid, force=True)
        for cid in self.ids:
            try:
                self.monitor.wait(cid, 10.0)
                self.monitor.forget(cid)
            except UnknownContainer:
                pass
            except MonitorError as exc:
                problems.append(f"cleaning up container {cid}: {type(exc).__name__}: {exc}")
        problems += self._reap_monitors()
        return problems

    def _reap_monitors(self) -> list[str]:
        deadline = time.monotonic() + MONITOR_EXIT_TIMEOUT
        left: list[str] = []
        for pid, fd in self.monitor_pidfds.items():
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                left.append(f"monitor pid {pid} still running {MONITOR_EXIT_TIMEOUT:g} s "
                            "after its containers were deleted")
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        self.monitor_pidfds.clear()
        while True:
            strays = processes_using(self.tmp_path)
            if not strays or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for pid, what in strays.items():
            left.append(f"process {pid} ({what}) still uses {self.tmp_path}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return left


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def processes_using(path: Path) -> dict[int, str]:
    """Processes (not this one) whose command line, cwd or open files are under ``path``."""
    base = os.path.realpath(path)
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        cmdline = _cmdline(pid)
        if base in cmdline:
            found[pid] = cmdline[:200]
            continue
        links: list[str] = []
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/cwd"))
        with contextlib.suppress(OSError):
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        if any(link == base or link.startswith(base + "/") for link in links) and cmdline:
            found[pid] = cmdline[:200]
    return found


@pytest.fixture
def containers(monitor: Monitor, runtime: RuntimeClient, make_bundle: MakeBundle,
               tmp_path: Path) -> Iterator[Containers]:
    """Containers under ``monitor`` x ``runtime``; all deleted and checked at the end."""
    factory = Containers(monitor, runtime, make_bundle, tmp_path)
    yield factory
    problems = factory.cleanup()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)
