"""The OCI runtime client against real runc and crun.

The integration tests run the same cases under both runtimes, each container from
a busybox bundle whose config.json is ``runc spec``'s, edited. Every runtime gets
its own ``--root`` for this module, so no other container is ever seen.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from criolib.runtime_spec._errors import (
    BundleNotFound,
    ContainerExists,
    ContainerNotFound,
    ExitStatusUnavailable,
    FeaturesUnsupported,
    PrivilegeError,
    RuntimeCommandError,
    RuntimeTimeout,
)
from criolib.runtime_spec._hostcaps import has_cap_sys_resource
from criolib.runtime_spec._runtime import OCIRuntime, RuntimeClient
from criolib.runtime_spec._runtime_proc import (
    child_subreaper,
    is_child_subreaper,
    wait_for_exit,
)
from criolib.testing import (
    TestImages,
    build_test_images,
    require_binaries,
    require_root,
    unpack_test_image,
)

RUNTIMES = ["runc", "crun"]


# -- integration: real runc and crun -----------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    require_binaries("busybox")
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def spec_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``runc spec``'s config.json: terminal off, the rest as runc writes it."""
    require_binaries("runc")
    where = tmp_path_factory.mktemp("spec")
    subprocess.run(["runc", "spec", "--bundle", str(where)], check=True)
    spec: dict[str, Any] = json.loads((where / "config.json").read_text())
    spec["process"]["terminal"] = False
    return spec


@pytest.fixture(scope="module")
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-state")


class Containers:
    """Makes bundles and unique ids for one test, and removes them afterwards."""

    def __init__(self, client: RuntimeClient, images: TestImages, spec: dict[str, Any],
                 tmp: Path) -> None:
        self.client = client
        self.images = images
        self.spec = spec
        self.tmp = tmp
        self.ids: list[str] = []

    def new_id(self) -> str:
        cid = f"t-{self.client.name}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def bundle(self, args: list[str], **process: Any) -> Path:
        bundle = self.tmp / f"bundle-{len(list(self.tmp.glob('bundle-*')))}"
        unpack_test_image(self.images, "busybox", bundle / "rootfs")
        spec = copy.deepcopy(self.spec)
        spec["process"]["args"] = args
        spec["process"].update(process)
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    def cleanup(self) -> None:
        for cid in self.ids:
            with contextlib.suppress(RuntimeCommandError):
                self.client.delete(cid, force=True)


