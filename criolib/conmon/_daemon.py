"""criolib's monitor process: start-up and command line (stdlib only).

docs/conmon-design.md "criolib monitor wire protocol", "CRI log format" and
"Lifetime". The client runs ``daemon_argv(...)`` with the group lock held and a sync
pipe on ``--sync-fd``; :func:`main` double-forks (a new session between), and the
grandchild becomes a child subreaper, binds the control socket and writes
``ready <pid>\\n`` (or ``error <message>\\n``) to the pipe. It then serves in one
selector loop (:mod:`criolib.conmon._daemon_loop`) until it is idle.

Memory is the point of the design (a pod of 10 containers well under 15 MB), so the
monitor imports the stdlib's lean core only: no typing, logging, subprocess, pathlib or
attrs. :data:`BOOTSTRAP` even puts empty stand-ins for the ``criolib`` and
``criolib.conmon`` packages in ``sys.modules``, because their ``__init__`` modules set up
logging, which the daemon (writing its diagnostics to stderr) does not need.
"""

from __future__ import annotations

import contextlib
import os
import signal

from criolib.conmon._daemon_loop import Loop
from criolib.conmon._daemon_proc import become_subreaper, describe, diag
from criolib.conmon._wire import bind_seqpacket

__all__ = ["BOOTSTRAP", "daemon_argv", "main"]

#: The ``python -c`` program: argv[1] is criolib's parent directory, the rest is
#: :func:`main`'s command line.
BOOTSTRAP = (
    "import sys\n"
    "p = sys.argv[1]\n"
    "sys.path.insert(0, p)\n"
    "for n in ('criolib', 'criolib.conmon'):\n"
    "    m = type(sys)(n)\n"
    "    m.__path__ = [p + '/' + n.replace('.', '/')]\n"
    "    sys.modules[n] = m\n"
    "from criolib.conmon._daemon import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)

_USAGE = "usage: --socket PATH --lock PATH --sync-fd N [--idle-exit SECONDS]"


def daemon_argv(python: str, *, socket: str, lock: str, sync_fd: int,
                idle_exit: float = 1.0) -> list[str]:
    """The command line that starts a monitor process (isolated, no site packages)."""
    here = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.dirname(os.path.dirname(here))
    return [python, "-I", "-S", "-c", BOOTSTRAP, parent, "--socket", socket, "--lock", lock,
            "--sync-fd", str(sync_fd), "--idle-exit", repr(float(idle_exit))]


def _parse(argv: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name not in ("--socket", "--lock", "--sync-fd", "--idle-exit"):
            raise ValueError(f"unknown argument {arg!r}; {_USAGE}")
        if not eq:
            value = next(it, "")
        if not value:
            raise ValueError(f"{name} needs a value; {_USAGE}")
        options[name[2:]] = value
    for name in ("socket", "lock", "sync-fd"):
        if name not in options:
            raise ValueError(f"--{name} is required; {_USAGE}")
    return options


def _tell(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, line.encode(errors="replace"))


def main(argv: list[str]) -> int:
    """Start the monitor process (double fork) and serve; the exit code.

    The process the caller started returns 0 once its child has forked the daemon.
    """
    sync_fd = -1
    try:
        options = _parse(argv)
        sync_fd = int(options["sync-fd"])
        idle_exit = float(options.get("idle-exit", "1.0"))
        if not idle_exit >= 0:
            raise ValueError(f"--idle-exit must be >= 0, not {idle_exit}")
        os.set_inheritable(sync_fd, False)
    except (ValueError, OSError) as exc:
        diag(f"bad command line: {exc}")
        if sync_fd >= 0:
            _tell(sync_fd, f"error bad command line: {exc}\n")
        return 2
    child = os.fork()
    if child:
        os.close(sync_fd)
        os.waitpid(child, 0)
        return 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException:
        os._exit(1)
    try:
        loop = _setup(options["socket"], options["lock"], idle_exit)
    except Exception as exc:
        diag(f"cannot start: {describe(exc)}")
        _tell(sync_fd, f"error {exc}\n")
        os._exit(1)
    _tell(sync_fd, f"ready {os.getpid()}\n")
    os.close(sync_fd)
    diag(f"serving {options['socket']}")
    return loop.run()


def _spare_from_oom_killer() -> None:
    """Write -1000 to ``/proc/self/oom_score_adj``, as conmon does: the OOM killer then
    spares the monitor, which must outlive its containers to record their exits.

    Lowering it needs CAP_SYS_RESOURCE; without it (EACCES/EPERM) we run at the score
    we got, silently.
    """
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except PermissionError:
        return
    try:
        os.write(fd, b"-1000")
    except PermissionError:
        pass
    finally:
        os.close(fd)


def _setup(socket_path: str, lock_path: str, idle_exit: float) -> Loop:
    become_subreaper()
    _spare_from_oom_killer()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    socket_path = os.path.abspath(socket_path)
    listener = bind_seqpacket(socket_path, mode=0o600)
    # Hold no directory busy (requests carry absolute paths).
    os.chdir("/")
    return Loop(listener, socket_path, lock_fd, idle_exit)
