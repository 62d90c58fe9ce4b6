"""A client for OCI runtimes with runc's command line: runc, crun and their kin.

Implements the operations of OCI runtime-spec v1.2 runtime.md "Operations" (state,
create, start, kill, delete) by driving the runtime binary, plus the commands runc
and crun add (exec, pause, resume, update, ps, list, features, run). Checked
against runc 1.1.5 and crun 1.8.1 (Debian 12); crun 1.8.1 has no ``features``.

Every command gets its own ``--log`` file in JSON lines, written at debug level
into a private scratch directory and deleted afterwards, so a failure can be
explained with the runtime's own words even when its stderr was the container's
(MACHINE-NOTES.md: runc's "can't get final child's PID from pipe: EOF" hides an
``oom_score_adj`` refusal that only its log shows).
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from criolib import _exec
from criolib.errors import ExecError, ExecTimeout
from criolib.runtime_spec._errors import (
    BundleNotFound,
    ContainerNotFound,
    FeaturesUnsupported,
    RuntimeCommandError,
    RuntimeNotFound,
    RuntimeSpecError,
    RuntimeTimeout,
)
from criolib.runtime_spec._runtime_proc import (
    LogRecord,
    Stdio,
    diagnose,
    error_messages,
    parse_log,
    set_child_subreaper,
    spawn_and_wait,
    wait_for_exit,
)
from criolib.runtime_spec._state import Features, State

__all__ = ["OCIRuntime", "RuntimeClient"]

log = logging.getLogger("criolib.runtime_spec")

#: The Debian package shipping each runtime, for RuntimeNotFound's message.
_PACKAGES = {"runc": "runc", "crun": "crun", "youki": "youki", "krun": "crun"}
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Passed through from the caller's environment when set: rootless runtimes keep their
# state under XDG_RUNTIME_DIR. Nothing else is: runc acts on NOTIFY_SOCKET and
# LISTEN_FDS, which would leak the caller's systemd plumbing into containers.
_PASSED_ENV = ("XDG_RUNTIME_DIR",)


@runtime_checkable
class OCIRuntime(Protocol):
    """What criolib needs of an OCI runtime (runtime-spec v1.2 runtime.md "Operations").

    :class:`RuntimeClient` implements it for runc, crun and any runtime with their
    command line; a test double or a library binding may implement it too.
    """

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    def version(self) -> str: ...

    def create(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> None: ...

    def start(self, container_id: str) -> None: ...

    def state(self, container_id: str) -> State: ...

    def kill(self, container_id: str, signal: str | int = "SIGTERM", *,
             all: bool = False) -> None: ...

    def delete(self, container_id: str, *, force: bool = False) -> None: ...

    def exec(
        self,
        container_id: str,
        process: Mapping[str, Any] | Sequence[str],
        *,
        detach: bool = False,
        tty: bool = False,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        preserve_fds: int = 0,
        timeout: float | None = None,
    ) -> int: ...

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None: ...

    def ps(self, container_id: str) -> builtins.list[int]: ...

    def list(self) -> builtins.list[State]: ...

    def features(self) -> Features: ...

    def run(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        timeout: float | None = None,
        keep: bool = False,
    ) -> int: ...


def _load_state(raw: Any) -> State:
    """A state document (runtime-spec v1.2 runtime.md "State") as a :class:`State`."""
    from criolib.runtime_spec._convert import load_state

    return load_state(raw)


def _load_features(raw: Any) -> Features:
    """A features document (runtime-spec v1.2 features.md) as :class:`Features`."""
    from criolib.runtime_spec._convert import load_features

    return load_features(raw)


def _resolve_binary(binary: str | os.PathLike[str]) -> Path:
    text = os.fspath(binary)
    name = Path(text).name
    package = _PACKAGES.get(name)
    fix = (f"install Debian package {package!r}" if package
           else "install the package that ships it")
    found = shutil.which(text) if os.sep not in text else (
        text if os.access(text, os.X_OK) and Path(text).is_file() else None)
    if found is None:
        where = "on PATH" if os.sep not in text else "there or is not executable"
        raise RuntimeNotFound(f"OCI runtime {text!r} is not {where}: {fix}")
    return Path(found).absolute()


def _check_id(container_id: str) -> str:
    # A leading "-" would be read as an option by both runtimes' parsers.
    if not container_id or container_id.startswith("-"):
        raise ValueError(f"invalid container id {container_id!r}")
    return container_id


def _signal_arg(sig: str | int) -> str:
    """``sig`` as the decimal number both runtimes accept (names differ between them)."""
    if isinstance(sig, int) and not isinstance(sig, bool):
        return str(int(sig))
    if not isinstance(sig, str):
        raise TypeError(f"signal must be a name or a number, not {sig!r}")
    text = sig.strip().upper()
    if text.isdigit():
        return text
    name = text if text.startswith("SIG") else f"SIG{text}"
    rt = re.fullmatch(r"SIGRT(MIN|MAX)(?:([+-])(\d+))?", name)
    if rt:
        base = signal.SIGRTMIN if rt.group(1) == "MIN" else signal.SIGRTMAX
        offset = int(rt.group(3) or 0) * (-1 if rt.group(2) == "-" else 1)
        return str(int(base) + offset)
    try:
        return str(signal.Signals[name].value)
    except KeyError:
        raise ValueError(f"unknown signal {sig!r}") from None


def _scratch_base() -> str | None:
    # A tmpfs: creating files on this machine's ext4 (/tmp most of all) is slow.
    for candidate in ("/run", os.environ.get("XDG_RUNTIME_DIR")):
        if candidate and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


class _LogTap:
    """The ``--log`` destination of one command, and what the runtime wrote there."""

    def __init__(self, path: Path, *, owned: bool) -> None:
        self.path = path
        self.owned = owned
        # The caller's own log file is shared by every command: read only our part.
        self.offset = 0 if owned else _size(path)

    def read(self) -> list[LogRecord]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                return parse_log(f.read())
        except FileNotFoundError:
            return []

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class RuntimeClient:
    """Drive an OCI runtime binary with runc's command line (runc, crun, youki).

    OCI runtime-spec v1.2 runtime.md "Operations", plus the runtimes' exec, pause,
    resume, update, ps, list, features and run. ``root`` is the runtime's state
    directory (``--root``; default the runtime's own, /run/runc or /run/crun);
    ``systemd_cgroup`` selects systemd's cgroup manager instead of cgroupfs;
    ``log_path`` keeps the runtime's log in that file (otherwise each command logs
    into a private temporary file, at debug level, deleted after the command);
    ``debug`` passes ``--debug`` to a ``log_path`` and copies every command's log
    lines to the ``criolib.runtime_spec`` logger; ``timeout`` bounds each control
    command; ``env`` replaces the runtime's environment (default: a standard PATH).

    Raises :class:`RuntimeNotFound` when ``binary`` is not installed. Use it as a
    context manager, or call :meth:`close`, to remove its scratch directory.
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
            raise ValueError(f"log_format must be 'json' (the client reads the log), "
                             f"not {log_format!r}")
        self._path = _resolve_binary(binary)
        self._name = Path(os.fspath(binary)).name
        self._crun_like = self._name in ("crun", "krun")
        self._root = Path(root).absolute() if root is not None else None
        self._systemd_cgroup = systemd_cgroup
        self._log_path = Path(log_path).absolute() if log_path is not None else None
        self._debug = debug
        self._timeout = timeout
        if env is None:
            env = {"PATH": _DEFAULT_PATH} | {
                k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        self._env = dict(env)
        self._version: str | None = None
        self._scratch: Path | None = None
        self._lock = threading.Lock()
        self._serial = itertools.count()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"RuntimeClient({str(self._path)!r}, root={self._root!r})"

    # -- identity -----------------------------------------------------------------

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

    def version(self) -> str:
        """The runtime's version (``"1.1.5+ds1"``), from ``--version``; cached."""
        if self._version is None:
            out = self._plain([str(self._path), "--version"], "version")
            first = out.decode(errors="replace").strip().splitlines()[:1]
            match = re.search(r"version\s+(\S+)", first[0]) if first else None
            self._version = match.group(1) if match else (first[0] if first else "unknown")
        return self._version

    # -- scratch files and the command line -------------------------------------

    def close(self) -> None:
        """Remove the client's scratch directory (per-command logs, pid files)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scratch_file(self, suffix: str) -> Path:
        with self._lock:
            if self._scratch is None or not self._scratch.is_dir():
                self._scratch = Path(tempfile.mkdtemp(prefix=f"criolib-{self._name}-",
                                                      dir=_scratch_base()))
                self._finalizer = weakref.finalize(self, shutil.rmtree, self._scratch,
                                                   ignore_errors=True)
            scratch = self._scratch
        return scratch / f"{next(self._serial)}.{suffix}"

    def _tap(self) -> _LogTap:
        if self._log_path is not None:
            return _LogTap(self._log_path, owned=False)
        return _LogTap(self._scratch_file("log"), owned=True)

    def _argv(self, tap: _LogTap, *command: str) -> list[str]:
        # Global options go before the command for both runc (urfave/cli) and crun
        # (argp, parsed in order up to the command).
        target = str(tap.path)
        if self._crun_like and ":" in target:
            target = f"file:{target}"  # crun reads "BACKEND:SPEC" when there is a colon
        argv = [str(self._path)]
        if self._root is not None:
            argv.append(f"--root={self._root}")
        argv += [f"--log={target}", "--log-format=json"]
        if tap.owned or self._debug:
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
        tap = self._tap()
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
            records = tap.read() if done.returncode != 0 or self._debug else []
            self._forward(records)
            if done.returncode != 0:
                raise diagnose(runtime=self._name, operation=operation,
                               container_id=container_id, argv=argv,
                               returncode=done.returncode, records=records,
                               stderr=done.stderr.decode(errors="replace"))
            return done.stdout
        finally:
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
        if preserve_fds < 0:
            raise ValueError(f"preserve_fds must be >= 0, not {preserve_fds}")
        tap = self._tap()
        argv = self._argv(tap, *args)
        log.debug("running %s", argv)

        def kill(proc: Any) -> None:
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
                    pass_fds=range(3, 3 + preserve_fds), timeout=timeout, on_timeout=kill)
            except OSError as exc:
                raise RuntimeNotFound(f"{self._name} {operation}: cannot run "
                                      f"{self._path}: {exc.strerror or exc}") from exc
            if returncode is None:
                raise self._timed_out(operation, container_id, argv, timeout)
            records = tap.read() if returncode != 0 or self._debug else []
            self._forward(records)
            return returncode, records, argv
        finally:
            tap.close()

    # -- runtime-spec operations ------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Create container ``container_id`` from ``bundle``; its process waits for start.

        runtime-spec v1.2 runtime.md "Create". ``stdin``/``stdout``/``stderr``
        (descriptors or file objects; None is /dev/null) become the container
        process's stdio unless config.json asks for a terminal, which then goes to
        ``console_socket``. ``preserve_fds`` passes this process's descriptors
        3..3+N-1 on. ``pid_file`` receives the init's host pid. Raises
        :class:`ContainerExists`, :class:`PrivilegeError` (with the reason),
        :class:`BundleNotFound` or :class:`RuntimeCommandError`.
        """
        _check_id(container_id)
        bundle_path = _check_bundle(bundle)
        args = ["create", f"--bundle={bundle_path}"]
        if pid_file is not None:
            args.append(f"--pid-file={os.path.abspath(pid_file)}")
        if console_socket is not None:
            args.append(f"--console-socket={os.path.abspath(console_socket)}")
        if preserve_fds:
            args.append(f"--preserve-fds={preserve_fds}")
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        args.append(container_id)
        limit = self._timeout if timeout is None else timeout
        try:
            returncode, records, argv = self._with_stdio(
                "create", container_id, args, stdin=stdin, stdout=stdout, stderr=stderr,
                preserve_fds=preserve_fds, timeout=limit)
        except RuntimeTimeout:
            # A half-made container would hold the id; its init died with the group.
            with contextlib.suppress(RuntimeCommandError):
                self.delete(container_id, force=True)
            raise
        if returncode != 0:
            raise diagnose(runtime=self._name, operation="create",
                           container_id=container_id, argv=argv, returncode=returncode,
                           records=records, bundle=bundle_path, stderr_is_container=True)

    def start(self, container_id: str) -> None:
        """Run the user process of created container ``container_id``.

        runtime-spec v1.2 runtime.md "Start".
        """
        self._control("start", container_id, _check_id(container_id))

    def state(self, container_id: str) -> State:
        """The state of container ``container_id``; :class:`ContainerNotFound` if none.

        runtime-spec v1.2 runtime.md "Query State" and "State".
        """
        out = self._control("state", container_id, _check_id(container_id))
        return _load_state(json.loads(out))

    def kill(self, container_id: str, signal: str | int = "SIGTERM", *,
             all: bool = False) -> None:
        """Send ``signal`` (a name such as ``"SIGTERM"``/``"TERM"``, or a number).

        runtime-spec v1.2 runtime.md "Kill"; ``all`` signals every process of the
        container (``--all``), not just its init.
        """
        number = _signal_arg(signal)
        args = ["--all"] if all else []
        self._control("kill", container_id, *args, _check_id(container_id), number)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete stopped (or created) container ``container_id``.

        runtime-spec v1.2 runtime.md "Delete". ``force`` kills a running container
        first (SIGKILL); both runtimes then also ignore an unknown id.
        """
        args = ["--force"] if force else []
        self._control("delete", container_id, *args, _check_id(container_id))

    # -- the runtimes' own commands -----------------------------------------------

    def exec(
        self,
        container_id: str,
        process: Mapping[str, Any] | Sequence[str],
        *,
        detach: bool = False,
        tty: bool = False,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        preserve_fds: int = 0,
        timeout: float | None = None,
    ) -> int:
        """Run another process in running container ``container_id``.

        ``process`` is a process object in config.json's wire form
        (runtime-spec v1.2 config.md "Process": args, env, cwd, user, ...) or just
        an argv list (the container's own process settings then apply). Returns
        the process's exit code (128+N when killed by signal N), or its host pid
        when ``detach``. ``timeout`` (default none) kills the process and raises
        :class:`RuntimeTimeout`. A failure of the runtime itself, told apart from
        the process's own exit status by the error lines of the runtime's log,
        raises :class:`RuntimeCommandError`.
        """
        _check_id(container_id)
        args = ["exec"]
        scratch: builtins.list[Path] = []
        try:
            if isinstance(process, Mapping):
                spec = dict(process)
                if tty:
                    spec["terminal"] = True
                proc_file = self._scratch_file("process.json")
                scratch.append(proc_file)
                proc_file.write_text(json.dumps(spec))
                args.append(f"--process={proc_file}")
                argv_tail: builtins.list[str] = []
            else:
                argv_tail = [os.fspath(a) for a in process]
                if not argv_tail or argv_tail[0].startswith("-"):
                    raise ValueError(f"exec needs a program, not {process!r}")
                if tty:
                    args.append("--tty")
            if detach:
                args.append("--detach")
            pid_path = Path(os.path.abspath(pid_file)) if pid_file is not None else None
            if pid_path is None and (detach or timeout is not None):
                pid_path = self._scratch_file("pid")
                scratch.append(pid_path)
            if pid_path is not None:
                args.append(f"--pid-file={pid_path}")
            if console_socket is not None:
                args.append(f"--console-socket={os.path.abspath(console_socket)}")
            if preserve_fds:
                args.append(f"--preserve-fds={preserve_fds}")
            # No "--": neither runtime accepts it; both take what follows the id as is.
            args += [container_id, *argv_tail]
            limit = self._timeout if detach and timeout is None else timeout
            returncode, records, argv = self._with_stdio(
                "exec", container_id, args, stdin=stdin, stdout=stdout, stderr=stderr,
                preserve_fds=preserve_fds, timeout=limit, pid_file=pid_path)
            failed = returncode < 0 or (returncode != 0 and (detach or error_messages(records)))
            if failed:
                raise diagnose(runtime=self._name, operation="exec",
                               container_id=container_id, argv=argv, returncode=returncode,
                               records=records, stderr_is_container=True)
            if detach:
                assert pid_path is not None
                return int(pid_path.read_text().strip())
            return returncode
        finally:
            for path in scratch:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def pause(self, container_id: str) -> None:
        """Freeze every process of ``container_id`` (cgroup freezer); status "paused"."""
        self._control("pause", container_id, _check_id(container_id))

    def resume(self, container_id: str) -> None:
        """Thaw a paused ``container_id``."""
        self._control("resume", container_id, _check_id(container_id))

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change the cgroup limits of ``container_id``.

        ``resources`` is config.json's ``linux.resources`` in wire form
        (runtime-spec v1.2 config-linux.md "Control groups"), e.g.
        ``{"memory": {"limit": 67108864}}``; fields left out are left as they are.
        """
        data = json.dumps(dict(resources)).encode()
        self._control("update", container_id, "--resources=-", _check_id(container_id),
                      input=data)

    def ps(self, container_id: str) -> builtins.list[int]:
        """The host pids of the processes in ``container_id``."""
        out = self._control("ps", container_id, "--format=json", _check_id(container_id))
        pids = json.loads(out) or []
        return [int(p) for p in pids]

    def list(self) -> builtins.list[State]:
        """The state of every container under this client's ``--root``.

        crun's list leaves out ``ociVersion``; those entries are completed with
        :meth:`state` (a container deleted meanwhile is skipped).
        """
        out = self._control("list", None, "--format=json")
        entries = json.loads(out) or []  # runc prints "null" for none
        states = []
        for entry in entries:
            if isinstance(entry, dict) and "ociVersion" not in entry and "id" in entry:
                with contextlib.suppress(ContainerNotFound):
                    states.append(self.state(str(entry["id"])))
                continue
            states.append(_load_state(entry))
        return states

    def features(self) -> Features:
        """What the runtime implements (runtime-spec v1.2 features.md).

        Raises :class:`FeaturesUnsupported`, naming the runtime and its version,
        when the runtime has no ``features`` command (crun before 1.9, runc before
        1.1); nothing is guessed in its place.
        """
        try:
            out = self._control("features", None)
        except RuntimeCommandError as exc:
            if re.search(r"unknown command|no help topic|no such command",
                         exc.runtime_message, re.IGNORECASE):
                raise FeaturesUnsupported(
                    f"{self._name} {self.version()} has no 'features' command "
                    f"(runtime-spec features.md); it said: {exc.runtime_message}",
                    runtime=self._name, operation="features", container_id=None,
                    argv=exc.argv, returncode=exc.returncode,
                    runtime_message=exc.runtime_message) from exc
            raise
        return _load_features(json.loads(out))

    def run(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        stdin: Stdio = None,
        stdout: Stdio = None,
        stderr: Stdio = None,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        timeout: float | None = None,
        keep: bool = False,
    ) -> int:
        """Create, start and wait for container ``container_id``; its exit code.

        What ``runc run`` does, without a monitor: runtime-spec v1.2 runtime.md
        "Create", "Start", then waiting for the process to stop, then "Delete"
        (unless ``keep``). Returns the init's exit code, 128+N when killed by
        signal N. ``timeout`` (default none) kills the container with SIGKILL and
        raises :class:`RuntimeTimeout`.

        The exit status comes from ``waitid`` on the init, so this process first
        becomes a child subreaper (process-wide, and it stays one: see
        :func:`set_child_subreaper`); the init, orphaned when the runtime's
        ``create`` exits, is then re-parented to us.
        """
        set_child_subreaper()
        own_pid = pid_file is None
        pid_path = (self._scratch_file("pid") if pid_file is None
                    else Path(os.path.abspath(pid_file)))
        self.create(container_id, bundle, pid_file=pid_path, console_socket=console_socket,
                    stdin=stdin, stdout=stdout, stderr=stderr, preserve_fds=preserve_fds,
                    no_pivot=no_pivot, no_new_keyring=no_new_keyring)
        pid, pidfd = 0, -1
        try:
            pid = int(pid_path.read_text().strip())
            # The init is our child now, so its pid cannot be reused before we reap it.
            pidfd = os.pidfd_open(pid)
            self.start(container_id)
            code = wait_for_exit(pid, pidfd, timeout=timeout)
            if code is None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                wait_for_exit(pid, pidfd)
        except BaseException:
            self._abandon(container_id, pid, pidfd, keep=keep)
            raise
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            if own_pid:
                with contextlib.suppress(FileNotFoundError):
                    pid_path.unlink()
        if code is None:
            if not keep:
                with contextlib.suppress(RuntimeCommandError):
                    self.delete(container_id, force=True)
            raise RuntimeTimeout(
                f"container {container_id!r} ({self._name} run) did not exit within "
                f"{timeout} s and was killed", runtime=self._name, operation="run",
                container_id=container_id)
        if not keep:
            self.delete(container_id)
        return code

    def _abandon(self, container_id: str, pid: int, pidfd: int, *, keep: bool) -> None:
        """After a failure inside :meth:`run`: kill, reap and delete, masking nothing."""
        with contextlib.suppress(RuntimeSpecError, OSError):
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                # Our child: collect it, or it stays a zombie.
                wait_for_exit(pid, pidfd, timeout=self._timeout)
            if not keep:
                self.delete(container_id, force=True)


def _check_bundle(bundle: str | os.PathLike[str]) -> Path:
    path = Path(bundle).absolute()
    if not (path / "config.json").is_file():
        what = "has no config.json" if path.is_dir() else "does not exist"
        raise BundleNotFound(f"bundle {str(path)!r} {what}")
    return path

