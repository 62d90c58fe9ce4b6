"""scripts/setup's decisions, run against fake system commands in a sandbox.

A fresh Debian 12 cannot be had here, so each case copies the script into a
scratch repository and puts fakes of ``id``, ``dpkg-query``, ``apt-get``,
``mountpoint``, ``mount``, ``systemctl`` and Python first on PATH; they log what
they are asked to do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent

FAKES = {
    "id": 'echo "$FAKE_UID"\n',
    "dpkg-query": (
        'pkg="${*: -1}"\n'
        'for m in $FAKE_MISSING; do [ "$m" = "$pkg" ] && exit 1; done\n'
        'echo "install ok installed"\n'
    ),
    "apt-get": (
        'echo "apt-get $*" >> "$FAKE_LOG"\n'
        'if [ "$1" = install ]; then\n'
        '  if [ -x "$CRIOLIB_SETUP_POLICY_RC_D" ]; then\n'
        '    "$CRIOLIB_SETUP_POLICY_RC_D" docker-registry start\n'
        '    echo "policy-rc.d: $?" >> "$FAKE_LOG"\n'
        '  else echo "policy-rc.d: none" >> "$FAKE_LOG"; fi\n'
        'fi\n'
    ),
    "mountpoint": "exit 1\n",
    "mount": (
        'echo "mount $*" >> "$FAKE_LOG"\n'
        'case "$*" in *"$FAKE_MOUNT_FAILS"*) echo "mount: permission denied" >&2; exit 32;; esac\n'
    ),
    "systemctl": 'echo "systemctl $*" >> "$FAKE_LOG"\n[ "$1" = is-active ] && exit 3\nexit 0\n',
}

# A Python that says it is $FAKE_PY_VERSION and makes a fake .venv when asked.
FAKE_PYTHON = """\
case "$1" in
  -c) echo "$FAKE_PY_VERSION"
      case "$FAKE_PY_VERSION" in 3.1[1-9].*|3.[2-9]?.*) exit 0;; esac
      exit 1;;
  -m) if [ "$2" = venv ]; then
        mkdir -p "$3/bin"
        printf '#!/bin/sh\\necho "venv-python $*" >> "$FAKE_LOG"\\n' > "$3/bin/python"
        printf '#!/bin/sh\\necho "criolib 0.0.test"\\n' > "$3/bin/criolib"
        chmod +x "$3/bin/python" "$3/bin/criolib"
      fi;;
