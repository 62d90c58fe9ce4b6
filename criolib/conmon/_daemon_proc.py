"""Process and socket helpers of criolib's monitor process (stdlib only).

Spawning the runtime (``posix_spawn`` in a new session, stdio by ``dup2``), decoding
a ``waitid`` status into a shell-style exit code, the runtime's console socket (the
pty master comes back with SCM_RIGHTS, runtime-spec v1.2 runtime.md / runc's
``--console-socket``), and diagnostic lines on stderr (the client points it at
``monitors/<group>.log``).
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import time

__all__ = [
    "ConsoleSocket",
    "become_subreaper",
    "describe",
    "diag",
    "exit_code_of",
    "is_str_dict",
    "is_str_list",
    "open_devnull",
    "short_address",
    "spawn",
]

_SUN_PATH_MAX = 107
_PR_SET_CHILD_SUBREAPER = 36
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGCHLD)


def diag(message: str) -> None:
    """One diagnostic line on stderr (the group's log); never raises."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with contextlib.suppress(OSError):
        os.write(2, f"{stamp} criolib-monitor[{os.getpid()}]: {message}\n".encode(
            errors="replace"))


def describe(exc: BaseException) -> str:
    """``exc`` and where it was raised (file:line), without importing traceback."""
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{exc!r}{where}"


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our children (the init, after the
    runtime's create exits) become our children, so waitid gets their status."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def open_devnull() -> int:
    """A read-write /dev/null descriptor (close-on-exec)."""
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def spawn(argv: list[str], env: dict[str, str], stdin: int, stdout: int, stderr: int) -> int:
    """Run ``argv`` in a new session (its pgid is its pid) with the given stdio; its pid.

    ``OSError`` when the program cannot be executed (posix_spawn reports exec errors).
    """
    actions = [(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
               (os.POSIX_SPAWN_DUP2, stderr, 2)]
    # The monitor ignores SIGINT/SIGTERM/SIGHUP/SIGPIPE; ignored dispositions survive
    # exec, and a container must get them at their defaults.
    return os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True,
                           setsigdef=_DEFAULT_SIGNALS)


def exit_code_of(info: object) -> int:
    """The shell-style exit code of a ``waitid`` result: the code, or 128+signal."""
    code = getattr(info, "si_code", None)
    status = int(getattr(info, "si_status", 0))
    if code == os.CLD_EXITED:
        return status
    return 128 + status


def short_address(path: str) -> tuple[str, int | None]:
    """``path``, or its ``/proc/self/fd/N/name`` alias when too long for sun_path.

    The second item is the directory fd to close once bound or connected.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path, None
    directory, name = os.path.split(path)
    dirfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dirfd}/{name}", dirfd


def is_str_list(value: object) -> bool:
    """Whether ``value`` is a non-empty list of strings (an argv)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def is_str_dict(value: object) -> bool:
    """Whether ``value`` maps strings to strings (an environment)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


class ConsoleSocket:
    """The runtime's ``--console-socket``: it connects and sends the pty master fd.

    Bound (SOCK_STREAM, 0600) before the runtime is spawned; :meth:`poll` accepts and
    receives without blocking, so the selector loop calls it whenever the listener
    or the connection is readable, and once more when the runtime has exited.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.master: int | None = None
        self.conn: socket.socket | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        address, dirfd = short_address(path)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            old = os.umask(0o177)
            try:
                sock.bind(address)
            finally:
                os.umask(old)
            sock.listen(4)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        finally:
            if dirfd is not None:
                os.close(dirfd)
        self.listener: socket.socket | None = sock

    def poll(self) -> bool:
        """Accept/receive what is there; True once the master fd has arrived."""
        if self.master is not None:
            return True
        if self.conn is None and self.listener is not None:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return False
            conn.setblocking(False)
            self.conn = conn
        if self.conn is None:
            return False
        try:
            _, ancdata, _, _ = self.conn.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        except (BlockingIOError, InterruptedError):
            return False
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        if not fds:
            # The runtime hung up without a fd: nothing more will come.
            self.close()
            return False
        self.master = fds[0]
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(self.master, False)
        self.close()
        return True

    def fds(self) -> list[socket.socket]:
        """The sockets to watch for readability now."""
        return [s for s in (self.listener, self.conn) if s is not None]

    def close(self) -> None:
        """Close the listener and connection and remove the socket file (not the fd)."""
        for sock in (self.listener, self.conn):
            if sock is not None:
                sock.close()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.listener = self.conn = None
