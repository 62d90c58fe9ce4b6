"""examples/monitor.py (criolib.conmon's whole-program example, also pointed to by
docs/conmon.md) must run under both backends and tell what happened."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from criolib.testing import require_binaries, require_root

EXAMPLE = Path(__file__).parent.parent / "examples" / "monitor.py"
#: A CRI log line as the example prints it: RFC 3339 time with nanoseconds and offset.
LOG_LINE = re.compile(r"log: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) "
                      r"(stdout|stderr) F (.*)")


@pytest.mark.integration
def test_monitor_example_runs_a_container_under_each_backend() -> None:
    require_root()
    require_binaries("busybox", "runc", "crun", "conmon")
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bundle: busybox running ")
    assert lines[-1].startswith("monitor example finished")
    for backend, runtime in (("criolib", "crun"), ("conmon", "runc")):
        section = proc.stdout.split(f"--- {backend} monitor with {runtime}\n")[1]
        section_lines = section.split("---")[0].splitlines()
        assert re.fullmatch(rf"created example-{backend}: init pid \d+, monitor pid \d+",
                            section_lines[0]), section_lines
        assert section_lines[1:4] == [
            "exec_sync: exit 5, stdout b'exec in sh\\n'",
            "attach: stdout b'got world\\nhello\\n', stderr b'oops\\n'",
            "wait: exit code 3",
        ]
        logged = [LOG_LINE.fullmatch(line) for line in section_lines[4:7]]
        assert all(logged), section_lines[4:7]
        assert [(m.group(2), m.group(3)) for m in logged if m] == [
            ("stdout", "got world"), ("stdout", "hello"), ("stderr", "oops")]
        assert section_lines[7] == "deleted and forgotten; monitor exited"
    # Nothing is left running: monitors and containers have the example's temp dir in
    # their command lines.
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    assert [line for line in out.splitlines() if "criolib-monitor-example-" in line] == []
