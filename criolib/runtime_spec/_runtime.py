"""A client for OCI runtimes with runc's command line: runc, crun and their kin.

Implements the operations of OCI runtime-spec v1.2 runtime.md "Operations" (state,
create, start, kill, delete) by driving the runtime binary, plus the commands runc
and crun add (exec, pause, resume, update, ps, list, features, run). Checked
against runc 1.1.5 and crun 1.8.1 (Debian 12); crun 1.8.1 has no ``features``.

The runtime always logs in JSON lines (``--log-format json``). Commands whose
stdio is the container's (create, exec) get their own ``--log`` file in a private
scratch directory, read on failure and deleted, so a failure is explained in the
runtime's own words although its stderr was the container's (MACHINE-NOTES.md:
runc's "can't get final child's PID from pipe: EOF" hides an ``oom_score_adj``
refusal that only its log shows). The other commands log to their stderr, which
is captured.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from criolib.runtime_spec._errors import (
    ContainerNotFound,
    ExitStatusUnavailable,
    FeaturesUnsupported,
    RuntimeCommandError,
    RuntimeSpecError,
    RuntimeTimeout,
)
from criolib.runtime_spec._runtime_cmd import (
    CommandBuilder,
    RuntimeCommand,
    _exec_argv,
    _options,
)
from criolib.runtime_spec._runtime_log import diagnose, error_messages
from criolib.runtime_spec._runtime_proc import (
    Stdio,
    check_bundle,
    check_id,
    child_subreaper,
    parent_pid,
    signal_arg,
    wait_for_exit,
)

if TYPE_CHECKING:
    # The model and its converter load on first use: the monitor imports only the client.
    from criolib.runtime_spec._state import Features, State

__all__ = ["OCIRuntime", "RuntimeClient", "RuntimeCommand"]


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
        timeout: float | None = None,
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


def _json(out: bytes, runtime: str, operation: str, container_id: str | None) -> Any:
    """The JSON a runtime printed; a :class:`RuntimeCommandError` if it is not JSON."""
    try:
        return json.loads(out)
    except ValueError as exc:
        raise RuntimeCommandError(
            f"{runtime} {operation} printed something that is not JSON: {out[:200]!r}",
            runtime=runtime, operation=operation, container_id=container_id) from exc


class RuntimeClient(CommandBuilder):
    """Drive an OCI runtime binary with runc's command line (runc, crun, youki).

    OCI runtime-spec v1.2 runtime.md "Operations", plus the runtimes' exec, pause,
    resume, update, ps, list, features and run. ``root`` is the runtime's state
    directory (``--root``; default the runtime's own, /run/runc or /run/crun);
    ``systemd_cgroup`` selects systemd's cgroup manager instead of cgroupfs;
    ``log_path`` keeps the runtime's log in that file (otherwise create and exec,
    whose stderr is the container's, log into a private temporary file deleted
    after the command, and the other commands log to their captured stderr);
    ``debug`` passes ``--debug`` and copies every command's log lines to the
    ``criolib.runtime_spec`` logger; ``timeout`` bounds each control
    command; ``env`` replaces the runtime's environment (default: a standard PATH).

    Raises :class:`RuntimeNotFound` when ``binary`` is not installed. Use it as a
    context manager, or call :meth:`close`, to remove its scratch directory.
    """

    def version(self) -> str:
        """The runtime's version (``"1.1.5+ds1"``), from ``--version``; cached."""
        if self._version is None:
            out = self._plain([str(self._path), "--version"], "version")
            first = out.decode(errors="replace").strip().splitlines()[:1]
            match = re.search(r"version\s+(\S+)", first[0]) if first else None
            self._version = match.group(1) if match else (first[0] if first else "unknown")
        return self._version

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
        3..3+N-1 on. ``pid_file`` receives the init's host pid. ``timeout``
        (default: the client's) bounds the runtime's ``create``; past it the runtime
        is killed, the half-made container deleted and :class:`RuntimeTimeout`
        raised. Raises :class:`ContainerExists`, :class:`PrivilegeError` (with the
        reason), :class:`BundleNotFound`, :class:`InvalidArgument` (a bad id or
        ``preserve_fds``) or :class:`RuntimeCommandError`.
        """
        check_id(container_id)
        bundle_path = check_bundle(bundle)
        args = ["create", f"--bundle={bundle_path}"]
        args += _options(pid_file=pid_file, console_socket=console_socket,
                         preserve_fds=preserve_fds, no_pivot=no_pivot,
                         no_new_keyring=no_new_keyring)
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
        self._control("start", container_id, check_id(container_id))

    def state(self, container_id: str) -> State:
        """The state of container ``container_id``; :class:`ContainerNotFound` if none.

        runtime-spec v1.2 runtime.md "Query State" and "State".
        """
        from criolib.runtime_spec._convert import load_state

        out = self._control("state", container_id, check_id(container_id))
        return load_state(out, source=f"{self._name} state {container_id}")

    def kill(self, container_id: str, signal: str | int = "SIGTERM", *,
             all: bool = False) -> None:
        """Send ``signal`` (a name such as ``"SIGTERM"``/``"TERM"``, or a number).

        runtime-spec v1.2 runtime.md "Kill"; ``all`` signals every process of the
        container (``--all``), not just its init.
        """
        check_id(container_id)
        number = signal_arg(signal, container_id=container_id)
        args = ["--all"] if all else []
        self._control("kill", container_id, *args, container_id, number)

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Delete stopped (or created) container ``container_id``.

        runtime-spec v1.2 runtime.md "Delete". ``force`` kills a running container
        first (SIGKILL); both runtimes then also ignore an unknown id.
        """
        args = ["--force"] if force else []
        self._control("delete", container_id, *args, check_id(container_id))

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
        check_id(container_id)
        scratch: builtins.list[Path] = []
        try:
            args: builtins.list[str] = ["exec"]
            if isinstance(process, Mapping):
                spec = dict(process) | ({"terminal": True} if tty else {})
                proc_file = self._scratch_file("process.json")
                scratch.append(proc_file)
                proc_file.write_text(json.dumps(spec))
                args.append(f"--process={proc_file}")
                tail: builtins.list[str] = []
            else:
                tail = _exec_argv(self._name, container_id, process)
                args += ["--tty"] if tty else []
            pid_path = Path(os.path.abspath(pid_file)) if pid_file is not None else None
            if pid_path is None and (detach or timeout is not None):
                # To return a detached process's pid, or to kill one that times out.
                pid_path = self._scratch_file("pid")
                scratch.append(pid_path)
            args += _options(detach=detach, pid_file=pid_path, console_socket=console_socket,
                             preserve_fds=preserve_fds)
            # No "--": neither runtime accepts it; both take what follows the id as is.
            args += [container_id, *tail]
            limit = self._timeout if detach and timeout is None else timeout
            returncode, records, argv = self._with_stdio(
                "exec", container_id, args, stdin=stdin, stdout=stdout, stderr=stderr,
                preserve_fds=preserve_fds, timeout=limit, pid_file=pid_path)
            # The runtime exits with the process's status; only the error lines of its
            # log tell a failure of its own (exit 255 from runc, 1 from crun) apart.
            if returncode < 0 or (returncode != 0 and (detach or error_messages(records))):
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
        self._control("pause", container_id, check_id(container_id))

    def resume(self, container_id: str) -> None:
        """Thaw a paused ``container_id``."""
        self._control("resume", container_id, check_id(container_id))

    def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """Change the cgroup limits of ``container_id``.

        ``resources`` is config.json's ``linux.resources`` in wire form
        (runtime-spec v1.2 config-linux.md "Control groups"), e.g.
        ``{"memory": {"limit": 67108864}}``; fields left out are left as they are.
        """
        data = json.dumps(dict(resources)).encode()
        self._control("update", container_id, "--resources=-", check_id(container_id),
                      input=data)

    def ps(self, container_id: str) -> builtins.list[int]:
        """The host pids of the processes in ``container_id``."""
        out = self._control("ps", container_id, "--format=json", check_id(container_id))
        pids = _json(out, self._name, "ps", container_id) or []
        return [int(p) for p in pids]

    def list(self) -> builtins.list[State]:
        """The state of every container under this client's ``--root``.

        crun's list leaves out ``ociVersion``; those entries are completed with
        :meth:`state` (a container deleted meanwhile is skipped).
        """
        from criolib.runtime_spec._convert import load_state

        out = self._control("list", None, "--format=json")
        entries = _json(out, self._name, "list", None) or []  # runc prints "null" for none
        states = []
        for entry in entries:
            if isinstance(entry, dict) and "ociVersion" not in entry and "id" in entry:
                with contextlib.suppress(ContainerNotFound):
                    states.append(self.state(str(entry["id"])))
                continue
            states.append(load_state(entry, source=f"{self._name} list"))
        return states

    def features(self) -> Features:
        """What the runtime implements (runtime-spec v1.2 features.md).

        Raises :class:`FeaturesUnsupported`, naming the runtime and its version,
        when the runtime has no ``features`` command (crun 1.8.1 has none; runc has
        had one since 1.1): nothing is guessed in its place.
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
        from criolib.runtime_spec._convert import load_features

        return load_features(out, source=f"{self._name} features")

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

        Without ``keep`` this is the runtime's own ``run`` (one runtime process,
        as cheap as the command line): the runtime waits for the init and exits
        with its status, and a failure of the runtime itself is told apart by the
        error lines of its log. With ``keep`` (crun's ``run`` has no ``--keep``)
        it is ``create`` + ``start`` + waiting: the exit status comes from
        ``waitid`` on the init, which must be our child: this process is a child
        subreaper while ``create`` runs (process-wide, for that moment only; see
        :func:`child_subreaper`), so the init, orphaned when the runtime's
        ``create`` exits, is re-parented to us.
        """
        if not keep:
            return self._run_direct(
                container_id, bundle, stdin=stdin, stdout=stdout, stderr=stderr,
                pid_file=pid_file, console_socket=console_socket, preserve_fds=preserve_fds,
                no_pivot=no_pivot, no_new_keyring=no_new_keyring, timeout=timeout)
        own_pid = pid_file is None
        pid_path = (self._scratch_file("pid") if pid_file is None
                    else Path(os.path.abspath(pid_file)))
        with child_subreaper():
            self.create(container_id, bundle, pid_file=pid_path,
                        console_socket=console_socket, stdin=stdin, stdout=stdout,
                        stderr=stderr, preserve_fds=preserve_fds, no_pivot=no_pivot,
                        no_new_keyring=no_new_keyring)
        pid, pidfd = 0, -1
        try:
            pid = int(pid_path.read_text().strip())
            # The init is our child now, so its pid cannot be reused before we reap it.
            pidfd = os.pidfd_open(pid)
            if parent_pid(pid) != os.getpid():
                # Found out before the user's program runs, not after it exited.
                raise ExitStatusUnavailable(
                    f"container {container_id!r}: its init (pid {pid}) was not re-parented "
                    f"to this process (pid {os.getpid()}) but to pid {parent_pid(pid)}, so "
                    "its exit status could not be collected; not started")
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
        if code is None:  # killed after the timeout; kept, stopped, as asked
            raise RuntimeTimeout(
                f"container {container_id!r} ({self._name} run) did not exit within "
                f"{timeout} s and was killed", runtime=self._name, operation="run",
                container_id=container_id)
        return code

    def _run_direct(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
        pid_file: str | os.PathLike[str] | None,
        console_socket: str | os.PathLike[str] | None,
        preserve_fds: int,
        no_pivot: bool,
        no_new_keyring: bool,
        timeout: float | None,
    ) -> int:
        """``runtime run``: the runtime creates, starts, waits for and deletes the container."""
        check_id(container_id)
        bundle_path = check_bundle(bundle)
        pid_path = (self._scratch_file("pid") if pid_file is None
                    else Path(os.path.abspath(pid_file)))
        args = ["run", f"--bundle={bundle_path}"]
        args += _options(pid_file=pid_path, console_socket=console_socket,
                         preserve_fds=preserve_fds, no_pivot=no_pivot,
                         no_new_keyring=no_new_keyring)
        args.append(container_id)
        try:
            returncode, records, argv = self._with_stdio(
                "run", container_id, args, stdin=stdin, stdout=stdout, stderr=stderr,
                preserve_fds=preserve_fds, timeout=timeout, pid_file=pid_path)
        except RuntimeTimeout:
            with contextlib.suppress(RuntimeCommandError):
                self.delete(container_id, force=True)
            raise
        finally:
            if pid_file is None:
                with contextlib.suppress(FileNotFoundError):
                    pid_path.unlink()
        # The runtime exits with the container's status (128+N for signal N), so
        # only its log tells a failure of its own from a failing container.
        if returncode < 0 or error_messages(records):
            with contextlib.suppress(RuntimeCommandError):
                self.delete(container_id, force=True)
            raise diagnose(runtime=self._name, operation="run", container_id=container_id,
                           argv=argv, returncode=returncode, records=records,
                           bundle=bundle_path, stderr_is_container=True)
        return returncode

    def _abandon(self, container_id: str, pid: int, pidfd: int, *, keep: bool) -> None:
        """After a failure inside :meth:`run`: kill, reap and delete, masking nothing.

        A container that failed half-way is deleted even with ``keep``, which
        keeps a container that ran to its end for inspection, not debris.
        """
        del keep
        if pidfd >= 0:
            with contextlib.suppress(RuntimeSpecError, OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                # Our child (normally): collect it, or it stays a zombie.
                wait_for_exit(pid, pidfd, timeout=self._timeout)
        with contextlib.suppress(RuntimeSpecError, OSError):
            self.delete(container_id, force=True)

