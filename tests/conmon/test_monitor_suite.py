"""The monitor conformance suite: the same tests for every backend under runc and crun.

Issue 7 "Tests": criolib's monitor (``CriolibMonitor``) and the conmon binary
(``ConmonMonitor``) must behave the same behind :class:`~criolib.conmon.Monitor`:
the CRI log as the kubelet reads it (checked with :mod:`kubelet_log`, a parser written
from kubernetes pkg/kubelet/kuberuntime/logs, not with criolib's reader), exit codes,
signals and OOM kills, attach, exec sync, log rotation, a caller that goes away, a
burst of output, terminals, pods and bad input. Fixtures: conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from criolib.conmon import (
    DEFAULT_LOG_MAX_LINE,
    STDERR,
    STDOUT,
    Attachment,
    BackendNotFound,
    ContainerConfig,
    ContainerExited,
    CreateFailed,
    ExecFailed,
    ExecResult,
    ExitStatus,
    InvalidMonitorConfig,
    Monitor,
    MonitorError,
    UnknownContainer,
    join_partial,
    open_monitor,
    read_cri_log,
)
from criolib.runtime_spec import Generator, PrivilegeError, RuntimeClient, RuntimeCommandError
from criolib.testing import require_binaries

from . import kubelet_log
from .conftest import Containers, Ctr, MakeBundle, new_container_id, processes_using

pytestmark = pytest.mark.integration


# -- helpers -------------------------------------------------------------------------------


def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` (a file another process writes: no event to block on) until true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def log_stdout(path: Path) -> bytes:
    """The stdout the CRI log holds so far (empty while the file does not exist)."""
    try:
        return kubelet_log.read_streams(path)["stdout"]
    except FileNotFoundError:
        return b""


def read_attached(att: Attachment, want_out: bytes, want_err: bytes,
                  timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Read frames until stdout holds ``want_out`` and stderr ``want_err``."""
    out, err = b"", b""
    deadline = time.monotonic() + timeout
    while not (want_out in out and want_err in err):
        item = att.read(max(0.0, deadline - time.monotonic()))
        assert item is not None, f"attach ended early: stdout={out!r} stderr={err!r}"
        stream, data = item
        assert stream in (STDOUT, STDERR)
        if stream == STDOUT:
            out += data
        else:
            err += data
    return out, err


def assert_recent(status: ExitStatus, since: float) -> None:
    now = time.time()
    assert since - 0.5 <= status.finished_at <= now + 0.5, (status, since, now)


# -- 0. the checker itself: the kubelet's own test vectors (logs_test.go TestParseLog) ---

_TS = b"2016-10-20T18:39:20.57606443Z"
_TS_NS = 1476988760_576064430


def test_kubelet_parser_reads_the_kubelets_examples() -> None:
    rec = kubelet_log.parse_line(_TS + b" stdout F cri stdout test log\n")
    assert rec == kubelet_log.KubeletRecord(_TS_NS, "stdout", False, ("F",),
                                            b"cri stdout test log\n")
    rec = kubelet_log.parse_line(_TS + b" stderr P cri stderr partial\n")
    assert (rec.stream, rec.partial, rec.log) == ("stderr", True, b"cri stderr partial")
    rec = kubelet_log.parse_line(_TS + b" stdout F \n")
    assert (rec.partial, rec.log) == (False, b"\n")
    # The kubelet takes extra tags (forward compatible); this checker does only if told.
    line = _TS + b" stdout P:TAG1:TAG2 cri stdout partial test log\n"
    with pytest.raises(kubelet_log.KubeletLogError):
        kubelet_log.parse_line(line)
    assert kubelet_log.parse_line(line, strict=False).log == b"cri stdout partial test log"
    assert kubelet_log.parse_rfc3339_nano(b"2016-10-20T20:39:20.5+02:00") == 1476988760_5 * 10**8
    assert kubelet_log.parse_rfc3339_nano(b"2016-10-20T18:39:20Z") == 1476988760 * 10**9
    assert kubelet_log.read_streams([
        _TS + b" stdout P a\n", _TS + b" stderr P x\n", _TS + b" stdout F b\n",
        _TS + b" stderr F y\n", _TS + b" stdout P tail\n"]) == {
            "stdout": b"ab\ntail", "stderr": b"xy\n"}


