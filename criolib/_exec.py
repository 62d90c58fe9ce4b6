"""The one audited way criolib runs an outside program to completion.

Every exec of an OCI runtime, CNI plugin, conmon or test-bed tool goes through
:func:`run`: an argv list (never a shell), an explicit environment, a timeout, and
stderr captured into the :class:`~criolib.errors.ExecError` it raises.

Waiting uses a pidfd in a selector beside the pipes, not ``Popen.wait(timeout)``,
whose sleep-polling adds up to 50 ms per call (see MACHINE-NOTES.md).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import attrs

from criolib.errors import ExecError, ExecTimeout

__all__ = ["Completed", "run"]

_STDERR_IN_MESSAGE = 2000


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


def run(
    argv: Sequence[str],
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
    (``"container abc"``); it defaults to the program.
    """
    argv = [os.fspath(a) for a in argv]
    what = what or argv[0]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExecError(
            f"{what}: cannot run {argv[0]}: {exc.strerror or exc}", argv=argv
        ) from exc
    out, err, returncode = _communicate(proc, input, timeout)
    if returncode is None:
        raise ExecTimeout(
            f"{what}: {argv[0]} did not finish within {timeout} s and was killed",
            argv=argv,
            stdout=out,
            stderr=err.decode(errors="replace"),
        )
    if check and returncode != 0:
        text = err.decode(errors="replace").strip()
        detail = f": {text[-_STDERR_IN_MESSAGE:]}" if text else ""
        raise ExecError(
            f"{what}: {argv[0]} failed with {_describe_status(returncode)}{detail}",
            argv=argv,
            returncode=returncode,
            stdout=out,
            stderr=err.decode(errors="replace"),
        )
    return Completed(argv=argv, returncode=returncode, stdout=out, stderr=err)


def _communicate(  # noqa: PLR0912, PLR0915 - one select loop over four kinds of fd

    proc: subprocess.Popen[bytes], input: bytes | None, timeout: float | None
) -> tuple[bytes, bytes, int | None]:
    """Feed stdin, drain stdout/stderr and reap, blocking in one selector.

    Returns ``returncode=None`` when the timeout ran out (the process group is
    then killed and reaped).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {}
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(proc.pid)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for stream in (proc.stdout, proc.stderr):
            chunks[stream.fileno()] = []
            sel.register(stream.fileno(), selectors.EVENT_READ)
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
        exited = False
        open_pipes = 2
        while open_pipes or not exited:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                _kill_group(proc)
                return b"".join(chunks[proc.stdout.fileno()]), b"".join(
                    chunks[proc.stderr.fileno()]
                ), None
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == pidfd:
                    exited = True
                    sel.unregister(pidfd)
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
        return b"".join(chunks[proc.stdout.fileno()]), b"".join(chunks[proc.stderr.fileno()]), (
            returncode
        )
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
