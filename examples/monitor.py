"""Run a container under each criolib.conmon backend: logs, exec, attach, exit.

Builds the test bed's busybox image, unpacks it into a bundle and generates its
config.json with criolib.runtime_spec. Then, once under criolib's own monitor
(``open_monitor("criolib")``) and once under the system conmon binary
(``open_monitor("conmon")``), each with runc or crun:

1. create the container under the monitor and start it with the runtime (the caller
   starts, as CRI-O does); it waits for a line on its stdin;
2. ``exec_sync`` a command in it (its output and exit code come back);
3. ``attach`` to its stdio, type a line, read its output until it exits;
4. ``wait`` for its exit code (from the exit file the monitor writes);
5. read its CRI log back with ``read_cri_log`` (the format the kubelet reads);
6. clean up: ``runtime.delete``, ``monitor.forget``, and see the monitor exit.

Needs root.

    .venv/bin/python examples/monitor.py
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import tempfile
from pathlib import Path

from criolib.conmon import ContainerConfig, open_monitor, read_cri_log
from criolib.errors import CriolibError
from criolib.runtime_spec import Generator, RuntimeClient
from criolib.testing import build_test_images, unpack_test_image

#: The container prints nothing before its stdin gives it a line, so everything it
#: says reaches the attach client that sends that line.
SCRIPT = 'read line; echo "got $line"; echo hello; echo oops >&2; exit 3'
#: How long the example waits for anything (the container's exit, a monitor's).
TIMEOUT = 30.0


def _runtimes() -> tuple[str, str]:
    """A runtime for each backend: crun under criolib's monitor and runc under conmon
    when both are installed, else whichever is."""
    have = [name for name in ("crun", "runc") if shutil.which(name)]
    if not have:
        raise SystemExit("example failed: neither runc nor crun is installed")
    return have[0], have[-1]


def _wait_gone(pid: int) -> bool:
    """Whether process ``pid`` (not our child) exits within TIMEOUT."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], TIMEOUT)[0])
    finally:
        os.close(fd)


def run_one(backend: str, runtime_name: str, bundle: Path, work: Path) -> None:
    """One container's life under ``backend`` with ``runtime_name``, told on stdout."""
    cid = f"example-{backend}"
    runtime = RuntimeClient(runtime_name, root=work / f"{runtime_name}-state")
    monitor = open_monitor(backend, run_dir=work / f"run-{backend}")
    log_path = work / f"{cid}.log"
    print(f"--- {backend} monitor with {runtime_name}")
    created = monitor.create(ContainerConfig(
        container_id=cid, bundle=bundle, runtime=runtime, exit_dir=work / "exits",
        log_path=log_path, stdin=True))
    try:
        runtime.start(cid)
        print(f"created {cid}: init pid {created.pid}, monitor pid {created.monitor_pid}")

        result = monitor.exec_sync(cid, ["sh", "-c", "echo exec in $(cat /proc/1/comm); "
                                     "exit 5"], timeout=10)
        print(f"exec_sync: exit {result.exit_code}, stdout {result.stdout!r}")

        with monitor.attach(cid) as attachment:
            attachment.write(b"world\n")
            out, err = attachment.read_until_eof(TIMEOUT)
        print(f"attach: stdout {out!r}, stderr {err!r}")

        status = monitor.wait(cid, TIMEOUT)
        if status is None:
            raise SystemExit(f"example failed: {cid} did not exit within {TIMEOUT:g} s")
        print(f"wait: exit code {status.exit_code}")

        for record in read_cri_log(log_path):
            print(f"log: {record.time_text} {record.stream} "
                  f"{'P' if record.partial else 'F'} {record.message.decode()}")
    finally:
        runtime.delete(cid, force=True)
        monitor.wait(cid, TIMEOUT)  # the monitor records the exit of a killed container
        monitor.forget(cid)
    gone = _wait_gone(created.monitor_pid)
    print(f"deleted and forgotten; monitor {'exited' if gone else 'still running'}")


def main() -> int:
    if os.geteuid() != 0:
        print("examples/monitor.py needs root (it runs containers)", file=sys.stderr)
        return 1
    criolib_runtime, conmon_runtime = _runtimes()
    if not shutil.which("conmon"):
        print("examples/monitor.py needs the conmon binary (Debian package conmon)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="criolib-monitor-example-") as tmp:
        work = Path(tmp)
        images = build_test_images(work / "images")
        bundle = work / "bundle"
        unpack_test_image(images, "busybox", bundle / "rootfs")
        Generator().set_root(str(bundle / "rootfs")).set_args(
            ["/bin/sh", "-c", SCRIPT]).save(bundle)
        print(f"bundle: busybox running {SCRIPT!r}")
        run_one("criolib", criolib_runtime, bundle, work)
        run_one("conmon", conmon_runtime, bundle, work)
    print("monitor example finished: two backends, logs, exec, attach, exit codes")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CriolibError as exc:
        print(f"example failed: {exc}", file=sys.stderr)
        sys.exit(1)
