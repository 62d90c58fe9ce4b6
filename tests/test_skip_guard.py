"""The CI rule of tests/conftest.py: under CRIOLIB_REQUIRE_INTEGRATION=1 nothing may skip."""

from __future__ import annotations

import pytest

SUITE = {
    "test_ok": "def test_ok():\n    pass\n",
    "test_xfail": "import pytest\n\n@pytest.mark.xfail\ndef test_x():\n    assert False\n",
}
SKIPS = {
    "runtime": "import pytest\n\ndef test_s():\n    pytest.skip('no runc')\n",
    "module": "import pytest\n\npytest.skip('no runc here', allow_module_level=True)\n",
    "importorskip": "import pytest\n\npytest.importorskip('no_such_module_criolib')\n",
}


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # The inner runs need no third-party plugins (hypothesis' alone costs ~0.5 s a run).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    # The inner run uses the very rule under test, from this suite's conftest.
    pytester.makeconftest("from tests.conftest import pytest_configure  # noqa: F401\n")
    pytester.makepyfile(**SUITE)
    return pytester


@pytest.mark.parametrize("kind", sorted(SKIPS))
def test_any_skip_fails_the_run_under_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    suite.makepyfile(**{f"test_skip_{kind}": SKIPS[kind]})
    monkeypatch.setenv("CRIOLIB_REQUIRE_INTEGRATION", "1")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "FAILED: 1 test(s) or module(s) skipped while CRIOLIB_REQUIRE_INTEGRATION is set:",
        f"  test_skip_{kind}.py*",
    ])


def test_skips_are_fine_without_ci(suite: pytest.Pytester,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    suite.makepyfile(**{f"test_skip_{k}": v for k, v in SKIPS.items()})
    monkeypatch.delenv("CRIOLIB_REQUIRE_INTEGRATION", raising=False)
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)


def test_xfail_alone_passes_under_ci(suite: pytest.Pytester,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIOLIB_REQUIRE_INTEGRATION", "1")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, xfailed=1)
