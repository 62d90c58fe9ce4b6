"""The one audited way criolib runs an outside program.

Every exec of an OCI runtime, CNI plugin, conmon or test-bed tool goes through
:func:`run` (to completion) or :func:`spawn` (a daemon: the registry, a monitor):
an argv list (never a shell), an explicit environment, a timeout or a parent-death
signal, and stderr captured into the :class:`~criolib.errors.ExecError` raised.

Waiting uses a pidfd in a selector beside the pipes, not ``Popen.wait(timeout)``,
whose sleep-polling adds up to 50 ms per call (see MACHINE-NOTES.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import attrs

from criolib.errors import ExecError, ExecTimeout

__all__ = ["Completed", "InvalidArgv", "run", "spawn", "stop", "wait_exit"]

_STDERR_IN_MESSAGE = 2000
#: After the program exits, how long to keep reading output that is still arriving.
#: A daemon it started (``setsid cmd &``) may hold the pipes open for ever.
_DRAIN_GRACE = 0.05
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class InvalidArgv(ExecError, ValueError):
    """The argv cannot be run at all (it is empty)."""


@attrs.frozen
class Completed:
    """What a finished program left behind."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _check_argv(argv: Sequence[str | os.PathLike[str]], what: str | None) -> list[str]:
    out = [os.fspath(a) for a in argv]
    if not out:
        raise InvalidArgv(f"{what or 'exec'}: empty argv, nothing to run", argv=out)
    return out


def _start_error(
    exc: OSError, what: str, argv: list[str], cwd: str | os.PathLike[str] | None
) -> ExecError:
    """Name what failed: the working directory or the program (subprocess tells them apart)."""
    if cwd is not None and exc.filename == os.fspath(cwd):
        message = f"{what}: cannot change into working directory {exc.filename}: {exc.strerror}"
    else:
        message = f"{what}: cannot run {argv[0]}: {exc.strerror or exc}"
    err = ExecError(message, argv=argv)
    err.__cause__ = exc
    return err


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = 60.0,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    what: str | None = None,
) -> Completed:
    """Run ``argv`` to completion and return its output.

    ``env`` replaces the environment when given (``None`` inherits, which only the
    test bed does). With ``check`` a non-zero status raises :class:`ExecError`;
    running past ``timeout`` seconds kills the program and raises
    :class:`ExecTimeout`. ``what`` names the object for the message
    (``"container abc"``); it defaults to the program. The call returns when the
    program exits, not when every copy of its pipes closes: output still arriving
    from a daemon it left behind is read for a short grace time only.
    """
    args = _check_argv(argv, what)
    what = what or args[0]
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise _start_error(exc, what, args, cwd) from exc
    out, err, returncode = _communicate(proc, input, timeout)
    if returncode is None:
        raise ExecTimeout(
            f"{what}: {args[0]} did not finish within {timeout} s and was killed",
            argv=args,
            stdout=out,
            stderr=err.decode(errors="replace"),
        )
    if check and returncode != 0:
        text = err.decode(errors="replace").strip()
        detail = f": {text[-_STDERR_IN_MESSAGE:]}" if text else ""
        raise ExecError(
            f"{what}: {args[0]} failed with {_describe_status(returncode)}{detail}",
            argv=args,
            returncode=returncode,
            stdout=out,
            stderr=err.decode(errors="replace"),
        )
    return Completed(argv=args, returncode=returncode, stdout=out, stderr=err)