@pytest.fixture(params=RUNTIMES)
def ctrs(request: pytest.FixtureRequest, images: TestImages, spec_template: dict[str, Any],
         state_root: Path, tmp_path: Path) -> Iterator[Containers]:
    require_root()
    require_binaries(request.param)
    with RuntimeClient(request.param, root=state_root / request.param) as client:
        c = Containers(client, images, spec_template, tmp_path)
        try:
            yield c
        finally:
            c.cleanup()


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Block until ``pid`` exits (a pidfd works for a non-child too); reap it if ours."""
    fd = os.pidfd_open(pid)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            assert sel.select(timeout), f"process {pid} did not exit within {timeout} s"
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


_LOOP = ["sh", "-c", "trap 'exit 3' TERM; sleep 1000 & wait"]


def test_client_is_an_oci_runtime(ctrs: Containers) -> None:
    assert isinstance(ctrs.client, OCIRuntime)
    assert ctrs.client.name in RUNTIMES and ctrs.client.path.is_absolute()
    assert ctrs.client.version()[0].isdigit()


def test_run_returns_the_exit_code_and_stdout_through_a_pipe(ctrs: Containers) -> None:
    bundle = ctrs.bundle(["sh", "-c", "echo hello; echo oops >&2; exit 7"])
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        code = ctrs.client.run(ctrs.new_id(), bundle, stdout=w, stderr=err_w)
    finally:
        os.close(w)
        os.close(err_w)
    assert code == 7
    assert _read_all(r) == b"hello\n"
    assert _read_all(err_r) == b"oops\n"
    assert ctrs.client.list() == []  # run() deletes what it created


def test_run_into_a_file(ctrs: Containers, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as f:
        assert ctrs.client.run(ctrs.new_id(), ctrs.bundle(["sh", "-c", "echo to-file"]),
                               stdout=f) == 0
    assert out.read_bytes() == b"to-file\n"


def test_concurrent_runs_each_get_their_own_exit_code(ctrs: Containers) -> None:
    # The subreaper flag is process-wide; run() holds it, counted, only around create.
    bundles = [ctrs.bundle(["sh", "-c", f"sleep 0.{i}; exit {i + 10}"]) for i in range(4)]
    ids = [ctrs.new_id() for _ in bundles]
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(ctrs.client.run, ids, bundles))
    assert codes == [10, 11, 12, 13]
    assert not is_child_subreaper()


def test_run_timeout_kills_and_deletes(ctrs: Containers) -> None:
    cid = ctrs.new_id()
    with pytest.raises(RuntimeTimeout, match=cid):
        ctrs.client.run(cid, ctrs.bundle(["sleep", "1000"]), timeout=0.5)
    with pytest.raises(ContainerNotFound):
        ctrs.client.state(cid)


def test_run_refuses_to_start_what_it_cannot_wait_for(
    ctrs: Containers, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import criolib.runtime_spec._runtime as runtime_module

    # As if something between us and the runtime had adopted the init.
    monkeypatch.setattr(runtime_module, "parent_pid", lambda pid: 1)
    cid = ctrs.new_id()
    bundle = ctrs.bundle(["sh", "-c", "touch /started"])
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExitStatusUnavailable, match="not started"):
        ctrs.client.run(cid, bundle, keep=True)  # keep: the create + start + wait path
    assert not (bundle / "rootfs" / "started").exists()
    monkeypatch.undo()
    kept = ctrs.new_id()
    assert ctrs.client.run(kept, bundle, keep=True) == 0  # the check would have seen it
    assert (bundle / "rootfs" / "started").exists()
    assert ctrs.client.state(kept).status == "stopped"
    ctrs.client.delete(kept)
    with pytest.raises(ContainerNotFound):
        ctrs.client.state(cid)


@pytest.mark.parametrize("keep", [False, True])
def test_run_reports_exit_and_signal_codes_both_ways(ctrs: Containers, keep: bool) -> None:
    for script, expected in (("exit 0", 0), ("exit 3", 3), ("kill -KILL $$", 137)):
        cid = ctrs.new_id()
        # A child shell: the init itself cannot be killed by its own SIGKILL.
        bundle = ctrs.bundle(["sh", "-c", f"sh -c '{script}'; exit $?"])
        assert ctrs.client.run(cid, bundle, keep=keep) == expected
        if keep:
            ctrs.client.delete(cid)
        with pytest.raises(ContainerNotFound):
            ctrs.client.state(cid)


def test_lifecycle_create_start_kill_delete(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    bundle = ctrs.bundle(_LOOP)
    client.create(cid, bundle)
    st = client.state(cid)
    assert (st.id, st.status, st.bundle) == (cid, "created", str(bundle))
    assert st.pid and st.pid > 0
    client.start(cid)
    assert client.state(cid).status == "running"
    client.kill(cid, "SIGTERM")
    _wait_gone(st.pid)
    assert client.state(cid).status == "stopped"
    client.delete(cid)
    with pytest.raises(ContainerNotFound):
        client.state(cid)


def test_exit_status_of_a_created_and_started_container(ctrs: Containers) -> None:
    # What run() does, by hand: be a subreaper while create runs, then waitid.
    client, cid = ctrs.client, ctrs.new_id()
    pid_file = ctrs.tmp / "init.pid"
    with child_subreaper():
        client.create(cid, ctrs.bundle(_LOOP), pid_file=pid_file)
    pid = int(pid_file.read_text())
    fd = os.pidfd_open(pid)
    try:
        client.start(cid)
        client.kill(cid, signal.SIGTERM)
        assert wait_for_exit(pid, fd, timeout=10) == 3
    finally:
        os.close(fd)
    client.delete(cid)
    # Killed by a signal (from outside: an init ignores its own SIGKILL): 128 + 9.
    with child_subreaper():
        client.create(cid, ctrs.bundle(["sleep", "1000"]), pid_file=pid_file)
    pid = int(pid_file.read_text())
    fd = os.pidfd_open(pid)
    try:
        client.start(cid)
        client.kill(cid, "KILL")
        assert wait_for_exit(pid, fd) == 137
    finally:
        os.close(fd)
    client.delete(cid)


def test_pause_and_resume(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(["sleep", "1000"]))
    client.start(cid)
    client.pause(cid)
    assert client.state(cid).status == "paused"
    client.resume(cid)
    assert client.state(cid).status == "running"
    client.delete(cid, force=True)


def test_exec_returns_output_and_exit_code(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(["sleep", "1000"]))
    client.start(cid)
    r, w = os.pipe()
    try:
        code = client.exec(cid, ["sh", "-c", 'echo "in $0 with $1"; exit 5', "zero", "-x"],
                           stdout=w)
    finally:
        os.close(w)
    assert code == 5
    assert _read_all(r) == b"in zero with -x\n"
    # A process object in config.json's wire form.
    r, w = os.pipe()
    try:
        code = client.exec(cid, {"args": ["sh", "-c", 'echo "$GREETING from $(pwd)"'],
                                 "env": ["GREETING=hi", "PATH=/bin"], "cwd": "/etc",
                                 "user": {"uid": 1000, "gid": 1000}}, stdout=w)
    finally:
        os.close(w)
    assert code == 0
    assert _read_all(r) == b"hi from /etc\n"
    assert client.exec(cid, ["sh", "-c", "kill -9 $$"]) == 137


def test_exec_detached_returns_the_pid_and_times_out(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(["sleep", "1000"]))
    client.start(cid)
    pid = client.exec(cid, ["sleep", "1000"], detach=True)
    assert pid in client.ps(cid)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    with pytest.raises(RuntimeTimeout, match="exec"):
        client.exec(cid, ["sleep", "1000"], timeout=0.5)
    assert client.state(cid).pid in client.ps(cid)
    assert len(client.ps(cid)) == 1  # the timed-out process was killed


def test_exec_failure_of_the_runtime_is_an_error_not_an_exit_code(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(["sleep", "1000"]))
    client.start(cid)
    with pytest.raises(RuntimeCommandError, match="/nonexistent") as info:
        client.exec(cid, ["/nonexistent"])
    assert info.value.operation == "exec" and info.value.container_id == cid
    # ... while a process's own status 255 is just that.
    assert client.exec(cid, ["sh", "-c", "exit 255"]) == 255


def test_update_memory_limit_is_seen_inside(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(["sleep", "1000"]))
    client.start(cid)
    limit = 64 << 20
    client.update(cid, {"memory": {"limit": limit}})
    r, w = os.pipe()
    try:
        # cgroup v1 (this machine) or v2, as mounted inside by runc spec's config.
        code = client.exec(cid, ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
                                 " 2>/dev/null || cat /sys/fs/cgroup/memory.max"], stdout=w)
    finally:
        os.close(w)
    assert code == 0
    assert int(_read_all(r)) == limit


def test_ps_and_list(ctrs: Containers) -> None:
    client = ctrs.client
    running, created = ctrs.new_id(), ctrs.new_id()
    client.create(running, ctrs.bundle(["sleep", "1000"]))
    client.start(running)
    client.create(created, ctrs.bundle(["sleep", "1000"]))
    pid = client.state(running).pid
    assert client.ps(running) == [pid]
    listed = {st.id: st for st in client.list()}
    assert set(listed) == {running, created}
    assert listed[running].status == "running" and listed[running].pid == pid
    assert listed[created].status == "created" and listed[created].oci_version


def test_kill_all_and_numeric_signal(ctrs: Containers) -> None:
    client, cid = ctrs.client, ctrs.new_id()
    client.create(cid, ctrs.bundle(_LOOP))
    client.start(cid)
    pid = client.state(cid).pid
    assert pid
    client.kill(cid, int(signal.SIGKILL), all=True)
    _wait_gone(pid)
    assert client.state(cid).status == "stopped"


def test_unknown_container_is_container_not_found(ctrs: Containers) -> None:
    cid = ctrs.new_id()
    for op in (ctrs.client.state, ctrs.client.start, ctrs.client.pause, ctrs.client.ps,
               ctrs.client.delete, ctrs.client.kill):
        with pytest.raises(ContainerNotFound, match=cid) as info:
            op(cid)
        assert info.value.container_id == cid
        assert info.value.runtime == ctrs.client.name


def test_same_id_twice_is_container_exists(ctrs: Containers) -> None:
    cid = ctrs.new_id()
    ctrs.client.create(cid, ctrs.bundle(["sleep", "1000"]))
    with pytest.raises(ContainerExists, match=cid):
        ctrs.client.create(cid, ctrs.bundle(["sleep", "1000"]))
    assert ctrs.client.state(cid).status == "created"


def test_bad_bundle_carries_the_runtime_message(ctrs: Containers) -> None:
    bundle = ctrs.bundle(["true"])
    (bundle / "rootfs").rename(bundle / "elsewhere")
    cid = ctrs.new_id()
    with pytest.raises(RuntimeCommandError, match="rootfs") as info:
        ctrs.client.create(cid, bundle)
    err = info.value
    assert (err.operation, err.container_id, err.runtime) == ("create", cid, ctrs.client.name)
    assert err.returncode == 1 and "rootfs" in err.runtime_message
    with pytest.raises(BundleNotFound, match="does not exist"):
        ctrs.client.create(ctrs.new_id(), ctrs.tmp / "no-such-bundle")


def test_negative_oom_score_adj(ctrs: Containers) -> None:
    bundle = ctrs.bundle(["true"], oomScoreAdj=-998)
    cid = ctrs.new_id()
    if has_cap_sys_resource():  # a machine that may lower it: the container just runs
        assert ctrs.client.run(cid, bundle) == 0
        return
    with pytest.raises(PrivilegeError) as info:
        ctrs.client.run(cid, bundle)
    text = str(info.value)
    assert "CAP_SYS_RESOURCE" in text and "oomScoreAdj" in text and "-998" in text
    assert info.value.container_id == cid
    with pytest.raises(ContainerNotFound):
        ctrs.client.state(cid)  # nothing left behind


def test_rlimit_above_the_hard_limit(ctrs: Containers) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE has no hard limit here")
    asked = hard * 2
    bundle = ctrs.bundle(["true"], rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": asked, "hard": asked}])
    cid = ctrs.new_id()
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    if has_cap_sys_resource() and asked <= nr_open:
        assert ctrs.client.run(cid, bundle) == 0
        return
    with pytest.raises(PrivilegeError) as info:
        ctrs.client.run(cid, bundle)
    text = str(info.value)
    assert "RLIMIT_NOFILE" in text and "hard limit" in text and str(hard) in text
    assert str(asked) in text


def test_features_or_a_clear_refusal(ctrs: Containers) -> None:
    try:
        features = ctrs.client.features()
    except FeaturesUnsupported as exc:
        assert ctrs.client.name in str(exc) and ctrs.client.version() in str(exc)
        assert ctrs.client.name == "crun"  # runc has had `features` since 1.1
    else:
        assert features.oci_version_min and features.oci_version_max
        assert features.linux and features.linux.namespaces
        assert "pid" in features.linux.namespaces


def test_runtime_log_goes_to_the_callers_file_and_to_logging(
    ctrs: Containers, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    log_file = tmp_path / "runtime.log"
    with RuntimeClient(ctrs.client.name, root=ctrs.client.root, log_path=log_file,
                       debug=True) as client:
        cid = ctrs.new_id()
        with caplog.at_level("DEBUG", logger="criolib.runtime_spec"), \
                pytest.raises(ContainerNotFound):
            client.state(cid)
        assert any(cid in r.getMessage() for r in caplog.records)
        with pytest.raises(ContainerNotFound):  # only this call's lines are read
            client.state(cid)
    assert log_file.stat().st_size > 0


def test_systemd_cgroup_manager_without_systemd_is_a_clear_error(ctrs: Containers) -> None:
    # These machines run no systemd: runc says "systemd not running on this host",
    # crun "cannot open sd-bus"; both are kept, with the cause and the fix.
    bundle = ctrs.bundle(["true"])
    with RuntimeClient(ctrs.client.name, root=ctrs.client.root,
                       systemd_cgroup=True) as client:
        for operation in ("create", "run"):
            cid = ctrs.new_id()
            with pytest.raises(RuntimeCommandError) as info:
                getattr(client, operation)(cid, bundle)
            err = info.value
            assert (err.container_id, err.operation) == (cid, operation)
            assert f"container {cid!r}" in str(err)
            assert re.search(r"systemd not running|cannot open sd-bus", err.runtime_message)
            assert "needs a running systemd" in str(err) and "systemd_cgroup=False" in str(err)
            with contextlib.suppress(ContainerNotFound):  # create may leave its husk
                ctrs.client.delete(cid, force=True)
    assert ctrs.client.list() == []
