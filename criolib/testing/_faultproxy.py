"""A fault-injecting HTTP proxy for testing registry clients against a real registry.

:class:`FaultProxy` listens on 127.0.0.1, forwards every request to one upstream
(the test bed's registry) and, for requests whose path matches a rule, breaks the
exchange the ways networks and registries break: an error status with
``Retry-After`` (RFC 9110 §10.2.3), a connection closed mid-body, a body shorter
than it should be, a flipped byte, a ``Content-Length`` that lies (RFC 9112 §6.3),
a delay, a ``Range`` header dropped. Otherwise ``Range`` requests are forwarded
untouched, so the upstream answers them (RFC 9110 §14). Every request is recorded
(method, path, headers) for assertions.

The ``Host`` header is forwarded as the client sent it, so the registry writes
upload ``Location`` URLs that point back at the proxy. Only http upstreams.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

import attrs

from criolib.testing._errors import TestbedError, TestbedValueError

__all__ = ["Fault", "FaultProxy", "RecordedRequest"]

log = logging.getLogger("criolib.testing")

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding",
                         "upgrade", "proxy-connection"})
_CHUNK = 1 << 16
_ERROR_CODES = {429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNAVAILABLE",
                503: "UNAVAILABLE", 504: "UNAVAILABLE"}


@attrs.frozen
class RecordedRequest:
    """One request the proxy received: method, path with query, headers (lower-case names)."""

    method: str
    path: str
    headers: Mapping[str, str]
    faults: tuple[str, ...] = ()  # the kinds of the rules applied to it


@attrs.define
class Fault:
    """A rule: for requests matching ``method`` and the ``path`` regex, ``times`` times.

    ``times=None`` applies it forever. ``hits`` counts the requests it was applied to.
    Made by :class:`FaultProxy`'s ``status``/``cut``/``truncate``/``corrupt``/
    ``lie_length``/``ignore_range``/``delay`` methods.
    """

    kind: str
    path: re.Pattern[str]
    method: str | None
    times: int | None
    params: dict[str, Any]
    hits: int = 0

    def _claim(self, method: str, target: str) -> bool:
        """Whether this rule applies to the request; counts it if so (lock held)."""
        if self.method is not None and self.method != method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if not self.path.search(target):
            return False
        self.hits += 1
        return True


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 that injects faults in front of ``upstream_url``.

    Use as a context manager (or :meth:`start`/:meth:`stop`); point clients at
    :attr:`host` / :attr:`url`. Add rules with the fault methods; each takes
    ``path`` (a regex searched in the request's path and query, default any),
    ``method`` (default: ``GET`` for body faults and ``ignore_range``, any for
    ``status`` and ``delay``)
    and ``times`` (default 1; ``None`` for always). Offsets count bytes of the body
    this response carries (a 206's body starts at its range's first byte).
    """

    def __init__(self, upstream_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise TestbedValueError(f"fault proxy: upstream must be http://host[:port], "
                                    f"not {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        if self._server is not None:
            return self
        server = _Server(self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="criolib-fault-proxy", daemon=True)
        self._thread.start()
        log.debug("fault proxy %s -> %s:%d", self.url, *self.upstream)
        return self

    def stop(self) -> None:
        """Stop serving; connections still open are dropped."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, what a registry client takes as the registry."""
        if self._server is None:
            raise TestbedError("fault proxy: not started, so it has no address yet")
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    # -- records -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget every rule and every recorded request."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()

    # -- rules -------------------------------------------------------------------------

    def _add(self, kind: str, path: str, method: str | None, times: int | None,
             **params: Any) -> Fault:
        if times is not None and (isinstance(times, bool) or times < 1):
            raise TestbedValueError(f"fault proxy: times must be >= 1 or None, not {times!r}")
        fault = Fault(kind, re.compile(path), method.upper() if method else None, times, params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def status(self, code: int, *, retry_after: int | str | None = None, path: str = "",
               method: str | None = None, times: int | None = 1) -> Fault:
        """Answer ``code`` (e.g. 500, 503, 429) with a distribution-style error body."""
        if not 400 <= code <= 599:
            raise TestbedValueError(f"fault proxy: status must be 4xx or 5xx, not {code}")
        return self._add("status", path, method, times, code=code, retry_after=retry_after)

    def cut(self, after_bytes: int, *, path: str = "", method: str | None = "GET",
            times: int | None = 1) -> Fault:
        """Send the true headers and ``after_bytes`` of the body, then close the connection."""
        return self._add("cut", path, method, times, after=_count(after_bytes))

    def truncate(self, to_bytes: int, *, fix_length: bool = True, path: str = "",
                 method: str | None = "GET", times: int | None = 1) -> Fault:
        """Send only ``to_bytes`` of the body; ``fix_length`` makes Content-Length say so."""
        return self._add("truncate", path, method, times, to=_count(to_bytes),
                         fix_length=fix_length)

    def corrupt(self, offset: int, *, path: str = "", method: str | None = "GET",
                times: int | None = 1) -> Fault:
        """Flip every bit of the body's byte at ``offset`` (if the body is that long)."""
        return self._add("corrupt", path, method, times, offset=_count(offset))

    def lie_length(self, delta: int, *, path: str = "", method: str | None = "GET",
                   times: int | None = 1) -> Fault:
        """Send the whole body under a Content-Length off by ``delta``, then close."""
        return self._add("lie_length", path, method, times, delta=delta)

    def ignore_range(self, *, path: str = "", method: str | None = "GET",
                     times: int | None = 1) -> Fault:
        """Drop the ``Range`` header before forwarding: the upstream answers 200, whole."""
        return self._add("ignore_range", path, method, times)

    def delay(self, seconds: float, *, path: str = "", method: str | None = None,
              times: int | None = 1) -> Fault:
        """Wait ``seconds`` before answering."""
        return self._add("delay", path, method, times, seconds=float(seconds))

    def _match(self, method: str, target: str, headers: Mapping[str, str]) -> list[Fault]:
        with self._lock:
            chosen = [f for f in self._faults if f._claim(method, target)]
            self._requests.append(RecordedRequest(method, target, dict(headers),
                                                  tuple(f.kind for f in chosen)))
        return chosen


def _plan(length: int, faults: Mapping[str, Any]) -> tuple[int, int, bool]:
    """(body bytes to send, Content-Length to announce, close afterwards) for a body."""
    send, header_length, close = length, length, False
    if "lie_length" in faults:
        header_length = max(0, length + faults["lie_length"]["delta"])
        close = True
    if "truncate" in faults:
        send = min(send, faults["truncate"]["to"])
        if faults["truncate"]["fix_length"]:
            header_length = send
        close = True
    if "cut" in faults:
        send = min(send, faults["cut"]["after"])
        close = True
    return send, header_length, close


def _count(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TestbedValueError(f"fault proxy: a byte count must be an int >= 0, not {value!r}")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FaultProxy) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Forwards one connection's requests; applies the owner's faults."""

    protocol_version = "HTTP/1.1"
    timeout = 30.0  # an idle keep-alive connection's thread ends after this

    @property
    def owner(self) -> FaultProxy:
        return cast(_Server, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fault proxy: " + format, *args)

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _proxy(self) -> None:
        body = self._read_body()
        headers: dict[str, str] = {}
        for k, v in self.headers.items():  # repeated headers recorded comma-joined
            headers[k.lower()] = f"{headers[k.lower()]}, {v}" if k.lower() in headers else v
        faults = self.owner._match(self.command, self.path, headers)
        by_kind = {f.kind: f.params for f in faults}
        if "delay" in by_kind:
            time.sleep(by_kind["delay"]["seconds"])
        if "status" in by_kind:
            self._send_status(**by_kind["status"])
            return
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=self.owner.timeout)
        try:
            drop = _HOP_BY_HOP | ({"range"} if "ignore_range" in by_kind else set())
            # A list, not a dict: Go clients send several Accept lines, and each must
            # reach the upstream as its own header.
            forward = [(k, v) for k, v in self.headers.items()
                       if k.lower() not in drop and k.lower() != "content-length"]
            if body or self.command in ("POST", "PUT", "PATCH"):
                forward.append(("Content-Length", str(len(body))))
            conn.putrequest(self.command, self.path, skip_host=True,
                            skip_accept_encoding=True)
            if not any(k.lower() == "host" for k, _ in forward):
                conn.putheader("Host", "{}:{}".format(*self.owner.upstream))
            for key, value in forward:
                conn.putheader(key, value)
            conn.endheaders(body or None)
            upstream = conn.getresponse()
            self._relay(upstream, by_kind)
        except OSError as exc:
            log.debug("fault proxy: upstream failed: %s", exc)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_error(502, "upstream failed")
        finally:
            conn.close()

    def _send_status(self, code: int, retry_after: int | str | None) -> None:
        error = _ERROR_CODES.get(code, "UNKNOWN")
        payload = json.dumps({"errors": [{"code": error, "message": "injected by the fault "
                                          "proxy", "detail": {"status": code}}]}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _relay(self, upstream: http.client.HTTPResponse, faults: Mapping[str, Any]) -> None:
        no_body = self.command == "HEAD" or upstream.status in (204, 304) or \
            100 <= upstream.status < 200
        declared = upstream.getheader("Content-Length")
        data: bytes | None = None  # None: streamed from upstream below
        if no_body:
            length = int(declared) if declared and declared.isdigit() else 0
        elif declared is not None and declared.isdigit():
            length = int(declared)
        else:
            data = upstream.read()
            length = len(data)
        send, header_length, close = (0, length, False) if no_body else _plan(length, faults)
        self.send_response(upstream.status, upstream.reason)
        for key, value in upstream.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        if declared is not None or not no_body:
            self.send_header("Content-Length", str(header_length))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body:
            flip = faults["corrupt"]["offset"] if "corrupt" in faults else None
            self._send_body(upstream, data, send, flip)
        self.wfile.flush()
        if close:
            self.close_connection = True

    def _send_body(self, upstream: http.client.HTTPResponse, data: bytes | None, send: int,
                   flip: int | None) -> None:
        sent = 0
        while sent < send:
            chunk = data[sent:sent + _CHUNK] if data is not None else upstream.read(
                min(_CHUNK, send - sent))
            if not chunk:
                break
            chunk = chunk[:send - sent]
            if flip is not None and sent <= flip < sent + len(chunk):
                i = flip - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            self.wfile.write(chunk)
            sent += len(chunk)
