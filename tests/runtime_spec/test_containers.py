"""Generated specs observed from inside real containers, under runc and under crun.

Every setting is checked where it takes effect: inside the container, through
/proc, the cgroup files and the behaviour of the shell, not in the JSON.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from criolib.runtime_spec import (
    Generator,
    RuntimeClient,
    _defaults,
    apply_image_config,
    default_seccomp_profile,
)
from criolib.testing import (
    TestImages,
    build_test_images,
    require_binaries,
    require_root,
    unpack_test_image,
)

pytestmark = pytest.mark.integration

RUNTIMES = ["runc", "crun"]
_ids = itertools.count()


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def rootfs_template(images: TestImages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_root()
    return unpack_test_image(images, "multilayer", tmp_path_factory.mktemp("tpl") / "rootfs")


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeClient]:
    require_root()
    require_binaries(request.param)
    state = tmp_path / "state"
    client = RuntimeClient(request.param, root=state)
    yield client
    for st in client.list():
        client.delete(st.id, force=True)


class Bundle:
    def __init__(self, runtime: RuntimeClient, template: Path, workdir: Path,
                 images: TestImages) -> None:
        self.runtime = runtime
        self.dir = workdir / "bundle"
        self.dir.mkdir()
        self.rootfs = self.dir / "rootfs"
        # cp -a keeps what copytree cannot: the fifo, owners, setuid bits, xattrs.
        subprocess.run(["cp", "-a", str(template), str(self.rootfs)], check=True)
        self.images = images

    def generator(self, *args: str, user: str | None = None) -> Generator:
        gen = Generator()
        manifest = self.images["multilayer"]
        config = _image_config(self.images, manifest.config_digest or "")
        apply_image_config(gen, config, rootfs=self.rootfs, command=["/bin/sh", "-c"],
                           args=list(args), user=user)
        return gen

    def run(self, gen: Generator, *, timeout: float = 30) -> Result:
        gen.save(self.dir)
        cid = f"criolib-test-{os.getpid()}-{next(_ids)}"
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            code = self.runtime.run(cid, self.dir, stdout=out, stderr=err)
            self.runtime.delete(cid, force=True)
            out.seek(0)
            err.seek(0)
            return Result(code, out.read().decode(), err.read().decode())

    def sh(self, script: str, configure: Callable[[Generator], object] | None = None,
           user: str | None = None) -> Result:
        gen = self.generator(script, user=user)
        if configure is not None:
            configure(gen)
        return self.run(gen)


def _image_config(images: TestImages, digest: str) -> dict[str, object]:
    import json

    return json.loads((images.layout / "blobs" / "sha256" / digest[7:]).read_bytes())  # type: ignore[no-any-return]


@pytest.fixture
def bundle(runtime: RuntimeClient, rootfs_template: Path, tmp_path: Path,
           images: TestImages) -> Bundle:
    return Bundle(runtime, rootfs_template, tmp_path, images)


def _caps_mask(names: object) -> int:
    mask = 0
    for name in names:  # type: ignore[attr-defined]
        mask |= 1 << _defaults.ALL_CAPABILITIES.index(name)
    return mask


def _status_field(out: str, field: str) -> str:
    for line in out.splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in {out!r}")


# -- process ------------------------------------------------------------------------------


def test_default_spec_runs_and_exit_codes_come_back(bundle: Bundle) -> None:
    assert bundle.sh("echo hello") == Result(0, "hello\n", "")
    assert bundle.sh("echo oops >&2; exit 7") == Result(7, "", "oops\n")


def test_env_and_cwd(bundle: Bundle) -> None:
    r = bundle.sh("pwd; echo $GREETING; echo $CRIOLIB_IMAGE; echo $EXTRA",
                  lambda g: g.set_env("EXTRA", "from-cri"))
    assert r.out.splitlines() == ["/data", "hello world", "multilayer", "from-cri"]


def test_user_from_etc_passwd(bundle: Bundle) -> None:
    r = bundle.sh("id; echo $HOME", user="tester")
    first, home = r.out.splitlines()
    assert first.startswith("uid=1000(tester) gid=1000(tester) groups=")
    assert "10(wheel)" in first and "29(audio)" in first
    assert home == "/home/tester"
    r = bundle.sh("id -u; id -g", user="4242:4343")
    assert r.out.split() == ["4242", "4343"]


def test_hostname(bundle: Bundle) -> None:
    assert bundle.sh("hostname", lambda g: g.set_hostname("criolib-pod")).out == "criolib-pod\n"


def test_signals_reach_the_container(bundle: Bundle) -> None:
    gen = bundle.generator("trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done")
    gen.save(bundle.dir)
    cid = f"criolib-sig-{os.getpid()}-{next(_ids)}"
    result: dict[str, int] = {}
    with tempfile.TemporaryFile() as out:
        t = threading.Thread(target=lambda: result.setdefault(
            "code", bundle.runtime.run(cid, bundle.dir, stdout=out)))
        t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out.seek(0)
            if b"ready" in out.read():
                break
            time.sleep(0.05)
        bundle.runtime.kill(cid, "SIGTERM")
        t.join(20)
    bundle.runtime.delete(cid, force=True)
    assert result["code"] == 42


# -- filesystem ---------------------------------------------------------------------------


def test_mounts_and_readonly_bind(bundle: Bundle, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file.txt").write_text("from the host\n")
    r = bundle.sh("cat /mnt/shared/file.txt; touch /mnt/shared/new; echo rc=$?",
                  lambda g: g.add_bind_mount(str(shared), "/mnt/shared", readonly=True))
    assert r.out.splitlines() == ["from the host", "rc=1"]
    assert "Read-only file system" in r.err
    assert not (shared / "new").exists()
    r = bundle.sh("grep ' /dev/shm ' /proc/mounts; grep ' /sys ' /proc/mounts")
    assert "tmpfs" in r.out and "sysfs /sys sysfs ro" in r.out


def test_readonly_root(bundle: Bundle) -> None:
    r = bundle.sh("touch /newfile; echo rc=$?; touch /dev/shm/ok && echo shm-ok",
                  lambda g: g.set_root_readonly())
    assert r.out.splitlines() == ["rc=1", "shm-ok"]
    assert "Read-only file system" in r.err


def test_masked_and_readonly_paths(bundle: Bundle) -> None:
    # Only paths this host has can show masking: /proc/timer_list (a file) and
    # /sys/firmware (a directory) exist here; /proc/kcore does not.
    assert Path("/proc/timer_list").stat().st_size == 0 and os.listdir("/sys/firmware")
    r = bundle.sh("wc -c < /proc/timer_list; cat /proc/timer_list | head -c 1 | wc -c; "
                  "ls -A /sys/firmware | wc -l; "
                  "echo 1 > /proc/sys/kernel/domainname; echo rc=$?")
    assert r.out.split() == ["0", "0", "0", "rc=1"]  # /dev/null and an empty ro tmpfs
    assert "Read-only file system" in r.err
    unmasked = bundle.sh("head -c 16 /proc/timer_list | wc -c; ls -A /sys/firmware | wc -l",
                         lambda g: g.set_masked_paths([]))
    assert [int(x) > 0 for x in unmasked.out.split()] == [True, True]


# -- security ---------------------------------------------------------------------------


def test_capabilities_nnp_and_seccomp_mode(bundle: Bundle) -> None:
    r = bundle.sh("cat /proc/self/status")
    assert int(_status_field(r.out, "CapEff"), 16) == _caps_mask(_defaults.DEFAULT_CAPABILITIES)
    assert int(_status_field(r.out, "CapBnd"), 16) == _caps_mask(_defaults.DEFAULT_CAPABILITIES)
    assert _status_field(r.out, "NoNewPrivs") == "1"
    assert _status_field(r.out, "Seccomp") == "2"


def test_dropped_capability_is_enforced(bundle: Bundle) -> None:
    script = "touch /tmp/f; chown 1000 /tmp/f && echo chowned"
    assert bundle.sh(script).out == "chowned\n"
    r = bundle.sh(script, lambda g: g.drop_capability("CHOWN"))
    assert r.out == "" and "Operation not permitted" in r.err


def test_seccomp_rule_blocks_a_syscall(bundle: Bundle) -> None:
    def block_mkdir(g: Generator) -> None:
        profile = g.config()["linux"]["seccomp"]
        # Take mkdir out of the allow list first: libseccomp keeps the first action
        # a syscall gets, so a later rule for it would not count.
        for rule in profile["syscalls"]:
            rule["names"] = [n for n in rule["names"] if n not in ("mkdir", "mkdirat")]
        profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
        profile["syscalls"].append({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                    "errnoRet": 13})
        g.set_seccomp(profile)

    script = "mkdir /tmp/d && rmdir /tmp/d && echo made"
    assert bundle.sh(script).out == "made\n"
    r = bundle.sh(script, block_mkdir)
    assert r.out == "" and "Permission denied" in r.err


def test_privileged_gets_every_capability_the_host_has(bundle: Bundle) -> None:
    r = bundle.sh("cat /proc/self/status; grep ' /sys ' /proc/mounts",
                  lambda g: g.set_privileged().set_privileged())
    with open("/proc/self/status") as f:
        host_bnd = int(_status_field(f.read(), "CapBnd"), 16)
    assert int(_status_field(r.out, "CapEff"), 16) == host_bnd
    assert _status_field(r.out, "Seccomp") == "0"
    # Privileged implies allowPrivilegeEscalation: no no_new_privs (CRI-O, kubelet).
    assert _status_field(r.out, "NoNewPrivs") == "0"
    assert "sysfs /sys sysfs rw" in r.out


_HOSTNAME = "hostname criolib-x && hostname; echo rc=$?"


def test_an_added_capability_is_not_blocked_by_the_default_seccomp_profile(
    bundle: Bundle,
) -> None:
    # Without CAP_SYS_ADMIN both the capability check and the profile refuse it.
    r = bundle.sh(_HOSTNAME)
    assert r.out == "rc=1\n" and "Operation not permitted" in r.err
    # Added, the default profile is resolved for it, as CRI-O resolves it.
    r = bundle.sh(f"{_HOSTNAME}; chroot / true; echo rc=$?",
                  lambda g: g.add_capability("SYS_ADMIN").add_capability("SYS_CHROOT"))
    assert (r.out, r.err) == ("criolib-x\nrc=0\nrc=0\n", "")


def test_a_profile_resolved_without_the_capability_blocks_it(bundle: Bundle) -> None:
    # The container holds CAP_SYS_ADMIN; only the profile, resolved for the default
    # capabilities by hand, can refuse sethostname: seccomp is what is observed.
    r = bundle.sh(f"grep CapEff /proc/self/status; {_HOSTNAME}", lambda g: g.set_seccomp(
        default_seccomp_profile(capabilities=_defaults.DEFAULT_CAPABILITIES),
    ).add_capability("SYS_ADMIN"))
    cap_eff = int(_status_field(r.out, "CapEff"), 16)
    assert cap_eff >> _defaults.CAPABILITY_BITS["CAP_SYS_ADMIN"] & 1
    assert r.out.splitlines()[-1] == "rc=1"
    assert "sethostname: Operation not permitted" in r.err


# -- limits -------------------------------------------------------------------------------


def test_rlimits(bundle: Bundle) -> None:
    r = bundle.sh("ulimit -n; ulimit -Hn", lambda g: g.set_rlimit("RLIMIT_NOFILE", 100, 50))
    assert r.out.split() == ["50", "100"]


def _memory_limit_file() -> str:
    if Path("/sys/fs/cgroup/memory").is_dir():
        return "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    return "/sys/fs/cgroup/memory.max"


def test_memory_limit_and_oom_kill(bundle: Bundle) -> None:
    limit = 32 << 20
    r = bundle.sh(f"cat {_memory_limit_file()}", lambda g: g.set_memory_limit(limit, swap=limit))
    assert r.out.strip() == str(limit)
    # tail keeps the whole newline-free "line" of /dev/zero in memory: the OOM killer ends it.
    r = bundle.sh("tail /dev/zero; echo status=$?",
                  lambda g: g.set_memory_limit(limit, swap=limit))
    assert r.out.strip() == "status=137"


def test_pids_limit(bundle: Bundle) -> None:
    pids_max = ("/sys/fs/cgroup/pids/pids.max" if Path("/sys/fs/cgroup/pids").is_dir()
                else "/sys/fs/cgroup/pids.max")
    script = f"cat {pids_max}; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; echo done"
    r = bundle.sh(script, lambda g: g.set_pids_limit(6))
    assert r.out.splitlines()[0] == "6"
    # busybox sh gives up on the first refused fork, before the twelfth sleep.
    assert "can't fork: Resource temporarily unavailable" in r.err
    assert "done" not in r.out
    assert bundle.sh(script).out.splitlines()[-1] == "done"
