"""``criolib conmon`` / ``python -m criolib.conmon``: bad arguments, and a container
driven from the command line alone."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.cli import main
from criolib.cli._conmon import forward_resize, local_terminal
from criolib.conmon import MonitorError
from criolib.testing import require_root

from .conftest import Containers, MakeBundle, new_container_id


@pytest.fixture
def monitor_backend() -> str:
    """criolib's backend (overrides the suite's parametrised fixture)."""
    require_root()
    return "criolib"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["conmon", *args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: VERB"),
    (["run", "-b", "/tmp"], "the following arguments are required: --cid/-c"),
    (["run", "-c", "x"], "the following arguments are required: --bundle/-b"),
    (["run", "-c", "x", "-b", "/b", "--log-size-max", "big"], "invalid int value: 'big'"),
    (["resize", "x", "24"], "the following arguments are required: cols"),
    (["resize", "x", "a", "b"], "invalid int value: 'a'"),
    (["wait", "x", "--timeout", "soon"], "invalid float value: 'soon'"),
    (["status"], "the following arguments are required: id"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                             message: str) -> None:
    code, out, err = _cli(capsys, *args)
    assert code == 2 and out == ""
    assert message in err


@pytest.mark.parametrize("args, message", [
    (["exec", "c1"], "exec in container 'c1': no command given"),
    (["exec", "c1", "--timeout", "5", "--"], "no command given"),
    (["exec", "--backend", "criolib", "c1", "--", "true"], "'c1' is not monitored"),
    (["status", "../etc"], "container id '../etc' is not usable"),
    (["status", "nobody"], "container 'nobody' is not monitored under"),
    (["wait", "nobody", "--backend", "criolib"], "container 'nobody' is not monitored"),
    (["ls", "--backend", "nope"], "no monitor backend 'nope'; known: auto, conmon, criolib"),
    (["run", "-c", "bad/id", "-b", "/tmp", "--backend", "criolib"], "'bad/id' is not usable"),
    (["run", "-c", "x", "-b", "/tmp", "-r", "no-such-runtime"], "no-such-runtime"),
])
def test_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        args: list[str], message: str) -> None:
    # Before the id: after it, exec reads words up to "--" as options, else as the command.
    code, out, err = _cli(capsys, args[0], "--run-dir", str(tmp_path / "run"), *args[1:])
    assert (code, out) == (1, "")
    assert err.startswith("criolib: error: ") and err.count("\n") == 1
    assert message in err


def test_ls_of_an_empty_run_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _cli(capsys, "ls", "--backend", "criolib", "--run-dir", str(tmp_path)) == (0, "", "")
    assert _cli(capsys, "ls", "--json", "--backend", "criolib",
                "--run-dir", str(tmp_path)) == (0, "[]\n", "")


def test_python_m_criolib_conmon_is_the_same_group(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "criolib.conmon", "status", "nobody",
                           "--backend", "criolib", "--run-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("criolib: error: container 'nobody' is not monitored")
    helped = subprocess.run([sys.executable, "-m", "criolib.conmon", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert all(verb in helped.stdout for verb in ("run", "exec", "attach", "reopen-log"))


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "criolib", "conmon", *args],
                          capture_output=True, text=True, input=stdin, timeout=60)


@pytest.mark.integration
def test_a_container_from_the_command_line(containers: Containers, make_bundle: MakeBundle,
                                           monitor_run_dir: Path, tmp_path: Path) -> None:
    cid = new_container_id()
    runtime = containers.runtime
    bundle = make_bundle("read line; echo got $line; exit 3", name=cid)
    where = ["--run-dir", str(monitor_run_dir)]
    created = _run("run", "-c", cid, "-b", str(bundle), "-r", runtime.name,
                   "--runtime-root", str(runtime.root), "-l", str(tmp_path / "c.log"),
                   "--exit-dir", str(tmp_path / "exits"), "-i", "--backend", "criolib",
                   "--json", *where)
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    containers.adopt(cid, info["monitor_pid"])
    assert (info["id"], info["backend"]) == (cid, "criolib")
    runtime.start(cid)

    assert _run("ls", "--backend", "criolib", *where).stdout == f"{cid}\n"
    status = json.loads(_run("status", cid, "--json", *where).stdout)
    assert (status["state"], status["pid"]) == ("running", info["pid"])
    executed = _run("exec", cid, "--timeout", "20", *where, "--",
                    "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (executed.returncode, executed.stdout, executed.stderr) == (5, "out\n", "err\n")
    assert _run("resize", cid, "30", "100", *where).returncode == 0  # no terminal: ignored
    assert _run("reopen-log", cid, *where).returncode == 0
    waited = _run("wait", cid, "--timeout", "0.1", *where)
    assert waited.returncode == 124 and "still runs" in waited.stderr

    attached = _run("attach", cid, *where, stdin="hello\n")
    assert (attached.returncode, attached.stdout) == (0, "got hello\n"), attached.stderr
    waited = _run("wait", cid, *where)
    assert (waited.returncode, waited.stdout) == (0, "3\n")
    assert "state: exited\n" in _run("status", cid, *where).stdout
    assert (tmp_path / "exits" / cid).read_text() == "3"


# -- attach from a terminal -----------------------------------------------------------------


class _Attachment:
    """Records the resizes an attach would send to the monitor."""

    def __init__(self, refuse: bool = False) -> None:
        self.sizes: list[tuple[int, int]] = []
        self.refuse = refuse

    def resize(self, rows: int, cols: int) -> None:
        if self.refuse:
            raise MonitorError("container 'c': resize failed in the monitor")
        self.sizes.append((rows, cols))


@pytest.fixture
def pty_slave() -> Iterator[int]:
    """The slave side of a new pseudo-terminal (a tty without a real terminal)."""
    master, slave = os.openpty()
    yield slave
    os.close(master)
    os.close(slave)


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_forward_resize_sends_the_local_terminal_size(pty_slave: int) -> None:
    att = _Attachment()
    _set_size(pty_slave, 40, 120)
    assert forward_resize(att, pty_slave) is True
    assert att.sizes == [(40, 120)]
    read_end, write_end = os.pipe()
    try:
        assert forward_resize(att, read_end) is False  # not a terminal: nothing sent
    finally:
        os.close(read_end)
        os.close(write_end)
    _set_size(pty_slave, 0, 0)
    assert forward_resize(att, pty_slave) is False  # a size never set
    assert att.sizes == [(40, 120)]
    _set_size(pty_slave, 24, 80)
    assert forward_resize(_Attachment(refuse=True), pty_slave) is False  # attach goes on


def test_attach_from_a_terminal_is_raw_and_forwards_sigwinch(pty_slave: int) -> None:
    att = _Attachment()
    _set_size(pty_slave, 24, 80)
    before = termios.tcgetattr(pty_slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    handler = signal.getsignal(signal.SIGWINCH)
    with local_terminal(att, pty_slave, terminal=True) as raw:
        assert raw is True
        lflag = termios.tcgetattr(pty_slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        assert att.sizes == [(24, 80)]  # the size at attach
        _set_size(pty_slave, 50, 132)
        signal.raise_signal(signal.SIGWINCH)  # the handler runs before this returns
        assert att.sizes == [(24, 80), (50, 132)]
    assert termios.tcgetattr(pty_slave) == before
    assert signal.getsignal(signal.SIGWINCH) is handler


def test_attach_without_a_tty_or_a_terminal_container_leaves_modes_alone(
        pty_slave: int) -> None:
    att = _Attachment()
    read_end, write_end = os.pipe()
    before = termios.tcgetattr(pty_slave)
    try:
        with local_terminal(att, read_end, terminal=True) as raw:  # stdin is a pipe
            assert raw is False
        with local_terminal(att, -1, terminal=True) as raw:  # no stdin at all
            assert raw is False
        with local_terminal(att, pty_slave, terminal=False) as raw:  # no terminal to feed
            assert raw is False
            assert termios.tcgetattr(pty_slave) == before
    finally:
        os.close(read_end)
        os.close(write_end)
    assert att.sizes == []
