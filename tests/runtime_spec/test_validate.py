"""validate(): the baseline config, every problem at once, check() (runtime-spec v1.2).

The helpers here (``baseline``, ``found``, ``changed``) serve every test_validate_*
module: the schema, the semantic rules, the root filesystem and host, and fuzzing.
"""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from criolib.runtime_spec import RuntimeSpecError
from criolib.runtime_spec._errors import InvalidSpec
from criolib.runtime_spec._validate import Problem, check, validate
from criolib.testing import require_binaries

SCHEMA_DIR = Path(__file__).parents[2] / "criolib" / "runtime_spec" / "schema"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]
E, W = "error", "warning"


def baseline() -> dict[str, Any]:
    """A valid config.json in the shape `runc spec` writes (written by hand)."""
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": list(CAPS), "effective": list(CAPS),
                             "permitted": list(CAPS)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }


def found(doc: Any, **kw: Any) -> list[tuple[str, str, str]]:
    return [(p.path, p.severity, p.message) for p in validate(doc, **kw)]


def changed(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = baseline()
    edit(doc)
    return doc


def test_baseline_is_clean() -> None:
    assert validate(baseline()) == []
    check(baseline())


def test_runc_spec_output_has_no_errors(tmp_path: Path) -> None:
    require_binaries("runc")
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True, capture_output=True)
    doc = json.loads((tmp_path / "config.json").read_text())
    problems = validate(doc)
    assert [p for p in problems if p.severity == "error"] == []
    # runc spec grants ambient capabilities without inheritable ones: the kernel
    # cannot raise those, and that is the only thing worth a word.
    assert {p.path for p in problems} <= {
        f"$.process.capabilities.ambient[{i}]" for i in range(len(CAPS))}
    check(doc)


def test_unknown_properties_are_ignored() -> None:
    doc = baseline()
    doc["x-vendor"] = {"anything": [1, None]}
    doc["process"]["x-extra"] = 5
    doc["linux"]["namespaces"][0]["x-flag"] = True
    doc["linux"]["netDevices"] = {"eth1": {"name": "eth1"}}  # v1.3
    assert validate(doc) == []


# --- all at once, sorted; check() ------------------------------------------------------


def test_every_problem_is_reported_at_once_sorted_by_path() -> None:
    doc = baseline()
    doc["ociVersion"] = "one"
    doc["process"]["cwd"] = "relative"
    doc["process"]["user"]["uid"] = "0"
    doc["linux"]["namespaces"] = [{"type": t} for t in
                                  ("pid", "ipc", "uts", "mount", "cgroup", "time", "user",
                                   "pid", "ipc", "mount", "uts")]
    doc["linux"]["uidMappings"] = doc["linux"]["gidMappings"] = MAP
    doc["linux"]["sysctl"] = {"net.core.somaxconn": "1"}
    doc["mounts"][2]["destination"] = 7
    assert found(doc) == [
        ("$.linux.namespaces[7].type", E, "namespace pid is already at [0]"),
        ("$.linux.namespaces[8].type", E, "namespace ipc is already at [1]"),
        ("$.linux.namespaces[9].type", E, "namespace mount is already at [3]"),
        ("$.linux.namespaces[10].type", E, "namespace uts is already at [2]"),
        ('$.linux.sysctl["net.core.somaxconn"]', E, "needs a network namespace in "
         "linux.namespaces; without one it would change the host's value"),
        ("$.mounts[2].destination", E, "must be a string, not integer"),
        ("$.ociVersion", E, "'one' is not a SemVer 2.0.0 version"),
        ("$.process.cwd", E, "'relative' is not an absolute path"),
        ("$.process.user.uid", E, "must be an integer, not string"),
    ]


def test_problem_reads_as_path_and_message() -> None:
    assert str(Problem("$.a", "is wrong")) == "$.a: is wrong"
    assert str(Problem("$.a", "may be wrong", "warning")) == "$.a: may be wrong (warning)"


def test_check_raises_with_every_problem() -> None:
    doc = baseline()
    doc["process"]["cwd"] = "x"
    doc["hooks"] = {"prestart": [{"path": "y"}]}
    with pytest.raises(InvalidSpec) as info:
        check(doc)
    err = info.value
    assert isinstance(err, RuntimeSpecError) and isinstance(err, ValueError)
    assert [p.path for p in err.problems] == [
        "$.hooks.prestart", "$.hooks.prestart[0].path", "$.process.cwd"]
    assert str(err) == (
        "config.json is not valid: 2 error(s)\n"
        "  $.hooks.prestart: prestart hooks are deprecated in favour of createRuntime, "
        "createContainer and startContainer (warning)\n"
        "  $.hooks.prestart[0].path: 'y' is not an absolute path\n"
        "  $.process.cwd: 'x' is not an absolute path")
    copy_ = pickle.loads(pickle.dumps(err))
    assert copy_.problems == err.problems and str(copy_) == str(err)


def test_check_passes_warnings() -> None:
    doc = changed(lambda d: d["linux"].update(cgroupsPath="relative"))
    assert [p.severity for p in validate(doc)] == ["warning"]
    check(doc)


def test_validate_never_mutates_its_input() -> None:
    doc = changed(lambda d: d["process"]["rlimits"][0].update(hard=10**5000))
    before = copy.deepcopy(doc)
    assert found(doc) == [("$.process.rlimits[0].hard", E,
                           "<an integer of 16610 bits> is out of range for uint64 "
                           "(0 to 18446744073709551615)")]
    assert doc == before


def test_a_spec_object_is_validated_in_its_wire_form() -> None:
    from criolib.runtime_spec import spec_from_dict

    spec = spec_from_dict(baseline())
    assert validate(spec) == []
    broken = spec_from_dict(changed(lambda d: d["process"].update(cwd="rel")))
    assert found(broken) == [("$.process.cwd", E, "'rel' is not an absolute path")]