def _communicate(  # noqa: PLR0912, PLR0915 - one select loop over four kinds of fd
    proc: subprocess.Popen[bytes], input: bytes | None, timeout: float | None
) -> tuple[bytes, bytes, int | None]:
    """Feed stdin, drain stdout/stderr and reap, blocking in one selector.

    Returns ``returncode=None`` when the timeout ran out (the process group is
    then killed and reaped). Once the pidfd says the program exited, what is
    already in the pipes is read and the loop ends within :data:`_DRAIN_GRACE`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {}
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()

    def output() -> tuple[bytes, bytes]:
        return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])

    try:
        for fd in (out_fd, err_fd):
            chunks[fd] = []
            sel.register(fd, selectors.EVENT_READ)
        pending = memoryview(input or b"")
        stdin_fd = -1
        if proc.stdin is not None:
            if pending:
                stdin_fd = proc.stdin.fileno()
                os.set_blocking(stdin_fd, False)
                sel.register(stdin_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        sel.register(pidfd, selectors.EVENT_READ)
        drain_until: float | None = None  # set when the program has exited
        open_pipes = 2
        while open_pipes or drain_until is None:
            now = time.monotonic()
            if drain_until is not None and now >= drain_until:
                break  # exited; a leftover daemon holds the pipes
            if drain_until is None and deadline is not None and now >= deadline:
                _kill_group(proc)
                return *output(), None
            ends = [t for t in (deadline if drain_until is None else None, drain_until)
                    if t is not None]
            left = min(ends) - now if ends else None
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == pidfd:
                    drain_until = time.monotonic() + _DRAIN_GRACE
                    sel.unregister(pidfd)
                    if stdin_fd >= 0:  # nobody will read the rest of the input
                        sel.unregister(stdin_fd)
                        stdin_fd = -1
                elif fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[:65536])
                    except BrokenPipeError:
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(fd)
                        assert proc.stdin is not None
                        proc.stdin.close()
                        stdin_fd = -1
                else:
                    data = os.read(fd, 65536)
                    if data:
                        chunks[fd].append(data)
                    else:
                        sel.unregister(fd)
                        open_pipes -= 1
        returncode = proc.wait()
        return *output(), returncode
    finally:
        sel.close()
        os.close(pidfd)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _pdeathsig_hook(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``sig`` when the parent dies.

    prctl(2) PR_SET_PDEATHSIG. libc is loaded here, before the fork, so the child
    only makes the call. If the parent died before the call, the child would never
    get the signal: it checks its parent id and signals itself.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return hook


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    pdeathsig: signal.Signals | None = signal.SIGKILL,
    new_session: bool = True,
    what: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background (a daemon) and return its ``Popen``.

    ``pdeathsig`` (default SIGKILL) is delivered to it when the *thread* that
    spawned it exits (prctl(2) PR_SET_PDEATHSIG), so a killed test run leaves no
    daemon behind; spawn long-lived daemons from a long-lived thread, or pass
    ``None`` (which also keeps the fast vfork path: a ``preexec_fn`` forces a full
    fork). ``new_session`` puts it in its own process group, so :func:`stop`
    reaches its children too. ``stdin``/``stdout``/``stderr`` go to it as given
    (``None`` inherits the caller's). ``pass_fds`` are descriptors it inherits
    besides those (an OCI runtime's ``--preserve-fds``). ``env`` is explicit
    (``None`` inherits). A program or working directory that cannot be used
    raises :class:`ExecError`.
    """
    args = _check_argv(argv, what)
    what = what or args[0]
    try:
        return subprocess.Popen(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=new_session,
            # The hook only calls prctl(2) and getppid(2): nothing that takes a lock
            # another thread could hold across the fork.
            preexec_fn=_pdeathsig_hook(pdeathsig) if pdeathsig is not None else None,  # noqa: PLW1509
        )
    except OSError as exc:
        raise _start_error(exc, what, args, cwd) from exc


def wait_exit(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Block on a pidfd until ``proc`` exits or ``timeout`` passes; reap it if it did.

    MACHINE-NOTES.md: ``Popen.wait(timeout)`` sleep-polls; a pidfd does not.
    """
    if proc.returncode is not None:
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        proc.wait()
        return True
    try:
        sel = selectors.DefaultSelector()
        sel.register(pidfd, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
    finally:
        os.close(pidfd)
    if ready:
        proc.wait()
        return True
    return False


def stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0, group: bool = True) -> bool:
    """SIGTERM ``proc`` (its process group with ``group``), SIGKILL after ``grace`` s; reap.

    Returns False only if it survived SIGKILL for another ``grace`` seconds.
    """
    kill = os.killpg if group else os.kill
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(proc.pid, sig)
        if wait_exit(proc, grace):
            return True
    return False
