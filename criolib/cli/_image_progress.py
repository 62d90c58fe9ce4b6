"""Progress output for ``criolib image copy/pull/push``, the way skopeo and podman show it.

On a terminal one line per blob is redrawn in place (``Copying blob 75f9961c204b
[=====>      ] 512.0KiB / 1.0MiB``), at most ten times a second; elsewhere
one line is printed when a blob starts and one when it is done or skipped.
The library only sends :class:`~criolib.image.ProgressEvent`; this module owns
the terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from criolib.image import ProgressEvent

__all__ = ["ProgressPrinter", "human_size"]

_BAR = 30
_INTERVAL = 0.1


def human_size(n: float) -> str:
    """``1.5MiB``-style sizes, as podman prints them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"  # pragma: no cover - the loop returns first


class _Blob:
    def __init__(self, event: ProgressEvent) -> None:
        self.kind = "config" if event.index is None else "blob"
        self.digest = event.digest
        self.size = event.size
        self.offset = 0
        self.state = "waiting"

    def line(self) -> str:
        short = self.digest.partition(":")[2][:12]
        head = f"Copying {self.kind} {short}"
        if self.state == "skipped":
            return f"{head} skipped: already exists"
        if self.state == "done":
            return f"{head} done   {human_size(self.size if self.size >= 0 else self.offset)}"
        if self.size > 0:
            filled = min(_BAR, int(_BAR * self.offset / self.size))
            bar = "=" * filled + (">" if filled < _BAR else "") + " " * (_BAR - filled - 1)
            return f"{head} [{bar[:_BAR]}] {human_size(self.offset)} / {human_size(self.size)}"
        return f"{head} {human_size(self.offset)}"


class ProgressPrinter:
    """A ``progress`` callback for :func:`~criolib.image.copy_image` writing to ``stream``.

    ``tty`` (default: whether ``stream`` is a terminal) picks bars or plain lines;
    bars are redrawn at most every ``interval`` seconds while bytes arrive.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float = _INTERVAL) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self._blobs: dict[tuple[str, str], _Blob] = {}
        self._drawn = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            key = (event.image, event.digest)
            blob = self._blobs.get(key)
            if blob is None:
                blob = self._blobs[key] = _Blob(event)
            blob.offset = max(blob.offset, event.offset)
            if event.kind == "progress":
                blob.state = "copying"
            elif event.kind == "started":
                blob.state = "copying"
                if not self.tty:
                    self.stream.write(blob.line().split(" [")[0] + "\n")
            else:
                blob.state = event.kind
                if not self.tty:
                    self.stream.write(blob.line() + "\n")
            if self.tty:
                now = time.monotonic()
                if event.kind != "progress" or now - self._last >= self.interval:
                    self._last = now
                    self._draw()

    def _draw(self) -> None:
        lines = [b.line() for b in self._blobs.values()]
        out = "\x1b[F" * self._drawn  # back to the first line drawn
        out += "".join(f"\x1b[2K{line}\n" for line in lines)
        self._drawn = len(lines)
        self.stream.write(out)
        self.stream.flush()

    def finish(self, message: str = "") -> None:
        """Draw the final state (and a closing message)."""
        with self._lock:
            if self.tty and self._blobs:
                self._draw()
            if message:
                self.stream.write(message + "\n")
            self.stream.flush()
