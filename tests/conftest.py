"""Suite-wide rules.

Under ``CRIOLIB_REQUIRE_INTEGRATION=1`` (CI) no test may skip: a skipped test is a
test that did not run, and CI must run them all.
"""

from __future__ import annotations

import pytest

from criolib.testing import integration_required

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if integration_required() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if integration_required() and _skipped:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} test(s) skipped while CRIOLIB_REQUIRE_INTEGRATION is set:",
            red=True,
        )
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)