@pytest.mark.parametrize("line", [
    b"unsupported log format test log\n",
    _TS + b" stdout F no newline",
    _TS + b" stdin F wrong stream\n",
    _TS + b" stdout X bad tag\n",
    _TS + b" stdout F\n",
    b"2016-13-20T18:39:20.5Z stdout F month 13\n",
    b"2016-02-30T18:39:20.5Z stdout F february 30\n",
    b"2016-10-20 18:39:20.5Z stdout F no T\n",
    b"2016-10-20T18:39:20.5 stdout F no zone\n",
    b"2016-10-20T18:39:20.5+0200 stdout F zone without colon\n",
], ids=["not-cri", "no-newline", "stdin", "tag-x", "no-message-field", "month-13", "feb-30",
        "no-T", "no-zone", "zone-no-colon"])
def test_kubelet_parser_refuses(line: bytes) -> None:
    with pytest.raises(kubelet_log.KubeletLogError):
        kubelet_log.parse_line(line)


# -- 1. the CRI log ------------------------------------------------------------------------

_BIG_LINE = b"".join(b"%09d|" % i for i in range(4096))  # 40 KiB, every chunk distinct
# busybox awk writes as it goes; cat then sends the 40 KiB line in one write (sendfile),
# so the monitor has to cut it into partial records itself. The sleep lets the monitor
# read the two half lines apart: partial records of both streams interleave.
_LOG_SCRIPT = r"""
awk 'BEGIN { for (i = 0; i < 4096; i++) printf "%09d|", i; printf "\n" }' > /tmp/line
printf 'one\n'
printf 'err one\n' >&2
printf '\n'
printf 'half-out'
printf 'half-err' >&2
sleep 0.05
printf ' rest-out\n'
printf ' rest-err\n' >&2
cat /tmp/line
printf '\n' >&2
printf 'tail-no-newline'
"""


def test_log_format_is_what_the_kubelet_reads(containers: Containers) -> None:
    since = time.time()
    ctr = containers.create(_LOG_SCRIPT)
    status = containers.wait(ctr)
    assert status.exit_code == 0
    until = time.time()
    # The exit is recorded only after the output is drained into the log: read it now.
    raw = ctr.log_path.read_bytes()
    records = list(kubelet_log.iter_log(raw.splitlines(keepends=True)))
    streams = kubelet_log.read_streams(raw.splitlines(keepends=True))
    assert streams["stdout"] == (b"one\n\nhalf-out rest-out\n" + _BIG_LINE + b"\n"
                                 + b"tail-no-newline")
    assert streams["stderr"] == b"err one\nhalf-err rest-err\n\n"
    times = [r.timestamp_ns for r in records]
    assert times == sorted(times), "timestamps go backwards"
    assert int((since - 1) * 1e9) <= times[0] and times[-1] <= int((until + 1) * 1e9)
    # The 40 KiB line was cut into partial records no longer than the line cap.
    assert max(len(r.log) for r in records) <= DEFAULT_LOG_MAX_LINE + 1
    assert sum(r.partial for r in records if r.stream == "stdout") >= 3
    # The empty line is a full record with an empty message.
    assert any(r.log == b"\n" and not r.partial for r in records if r.stream == "stdout")
    last_out = [r for r in records if r.stream == "stdout"][-1]
    assert last_out.partial and last_out.log.endswith(b"tail-no-newline")
    # criolib's own reader agrees with the kubelet's rules on what both monitors wrote.
    ours = read_cri_log(ctr.log_path)
    assert [(r.time_ns, r.stream, r.partial) for r in ours] == [
        (r.timestamp_ns, r.stream, r.partial) for r in records]
    lines = join_partial(ours)
    assert [line for stream, line in lines if stream == "stdout"] == [
        b"one", b"", b"half-out rest-out", _BIG_LINE, b"tail-no-newline"]
    assert [line for stream, line in lines if stream == "stderr"] == [
        b"err one", b"half-err rest-err", b""]


# -- 2. exit codes and signals -------------------------------------------------------------


