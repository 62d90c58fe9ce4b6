"""Runtime command lines for a container monitor to run (create, exec).

A monitor (criolib.conmon, conmon) runs the runtime's ``create`` and ``exec`` itself,
with the container's stdio and as the parent of the container's init; the client
still owns the command line and the diagnosis of a failure, so both read the same
whichever process runs the command.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.runtime_spec._errors import InvalidArgument, RuntimeCommandError
from criolib.runtime_spec._runtime_log import LogTap, diagnose, parse_log
from criolib.runtime_spec._runtime_proc import CommandRunner, check_bundle, check_id

__all__ = ["CommandBuilder", "RuntimeCommand"]


class CommandBuilder(CommandRunner):
    """The command lines of :class:`~criolib.runtime_spec.RuntimeClient` for others to run."""

    # -- commands run by someone else (a container monitor) --------------------------

    def global_options(
        self, *, log_path: str | os.PathLike[str] | None = None
    ) -> builtins.list[str]:
        """The global options this client puts before every command, without the binary.

        ``--root``, ``--log`` (``log_path`` when given), ``--log-format=json`` and
        ``--systemd-cgroup`` as configured: what a monitor such as conmon passes
        with ``--runtime-arg`` so its runtime commands see the same state directory.
        """
        tap = LogTap(Path(log_path).absolute(), owned=False) if log_path is not None else None
        return self._argv(tap)[1:]

    def create_command(
        self,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        log_path: str | os.PathLike[str],
        pid_file: str | os.PathLike[str],
        console_socket: str | os.PathLike[str] | None = None,
        preserve_fds: int = 0,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> RuntimeCommand:
        """The runtime ``create`` of :meth:`create`, for a monitor to run itself.

        runtime-spec v1.2 runtime.md "Create". A container monitor runs the command
        with the container's stdio and becomes the init's parent (a subreaper), so it
        can collect the exit status; the runtime logs to ``log_path`` in JSON lines,
        which :meth:`command_error` turns into the exception :meth:`create` raises.
        """
        check_id(container_id)
        bundle_path = check_bundle(bundle)
        _check_preserve_fds(self._name, "create", container_id, preserve_fds)
        args = ["create", f"--bundle={bundle_path}"]
        args += _options(pid_file=pid_file, console_socket=console_socket,
                         preserve_fds=preserve_fds, no_pivot=no_pivot,
                         no_new_keyring=no_new_keyring)
        args.append(container_id)
        log = Path(log_path).absolute()
        argv = self._argv(LogTap(log, owned=False), *args)
        return RuntimeCommand(operation="create", container_id=container_id,
                              argv=tuple(argv), env=dict(self._env), log_path=log,
                              bundle=bundle_path)

    def exec_command(
        self,
        container_id: str,
        process: Mapping[str, Any] | Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        process_file: str | os.PathLike[str] | None = None,
        tty: bool = False,
        detach: bool = False,
        pid_file: str | os.PathLike[str] | None = None,
        console_socket: str | os.PathLike[str] | None = None,
        preserve_fds: int = 0,
    ) -> RuntimeCommand:
        """The runtime ``exec`` of :meth:`exec`, for a monitor to run itself.

        A ``process`` mapping (config.json's "Process" wire form) is written to
        ``process_file``, which the caller removes when the command is done; an argv
        list needs none. The command exits with the process's status; only error
        lines in ``log_path`` tell a failure of the runtime itself apart.
        """
        check_id(container_id)
        _check_preserve_fds(self._name, "exec", container_id, preserve_fds)
        args: builtins.list[str] = ["exec"]
        tail: builtins.list[str] = []
        if isinstance(process, Mapping):
            if process_file is None:
                raise InvalidArgument(
                    f"{self._name} exec in container {container_id!r}: a process mapping "
                    "needs process_file, where the runtime reads it from")
            spec = dict(process) | ({"terminal": True} if tty else {})
            Path(process_file).write_text(json.dumps(spec))
            args.append(f"--process={os.path.abspath(process_file)}")
        else:
            tail = _exec_argv(self._name, container_id, process)
            args += ["--tty"] if tty else []
        args += _options(detach=detach, pid_file=pid_file, console_socket=console_socket,
                         preserve_fds=preserve_fds)
        args += [container_id, *tail]
        log = Path(log_path).absolute()
        argv = self._argv(LogTap(log, owned=False), *args)
        return RuntimeCommand(operation="exec", container_id=container_id,
                              argv=tuple(argv), env=dict(self._env), log_path=log,
                              bundle=None)

    def command_error(
        self,
        command: RuntimeCommand,
        returncode: int | None,
        log: bytes,
        *,
        stderr: str = "",
    ) -> RuntimeCommandError:
        """The exception for ``command`` (from :meth:`create_command` or
        :meth:`exec_command`) that exited with ``returncode`` after writing ``log``.

        The same diagnosis :meth:`create` and :meth:`exec` give: the runtime's own
        words, the class a caller can act on (:class:`ContainerExists`,
        :class:`PrivilegeError`...) and the known cause. ``returncode`` None means
        it was killed by the monitor for running too long.
        """
        return diagnose(runtime=self._name, operation=command.operation,
                        container_id=command.container_id, argv=command.argv,
                        returncode=returncode, records=parse_log(log), stderr=stderr,
                        bundle=command.bundle, stderr_is_container=True)


def _options(
    *,
    detach: bool = False,
    pid_file: str | os.PathLike[str] | None = None,
    console_socket: str | os.PathLike[str] | None = None,
    preserve_fds: int = 0,
    no_pivot: bool = False,
    no_new_keyring: bool = False,
) -> list[str]:
    """The command options create, exec and run share, spelt alike by runc and crun."""
    args = ["--detach"] if detach else []
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
    return args



def _exec_argv(runtime: str, container_id: str, process: Sequence[str]) -> builtins.list[str]:
    tail = [os.fspath(a) for a in process]
    if not tail or not tail[0] or tail[0].startswith("-"):
        raise InvalidArgument(
            f"{runtime} exec in container {container_id!r} needs a program as the first "
            f"argument (not empty, not starting with '-'), not {process!r}")
    return tail


def _check_preserve_fds(runtime: str, operation: str, container_id: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgument(f"{runtime} {operation} of container {container_id!r}: "
                              f"preserve_fds must be an integer >= 0, not {n!r}")


@attrs.frozen
class RuntimeCommand:
    """A runtime command line for someone else to run (a container monitor).

    Made by :meth:`RuntimeClient.create_command` / :meth:`RuntimeClient.exec_command`;
    ``argv`` is complete (binary, global options with ``--log=log_path``, command);
    ``env`` is the environment to run it with; ``bundle`` is set for create.
    """

    operation: str
    container_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_path: Path
    bundle: Path | None
