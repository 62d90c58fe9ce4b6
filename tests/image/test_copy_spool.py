"""The copy engine's spool: a download readable while it grows, verified before its end."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.image import CopyCancelled, DigestMismatch
from criolib.image._copy_spool import Spool, read_verified
from tests.image.copy_support import sha256


class Trickle(io.RawIOBase):
    """A stream giving ``data`` in small pieces, slowly, like a network."""

    def __init__(self, data: bytes, piece: int = 7, pause: float = 0.0) -> None:
        self.data, self.piece, self.pause, self.pos = data, piece, pause, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.pause:
            time.sleep(self.pause)
        chunk = self.data[self.pos:self.pos + min(self.piece, n if n >= 0 else self.piece)]
        self.pos += len(chunk)
        return chunk


def fill_in_thread(spool: Spool, stream: io.RawIOBase) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(Exception):  # the reader sees the error
            spool.fill(stream)  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000), piece=st.integers(1, 600))
def test_a_reader_following_the_download_gets_every_byte(data: bytes, piece: int) -> None:
    spool = Spool(sha256(data), len(data))
    reader = spool.reader()  # before any byte arrived
    thread = fill_in_thread(spool, Trickle(data, piece))
    try:
        assert reader.read() == data
        assert spool.reader().read() == data  # a second reader starts at the beginning
    finally:
        thread.join()
        spool.close()


def test_wrong_bytes_fail_the_reader_at_the_end() -> None:
    data = b"x" * 3000
    spool = Spool(sha256(b"y" * 3000), 3000, what="layer 1")
    thread = fill_in_thread(spool, Trickle(data, 1000, pause=0.01))
    reader = spool.reader()
    with pytest.raises(DigestMismatch, match="layer 1") as info:
        while reader.read(100):
            pass
    thread.join()
    assert info.value.actual == sha256(data)
    spool.close()


def test_more_bytes_than_the_descriptor_says_stop_the_download() -> None:
    spool = Spool(sha256(b"abc"), 3)
    with pytest.raises(DigestMismatch, match="more than the 3 bytes"):
        spool.fill(io.BytesIO(b"abcdef"))  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch):
        spool.wait()
    spool.close()


def test_cancel_wakes_a_waiting_reader() -> None:
    spool = Spool(sha256(b"never"), 5)
    reader = spool.reader()
    result: list[BaseException] = []

    def read() -> None:
        try:
            reader.read()
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.05)
    spool.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(result[0], CopyCancelled)
    spool.close()


def test_read_verified_checks_small_blobs() -> None:
    assert read_verified(io.BytesIO(b"{}"), sha256(b"{}"), 2) == b"{}"  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch):
        read_verified(io.BytesIO(b"{} "), sha256(b"{}"), -1)  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch, match="more than 2 bytes"):
        read_verified(io.BytesIO(b"{}  "), sha256(b"{}"), 2)  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch, match="unsupported"):
        read_verified(io.BytesIO(b""), "md5:abc", 0)  # type: ignore[arg-type]