def test_exit_codes_and_status(containers: Containers, monitor: Monitor,
                               monitor_backend: str) -> None:
    ctrs = {code: containers.create(f"exit {code}", start=False) for code in (0, 1, 42)}
    for code, ctr in ctrs.items():
        st = monitor.status(ctr.id)
        assert (st.container_id, st.backend, st.running, st.exit, st.pid) == (
            ctr.id, monitor_backend, True, None, ctr.created.pid), code
        assert st.monitor_pid == ctr.created.monitor_pid
        assert st.log_path == ctr.log_path
        # The pid reported is the init's, as the runtime knows it.
        assert containers.runtime.state(ctr.id).pid == ctr.created.pid
    since = time.time()
    for ctr in ctrs.values():
        containers.runtime.start(ctr.id)
    for code, ctr in ctrs.items():
        status = containers.wait(ctr)
        assert (status.exit_code, status.oom_killed) == (code, False)
        assert_recent(status, since)
        after = monitor.status(ctr.id)
        assert (after.running, after.exit, after.lost) == (False, status, False)
        assert ctr.exit_file.read_text() == str(code)  # conmon's format: no newline
        assert abs(ctr.exit_file.stat().st_mtime_ns / 1e9 - status.finished_at) < 1e-3


def test_wait_timeout_and_forget(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    t0 = time.monotonic()
    assert monitor.wait(ctr.id, 0.3) is None  # still running after the timeout
    assert 0.3 <= time.monotonic() - t0 < 2.0
    with pytest.raises(MonitorError, match=ctr.id):
        monitor.forget(ctr.id)  # still running: its record is all that finds it
    assert monitor.status(ctr.id).running
    containers.runtime.kill(ctr.id, "SIGKILL")
    assert containers.wait(ctr).exit_code == 137
    assert ctr.id in monitor.containers()
    monitor.forget(ctr.id)
    assert ctr.id not in monitor.containers()
    with pytest.raises(UnknownContainer):
        monitor.status(ctr.id)


def _host_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_exec(ctr: Ctr, comm: str) -> None:
    pid = ctr.created.pid
    wait_until(lambda: _host_comm(pid) == comm, f"{ctr.id} to exec {comm}")


def test_signals(containers: Containers, monitor: Monitor) -> None:
    # An init that is pid 1 of its pid namespace ignores a SIGTERM it has no handler
    # for (pid_namespaces(7)); in the host's pid namespace SIGTERM kills it: 128+15.
    term = containers.create(["sleep", "1000"],
                             configure=lambda g: g.remove_namespace("pid"))
    kill = containers.create(["sleep", "1000"])
    trap = containers.create("trap 'exit 42' TERM; echo ready; "
                             "while :; do sleep 0.05; done")
    for ctr in (term, kill):
        _wait_exec(ctr, "sleep")
    wait_until(lambda: log_stdout(trap.log_path) == b"ready\n", "the trap to be set")
    for ctr in (term, kill, trap):
        assert monitor.status(ctr.id).running
    since = time.time()
    containers.runtime.kill(term.id, "SIGTERM")
    containers.runtime.kill(kill.id, "SIGKILL")
    containers.runtime.kill(trap.id, "SIGTERM")
    for ctr, code in ((term, 143), (kill, 137), (trap, 42)):
        status = containers.wait(ctr)
        assert (status.exit_code, status.oom_killed) == (code, False), ctr.id
        assert_recent(status, since)
        assert monitor.status(ctr.id).exit == status


# -- 3. OOM --------------------------------------------------------------------------------


def _limit_memory(gen: Generator) -> None:
    gen.set_memory_limit(8 << 20, swap=8 << 20)


def test_oom_kill_is_detected(containers: Containers, monitor_run_dir: Path,
                              tmp_path: Path) -> None:
    # busybox tail keeps the last line of /dev/zero, which never ends: it grows until
    # the memory cgroup's OOM killer takes it.
    persist = tmp_path / "persist"
    persist.mkdir()
    hog = containers.create("exec tail /dev/zero", configure=_limit_memory, persist_dir=persist)
    calm = containers.create("head -c 1000000 /dev/zero | wc -c", configure=_limit_memory)
    status = containers.wait(hog, 30)
    assert (status.exit_code, status.oom_killed) == (137, True)
    assert hog.exit_file.read_text() == "137"
    assert (persist / "oom").exists()  # the persist dir asked for
    assert (persist / "exit").read_text() == "137"
    status = containers.wait(calm)
    assert (status.exit_code, status.oom_killed) == (0, False)
    # The default persist dir is the container's directory under the run dir.
    assert (monitor_run_dir / calm.id / "exit").read_text() == "0"
    assert not (monitor_run_dir / calm.id / "oom").exists()
    assert log_stdout(calm.log_path) == b"1000000\n"


# -- 4. attach -----------------------------------------------------------------------------

_ECHO = 'while read l; do echo "got $l"; echo "err $l" >&2; done; echo bye'


def test_attach_output_and_input(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(_ECHO, stdin=True)
    with monitor.attach(ctr.id) as one, monitor.attach(ctr.id) as two:
        assert (one.container_id, two.container_id) == (ctr.id, ctr.id)
        one.write(b"hello\n")
        for att in (one, two):
            assert read_attached(att, b"got hello\n", b"err hello\n") == (
                b"got hello\n", b"err hello\n")
        two.write(b"world\n")
        for att in (one, two):
            assert read_attached(att, b"got world\n", b"err world\n") == (
                b"got world\n", b"err world\n")
    # Without stdin_once the container's stdin outlives its attachers.
    with monitor.attach(ctr.id) as three:
        three.write(b"again\n")
        assert read_attached(three, b"got again\n", b"err again\n") == (
            b"got again\n", b"err again\n")
    assert monitor.status(ctr.id).running
    streams = kubelet_log.read_streams(ctr.log_path)
    assert streams["stdout"] == b"got hello\ngot world\ngot again\n"
    assert streams["stderr"] == b"err hello\nerr world\nerr again\n"


def test_attach_slow_reader_loses_nothing(containers: Containers, monitor: Monitor) -> None:
    # 8 MiB while the only attacher stalls: the monitor must hold the container back
    # (or buffer), not drop output, for the attacher and for the log alike.
    lines = 8192
    ctr = containers.create('awk \'BEGIN { s = sprintf("%1014s", ""); gsub(/ /, "y", s); '
                            f'for (i = 0; i < {lines}; i++) printf "%08d %s\\n", i, s }}\'',
                            start=False)
    expected = b"".join(b"%08d " % i + b"y" * 1014 + b"\n" for i in range(lines))
    with monitor.attach(ctr.id) as att:
        containers.runtime.start(ctr.id)
        time.sleep(0.5)  # the stall under test, not a synchronisation
        out, err = att.read_until_eof(30)
    assert (len(out), err) == (len(expected), b"")
    assert out == expected
    assert containers.wait(ctr).exit_code == 0
    assert kubelet_log.read_streams(ctr.log_path) == {"stdout": expected, "stderr": b""}


def test_attach_stdin_once_closes_stdin(containers: Containers) -> None:
    ctr = containers.create(_ECHO, stdin=True, stdin_once=True)
    with containers.monitor.attach(ctr.id) as att:
        att.write(b"only\n")
        att.close_stdin()
        out, err = att.read_until_eof(10)
    assert (out, err) == (b"got only\nbye\n", b"err only\n")
    status = containers.wait(ctr)
    assert status.exit_code == 0


# -- 5. exec sync --------------------------------------------------------------------------


def test_exec_sync(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    result = monitor.exec_sync(ctr.id, ["sh", "-c", "echo out; echo err >&2; exit 3"],
                               timeout=10)
    assert result == ExecResult(exit_code=3, stdout=b"out\n", stderr=b"err\n",
                                timed_out=False, truncated=False)
    result = monitor.exec_sync(ctr.id, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a"],
                               timeout=10)
    assert result == ExecResult(0, b"a" * 300000, b"")
    assert monitor.exec_sync(ctr.id, ["true"]) == ExecResult(0, b"", b"")
    # The output cap keeps the first bytes of each stream and says more was dropped.
    script = "head -c 5000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero | tr '\\0' b >&2"
    result = monitor.exec_sync(ctr.id, ["sh", "-c", script], timeout=10, output_limit=1000)
    assert result == ExecResult(0, b"a" * 1000, b"b" * 1000, timed_out=False, truncated=True)


def test_exec_stream(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    with monitor.exec_stream(ctr.id, ["sh", "-c", "cat; echo err >&2; exit 3"],
                             stdin=True) as proc:
        proc.write(b"through stdin\n")
        proc.close_stdin()
        assert proc.read_until_eof(10) == (b"through stdin\n", b"err\n")
        assert proc.wait(10) == 3
    # A terminal: input is echoed, output is ONLCR'd, the size follows resize.
    script = ('read l; i=0; while [ "$(stty size)" != "20 70" ] && [ $i -lt 200 ]; do '
              'sleep 0.05; i=$((i+1)); done; stty size; echo "got-$l"; exit 5')
    with monitor.exec_stream(ctr.id, ["sh", "-c", script], tty=True, stdin=True) as proc:
        proc.resize(20, 70)
        proc.write(b"abc\n")
        out, err = proc.read_until_eof(20)
        assert proc.wait(10) == 5
    assert err == b""
    assert out.endswith(b"20 70\r\ngot-abc\r\n"), out


def test_exec_sync_timeout(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(["sleep", "1000"])
    t0 = time.monotonic()
    result = monitor.exec_sync(ctr.id, ["sleep", "10"], timeout=1)
    elapsed = time.monotonic() - t0
    # Killed after the timeout (elapsed bounds the process's run time from above, so
    # less than 1 s means it was killed early), and not much later.
    assert 1.0 <= elapsed < 3.0
    assert (result.timed_out, result.exit_code) == (True, 137), result
    # The timed-out process was killed, not left behind in the container.
    ps = monitor.exec_sync(ctr.id, ["ps", "-o", "args"], timeout=10)
    assert ps.exit_code == 0
    assert b"sleep 10\n" not in ps.stdout, ps.stdout
    assert monitor.status(ctr.id).running


def test_exec_sync_missing_binary(containers: Containers, monitor: Monitor) -> None:
    """Both backends raise ExecFailed, not an ExecResult: the runtime's exec failed
    before the process ran, and its error lines (in its --log) say so.

    runc: ``exec failed: unable to start container process: exec: "/no/such/binary":
    stat /no/such/binary: no such file or directory``; crun: ``executable file
    `/no/such/binary` not found in $PATH: No such file or directory``. (The
    ``returncode`` differs: criolib's monitor reports the runtime's 255, conmon its
    own 1, so it is not asserted.)
    """
    ctr = containers.create(["sleep", "1000"])
    with pytest.raises(ExecFailed) as info:
        monitor.exec_sync(ctr.id, ["/no/such/binary"], timeout=10)
    exc = info.value
    assert exc.container_id == ctr.id and ctr.id in str(exc)
    assert isinstance(exc.runtime_error, RuntimeCommandError)
    assert exc.__cause__ is exc.runtime_error
    assert (exc.runtime_error.operation, exc.runtime_error.container_id) == ("exec", ctr.id)
    words = exc.runtime_error.runtime_message
    assert "/no/such/binary" in words and "no such file or directory" in words.lower()
    assert monitor.status(ctr.id).running


# -- 6. log rotation -----------------------------------------------------------------------

_TICKER = 'i=0; while :; do echo "seq $i"; i=$((i+1)); sleep 0.05; done'


def _seqs(path: Path) -> list[int]:
    text = kubelet_log.read_streams(path)["stdout"].decode()
    assert text.endswith("\n"), text[-40:]
    lines = text.splitlines()
    assert all(re.fullmatch(r"seq \d+", line) for line in lines), lines
    return [int(line[4:]) for line in lines]


def test_log_rotation_with_reopen(containers: Containers, monitor: Monitor) -> None:
    ctr = containers.create(_TICKER)
    wait_until(lambda: log_stdout(ctr.log_path).count(b"\n") >= 3, "three lines")
    rotated = ctr.log_path.with_name(ctr.log_path.name + ".1")
    ctr.log_path.rename(rotated)  # the kubelet renames, then asks for a reopen
    monitor.reopen_log(ctr.id)
    assert ctr.log_path.exists(), "reopen_log returned before the new file was opened"
    size = rotated.stat().st_size
    wait_until(lambda: log_stdout(ctr.log_path).count(b"\n") >= 3, "three lines in the new file")
    assert rotated.stat().st_size == size, "the rotated file still grows after the reopen"
    containers.runtime.kill(ctr.id, "SIGKILL")
    containers.wait(ctr)
    old, new = _seqs(rotated), _seqs(ctr.log_path)
    assert old and new
    assert old + new == list(range(len(old) + len(new))), (old, new)


def test_log_size_max_truncates(containers: Containers) -> None:
    # 300 lines of 100 bytes into a log capped at 4 KiB: conmon's rule (and criolib's)
    # is to truncate the file before a record that would take it past the cap.
    ctr = containers.create("i=0; while [ $i -lt 300 ]; do printf '%04d%095d\\n' $i 0; "
                            "i=$((i+1)); done", log_size_max=4096)
    assert containers.wait(ctr).exit_code == 0
    assert 0 < ctr.log_path.stat().st_size <= 4096
    expected = b"".join(b"%04d%095d\n" % (i, 0) for i in range(300))
    out = kubelet_log.read_streams(ctr.log_path)["stdout"]
    assert out and expected.endswith(out)
    assert out.startswith(b"0") and len(out) % 100 == 0, "the log starts mid-line"


# -- 7. the caller goes away ---------------------------------------------------------------

_CREATOR = """
import json, sys
from criolib.conmon import ContainerConfig, open_monitor
from criolib.runtime_spec import RuntimeClient

a = json.loads(sys.argv[1])
runtime = RuntimeClient(a["runtime"], root=a["root"])
monitor = open_monitor(a["backend"], run_dir=a["run_dir"])
created = monitor.create(ContainerConfig(
    container_id=a["id"], bundle=a["bundle"], runtime=runtime, exit_dir=a["exit_dir"],
    log_path=a["log_path"]))
runtime.start(a["id"])
print(json.dumps({"pid": created.pid, "monitor_pid": created.monitor_pid}), flush=True)
if a["ending"] == "killed":
    sys.stdin.read()  # until the test kills this process (and its process group)
"""


@pytest.mark.parametrize("ending", ["exits", "killed"])
def test_container_outlives_its_caller(containers: Containers, monitor_backend: str,
                                       monitor_run_dir: Path, make_bundle: MakeBundle,
                                       ending: str) -> None:
    """The caller exits (or is SIGKILLed with its whole process group, as a crashed
    service or a Ctrl-C would be); a new one finds the container, its log, its exit."""
    cid = new_container_id()
    runtime = containers.runtime
    log_path = containers.log_dir / f"{cid}.log"
    containers.adopt(cid)
    args = {"runtime": runtime.name, "root": str(runtime.root), "backend": monitor_backend,
            "run_dir": str(monitor_run_dir), "id": cid, "exit_dir": str(containers.exit_dir),
            "bundle": str(make_bundle("trap 'exit 42' TERM; " + _TICKER, name=cid)),
            "log_path": str(log_path), "ending": ending}
    # Pipes on purpose: a monitor that kept the caller's stdout would hang communicate().
    proc = subprocess.Popen([sys.executable, "-c", _CREATOR, json.dumps(args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        if ending == "killed":
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the caller flushes it once the container runs
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, err.decode()
            out = line + out
        else:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    created = json.loads(out)
    containers.track_monitor(created["monitor_pid"])
    # A new monitor object, in a process that did not create the container.
    fresh = open_monitor(monitor_backend, run_dir=monitor_run_dir)
    assert cid in fresh.containers()
    st = fresh.status(cid)
    assert (st.running, st.pid, st.monitor_pid) == (True, created["pid"], created["monitor_pid"])
    wait_until(lambda: log_stdout(log_path).count(b"\n") >= 2, "the log to be written")
    before = len(log_stdout(log_path))
    wait_until(lambda: len(log_stdout(log_path)) > before, "the log to keep growing")
    runtime.kill(cid, "SIGTERM")
    status = fresh.wait(cid, 20)
    assert status is not None and (status.exit_code, status.oom_killed) == (42, False)
    assert fresh.status(cid).exit == status
    seqs = [int(line[4:]) for line in log_stdout(log_path).decode().splitlines()]
    assert seqs == list(range(len(seqs)))


# -- 8. a burst of output ------------------------------------------------------------------

_BURST_LINES = 102400  # x 1024 bytes = 100 MiB
_BURST = ('awk \'BEGIN { s = sprintf("%1014s", ""); gsub(/ /, "x", s); '
          f'for (i = 0; i < {_BURST_LINES}; i++) printf "%08d %s\\n", i, s }}\'')


def _burst_digest() -> str:
    h = hashlib.sha256()
    tail = b"x" * 1014 + b"\n"
    for i in range(_BURST_LINES):
        h.update(b"%08d " % i + tail)
    return h.hexdigest()


def test_burst_of_100_mb_loses_nothing(containers: Containers) -> None:
    ctr = containers.create(_BURST)
    try:
        status = containers.wait(ctr, 60)
        assert status.exit_code == 0
        digest = kubelet_log.StreamDigest().feed_file(ctr.log_path)  # streamed, checked
        assert digest.sizes == {"stdout": _BURST_LINES * 1024, "stderr": 0}
        assert digest.hexdigest("stdout") == _burst_digest()
    finally:
        ctr.log_path.unlink(missing_ok=True)  # 100+ MB per case: don't keep it in /tmp


# -- 9. terminal ---------------------------------------------------------------------------


def test_terminal_output_input_and_resize(containers: Containers, monitor: Monitor) -> None:
    # busybox's `stty size` fails on a 0x0 terminal: start from config.json's 24x80.
    ctr = containers.create('echo term-out; echo term-err >&2; read l; echo "got $l"; '
                            "while :; do stty size; sleep 0.05; done", terminal=True, stdin=True,
                            configure=lambda g: g.set_console_size(24, 80))
    wait_until(lambda: b"term-err" in log_stdout(ctr.log_path), "the terminal's output")
    with monitor.attach(ctr.id) as att:
        att.write(b"hello\n")
        # One terminal: everything comes as stdout, input echoed, \n made \r\n (ONLCR).
        out, err = read_attached(att, b"24 80\r\n", b"")
        assert out.startswith(b"hello\r\ngot hello\r\n24 80\r\n"), out
        assert err == b""
        monitor.resize(ctr.id, 33, 101)
        wait_until(lambda: b"33 101\r\n" in log_stdout(ctr.log_path), "stty to see the new size")
        out, err = read_attached(att, b"33 101\r\n", b"")
        assert err == b""
    streams = kubelet_log.read_streams(ctr.log_path)
    assert streams["stderr"] == b""
    assert streams["stdout"].startswith(
        b"term-out\r\nterm-err\r\nhello\r\ngot hello\r\n24 80\r\n")
    sizes = streams["stdout"].split(b"got hello\r\n", 1)[1].split(b"\r\n")
    first_new = sizes.index(b"33 101")
    assert set(sizes[:first_new]) == {b"24 80"}
    assert set(sizes[first_new:-1]) == {b"33 101"}  # the last line may be cut short


# -- 10. pods ------------------------------------------------------------------------------


@pytest.mark.parametrize("monitor_backend", ["criolib"], indirect=True)
def test_pod_shares_one_criolib_monitor(containers: Containers, monitor: Monitor) -> None:
    pod = [containers.create(["sleep", "1000"], group="pod-a") for _ in range(3)]
    alone = containers.create(["sleep", "1000"])
    pids = {c.created.monitor_pid for c in pod}
    assert len(pids) == 1
    (pod_monitor,) = pids
    assert alone.created.monitor_pid != pod_monitor
    assert all(monitor.status(c.id).monitor_pid == pod_monitor for c in pod)
    # One container of the pod exits; the monitor keeps the others.
    containers.runtime.kill(pod[0].id, "SIGKILL")
    assert containers.wait(pod[0]).exit_code == 137
    for ctr in pod[1:]:
        assert monitor.status(ctr.id).running
        assert monitor.exec_sync(ctr.id, ["true"], timeout=10).exit_code == 0
    assert os.path.exists(f"/proc/{pod_monitor}")


@pytest.mark.parametrize("monitor_backend", ["conmon"], indirect=True)
def test_conmon_runs_one_monitor_per_container(containers: Containers,
                                               monitor: Monitor) -> None:
    pod = [containers.create(["sleep", "1000"], group="pod-a") for _ in range(3)]
    pids = [c.created.monitor_pid for c in pod]
    assert len(set(pids)) == 3
    for ctr, pid in zip(pod, pids, strict=True):
        assert monitor.status(ctr.id).monitor_pid == pid
        assert _host_comm(pid) == "conmon"


# -- 11. bad input -------------------------------------------------------------------------


def test_invalid_configs(tmp_path: Path, runtime: RuntimeClient) -> None:
    good = {"container_id": "ok", "bundle": tmp_path, "runtime": runtime,
            "exit_dir": tmp_path}
    ContainerConfig(**good)  # type: ignore[arg-type]
    for bad in ({"bundle": "relative/bundle"}, {"exit_dir": "exits"},
                {"log_path": "ctr.log"}, {"container_id": "../escape"},
                {"container_id": "has space"}, {"container_id": ""},
                {"stdin_once": True}, {"group": "a/b"}):
        with pytest.raises(InvalidMonitorConfig):
            ContainerConfig(**(good | bad))  # type: ignore[arg-type]


def test_backend_names(tmp_path: Path) -> None:
    # conmon is installed here, so "auto" picks it; an unknown name is refused.
    require_binaries("conmon")
    assert open_monitor("auto", run_dir=tmp_path / "run").name == "conmon"
    assert open_monitor("criolib", run_dir=tmp_path / "run").name == "criolib"
    with pytest.raises(BackendNotFound, match="nope"):
        open_monitor("nope", run_dir=tmp_path / "run")


def test_unknown_container(monitor: Monitor) -> None:
    calls: dict[str, Callable[[], object]] = {
        "status": lambda: monitor.status("nobody"),
        "wait": lambda: monitor.wait("nobody", 1),
        "attach": lambda: monitor.attach("nobody"),
        "exec_sync": lambda: monitor.exec_sync("nobody", ["true"], timeout=5),
        "resize": lambda: monitor.resize("nobody", 10, 10),
        "reopen_log": lambda: monitor.reopen_log("nobody"),
    }
    for name, call in calls.items():
        try:
            call()
        except UnknownContainer as exc:
            assert "nobody" in str(exc), name
        else:
            pytest.fail(f"{name} on an unknown id did not raise UnknownContainer")


def test_exited_container_refuses_attach_and_exec(containers: Containers,
                                                  monitor: Monitor) -> None:
    ctr = containers.create("exit 0", stdin=True)
    assert containers.wait(ctr).exit_code == 0
    with pytest.raises(ContainerExited, match=ctr.id):
        monitor.attach(ctr.id)
    with pytest.raises(ContainerExited, match=ctr.id):
        monitor.exec_sync(ctr.id, ["true"], timeout=5)


def _bad_create(containers: Containers, configure: Callable[[Generator], object],
                cmd: list[str]) -> CreateFailed:
    config = containers.config(cmd, configure=configure)
    with pytest.raises(CreateFailed) as info:
        containers.create_config(config)
    exc = info.value
    assert exc.container_id == config.container_id
    assert config.container_id in str(exc)
    assert isinstance(exc.runtime_error, RuntimeCommandError)
    assert exc.__cause__ is exc.runtime_error
    assert exc.runtime_error.operation == "create"
    assert exc.runtime_error.container_id == config.container_id
    # Nothing left behind: no container in the runtime, no monitor for it.
    assert config.container_id not in [s.id for s in containers.runtime.list()]
    wait_until(lambda: not processes_using(containers.tmp_path),
               "the failed create's monitor to go", timeout=5)
    return exc


def test_create_failure_missing_binary(containers: Containers, monitor: Monitor) -> None:
    exc = _bad_create(containers, lambda g: None, ["/no/such/binary"])
    assert isinstance(exc.runtime_error, RuntimeCommandError)
    words = exc.runtime_error.runtime_message
    assert "/no/such/binary" in words and "no such file or directory" in words.lower()
    # Nothing left behind also means the id can be used again once the bundle is fixed
    # (CRI-O retries a failed create with the same id).
    config = containers.config("exit 7", container_id=exc.container_id)
    ctr = containers.create_config(config)
    assert containers.wait(ctr).exit_code == 7


def test_create_failure_oom_score_adj(containers: Containers) -> None:
    # MACHINE-NOTES: without CAP_SYS_RESOURCE the runtime cannot lower oom_score_adj.
    exc = _bad_create(containers, lambda g: g.set_oom_score_adj(-998, restrict=False),
                      ["true"])
    assert isinstance(exc.runtime_error, PrivilegeError)
    assert "oom_score_adj" in exc.runtime_error.runtime_message
    assert "Permission denied" in exc.runtime_error.runtime_message
