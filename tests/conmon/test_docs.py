"""docs/conmon.md's Example section, run as the script it is (as root, with crun).

The expected output is read from the page itself: each ``print(...)`` line of the
example carries a ``# <what it prints>`` comment (several lines separated by `` / ``),
so the page and this test cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from criolib.conmon import ContainerConfig
from criolib.conmon._wire import MAX_MESSAGE
from criolib.runtime_spec import RuntimeClient, RuntimeSpecError
from criolib.testing import require_binaries, require_root

from .conftest import processes_using

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "conmon.md"
DESIGN = ROOT / "docs" / "conmon-design.md"


def example_code(page: str) -> str:
    """The python code blocks of the page's ``## Example`` section, joined."""
    _, found, rest = page.partition("\n## Example\n")
    assert found, "docs/conmon.md has no '## Example' section"
    section = rest.split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert blocks, "the Example section has no python code block"
    return "\n".join(blocks)


def expected_output(code: str) -> list[str]:
    """What the example's commented ``print`` lines say they print, in order."""
    lines: list[str] = []
    for line in code.splitlines():
        statement, sep, comment = line.partition("  # ")
        if sep and "print(" in statement:
            lines += [part.strip() for part in comment.split(" / ")]
    return lines


def test_the_expected_output_is_read_from_the_comments() -> None:
    code = 'x = 1  # not a print\nprint(a)   # one\nfor r in rs:\n    print(r)  # a / b\n'
    assert expected_output(code) == ["one", "a", "b"]
    page = "# T\n## Example\ntext\n```python\nprint(1)  # 1\n```\n## Next\n```python\nno\n```\n"
    assert example_code(page) == "print(1)  # 1\n"


def test_the_design_page_matches_the_code() -> None:
    design = DESIGN.read_text()
    sizes = re.findall(r"at most\s+(\d+)\s+KiB\s+\(`MAX_MESSAGE`\)", design)
    assert sizes and all(int(n) * 1024 == MAX_MESSAGE for n in sizes), sizes
    named = set(re.findall(r"\b((?:criolib|tests)/[\w/]+\.py)\b", design))
    assert "criolib/cli/_conmon.py" in named and "tests/conmon/test_daemon.py" in named
    assert not [path for path in named if not (ROOT / path).is_file()]
    for word in ('"creating"', "log_error", "log_dropped", "--detach"):
        assert word in design, word


def test_stdin_once_is_documented_as_conmon_does_it() -> None:
    # Any attach client going away closes the container's stdin, not only a writer.
    for text in (PAGE.read_text(), ContainerConfig.__doc__ or ""):
        flat = " ".join(text.split())
        assert "when *any* attach client" in flat or "when any attach client" in flat
        assert "that wrote" not in flat


@pytest.mark.integration
def test_the_example_runs_and_prints_what_the_page_says(tmp_path: Path) -> None:
    require_root()
    require_binaries("crun")
    code = example_code(PAGE.read_text())
    expected = expected_output(code)
    assert len(expected) >= 4, expected
    script = tmp_path / "example.py"
    script.write_text(code)
    # The example's mkdtemp() lands in tmp_path: everything it makes is cleaned up here.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == expected, proc.stdout
    finally:
        leftovers = _clean_up(tmp_path)
    assert not leftovers, f"the example left these behind: {leftovers}"


def _clean_up(tmp_path: Path) -> dict[int, str]:
    """Delete any container the example left; wait for its monitor to exit (idle 1 s)."""
    for state in tmp_path.glob("tmp*/state"):
        runtime = RuntimeClient("crun", root=state)
        for ctr in runtime.list():
            with contextlib.suppress(RuntimeSpecError):
                runtime.delete(ctr.id, force=True)
    deadline = time.monotonic() + 10.0
    while (left := processes_using(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
