"""The gRPC endpoint through the cri-api stubs client (our crictl stand-in)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

import criolib
from criolib.service import (
    IMAGE_RPCS,
    RPC_METHODS,
    RUNTIME_RPCS,
    Config,
    ConfigError,
    CRIService,
    FailedPrecondition,
    Server,
    Unavailable,
    serve,
    socket_path,
)
from criolib.service import _cri_types as cri

grpc = pytest.importorskip("grpc")
api_pb2 = pytest.importorskip("cri_api.v1.api_pb2")
api_pb2_grpc = pytest.importorskip("cri_api.v1.api_pb2_grpc")

CONFLIST = {"cniVersion": "1.0.0", "name": "testnet",
            "plugins": [{"type": "bridge", "bridge": "cni-test0"}]}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: a unix socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="crisvc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(short_tmp: Path) -> Iterator[tuple[CRIService, Server]]:
    config = Config.for_root(short_tmp, storage_driver="vfs")
    with CRIService(config) as service, Server(service) as server:
        yield service, server


def _stubs(server: Server) -> tuple[Any, Any, Any]:
    channel = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return (channel, api_pb2_grpc.RuntimeServiceStub(channel),
            api_pb2_grpc.ImageServiceStub(channel))


def _code(call: Any, request: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_rpc_methods_cover_both_services_of_the_descriptor() -> None:
    services = api_pb2.DESCRIPTOR.services_by_name
    assert tuple(m.name for m in services["RuntimeService"].methods) == RUNTIME_RPCS
    assert tuple(m.name for m in services["ImageService"].methods) == IMAGE_RPCS
    assert set(RPC_METHODS) == set(RUNTIME_RPCS) | set(IMAGE_RPCS)
    for rpc, method in RPC_METHODS.items():
        assert callable(getattr(CRIService, method)), rpc
    assert RPC_METHODS["ImageFsInfo"] == "image_fs_info"
    assert RPC_METHODS["ExecSync"] == "exec_sync"


def test_version_status_and_runtime_config(running: tuple[CRIService, Server]) -> None:
    service, server = running
    channel, runtime, _ = _stubs(server)
    with channel:
        version = runtime.Version(api_pb2.VersionRequest(version="v1"), timeout=10)
        assert (version.runtime_name, version.runtime_version, version.runtime_api_version,
                version.version) == ("criolib", criolib.__version__, "v1", "0.1.0")
        status = runtime.Status(api_pb2.StatusRequest(verbose=True), timeout=10)
        conditions = {c.type: c for c in status.status.conditions}
        assert conditions["RuntimeReady"].status is True
        assert conditions["NetworkReady"].status is False
        assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
        assert str(service.config.network.network_dir) in conditions["NetworkReady"].message
        info = json.loads(status.info["config"])
        assert info["root"] == str(service.config.root)
        assert sorted(h.name for h in status.runtime_handlers) == ["crun", "runc"]
        # A network config makes the network ready; a bad one is named.
        net_dir = service.config.network.network_dir
        net_dir.mkdir(parents=True)
        (net_dir / "00-bad.conflist").write_text("{")
        status = runtime.Status(api_pb2.StatusRequest(), timeout=10)
        network = next(c for c in status.status.conditions if c.type == "NetworkReady")
        assert not network.status and "00-bad.conflist" in network.message
        (net_dir / "10-test.conflist").write_text(json.dumps(CONFLIST))
        status = runtime.Status(api_pb2.StatusRequest(), timeout=10)
        assert all(c.status for c in status.status.conditions)
        assert dict(status.info) == {}
        config = runtime.RuntimeConfig(api_pb2.RuntimeConfigRequest(), timeout=10)
        assert config.linux.cgroup_driver == api_pb2.CGROUPFS
        runtime.UpdateRuntimeConfig(api_pb2.UpdateRuntimeConfigRequest(
            runtime_config=api_pb2.RuntimeConfig(
                network_config=api_pb2.NetworkConfig(pod_cidr="10.88.0.0/16"))), timeout=10)
        assert service.pod_cidr == "10.88.0.0/16"


def test_status_names_a_missing_default_network(short_tmp: Path) -> None:
    config = Config.for_root(short_tmp)
    config = attrs.evolve(config, network=attrs.evolve(config.network,
                                                       cni_default_network="other"))
    config.network.network_dir.mkdir(parents=True)
    (config.network.network_dir / "10-test.conflist").write_text(json.dumps(CONFLIST))
    service = CRIService(config)  # not started: the runtime is not ready either
    conditions = service.status(cri.StatusRequest()).status.conditions  # type: ignore[union-attr]
    assert [(c.type, c.status) for c in conditions] == [("RuntimeReady", False),
                                                       ("NetworkReady", False)]
    assert "not started" in conditions[0].message
    assert "CNI network 'other' not found" in conditions[1].message


def test_unimplemented_and_not_found(running: tuple[CRIService, Server]) -> None:
    service, server = running
    channel, runtime, _ = _stubs(server)
    with channel:
        err = _code(runtime.Exec, api_pb2.ExecRequest(container_id="x", cmd=["sh"]))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED and "Exec" in err.details()
        err = _code(runtime.ListContainerStats, api_pb2.ListContainerStatsRequest())
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        # A server-streaming RPC answers UNIMPLEMENTED too.
        with pytest.raises(grpc.RpcError) as info:
            list(runtime.GetContainerEvents(api_pb2.GetEventsRequest(), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        unknown = "f" * 64
        err = _code(runtime.ContainerStatus, api_pb2.ContainerStatusRequest(
            container_id=unknown))
        expected = grpc.StatusCode.NOT_FOUND if service.containers else (
            grpc.StatusCode.UNIMPLEMENTED)
        assert err.code() == expected, err.details()
        err = _code(runtime.PodSandboxStatus, api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=unknown))
        expected = grpc.StatusCode.NOT_FOUND if service.sandboxes else (
            grpc.StatusCode.UNIMPLEMENTED)
        assert err.code() == expected, err.details()
        # An enum value this CRI does not know is the caller's error.
        err = _code(runtime.ListContainers, api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(state=9))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_image_service(running: tuple[CRIService, Server]) -> None:
    _, server = running
    channel, _, image = _stubs(server)
    with channel:
        assert list(image.ListImages(api_pb2.ListImagesRequest(), timeout=10).images) == []
        status = image.ImageStatus(api_pb2.ImageStatusRequest(
            image=api_pb2.ImageSpec(image="docker.io/library/absent:1")), timeout=10)
        assert not status.HasField("image")  # absent is not an error
        fs = image.ImageFsInfo(api_pb2.ImageFsInfoRequest(), timeout=10)
        assert len(fs.image_filesystems) >= 1


def test_errors_map_to_status_codes(running: tuple[CRIService, Server],
                                    monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    from criolib.storage import ImageUnknown, InvalidID

    service, server = running
    channel, runtime, _ = _stubs(server)
    cases: list[tuple[BaseException, Any]] = [
        (ImageUnknown("image 'x' not known"), grpc.StatusCode.NOT_FOUND),
        (InvalidID("image id 'y' is not 64 hex"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable("closing"), grpc.StatusCode.UNAVAILABLE),
        (ZeroDivisionError("boom"), grpc.StatusCode.INTERNAL),
    ]
    with channel:
        for exc, code in cases:
            def fail(request: Any, exc: BaseException = exc) -> Any:
                raise exc
            monkeypatch.setattr(service, "version", fail)
            with caplog.at_level(logging.ERROR, logger="criolib.service"):
                err = _code(runtime.Version, api_pb2.VersionRequest())
            assert err.code() == code
            assert str(exc).strip("'") in err.details()
    assert "Version failed unexpectedly" in caplog.text
    assert "ZeroDivisionError" in caplog.text
    assert "ZeroDivisionError: boom" in err.details()


def test_socket_mode_directory_and_cleanup(short_tmp: Path) -> None:
    config = Config.for_root(short_tmp)
    listen = short_tmp / "a" / "b" / "cri.sock"
    with CRIService(config) as service:
        server = Server(service, f"unix://{listen}").start()
        try:
            assert stat.S_ISSOCK(listen.stat().st_mode)
            assert stat.S_IMODE(listen.stat().st_mode) == 0o600
            assert stat.S_IMODE(listen.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE((short_tmp / "a").stat().st_mode) == 0o700
            # One in use is refused, naming it.
            with pytest.raises(Unavailable, match=f"socket {listen} is in use"):
                Server(service, listen).start()
            assert listen.exists()
        finally:
            server.stop()
        assert not listen.exists()
        # A stale socket (its server died) is replaced.
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(listen))
        stale.close()
        with Server(service, listen) as again:
            channel, runtime, _ = _stubs(again)
            with channel:
                assert runtime.Version(api_pb2.VersionRequest(), timeout=10).runtime_name
        listen.write_text("not a socket")
        with pytest.raises(FailedPrecondition, match="exists and is not a socket"):
            Server(service, listen).start()


@pytest.mark.parametrize("listen, problem", [
    ("relative.sock", "not an absolute unix socket path"),
    ("tcp://127.0.0.1:1", "not an absolute"),
    ("/" + "x" * 120, "longer than a unix socket path"),
])
def test_bad_listen_addresses(listen: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        socket_path(listen)


def test_socket_path_forms() -> None:
    for form in ("/run/x.sock", "unix:/run/x.sock", "unix:///run/x.sock"):
        assert socket_path(form) == Path("/run/x.sock")


def test_concurrent_calls_and_a_graceful_stop(running: tuple[CRIService, Server],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    service, server = running
    channel, runtime, _ = _stubs(server)
    with channel, ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(runtime.Version, api_pb2.VersionRequest(), timeout=10)
                   for _ in range(40)]
        assert {f.result().runtime_name for f in futures} == {"criolib"}
        original = service.version
        entered = threading.Event()

        def slow(request: cri.VersionRequest) -> cri.VersionResponse:
            entered.set()
            time.sleep(0.5)
            return original(request)
        monkeypatch.setattr(service, "version", slow)
        in_flight = pool.submit(runtime.Version, api_pb2.VersionRequest(), timeout=10)
        assert entered.wait(10)
        server.stop(grace=5)
        assert in_flight.result().runtime_name == "criolib"  # finished, not cut off
        assert not server.path.exists()


def test_message_size_limit(short_tmp: Path) -> None:
    config = Config.for_root(short_tmp)
    config = attrs.evolve(config, api=attrs.evolve(config.api, grpc_max_recv_msg_size=1024))
    with CRIService(config) as service, Server(service) as server:
        channel, _, image = _stubs(server)
        with channel:
            err = _code(image.ImageStatus, api_pb2.ImageStatusRequest(
                image=api_pb2.ImageSpec(image="x" * 4096)))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_facade_before_start_and_after_close(short_tmp: Path) -> None:
    service = CRIService(Config.for_root(short_tmp))
    assert service.version(cri.VersionRequest()).runtime_name == "criolib"
    with pytest.raises(Unavailable, match="ListImages: the CRI service is not started"):
        service.list_images(cri.ListImagesRequest())
    with pytest.raises(Unavailable):
        service.store  # noqa: B018
    with service:
        assert service.started and service.state.sandboxes() == []
        assert service.call("Version", cri.VersionRequest()).runtime_api_version == "v1"
    service.close()  # idempotent
    assert not service.started


def test_serve_in_a_thread_stops_on_its_event(short_tmp: Path) -> None:
    config = Config.for_root(short_tmp)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(config,),
                              kwargs={"stop": stop, "ready": lambda s: ready.set()})
    thread.start()
    try:
        assert ready.wait(20)
        channel = grpc.insecure_channel(f"unix://{config.api.listen}")
        with channel:
            runtime = api_pb2_grpc.RuntimeServiceStub(channel)
            assert runtime.Version(api_pb2.VersionRequest(), timeout=10).runtime_name
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive() and not config.api.listen.exists()


def _config_file(base: Path) -> Path:
    run = base / "run"
    path = base / "crio.conf"
    path.write_text(f"""
