"""``criolib serve`` as a subprocess, and the client the kubelet would be, for tests.

:class:`CRIClient` speaks CRI v1 over a unix socket through the ``cri`` extra's stubs
(``cri_api.v1.api_pb2_grpc``): the same wire protocol as crictl and the kubelet.
:func:`start_service` writes a :class:`criolib.service.Config` out as a
crio.conf-shaped TOML file, starts ``python -m criolib serve --config`` on it and
waits until the socket answers ``Version``; :func:`running_service` does that as a
context manager and stops the server with SIGTERM afterwards (containers keep
running: removing them is the test's job, as it would be the kubelet's).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import attrs

from criolib.testing._errors import MissingHostPart, TestbedError

if TYPE_CHECKING:
    from criolib.service import Config

__all__ = ["CRIClient", "ServiceProcess", "running_service", "service_config_toml",
           "start_service"]

_CRI_HINT = "pip install 'criolib[cri]'"


def _cri_modules() -> tuple[Any, Any, Any]:
    try:
        grpc = importlib.import_module("grpc")
        api_pb2 = importlib.import_module("cri_api.v1.api_pb2")
        api_pb2_grpc = importlib.import_module("cri_api.v1.api_pb2_grpc")
    except ImportError as exc:
        raise MissingHostPart(f"a CRI client needs grpcio and the CRI stubs ({exc}); "
                              f"install the extra: {_CRI_HINT}") from exc
    return grpc, api_pb2, api_pb2_grpc


class CRIClient:
    """CRI v1 RuntimeService and ImageService stubs over one channel to ``address``
    (``unix:///path``), every call with a deadline of ``timeout`` seconds by default.

    ``call("RunPodSandbox", request)`` picks the right stub; :attr:`runtime` and
    :attr:`image` are the stubs themselves; :attr:`api` is ``cri_api.v1.api_pb2``
    (the request classes). Failed calls raise ``grpc.RpcError`` as the stubs do.
    """

    def __init__(self, address: str, *, timeout: float = 60.0) -> None:
        self._grpc, self.api, stubs = _cri_modules()
        self.address = address
        self.timeout = timeout
        self.channel = self._grpc.insecure_channel(address)
        self.runtime = stubs.RuntimeServiceStub(self.channel)
        self.image = stubs.ImageServiceStub(self.channel)
        self._image_rpcs = frozenset(
            m.name for m in self.api.DESCRIPTOR.services_by_name["ImageService"].methods)

    def __repr__(self) -> str:
        return f"CRIClient({self.address!r})"

    def call(self, rpc: str, request: Any, *, timeout: float | None = None) -> Any:
        """The response of ``rpc`` (a CRI method name) to ``request``."""
        stub = self.image if rpc in self._image_rpcs else self.runtime
        return getattr(stub, rpc)(request, timeout=timeout or self.timeout)

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the server answers ``Version`` within ``timeout`` seconds."""
        try:
            self._grpc.channel_ready_future(self.channel).result(timeout=timeout)
            self.call("Version", self.api.VersionRequest(), timeout=timeout)
        except (self._grpc.FutureTimeoutError, self._grpc.RpcError):
            return False
        return True

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(os.fspath(value) if isinstance(value, Path) else str(value))


def service_config_toml(config: Config) -> str:
    """``config`` as a crio.conf-shaped TOML text that ``load_config`` reads back."""
    def table(name: str, obj: Any, skip: tuple[str, ...] = ()) -> list[str]:
        lines = [f"[{name}]"]
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            if field.name not in skip and not attrs.has(type(value)):
                lines.append(f"{field.name} = {_toml_value(value)}")
        return lines

    lines = table("crio", config)
    lines += table("crio.api", config.api)
    lines += table("crio.runtime", config.runtime, skip=("runtimes",))
    for name, handler in config.runtime.runtimes.items():
        lines += table(f"crio.runtime.runtimes.{name}", handler, skip=("name",))
    lines += table("crio.image", config.image)
    lines += table("crio.network", config.network)
    return "\n".join(lines) + "\n"


@attrs.define(eq=False)
class ServiceProcess:
    """A running ``criolib serve``: its process, the config it serves, a client."""

    config: Config
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    client: CRIClient

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, size: int = 6000) -> str:
        """The end of the server's log (stdout and stderr)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-size:]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` (SIGKILL for an unclean stop) and wait; the exit status
        (``-signal`` when a signal ended it). A server still running after
        ``timeout`` seconds is killed and a :class:`TestbedError` raised."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TestbedError(f"criolib serve (pid {self.process.pid}) ignored signal "
                               f"{sig} for {timeout} s; log tail:\n{self.log_tail()}"
                               ) from None


def start_service(config: Config, config_path: str | os.PathLike[str], *,
                  log_path: str | os.PathLike[str] | None = None,
                  timeout: float = 30.0, python: str = sys.executable,
                  log_level: str = "debug") -> ServiceProcess:
    """Write ``config`` to ``config_path`` and start ``criolib serve`` on it.

    The server logs to ``log_path`` (default: ``serve.log`` beside the config); the
    call returns once the socket (``[crio.api] listen``) answers ``Version``. A server
    that exits or does not answer within ``timeout`` seconds is stopped and a
    :class:`TestbedError` with its log tail raised.
    """
    client = CRIClient(f"unix://{config.api.listen}")
    path = Path(config_path)
    path.write_text(service_config_toml(config))
    log = Path(log_path) if log_path is not None else path.with_name("serve.log")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [python, "-m", "criolib", "serve", "--config", str(path), "--log-level",
             log_level], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    served = ServiceProcess(config, path, log, process, client)
    deadline = time.monotonic() + timeout
    while not client.answers(0.2):
        status = process.poll()
        if status is not None or time.monotonic() > deadline:
            problem = (f"did not answer within {timeout} s" if status is None
                       else f"exited with status {status}")
            with contextlib.suppress(TestbedError):
                served.stop(signal.SIGKILL)
            raise TestbedError(f"criolib serve --config {path} {problem}; log tail:\n"
                               f"{served.log_tail()}")
    return served


@contextlib.contextmanager
def running_service(config: Config, workdir: str | os.PathLike[str], *,
                    timeout: float = 30.0) -> Iterator[ServiceProcess]:
    """:func:`start_service` with ``criolib.toml`` and ``serve.log`` in ``workdir``;
    SIGTERM (then SIGKILL) on the way out."""
    served = start_service(config, Path(workdir) / "criolib.toml", timeout=timeout)
    try:
        yield served
    finally:
        if served.running:
            with contextlib.suppress(TestbedError):
                served.stop(signal.SIGTERM)
