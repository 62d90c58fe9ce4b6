"""A container's attach socket in criolib's monitor process (conmon's attach protocol).

docs/conmon-design.md "Attach socket": SEQPACKET; daemon → client packets are
``bytes([2]) + data`` (stdout) or ``bytes([3]) + data`` (stderr) with at most 8192 data
bytes; client → daemon packets are stdin; a 0-byte recv ends that client's stdin. Each
client's queue is bounded (4 MiB): while one is full the container's output is not read
(back-pressure, nothing lost); a client full for 30 s is dropped. Stdlib only.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import socket
import time

from criolib.conmon._daemon_proc import diag
from criolib.conmon._wire import bind_seqpacket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from criolib.conmon._daemon_loop import Loop, Timer

__all__ = ["PACKET_DATA", "QUEUE_LIMIT", "STALL_DROP", "AttachClient", "AttachServer"]

#: The most data bytes in one packet to a client (conmon's attach buffer).
PACKET_DATA = 8192
#: A client's queue bound; past it the container's output is no longer read.
QUEUE_LIMIT = 4 * 1024 * 1024
#: Seconds a client may keep its queue full before it is dropped.
STALL_DROP = 30.0
_PREFIX = {"stdout": b"\x02", "stderr": b"\x03"}


class AttachServer:
    """The listening attach socket of one container and its clients.

    ``on_stdin(data)`` gets each stdin packet, ``on_stdin_eof()`` a client's end of
    input, ``on_unblocked()`` is called when no queue is full any more.
    """

    def __init__(self, loop: Loop, path: str, *, on_stdin: Callable[[bytes], object],
                 on_stdin_eof: Callable[[], object],
                 on_unblocked: Callable[[], object]) -> None:
        self.loop = loop
        self.path = path
        self.on_stdin = on_stdin
        self.on_stdin_eof = on_stdin_eof
        self.on_unblocked = on_unblocked
        self.clients: list[AttachClient] = []
        self.read_stdin = True
        self.closing = False
        self.sock: socket.socket | None = bind_seqpacket(path)
        self.sock.setblocking(False)
        self._ino = os.stat(path).st_ino
        loop.watch(self.sock, selectors.EVENT_READ, self._accept)
        self._close_timer: Timer | None = None

    def _accept(self, mask: int) -> None:
        if self.sock is None:
            return
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.clients.append(AttachClient(self, conn))

    def full(self) -> bool:
        """Whether some client's queue is at its bound."""
        return any(c.queued >= QUEUE_LIMIT for c in self.clients)

    def broadcast(self, stream: str, data: bytes) -> bool:
        """Queue ``data`` of ``stream`` to every client; True when a queue is now full."""
        if not self.clients:
            return False
        prefix = _PREFIX[stream]
        if len(data) <= PACKET_DATA:
            packets = [prefix + data]
        else:
            packets = [prefix + data[i:i + PACKET_DATA]
                       for i in range(0, len(data), PACKET_DATA)]
        full = False
        for client in list(self.clients):
            client.enqueue(packets, len(data))
            full = full or client.queued >= QUEUE_LIMIT
        return full

    def set_read_stdin(self, enabled: bool) -> None:
        """Stop (or resume) reading stdin from the clients: the container's stdin is
        backed up."""
        if enabled != self.read_stdin:
            self.read_stdin = enabled
            for client in self.clients:
                client.update()

    def dropped(self, client: AttachClient) -> None:
        """``client`` is gone: forget it; resume output if it was the one full."""
        with contextlib.suppress(ValueError):
            self.clients.remove(client)
        if self.closing and not self.clients:
            self._finish_now()
        elif not self.full():
            self.on_unblocked()

    def finish(self, grace: float = 1.0) -> None:
        """The container exited: no new clients; flush queues for ``grace`` s, close."""
        self.closing = True
        self._close_listener()
        for client in list(self.clients):
            client.stdin_open = False
            if not client.queue:
                client.close()
            else:
                client.update()
        if self.clients:
            self.loop.holds += 1
            self._close_timer = self.loop.call_later(grace, self._finish_now)

    def _finish_now(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
            self.loop.holds -= 1
        for client in list(self.clients):
            client.close()

    def _close_listener(self) -> None:
        if self.sock is not None:
            self.loop.unwatch(self.sock)
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._ino:
                    os.unlink(self.path)

    def close(self) -> None:
        """Close the listener and every client at once."""
        self.closing = True
        self._close_listener()
        self._finish_now()


class AttachClient:
    """One attach connection: its output queue and its stdin."""

    __slots__ = ("full_since", "queue", "queued", "server", "sock", "stdin_open", "timer")

    def __init__(self, server: AttachServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.setblocking(False)
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.stdin_open = True
        self.full_since: float | None = None
        self.timer: Timer | None = None
        self.update()

    def update(self) -> None:
        """Watch for what is wanted now: stdin while open (and accepted), writability
        while output is queued."""
        if self.sock.fileno() < 0:
            return
        events = 0
        if self.stdin_open and self.server.read_stdin and not self.server.closing:
            events |= selectors.EVENT_READ
        if self.queue:
            events |= selectors.EVENT_WRITE
        if events:
            self.server.loop.watch(self.sock, events, self._ready)
        else:
            # Nothing wanted: an unwatched socket cannot spin on a peer's hang-up.
            self.server.loop.unwatch(self.sock)

    def enqueue(self, packets: list[bytes], size: int) -> None:
        """Queue ``packets`` (``size`` data bytes) and send what the socket takes."""
        was_empty = not self.queue
        self.queue.extend(packets)
        self.queued += size
        if was_empty:
            self.flush()
        if self.queued >= QUEUE_LIMIT and self.full_since is None:
            self.full_since = time.monotonic()
            self.timer = self.server.loop.call_later(STALL_DROP, self._stalled)

    def flush(self) -> None:
        """Send queued packets until the socket is full."""
        queue = self.queue
        send = self.sock.send
        try:
            while queue:
                packet = queue[0]
                send(packet)
                queue.popleft()
                self.queued -= len(packet) - 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        if self.full_since is not None and self.queued < QUEUE_LIMIT:
            self.full_since = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if not self.server.full():
                self.server.on_unblocked()
        if self.server.closing and not queue:
            self.close()
            return
        self.update()

    def _stalled(self) -> None:
        self.timer = None
        if self.full_since is not None:
            diag(f"attach {self.server.path}: client stuck for {STALL_DROP:.0f} s, dropped")
            self.close()

    def _ready(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self.close()
                return
            if data == b"":
                self.stdin_open = False
                self.server.on_stdin_eof()
                self.update()
            elif data:
                self.server.on_stdin(data)
        if mask & selectors.EVENT_WRITE and self.sock.fileno() >= 0:
            self.flush()

    def close(self) -> None:
        """Close the connection and leave the server.

        A client that goes while it could still send (an error, a hang-up, dropped
        as stuck, or never read because stdin was paused) ends its input: the same
        ``on_stdin_eof`` as a 0-byte recv (conmon's ``terminate_remote_sock``).
        """
        if self.sock.fileno() < 0:
            return
        could_send = self.stdin_open and not self.server.closing
        self.stdin_open = False
        self.server.loop.unwatch(self.sock)
        self.sock.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0
        self.server.dropped(self)
        if could_send:
            self.server.on_stdin_eof()
