"""``criolib conmon``: create containers under a monitor and talk to them (like conmon).

``run`` takes conmon's flags as CRI-O passes them (``-c/--cid``, ``-b/--bundle``,
``-r/--runtime``, ``-l/--log-path``, ``--exit-dir``, ``-t``, ``-i``...) and returns once
the runtime's ``create`` is done, printing the container's pid; the user then runs the
runtime's ``start``, as CRI-O does. The other verbs find the container by its record
under ``--run-dir``, with the backend that created it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from criolib.conmon import (
    DEFAULT_RUN_DIR,
    STDERR,
    ContainerConfig,
    InvalidMonitorConfig,
    Monitor,
    MonitorError,
    open_monitor,
)

HELP = "create containers under a monitor; status, wait, exec, attach (like conmon)"

Handler = Callable[[argparse.Namespace], int]


def register(parser: argparse.ArgumentParser) -> Handler:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="where the monitors keep their records (default: %(default)s)")
    common.add_argument("--backend", default="auto",
                        help="criolib, conmon or auto (default: the backend that created "
                        "the container; for run: conmon if installed, else criolib)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    _add_run(sub, common)

    status = sub.add_parser("status", parents=[common], help="running, exited or lost")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(verb_handler=_status)

    wait = sub.add_parser("wait", parents=[common],
                          help="wait for the exit and print the exit code")
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="give up after SECONDS (exit status 124)")
    wait.set_defaults(verb_handler=_wait)

    exe = sub.add_parser("exec", parents=[common],
                         help="run a command in the container and exit with its code")
    exe.add_argument("id")
    exe.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="kill the command after SECONDS")
    exe.add_argument("command", nargs=argparse.REMAINDER,
                     help="the command, after -- (options may come between ID and --)")
    # argparse hands everything after the id to REMAINDER; options written between the
    # id and "--" are read from it with this parser.
    late = argparse.ArgumentParser(prog="criolib conmon exec ID", add_help=False,
                                   argument_default=argparse.SUPPRESS)
    late.add_argument("--run-dir", type=Path)
    late.add_argument("--backend")
    late.add_argument("--timeout", type=float)
    exe.set_defaults(verb_handler=_exec, late_options=late)

    att = sub.add_parser("attach", parents=[common],
                         help="pass stdin and stdout/stderr through to the container")
    att.add_argument("id")
    att.add_argument("--no-stdin", action="store_true", help="do not forward stdin")
    att.set_defaults(verb_handler=_attach)

    reopen = sub.add_parser("reopen-log", parents=[common],
                            help="reopen the log file (after a rotation)")
    reopen.add_argument("id")
    reopen.set_defaults(verb_handler=_reopen)

    resize = sub.add_parser("resize", parents=[common], help="set the terminal's size")
    resize.add_argument("id")
    resize.add_argument("rows", type=int)
    resize.add_argument("cols", type=int)
    resize.set_defaults(verb_handler=_resize)

    ls = sub.add_parser("ls", parents=[common], help="the containers under the run dir")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(verb_handler=_ls)

    def handle(args: argparse.Namespace) -> int:
        verb: Handler = args.verb_handler
        return verb(args)

    return handle


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", parents=[common],
                         help="create a container under a monitor and print its pid")
    run.add_argument("--cid", "-c", required=True, help="the container id")
    run.add_argument("--bundle", "-b", required=True, type=Path, help="the OCI bundle")
    run.add_argument("--runtime", "-r", default="runc",
                     help="runc, crun or a runtime's path (default: runc)")
    run.add_argument("--runtime-root", type=Path, help="the runtime's --root state dir")
    run.add_argument("--systemd-cgroup", action="store_true",
                     help="the runtime's systemd cgroup manager (default: cgroupfs)")
    run.add_argument("--log-path", "-l", type=Path, help="the CRI log file")
    run.add_argument("--log-size-max", type=int, default=-1, metavar="BYTES",
                     help="truncate the log past this size (default: no limit)")
    run.add_argument("--exit-dir", type=Path,
                     help="where the exit file <cid> goes (default: <run-dir>/exits)")
    run.add_argument("--persist-dir", type=Path,
                     help="also write exit (and oom) here (default: the container's dir)")
    run.add_argument("--terminal", "-t", action="store_true", help="give it a terminal")
    run.add_argument("--stdin", "-i", action="store_true", help="keep a stdin to attach to")
    run.add_argument("--stdin-once", action="store_true",
                     help="close the container's stdin when any attach client leaves")
    run.add_argument("--group", help="share one criolib monitor with this group (a pod)")
    run.add_argument("--create-timeout", type=float, default=240.0, metavar="SECONDS")
    run.add_argument("--no-pivot", action="store_true")
    run.add_argument("--no-new-keyring", action="store_true")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(verb_handler=_run)


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir).absolute()


def _monitor_for(args: argparse.Namespace, container_id: str | None = None) -> Monitor:
    """The backend asked for; for ``auto`` and a known container, the one that made it."""
    backend = args.backend
    run_dir = _run_dir(args)
    if backend == "auto" and container_id is not None:
        try:
            record = json.loads((run_dir / container_id / "monitor.json").read_bytes())
            backend = str(record.get("backend") or "auto")
        except (OSError, ValueError, AttributeError):
            pass  # the monitor says what is wrong with the id
    return open_monitor(backend, run_dir)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else Path(path).absolute()


def _run(args: argparse.Namespace) -> int:
    from criolib.runtime_spec import RuntimeClient

    run_dir = _run_dir(args)
    runtime = RuntimeClient(args.runtime, root=args.runtime_root,
                            systemd_cgroup=args.systemd_cgroup)
    config = ContainerConfig(
        container_id=args.cid, bundle=Path(args.bundle).absolute(), runtime=runtime,
        exit_dir=_absolute(args.exit_dir) or run_dir / "exits",
        log_path=_absolute(args.log_path), persist_dir=_absolute(args.persist_dir),
        terminal=args.terminal, stdin=args.stdin, stdin_once=args.stdin_once,
        log_size_max=args.log_size_max, group=args.group,
        create_timeout=args.create_timeout, no_pivot=args.no_pivot,
        no_new_keyring=args.no_new_keyring)
    monitor = open_monitor(args.backend, run_dir)
    created = monitor.create(config)
    if args.json:
        print(json.dumps({"id": created.container_id, "pid": created.pid,
                          "monitor_pid": created.monitor_pid, "backend": monitor.name}))
    else:
        print(created.pid)
    return 0


def _status(args: argparse.Namespace) -> int:
    st = _monitor_for(args, args.id).status(args.id)
    state = ("creating" if st.creating else "running" if st.running else
             "exited" if st.exit is not None else "lost")
    info: dict[str, Any] = {"id": st.container_id, "backend": st.backend, "state": state,
                            "pid": st.pid, "monitor_pid": st.monitor_pid,
                            "log_path": None if st.log_path is None else str(st.log_path),
                            "log_error": st.log_error, "log_dropped": st.log_dropped}
    if st.exit is not None:
        info |= {"exit_code": st.exit.exit_code, "finished_at": st.exit.finished_at,
                 "oom_killed": st.exit.oom_killed}
    if args.json:
        print(json.dumps(info))
    else:
        print("\n".join(f"{k}: {v}" for k, v in info.items() if v is not None))
    return 0


def _wait(args: argparse.Namespace) -> int:
    status = _monitor_for(args, args.id).wait(args.id, timeout=args.timeout)
    if status is None:
        print(f"criolib: container {args.id!r} still runs after {args.timeout:g} s",
              file=sys.stderr)
        return 124
    print(status.exit_code)
    if status.oom_killed:
        print(f"criolib: container {args.id!r} was OOM-killed", file=sys.stderr)
    return 0


def _exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if "--" in command:
        cut = command.index("--")
        args.late_options.parse_args(command[:cut], namespace=args)
        command = command[cut + 1:]
    if not command:
        raise InvalidMonitorConfig(f"exec in container {args.id!r}: no command given "
                                   "(criolib conmon exec ID -- CMD...)")
    result = _monitor_for(args, args.id).exec_sync(args.id, command, timeout=args.timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    if result.truncated:
        print("criolib: output truncated at the exec output limit", file=sys.stderr)
    if result.timed_out:
        print(f"criolib: the command ran past {args.timeout:g} s and was killed",
              file=sys.stderr)
    return result.exit_code


def _attach(args: argparse.Namespace) -> int:
    monitor = _monitor_for(args, args.id)
    attachment = monitor.attach(args.id)
    with attachment, local_terminal(attachment, _stdin_fd(),
                                    terminal=_has_terminal(monitor, args.id)):
        if not args.no_stdin:
            threading.Thread(target=_pump_stdin, args=(attachment,), daemon=True).start()
        while (item := attachment.read()) is not None:
            stream = sys.stderr.buffer if item[0] == STDERR else sys.stdout.buffer
            stream.write(item[1])
            stream.flush()
    return 0


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return -1  # no real stdin (closed, or replaced by a test): not a terminal


def _has_terminal(monitor: Monitor, container_id: str) -> bool:
    """Whether the container has a terminal, from its record (docs/conmon-design.md)."""
    try:
        record = json.loads((monitor.run_dir / container_id / "monitor.json").read_bytes())
        return bool(record.get("terminal"))
    except (OSError, ValueError, AttributeError):
        return False


def forward_resize(attachment: Any, fd: int) -> bool:
    """Send the local terminal's size (``fd``) to the container's; whether it was sent.

    Called at attach and on each SIGWINCH, as ``podman attach`` does; a local fd that
    is no terminal, or a monitor that refuses, is ignored (the attach goes on).
    """
    try:
        size = os.get_terminal_size(fd)
    except (OSError, ValueError):
        return False
    if size.lines < 1 or size.columns < 1:
        return False  # a terminal whose size was never set
    try:
        attachment.resize(size.lines, size.columns)
    except MonitorError:
        return False
    return True


@contextlib.contextmanager
def local_terminal(attachment: Any, fd: int, *, terminal: bool) -> Iterator[bool]:
    """While attached to a terminal container from a terminal: raw mode (keys, ^C
    included, go to the container's terminal, which does the line editing and echo)
    and SIGWINCH forwarded as resize; the terminal's modes are restored on the way
    out. Yields whether raw mode is on (not when ``fd`` is no tty or the container has
    no terminal)."""
    if not terminal or fd < 0 or not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        previous = signal.signal(signal.SIGWINCH,
                                 lambda signum, frame: forward_resize(attachment, fd))
    except ValueError:  # not the main thread: no handler, the size is still sent once
        previous = None
    try:
        tty.setraw(fd, termios.TCSANOW)
        forward_resize(attachment, fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)


def _pump_stdin(attachment: Any) -> None:
    """Forward our stdin to the container until EOF, then close its end."""
    try:
        fd = sys.stdin.fileno()
        while data := os.read(fd, 8192):
            attachment.write(data)
        attachment.close_stdin()
    except (OSError, ValueError, MonitorError):
        return  # the connection or our stdin is gone: the reader ends the command


def _reopen(args: argparse.Namespace) -> int:
    _monitor_for(args, args.id).reopen_log(args.id)
    return 0


def _resize(args: argparse.Namespace) -> int:
    _monitor_for(args, args.id).resize(args.id, args.rows, args.cols)
    return 0


def _ls(args: argparse.Namespace) -> int:
    monitor = _monitor_for(args)
    ids = monitor.containers()
    if args.json:
        print(json.dumps(ids))
    else:
        for cid in ids:
            print(cid)
    return 0