[crio]
root = "{base / 'storage'}"
runroot = "{run / 'storage'}"
storage_driver = "vfs"
state_dir = "{run / 'service'}"
[crio.api]
listen = "{run / 'cri.sock'}"
[crio.runtime]
container_exits_dir = "{run / 'exits'}"
container_attach_socket_dir = "{run / 'monitor'}"
log_dir = "{base / 'logs'}"
[crio.runtime.runtimes.runc]
runtime_root = "{run / 'runc'}"
[crio.runtime.runtimes.crun]
runtime_root = "{run / 'crun'}"
[crio.network]
network_dir = "{base / 'net.d'}"
cache_dir = "{base / 'cni-cache'}"
""")
    return path


def test_criolib_serve_answers_and_exits_cleanly_on_sigterm(short_tmp: Path) -> None:
    conf = _config_file(short_tmp)
    sock = short_tmp / "over.sock"
    proc = subprocess.Popen([sys.executable, "-m", "criolib", "serve", "--config", str(conf),
                             "--listen", str(sock), "--log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "criolib serve did not listen"
            time.sleep(0.05)
        channel = grpc.insecure_channel(f"unix://{sock}")
        with channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            runtime = api_pb2_grpc.RuntimeServiceStub(channel)
            version = runtime.Version(api_pb2.VersionRequest(), timeout=10)
            assert version.runtime_version == criolib.__version__
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert (short_tmp / "storage" / "storage.lock").exists()  # the file's root
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""  # the library never prints; logs go to stderr
    assert f"serving CRI v1 on unix://{sock}" in err and "stopped serving" in err
    assert not sock.exists()


def test_criolib_serve_reports_a_bad_config(short_tmp: Path) -> None:
    conf = short_tmp / "bad.conf"
    conf.write_text("[crio]\nbogus = 1\n")
    proc = subprocess.run([sys.executable, "-m", "criolib", "serve", "--config", str(conf)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 1
    assert f"criolib: error: {conf}: [crio] bogus: unknown key" in proc.stderr


def test_the_docs_example_runs() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    example = page.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    assert lines[0] == f"criolib {criolib.__version__} v1"
    assert lines[1] == "RuntimeReady True"
    assert lines[2].startswith("NetworkReady False no CNI network configuration in /tmp/")
    assert lines[3] == "images: 0"
    assert lines[4].startswith("unix:///tmp/") and lines[4].endswith("criolib.sock criolib")


def _is_started(service: CRIService) -> bool:
    return service.started  # read anew (mypy keeps an asserted property narrowed)


def test_close_waits_for_calls_in_flight_and_refuses_new_ones(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() does not close the store under a call still running; calls that come
    after close began are Unavailable; the wait is bounded by CLOSE_WAIT."""
    from criolib.service import _service

    service = CRIService(Config.for_root(short_tmp, storage_driver="vfs")).start()
    assert service.images is not None
    entered, release = threading.Event(), threading.Event()
    seen: list[object] = []
    real = service.images.list_images

    def slow(request: cri.ListImagesRequest) -> cri.ListImagesResponse:
        entered.set()
        assert release.wait(20)
        seen.append(service.store)  # still open: raises Unavailable once closed
        return real(request)

    monkeypatch.setattr(service.images, "list_images", slow)
    results: list[object] = []
    caller = threading.Thread(target=lambda: results.append(
        service.list_images(cri.ListImagesRequest())))
    caller.start()
    assert entered.wait(10)
    closer = threading.Thread(target=service.close)
    closer.start()
    deadline = time.monotonic() + 10
    while not service._closing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(Unavailable, match="ImageFsInfo: the CRI service is closing"):
        service.image_fs_info(cri.ImageFsInfoRequest())
    time.sleep(0.2)
    assert closer.is_alive() and service.started  # waiting for the call in flight
    release.set()
    caller.join(10)
    closer.join(10)
    assert not closer.is_alive() and not _is_started(service)
    assert len(seen) == 1 and isinstance(results[0], cri.ListImagesResponse), results

    # A call that never ends holds close() only CLOSE_WAIT seconds.
    monkeypatch.setattr(_service, "CLOSE_WAIT", 0.3)
    service.start()
    stuck = threading.Event()
    assert service.images is not None
    monkeypatch.setattr(service.images, "list_images",
                        lambda request: stuck.wait(20) and cri.ListImagesResponse())
    caller = threading.Thread(target=lambda: service.list_images(cri.ListImagesRequest()))
    caller.start()
    deadline = time.monotonic() + 10
    while not service._active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    service.close()
    assert 0.25 < time.monotonic() - t0 < 5 and not _is_started(service)
    stuck.set()
    caller.join(10)
    # After a close, start works again.
    with service:
        assert service.list_images(cri.ListImagesRequest()).images == []


def test_the_docs_pod_example_runs() -> None:
    """The page's second example (a pod and a container in process) prints what it says."""
    from criolib.testing import require_root

    require_root()
    page = (Path(__file__).resolve().parents[2] / "docs" / "service.md").read_text()
    section = page.split("### A pod and a container, in process", 1)[1]
    example, after = section.split("```python\n", 1)[1].split("```", 1)
    expected = after.split("```\n", 1)[1].split("```", 1)[0].splitlines()
    proc = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"exec: 0 {os.uname().nodename}"
    assert lines[1:] == expected[1:]
