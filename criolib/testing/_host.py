"""What this machine has, and what a test needs of it.

Integration tests call :func:`require_binaries` / :func:`require_root` first.
When the environment variable ``CRIOLIB_REQUIRE_INTEGRATION`` is ``1`` (CI sets
it) a missing part fails the test; otherwise it skips, so the unit tests still run
on a laptop without runc.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "CNI_PLUGIN_DIRS",
    "REQUIRE_INTEGRATION_ENV",
    "find_cni_plugin_dir",
    "integration_required",
    "missing_binaries",
    "require_binaries",
    "require_cni_plugins",
    "require_root",
]

REQUIRE_INTEGRATION_ENV = "CRIOLIB_REQUIRE_INTEGRATION"
#: Where distributions put the reference CNI plugins (Debian: /usr/lib/cni).
CNI_PLUGIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni")

#: The Debian package that ships each binary, for the message.
_PACKAGES = {
    "runc": "runc", "crun": "crun", "conmon": "conmon", "docker-registry": "docker-registry",
    "skopeo": "skopeo", "umoci": "umoci", "podman": "podman", "ip": "iproute2",
    "iptables": "iptables", "ping": "iputils-ping", "busybox": "busybox-static",
}


def integration_required() -> bool:
    """True when missing parts must fail tests instead of skipping them."""
    return os.environ.get(REQUIRE_INTEGRATION_ENV, "") not in ("", "0")


def _unavailable(reason: str) -> None:
    import pytest

    if integration_required():
        pytest.fail(f"{reason} ({REQUIRE_INTEGRATION_ENV} is set; run scripts/setup)",
                    pytrace=False)
    pytest.skip(reason)


def missing_binaries(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


def require_binaries(*names: str) -> None:
    """Skip, or fail under CI, unless every program in ``names`` is on PATH."""
    missing = missing_binaries(names)
    if missing:
        pkgs = sorted({_PACKAGES.get(n, n) for n in missing})
        _unavailable(f"not installed: {', '.join(missing)} (Debian packages: {' '.join(pkgs)})")


def require_root() -> None:
    """Skip, or fail under CI, unless running as root."""
    if os.geteuid() != 0:
        _unavailable("needs root")


def find_cni_plugin_dir(plugins: Iterable[str] = ("bridge", "host-local", "loopback")) -> (
    Path | None
):
    """The first of :data:`CNI_PLUGIN_DIRS` holding every plugin in ``plugins``."""
    wanted = list(plugins)
    for d in CNI_PLUGIN_DIRS:
        if all((Path(d) / p).is_file() for p in wanted):
            return Path(d)
    return None


def require_cni_plugins(*plugins: str) -> Path:
    """The plugin directory holding ``plugins``; skip or fail when there is none."""
    found = find_cni_plugin_dir(plugins or ("bridge", "host-local", "loopback"))
    if found is None:
        _unavailable(f"CNI plugins {', '.join(plugins)} not found in {', '.join(CNI_PLUGIN_DIRS)}"
                     " (Debian package containernetworking-plugins)")
        raise AssertionError("unreachable")  # pragma: no cover - _unavailable raises
    return found
