"""Process plumbing of the OCI runtime client: running the runtime, and waiting.

The runtime client (:mod:`criolib.runtime_spec._runtime`) runs two kinds of command
through :class:`CommandRunner`:

- control commands (state, start, kill, delete, pause, resume, update, ps, list,
  features) go through :func:`criolib._exec.run`, which captures stdout and stderr;
  the runtime logs to that stderr;
- commands whose stdio *is the container's* (create, exec) cannot have stdout or
  stderr captured: :func:`spawn_and_wait` hands the caller's descriptors to the
  runtime and waits for it on a pidfd, and the runtime logs to a ``--log`` file.

Waiting for a container's init (:func:`wait_for_exit`) needs it to be our child;
:func:`child_subreaper` arranges that (see its docstring for why).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Self

from criolib import _exec
from criolib.errors import ExecError, ExecTimeout
from criolib.runtime_spec._errors import (
    BundleNotFound,
    ExitStatusUnavailable,
    InvalidArgument,
    RuntimeNotFound,
    RuntimeTimeout,
)
from criolib.runtime_spec._runtime_log import LogRecord, LogTap, diagnose, parse_log

__all__ = [
    "DEFAULT_PATH",
    "PACKAGES",
    "PASSED_ENV",
    "CommandRunner",
    "Stdio",
    "check_bundle",
    "check_id",
    "child_subreaper",
    "exit_code",
    "is_child_subreaper",
    "parent_pid",
    "resolve_binary",
    "scratch_base",
    "signal_arg",
    "signal_name",
    "signal_number",
    "spawn_and_wait",
    "wait_for_exit",
]

log = logging.getLogger("criolib.runtime_spec")

#: A container stdio stream: a file descriptor, a file object, or None for /dev/null.
Stdio = int | IO[Any] | None

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def exit_code(si_code: int, si_status: int) -> int:
    """A waitid result as a shell-style exit code: the status, or 128 + the signal.

    runc and crun report a container killed by a signal this way, and so does the
    CRI (137 for SIGKILL), so :meth:`RuntimeClient.run` and ``exec`` agree.
    """
    if si_code == os.CLD_EXITED:
        return si_status
    return 128 + si_status


def spawn_and_wait(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    pass_fds: Sequence[int] = (),
    timeout: float | None,
    on_timeout: Callable[[subprocess.Popen[bytes]], None] | None = None,
    what: str | None = None,
) -> int | None:
    """Run a runtime command whose stdio is the container's, and wait for it.

    Started by :func:`criolib._exec.spawn`, the audited helper. ``stdin``/
    ``stdout``/``stderr`` go to the runtime untouched (None is /dev/null): runc
    and crun pass their own stdio on to the container process. The runtime starts
    a session of its own, so a Ctrl-C meant for the caller does not reach it or
    the container; it gets no parent-death signal (it must outlive nothing, and a
    ``preexec_fn`` would cost the fast vfork path). Waiting blocks on a pidfd in
    a selector (no sleep-polling, MACHINE-NOTES.md). When ``timeout`` runs out,
    ``on_timeout(proc)`` is called (it must make the runtime exit, e.g. by
    killing its process group) and None is returned once the runtime is reaped;
    otherwise the runtime's return code (negative for a signal). A runtime that
    cannot be started raises :class:`~criolib.errors.ExecError`.
    """
    dev = subprocess.DEVNULL
    proc = _exec.spawn(
        argv,
        env=env,
        stdin=dev if stdin is None else stdin,
        stdout=dev if stdout is None else stdout,
        stderr=dev if stderr is None else stderr,
        pass_fds=pass_fds,
        pdeathsig=None,
        new_session=True,
        what=what,
    )
    if timeout is None:
        return proc.wait()  # blocks in waitpid(2); no polling without a timeout
    if _exec.wait_exit(proc, timeout):
        return proc.returncode
    if on_timeout is not None:
        on_timeout(proc)
    else:
        _kill_group(proc.pid)
    proc.wait()
    return None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: int | ctypes.c_void_p) -> int:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    result = int(_libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0),
                             ctypes.c_ulong(0)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def is_child_subreaper() -> bool:
    """Whether this process adopts its orphaned descendants (``PR_GET_CHILD_SUBREAPER``)."""
    value = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    return bool(value.value)


_subreaper_lock = threading.Lock()
_subreaper_users = 0
_subreaper_ours = False


@contextlib.contextmanager
def child_subreaper() -> Iterator[None]:
    """Be a child subreaper while the block runs, so container inits become our children.

    ``runc create`` / ``crun create`` exit once the container exists; its init,
    orphaned, is re-parented to the nearest subreaper ancestor, or to PID 1. Only
    a parent can collect an exit status (``waitid``); a pidfd on a non-child tells
    *that* it exited, not *how*. Being a subreaper (``PR_SET_CHILD_SUBREAPER``, as
    conmon and containerd-shim are) while ``create`` runs makes the init our child
    when the runtime exits; it stays ours after the flag is cleared, its pid cannot
    be reused until we reap it, and ``waitid`` yields its status.

    The flag is process-wide, so it is held only for the block, counted across
    threads, and left alone when the process was a subreaper already; an unrelated
    orphan adopted in that window becomes a zombie child nobody else would reap.
    """
    global _subreaper_users, _subreaper_ours  # noqa: PLW0603 - one flag per process
    with _subreaper_lock:
        if _subreaper_users == 0 and not is_child_subreaper():
            _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_void_p(1))
            _subreaper_ours = True
        _subreaper_users += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0 and _subreaper_ours:
                _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_void_p(0))
                _subreaper_ours = False


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` from /proc (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and ")"; the fields follow the last.
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_for_exit(pid: int, pidfd: int, *, timeout: float | None = None) -> int | None:
    """Reap child ``pid`` (through ``pidfd``) and return its exit code (128+N for signal N).

    Blocks in ``waitid`` (or, with a timeout, in a selector on the pidfd first).
    Returns None when ``timeout`` runs out; the process is then left as it is.
    Raises :class:`ExitStatusUnavailable` when ``pid`` is not this process's child.
    """
    if timeout is not None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            while not sel.select(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return None
    while True:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError as exc:
            raise ExitStatusUnavailable(
                f"process {pid} is not a child of this process (pid {os.getpid()}), so its "
                "exit status cannot be collected; was this process a child subreaper when "
                "the container was created?"
            ) from exc
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        if info is None:  # pragma: no cover - only with WNOHANG
            continue
        return exit_code(info.si_code, info.si_status)


#: The Debian package shipping each runtime, for RuntimeNotFound's message.
PACKAGES = {"runc": "runc", "crun": "crun", "youki": "youki", "krun": "crun"}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Passed through from the caller's environment when set: rootless runtimes keep their
# state under XDG_RUNTIME_DIR. Nothing else is: runc acts on NOTIFY_SOCKET and
# LISTEN_FDS, which would leak the caller's systemd plumbing into containers.
PASSED_ENV = ("XDG_RUNTIME_DIR",)


def resolve_binary(binary: str | os.PathLike[str]) -> Path:
    """The absolute path of runtime ``binary`` (a name on PATH, or a path).

    Raises :class:`RuntimeNotFound` naming the Debian package to install.
    """
    text = os.fspath(binary)
    name = Path(text).name
    package = PACKAGES.get(name)
    fix = (f"install Debian package {package!r}" if package
           else "install the package that ships it")
    found = shutil.which(text) if os.sep not in text else (
        text if os.access(text, os.X_OK) and Path(text).is_file() else None)
    if found is None:
        where = "on PATH" if os.sep not in text else "there or is not executable"
        raise RuntimeNotFound(f"OCI runtime {text!r} is not {where}: {fix}")
    return Path(found).absolute()


def check_id(container_id: str) -> str:
    """``container_id``, unless it is empty, not a string, or starts with "-".

    A leading "-" would be read as an option by both runtimes' parsers; the
    runtimes check the rest (runc: ``^[\\w+-.]+$``). Raises :class:`InvalidArgument`.
    """
    if not isinstance(container_id, str) or not container_id or container_id.startswith("-"):
        raise InvalidArgument(
            f"invalid container id {container_id!r}: it must be a non-empty string not "
            "starting with '-' (the runtime would read it as an option)")
    return container_id


def signal_number(sig: str | int, *, container_id: str | None = None) -> int:
    """``sig`` (``"SIGTERM"``, ``"term"``, ``"15"``, ``15``, ``"SIGRTMIN+3"``) as a number.

    signal(7) names with or without ``SIG``, and numbers from 1 to SIGRTMAX.
    Raises :class:`InvalidArgument` (naming ``container_id`` when given) otherwise.
    """
    where = f"container {container_id!r}: " if container_id else ""
    number: int | None = None
    if isinstance(sig, int) and not isinstance(sig, bool):
        number = int(sig)
    elif isinstance(sig, str):
        text = sig.strip().upper()
        name = text if text.startswith("SIG") else f"SIG{text}"
        rt = re.fullmatch(r"SIGRT(MIN|MAX)(?:([+-])(\d+))?", name)
        if text.isdigit():
            number = int(text)
        elif rt:
            base = signal.SIGRTMIN if rt.group(1) == "MIN" else signal.SIGRTMAX
            number = int(base) + int(rt.group(3) or 0) * (-1 if rt.group(2) == "-" else 1)
        elif name in signal.Signals.__members__:
            number = int(signal.Signals[name])
    if number is None or not 1 <= number <= int(signal.SIGRTMAX):
        raise InvalidArgument(
            f"{where}unknown signal {sig!r}: give a name such as 'SIGTERM' or 'TERM', or a "
            f"number from 1 to {int(signal.SIGRTMAX)}")
    return number


def signal_name(number: int) -> str:
    """The canonical name of signal ``number``: ``"SIGTERM"``, ``"SIGRTMIN+3"``."""
    low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if low < number < high:
        return f"SIGRTMIN+{number - low}"
    try:
        return signal.Signals(number).name
    except ValueError:  # 32 and 33: real-time signals glibc keeps for itself
        return str(number)


def signal_arg(sig: str | int, *, container_id: str | None = None) -> str:
    """``sig`` as the decimal number both runtimes accept (names differ between them)."""
    return str(signal_number(sig, container_id=container_id))


def scratch_base() -> str | None:
    """Where the client keeps per-command files: a tmpfs when one is writable.

    Creating files on this machine's ext4 (/tmp most of all) is slow.
    """
    for candidate in ("/run", os.environ.get("XDG_RUNTIME_DIR")):
        if candidate and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def check_bundle(bundle: str | os.PathLike[str]) -> Path:
    """``bundle`` made absolute, once it is known to hold a config.json.

    Checked here because crun reports a missing bundle before it opens its log,
    on a stderr that during ``create`` is the container's.
    """
    path = Path(bundle).absolute()
    if not (path / "config.json").is_file():
        what = "has no config.json" if path.is_dir() else "does not exist"
        raise BundleNotFound(f"bundle {str(path)!r} {what}")
    return path


class CommandRunner:
    """Runs one runtime binary's commands: global options, logs, timeouts, errors.

    The base of :class:`~criolib.runtime_spec.RuntimeClient`, which documents the
    constructor's arguments; it holds none of the runtime-spec operations.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] = "runc",
        *,
        root: str | os.PathLike[str] | None = None,
        systemd_cgroup: bool = False,
        log_path: str | os.PathLike[str] | None = None,
        log_format: Literal["json"] = "json",
        debug: bool = False,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if log_format != "json":
            raise InvalidArgument(f"log_format must be 'json' (the client reads the "
                                  f"runtime's log), not {log_format!r}")
        self._path = resolve_binary(binary)
        self._name = Path(os.fspath(binary)).name
        self._crun_like = self._name in ("crun", "krun")
        self._root = Path(root).absolute() if root is not None else None
        self._systemd_cgroup = systemd_cgroup
        self._log_path = Path(log_path).absolute() if log_path is not None else None
        self._debug = debug
        self._timeout = timeout
        if env is None:
            env = {"PATH": DEFAULT_PATH} | {
                k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        self._env = dict(env)
        self._version: str | None = None
        self._scratch: Path | None = None
        self._lock = threading.Lock()
        self._serial = itertools.count()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path)!r}, root={self._root!r})"

    @property
    def name(self) -> str:
        """The runtime's name (``"runc"``, ``"crun"``): the binary's file name."""
        return self._name

    @property
    def path(self) -> Path:
        """The absolute path of the runtime binary."""
        return self._path

    @property
    def root(self) -> Path | None:
        """The ``--root`` state directory, or None for the runtime's default."""
        return self._root

    def close(self) -> None:
        """Remove the client's scratch directory (per-command logs, pid files)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scratch_file(self, suffix: str) -> Path:
        with self._lock:
            if self._scratch is None or not self._scratch.is_dir():
                self._scratch = Path(tempfile.mkdtemp(prefix=f"criolib-{self._name}-",
                                                      dir=scratch_base()))
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._scratch,
                                                   ignore_errors=True)
            scratch = self._scratch
        return scratch / f"{next(self._serial)}.{suffix}"

    def _tap(self, *, needed: bool) -> LogTap | None:
        """Where the runtime logs: the caller's file, else a scratch file if ``needed``.

        Commands whose stderr we capture need no file: without ``--log`` both
        runtimes write their log, in JSON too, to stderr. Skipping the file saves
        runc about 1 ms a command.
        """
        if self._log_path is not None:
            return LogTap(self._log_path, owned=False)
        return LogTap(self._scratch_file("log"), owned=True) if needed else None

    def _argv(self, tap: LogTap | None, *command: str) -> list[str]:
        # Global options go before the command for both runc (urfave/cli) and crun
        # (argp, parsed in order up to the command).
        argv = [str(self._path)]
        if self._root is not None:
            argv.append(f"--root={self._root}")
        if tap is not None:
            target = str(tap.path)
            if self._crun_like and ":" in target:
                target = f"file:{target}"  # crun reads "BACKEND:SPEC" when there is a colon
            argv.append(f"--log={target}")
        argv.append("--log-format=json")
        # Not by default: runc's --debug costs ~6 ms per create+start+delete here, and
        # the lines that explain failures (nsexec's "fatal" ones) are logged without it.
        if self._debug:
            argv.append("--debug")
        if self._systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv += command
        return argv

    def _forward(self, records: Sequence[LogRecord]) -> None:
        if self._debug:
            for r in records:
                log.debug("%s: %s: %s", self._name, r.level, r.msg)

    def _plain(self, argv: Sequence[str], operation: str) -> bytes:
        """Run a command that needs no log (``--version``); stdout on success."""
        try:
            done = _exec.run(argv, env=self._env, timeout=self._timeout, check=False,
                             what=f"{self._name} {operation}")
        except ExecTimeout as exc:
            raise self._timed_out(operation, None, argv) from exc
        except ExecError as exc:
            raise RuntimeNotFound(f"{self._name} {operation}: {exc}") from exc
        if done.returncode != 0:
            raise diagnose(runtime=self._name, operation=operation, container_id=None,
                           argv=argv, returncode=done.returncode, records=(),
                           stderr=done.stderr.decode(errors="replace"))
        return done.stdout

    def _timed_out(self, operation: str, container_id: str | None, argv: Sequence[str],
                   timeout: float | None = None) -> RuntimeTimeout:
        what = f" of container {container_id!r}" if container_id else ""
        return RuntimeTimeout(
            f"{self._name} {operation}{what} did not finish within "
            f"{timeout if timeout is not None else self._timeout} s and was killed",
            runtime=self._name, operation=operation, container_id=container_id, argv=argv)

    def _control(
        self,
        operation: str,
        container_id: str | None,
        *args: str,
        input: bytes | None = None,
    ) -> bytes:
        """Run a control command (stdio not the container's) and return its stdout."""
        tap = self._tap(needed=False)
        argv = self._argv(tap, operation, *args)
        log.debug("running %s", argv)
        try:
            try:
                done = _exec.run(argv, env=self._env, input=input, timeout=self._timeout,
                                 check=False, what=f"{self._name} {operation}")
            except ExecTimeout as exc:
                raise self._timed_out(operation, container_id, argv) from exc
            except ExecError as exc:
                raise RuntimeNotFound(f"{self._name} {operation}: {exc}") from exc
            records: list[LogRecord] = []
            if done.returncode != 0 or self._debug:
                records = tap.read() if tap is not None else parse_log(done.stderr)
            self._forward(records)
            if done.returncode != 0:
                raise diagnose(runtime=self._name, operation=operation,
                               container_id=container_id, argv=argv,
                               returncode=done.returncode, records=records,
                               stderr=done.stderr.decode(errors="replace"))
            return done.stdout
        finally:
            if tap is not None:
                tap.close()

    def _with_stdio(
        self,
        operation: str,
        container_id: str,
        args: Sequence[str],
        *,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
        preserve_fds: int,
        timeout: float | None,
        pid_file: Path | None = None,
    ) -> tuple[int, list[LogRecord], list[str]]:
        """Run create/exec with the container's stdio; (returncode, log, argv).

        Raises :class:`RuntimeTimeout` after killing the runtime's process group
        (and the process it started, named in ``pid_file``) when ``timeout`` runs out.
        """
        if isinstance(preserve_fds, bool) or not isinstance(preserve_fds, int) or (
                preserve_fds < 0):
            raise InvalidArgument(f"{self._name} {operation} of container {container_id!r}: "
                                  f"preserve_fds must be an integer >= 0, not {preserve_fds!r}")
        tap = self._tap(needed=True)
        assert tap is not None
        argv = self._argv(tap, *args)
        log.debug("running %s", argv)

        def kill(proc: subprocess.Popen[bytes]) -> None:
            # The runtime, and a container process still in its session (no tty), go
            # with the group; a process that made its own session (tty) by its pid.
            if pid_file is not None:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        try:
            try:
                returncode = spawn_and_wait(
                    argv, env=self._env, stdin=stdin, stdout=stdout, stderr=stderr,
                    pass_fds=range(3, 3 + preserve_fds), timeout=timeout, on_timeout=kill,
                    what=f"{self._name} {operation}")
            except ExecError as exc:
                cause = exc.__cause__
                why = (cause.strerror if isinstance(cause, OSError) and cause.strerror
                       else str(exc))
                raise RuntimeNotFound(f"{self._name} {operation} of container "
                                      f"{container_id!r}: cannot run {self._path}: {why}"
                                      ) from exc
            if returncode is None:
                raise self._timed_out(operation, container_id, argv, timeout)
            records = tap.read() if returncode != 0 or self._debug else []
            self._forward(records)
            return returncode, records, argv
        finally:
            tap.close()

