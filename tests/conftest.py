"""Suite-wide rules.

Under ``CRIOLIB_REQUIRE_INTEGRATION=1`` (CI) no test may skip: a skipped test is a
test that did not run, and CI must run them all. That covers skips at run time
(``pytest.skip()``, ``require_binaries``) and at collection time (a module-level
``pytest.skip(allow_module_level=True)`` or ``pytest.importorskip``), which pytest
reports as a skipped collection, not as a skipped test.
"""

from __future__ import annotations

import pytest

from criolib.testing import REQUIRE_INTEGRATION_ENV, integration_required

pytest_plugins = ["pytester"]


class SkipGuard:
    """Counts skipped tests and collections; fails the session under CI if there are any."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid or "<session>")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if integration_required() and self.skipped and exitstatus in (
            pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if integration_required() and self.skipped:
            terminalreporter.write_line(
                f"FAILED: {len(self.skipped)} test(s) or module(s) skipped while "
                f"{REQUIRE_INTEGRATION_ENV} is set:",
                red=True,
            )
            for nodeid in self.skipped:
                terminalreporter.write_line(f"  {nodeid}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipGuard(), "criolib-skip-guard")