esac
"""


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "setup", repo / "scripts" / "setup")
    shutil.copy2(REPO / "pyproject.toml", repo / "pyproject.toml")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, body in FAKES.items():
        _script(fakes / name, body)
    _script(fakes / "fake-python", FAKE_PYTHON)
    # A ready venv, unless a test removes it.
    (repo / ".venv" / "bin").mkdir(parents=True)
    _script(repo / ".venv" / "bin" / "python", 'echo "venv-python $*" >> "$FAKE_LOG"\n')
    _script(repo / ".venv" / "bin" / "criolib", 'echo "criolib 0.0.test"\n')
    stamp = hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()
    (repo / ".venv" / ".criolib-installed").write_text(stamp + "\n")
    (tmp_path / "log").touch()
    return tmp_path


def _setup(sandbox: Path, *, uid: int = 0, missing: str = "", **env: str
           ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    full = {
        "PATH": f"{sandbox / 'bin'}:/usr/bin:/bin",
        "FAKE_UID": str(uid), "FAKE_MISSING": missing, "FAKE_LOG": str(sandbox / "log"),
        "FAKE_MOUNT_FAILS": "\x01never", "FAKE_PY_VERSION": "3.11.2",
        "CRIOLIB_SETUP_POLICY_RC_D": str(sandbox / "policy-rc.d"),
        "CRIOLIB_SETUP_CGROUP_ROOT": str(sandbox / "cgroup"),
        **env,
    }
    proc = subprocess.run(["bash", str(sandbox / "repo" / "scripts" / "setup")], env=full,
                          capture_output=True, text=True, timeout=30)
    return proc, (sandbox / "log").read_text().splitlines()


def test_the_apt_list_has_python_and_venv() -> None:
    text = (REPO / "scripts" / "setup").read_text()
    packages = text.partition("APT_PACKAGES=(")[2].partition(")")[0].split()
    assert {"python3", "python3-venv", "docker-registry", "busybox-static"} <= set(packages)


def test_root_installs_with_services_held_back(sandbox: Path) -> None:
    proc, log = _setup(sandbox, missing="docker-registry skopeo")
    assert proc.returncode == 0, proc.stderr
    assert "apt-get install -y -qq --no-install-recommends docker-registry skopeo" in log
    assert "policy-rc.d: 101" in log  # invoke-rc.d would start nothing during the install
    assert not (sandbox / "policy-rc.d").exists()  # and the temporary policy is gone
    assert "systemctl is-active --quiet docker-registry" in log


def test_an_existing_policy_is_left_alone(sandbox: Path) -> None:
    _script(sandbox / "policy-rc.d", "exit 0\n")
    proc, log = _setup(sandbox, missing="docker-registry")
    assert proc.returncode == 0, proc.stderr
    assert "policy-rc.d: 0" in log
    assert (sandbox / "policy-rc.d").read_text() == "#!/bin/bash\nexit 0\n"


def test_nothing_missing_installs_nothing(sandbox: Path) -> None:
    proc, log = _setup(sandbox)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in log if line.startswith("apt-get")]
    assert proc.stdout.strip().endswith("ready: criolib 0.0.test")


def test_a_user_without_root_is_warned_and_carries_on(sandbox: Path) -> None:
    proc, log = _setup(sandbox, uid=1000, missing="runc crun")
    assert proc.returncode == 0, proc.stderr
    assert "warning: not root, so not installing: runc crun" in proc.stderr
    assert not [line for line in log if line.startswith("apt-get")]
    assert "ready: criolib" in proc.stdout


def test_a_user_without_root_fails_when_integration_is_required(sandbox: Path) -> None:
    proc, _ = _setup(sandbox, uid=1000, missing="runc", CRIOLIB_REQUIRE_INTEGRATION="1")
    assert proc.returncode == 1
    assert "needs root to install: runc" in proc.stderr


def test_a_controller_that_cannot_move_is_a_warning(sandbox: Path) -> None:
    unified = sandbox / "cgroup" / "unified"
    unified.mkdir(parents=True)
    (unified / "cgroup.controllers").write_text("hugetlb misc\n")
    proc, log = _setup(sandbox, FAKE_MOUNT_FAILS="hugetlb")
    assert proc.returncode == 0, proc.stderr
    assert "could not mount a v1 hierarchy for cgroup controller hugetlb" in proc.stderr
    mounts = [line for line in log if line.startswith("mount")]
    assert mounts == [f"mount -t cgroup -o {c} cgroup {sandbox}/cgroup/{c}"
                      for c in ("hugetlb", "misc")]


@pytest.mark.parametrize("python, version, message", [
    ("fake-python", "3.9.2", "is Python 3.9.2; criolib needs 3.11 or newer"),
    ("no-such-python3", "", "no no-such-python3 on PATH"),
])
def test_an_unusable_python_is_refused(sandbox: Path, python: str, version: str,
                                       message: str) -> None:
    shutil.rmtree(sandbox / "repo" / ".venv")
    proc, _ = _setup(sandbox, PYTHON=python, FAKE_PY_VERSION=version)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (sandbox / "repo" / ".venv").exists()


def test_a_good_python_makes_the_venv(sandbox: Path) -> None:
    shutil.rmtree(sandbox / "repo" / ".venv")
    proc, log = _setup(sandbox, PYTHON="fake-python", FAKE_PY_VERSION="3.11.2")
    assert proc.returncode == 0, proc.stderr
    assert "creating .venv with Python 3.11.2 (fake-python)" in proc.stdout
    assert "venv-python -m pip install -q -e .[dev]" in log
    assert os.access(sandbox / "repo" / ".venv" / "bin" / "criolib", os.X_OK)
