"""The gRPC endpoint: CRI v1 RuntimeService and ImageService on a unix socket.

What the kubelet and crictl talk to (``--container-runtime-endpoint
unix:///run/criolib/criolib.sock``). The servicers are generic handlers built from
:data:`RPC_METHODS` and the descriptor of the ``cri`` extra's stubs
(``cri_api.v1.api_pb2``); each call is ``from_proto`` → the :class:`CRIService`
method → ``to_proto``. A :class:`ServiceError` answers with its ``code``, another
:class:`CriolibError` with :func:`grpc_code_for`'s, anything else with INTERNAL (and
a log record with the traceback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import Any

from criolib.errors import CriolibError
from criolib.service._config import Config
from criolib.service._convert import from_proto, to_proto
from criolib.service._errors import (
    ConfigError,
    FailedPrecondition,
    Internal,
    ServiceError,
    Unavailable,
    grpc_code_for,
)
from criolib.service._service import RPC_METHODS, CRIService

__all__ = ["DEFAULT_WORKERS", "Server", "serve", "socket_path"]

log = logging.getLogger("criolib.service")

#: Requests served at once (the kubelet's calls are short; pulls and stops are not).
DEFAULT_WORKERS = 16
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with its NUL


def _grpc() -> Any:
    try:
        import grpc  # type: ignore[import-untyped]
    except ImportError as exc:
        raise Internal(f"grpcio is not installed: install criolib[cri] ({exc})") from exc
    return grpc


def socket_path(listen: str | os.PathLike[str]) -> Path:
    """The socket's path from ``/path``, ``unix:/path`` or ``unix:///path``.

    Anything else (a TCP address, a relative path, a path longer than a unix socket
    address holds) is a :class:`ConfigError` naming it.
    """
    text = os.fspath(listen)
    for prefix in ("unix://", "unix:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if not text.startswith("/"):
        raise ConfigError(f"[crio.api] listen: {os.fspath(listen)!r} is not an absolute "
                          "unix socket path")
    if len(os.fsencode(text)) > _SUN_PATH_MAX:
        raise ConfigError(f"[crio.api] listen: {text!r} is longer than a unix socket path "
                          f"may be ({_SUN_PATH_MAX} bytes)")
    return Path(text)


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700 (existing ones untouched)."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)


def _clear_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket: not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    except OSError as exc:
        raise Unavailable(f"cannot tell whether socket {path} is in use: {exc}") from exc
    finally:
        probe.close()
    raise Unavailable(f"socket {path} is in use by another server: stop it, or listen "
                      "elsewhere ([crio.api] listen)")


class Server:
    """The CRI gRPC server of one :class:`CRIService` on a unix socket.

    ``listen`` defaults to the service's ``[crio.api] listen``. :meth:`start` makes
    the socket's directory (0700, when missing), replaces a stale socket (one in use
    is a :class:`Unavailable` naming it), binds, and sets the socket's mode to 0600.
    :meth:`stop` stops accepting, lets calls in flight finish within ``grace``
    seconds, and removes the socket; the service stays open (its caller closes it).
    """

    def __init__(self, service: CRIService, listen: str | os.PathLike[str] | None = None, *,
                 max_workers: int = DEFAULT_WORKERS) -> None:
        self.service = service
        self.path = socket_path(listen if listen is not None else service.config.api.listen)
        self.max_workers = max_workers
        self._server: Any = None
        self._inode: tuple[int, int] | None = None

    @property
    def address(self) -> str:
        """The gRPC target clients dial: ``unix:///path``."""
        return f"unix://{self.path}"

    def __repr__(self) -> str:
        return f"Server({self.address!r}, running={self._server is not None})"

    # -- handlers ----------------------------------------------------------------------

    def _invoke(self, rpc: str, method: str | None, request: Any, context: Any) -> Any:
        grpc = _grpc()
        started = time.monotonic()
        try:
            if method is None:
                raise self.service._not_served(rpc, "RPCs newer than criolib's CRI")
            return to_proto(getattr(self.service, method)(from_proto(request)))
        except ServiceError as exc:
            code, message = exc.code, str(exc)
            log.debug("%s: %s: %s", rpc, code, message)
        except CriolibError as exc:
            code, message = grpc_code_for(exc), str(exc)
            log.debug("%s: %s (%s): %s", rpc, code, type(exc).__name__, message)
        except Exception as exc:
            code, message = "INTERNAL", f"{rpc}: {type(exc).__name__}: {exc}"
            log.exception("%s failed unexpectedly", rpc)
        finally:
            log.debug("%s took %.1f ms", rpc, (time.monotonic() - started) * 1e3)
        context.abort(grpc.StatusCode[code], message)
        raise Internal("grpc's abort returned")  # abort always raises

    def _stream(self, rpc: str, method: str | None, request: Any,
                context: Any) -> Iterator[Any]:
        grpc = _grpc()
        try:
            if method is None:
                raise self.service._not_served(rpc, "RPCs newer than criolib's CRI")
            for item in getattr(self.service, method)(from_proto(request)):
                yield to_proto(item)
            return
        except ServiceError as exc:
            code, message = exc.code, str(exc)
        except CriolibError as exc:
            code, message = grpc_code_for(exc), str(exc)
        except Exception as exc:
            code, message = "INTERNAL", f"{rpc}: {type(exc).__name__}: {exc}"
            log.exception("%s failed unexpectedly", rpc)
        context.abort(grpc.StatusCode[code], message)

    def _handlers(self) -> list[Any]:
        grpc = _grpc()
        try:
            from cri_api.v1 import api_pb2
        except ImportError as exc:
            raise Internal(f"the CRI stubs are not installed: install criolib[cri] ({exc})"
                           ) from exc
        generic = []
        for service_desc in api_pb2.DESCRIPTOR.services_by_name.values():
            handlers = {}
            for m in service_desc.methods:
                request_cls = getattr(api_pb2, m.input_type.name)
                response_cls = getattr(api_pb2, m.output_type.name)
                make: Callable[..., Any]
                if m.server_streaming:
                    make, call = grpc.unary_stream_rpc_method_handler, self._stream
                else:
                    make, call = grpc.unary_unary_rpc_method_handler, self._invoke
                handlers[m.name] = make(
                    _bind(call, m.name, RPC_METHODS.get(m.name)),
                    request_deserializer=request_cls.FromString,
                    response_serializer=response_cls.SerializeToString)
            generic.append(grpc.method_handlers_generic_handler(service_desc.full_name,
                                                                handlers))
        return generic

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Server:
        """Bind the socket and serve (the service must be started by its owner)."""
        if self._server is not None:
            return self
        grpc = _grpc()
        api = self.service.config.api
        try:
            _make_private_dirs(self.path.parent)
        except OSError as exc:
            raise ServiceError(f"cannot make the socket directory {self.path.parent}: "
                               f"{exc.strerror}") from exc
        _clear_stale_socket(self.path)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers,
                                       thread_name_prefix="criolib-cri"),
            handlers=self._handlers(),
            options=[("grpc.max_send_message_length", api.grpc_max_send_msg_size),
                     ("grpc.max_receive_message_length", api.grpc_max_recv_msg_size),
                     ("grpc.so_reuseport", 0)])
        try:
            server.add_insecure_port(f"unix:{self.path}")
        except RuntimeError as exc:
            raise Unavailable(f"cannot listen on {self.path}: {exc}") from exc
        try:
            os.chmod(self.path, 0o600)
            st = self.path.stat()
        except OSError as exc:
            server.stop(None)
            raise ServiceError(f"cannot set the mode of socket {self.path}: "
                               f"{exc.strerror}") from exc
        self._inode = (st.st_dev, st.st_ino)
        server.start()
        self._server = server
        log.info("serving CRI v1 on %s", self.address)
        return self

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting, finish calls in flight (up to ``grace`` s), remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(grace).wait()
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        log.info("stopped serving on %s", self.address)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (True) or ``timeout`` passes (False)."""
        if self._server is None:
            return True
        return bool(self._server.wait_for_termination(timeout))

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _bind(call: Callable[[str, str | None, Any, Any], Any], rpc: str,
          method: str | None) -> Callable[[Any, Any], Any]:
    def handler(request: Any, context: Any) -> Any:
        return call(rpc, method, request, context)
    return handler


def serve(config: Config, *, stop: threading.Event | None = None,
          ready: Callable[[Server], None] | None = None, grace: float = 10.0,
          max_workers: int = DEFAULT_WORKERS) -> None:
    """Run the CRI service on ``config``'s socket until SIGTERM/SIGINT (or ``stop``).

    Blocking, like ``crio``. On a signal it stops accepting, lets calls in flight
    finish (``grace`` seconds), closes the service and removes the socket; the
    containers keep running (their monitors own them). Signal handlers are installed
    only when called from the main thread (then restored); ``ready`` is called once
    the socket answers.
    """
    stop = stop if stop is not None else threading.Event()
    with CRIService(config) as service:
        server = Server(service, config.api.listen, max_workers=max_workers).start()
        previous: dict[signal.Signals, Any] = {}
        try:
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGINT):
                    previous[signum] = signal.signal(signum, lambda *_: stop.set())
            if ready is not None:
                ready(server)
            while not stop.wait(0.5):
                pass
            log.info("stopping: finishing calls in flight (up to %s s)", grace)
        finally:
            server.stop(grace)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
