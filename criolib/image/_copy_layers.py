"""Copying one image's layers: skip what is there, download in parallel, commit in order.

containers/image ``copy/single.go`` (``copyLayers``: a semaphore of
``MaxParallelDownloads``, 6 by default; ``TryReusingBlob`` before each
download) and ``storage/storage_dest.go`` (``queueOrCommit``: layer *i* is
committed only after *i-1*). Here:

1. every layer is checked against the destination first, in parallel
   (``has_blob``, or :meth:`LayerStackDestination.layer_present`);
2. the missing ones start downloading, in manifest order, ``concurrency`` at a
   time, each into a :class:`~criolib.image._copy_spool.Spool` that verifies
   digest and size while the bytes come in;
3. the calling thread hands the layers to the destination strictly in order,
   each as soon as its download *starts*: the destination reads it while it
   arrives and while later layers download, and sees end-of-file only once the
   bytes were verified.

A failure anywhere cancels the other downloads and removes every spool.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from criolib.image._copy_spool import Spool
from criolib.image._copy_types import (
    LayerStackDestination,
    ProgressCallback,
    ProgressEvent,
    ProgressKind,
)
from criolib.image._errors import CopyCancelled
from criolib.image._transports._base import ImageDestination, ImageSource

__all__ = ["LayerStats", "Reporter", "copy_layers", "download"]

log = logging.getLogger("criolib.image")


class Reporter:
    """Sends :class:`ProgressEvent` to the caller's callback, one at a time, in order.

    Events are queued under a short lock; whichever thread finds nobody delivering
    delivers the queue *outside* the lock. So a slow progress callback holds up at
    most the one thread delivering, never the other downloads, which only append.
    """

    def __init__(self, callback: ProgressCallback | None, image: str = "") -> None:
        self._callback = callback
        self._shared = _Queue()
        self.image = image

    def for_image(self, image: str) -> Reporter:
        """The same callback, events tagged with another manifest digest."""
        other = Reporter(self._callback, image)
        other._shared = self._shared
        return other

    def __call__(self, kind: ProgressKind, descriptor: Mapping[str, Any], index: int | None,
                 offset: int = 0) -> None:
        if self._callback is None:
            return
        event = ProgressEvent(kind=kind, digest=str(descriptor["digest"]),
                              size=int(descriptor.get("size", -1)), offset=offset,
                              index=index, media_type=str(descriptor.get("mediaType", "")),
                              image=self.image)
        self._shared.put(event, self._callback)

    def flush(self) -> None:
        """Return once every event so far reached the callback (before the copy returns)."""
        self._shared.flush()


class _Queue:
    """Progress events waiting for delivery, and whether a thread is delivering them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._events: collections.deque[ProgressEvent] = collections.deque()
        self._delivering = False

    def put(self, event: ProgressEvent, callback: ProgressCallback) -> None:
        with self._lock:
            self._events.append(event)
            if self._delivering:
                return  # the delivering thread will send it, in order
            self._delivering = True
        while True:
            with self._lock:
                if not self._events:
                    self._delivering = False
                    self._lock.notify_all()
                    return
                next_event = self._events.popleft()
            try:
                callback(next_event)
            except Exception:  # a broken progress bar must not break the copy
                log.exception("progress callback failed on %s", next_event)

    def flush(self) -> None:
        """Wait until every event queued so far was delivered."""
        with self._lock:
            while self._delivering or self._events:
                self._lock.wait()


@attrs.define
class LayerStats:
    """Layers sent, layers found present, bytes read from the source."""

    copied: int = 0
    skipped: int = 0
    bytes: int = 0


def download(source: ImageSource, spool: Spool, descriptor: Mapping[str, Any],
             index: int | None, report: Reporter, *,
             present: Callable[[], bool] | None = None,
             on_fail: Callable[[BaseException], None] | None = None) -> int:
    """Fill ``spool`` with the blob from ``source``; return the byte count.

    ``present`` is asked right before fetching: another copy (another process,
    which the in-process lock does not hold back) may have stored the layer since
    the copy began, and then the download is skipped (:meth:`Spool.skip`).
    """
    digest = str(descriptor["digest"])
    if spool.cancelled:
        spool.fail(RuntimeError("cancelled before it started"))
        return 0
    if present is not None:
        try:
            now_present = present()
        except Exception:  # the fetch decides then; a store hiccup must not fail the copy
            log.debug("re-checking %s at the destination failed", digest, exc_info=True)
            now_present = False
        if now_present:
            log.info("%s was stored meanwhile (by another copy); not downloading it", digest)
            spool.skip()
            return 0
    report("started", descriptor, index)
    try:
        try:
            stream = source.get_blob(digest, int(descriptor.get("size", -1)))
        except BaseException as exc:
            spool.fail(exc)
            raise
        try:
            return spool.fill(stream, lambda n: None if spool.cancelled else report(
                "progress", descriptor, index, n))
        finally:
            stream.close()
    except BaseException as exc:
        if on_fail is not None and not spool.cancelled:
            on_fail(exc)
        raise


@attrs.define
class _Job:
    index: int
    descriptor: Mapping[str, Any]
    diff_id: str | None
    present: bool = False


class _Downloads:
    """The spools of one image's layers and the futures filling them."""

    def __init__(self, source: ImageSource, pool: ThreadPoolExecutor, report: Reporter,
                 spool_dir: Path | None,
                 present: Callable[[_Job], bool] | None = None) -> None:
        self.source = source
        self.present = present
        self.pool = pool
        self.report = report
        self.spool_dir = spool_dir
        self.spools: dict[str, Spool] = {}
        self.futures: dict[str, Future[int]] = {}
        self.first_error: BaseException | None = None
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        """A download failed (in its thread): stop every other one now.

        The copy then raises this first error, not the :class:`CopyCancelled` its
        readers see (containers/image cancels the copy's context the same way).
        """
        with self._lock:
            if self.first_error is None:
                self.first_error = error
        for spool in list(self.spools.values()):
            spool.cancel()

    def start(self, job: _Job, *, recheck: bool = True) -> Spool:
        digest = str(job.descriptor["digest"])
        spool = self.spools.get(digest)
        if spool is None or (spool.skipped and not recheck):
            if spool is not None:
                spool.close()
            spool = Spool(digest, int(job.descriptor.get("size", -1)),
                          what=f"layer {job.index}", directory=self.spool_dir)
            self.spools[digest] = spool
            check = self.present
            present = (lambda: check(job)) if check is not None and recheck else None
            self.futures[digest] = self.pool.submit(
                download, self.source, spool, job.descriptor, job.index, self.report,
                present=present, on_fail=self.failed)
        return spool

    def bytes(self) -> int:
        return sum(s.written for s in self.spools.values())

    def close(self) -> None:
        """Stop every download still running and remove the files, without waiting.

        A cancelled spool closes its blob stream, and a download thread stuck
        before its first byte (a registry that does not answer) writes nothing
        once it wakes: the spool refuses writes after :meth:`Spool.close`. So a
        failed copy returns at once instead of after the slowest download.
        """
        for spool in self.spools.values():
            spool.cancel()
        for future in self.futures.values():
            future.cancel()
        for spool in self.spools.values():
            spool.close()


def _diff_id_or_none(diff_ids: Sequence[str | None], i: int) -> str | None:
    return diff_ids[i] if i < len(diff_ids) else None


def copy_layers(source: ImageSource, dest: ImageDestination,
                layers: Sequence[Mapping[str, Any]], diff_ids: Sequence[str | None], *,
                pool: ThreadPoolExecutor, report: Reporter,
                spool_dir: Path | None = None) -> LayerStats:
    """Copy ``layers`` (wire-form descriptors, in manifest order) from ``source`` to ``dest``.

    ``diff_ids`` are the config's ``rootfs.diff_ids`` (``None`` where unknown).
    Returns what was sent, skipped and read. Raises the first failure
    (:class:`~criolib.image.DigestMismatch` for wrong bytes) after cancelling
    the other downloads; the destination is then not committed by the caller.
    """
    stack = isinstance(dest, LayerStackDestination)
    jobs = [_Job(i, d, _diff_id_or_none(diff_ids, i)) for i, d in enumerate(layers)]
    _check_presence(dest, jobs, pool, stack)
    stats = LayerStats()
    present: Callable[[_Job], bool] | None = None
    if stack:
        assert isinstance(dest, LayerStackDestination)
        stack_dest = dest

        def present(job: _Job) -> bool:
            return stack_dest.layer_present(job.descriptor, job.diff_id)
    downloads = _Downloads(source, pool, report, spool_dir, present)
    try:
        _copy_in_order(dest, jobs, downloads, stats)
    except CopyCancelled:
        if downloads.first_error is not None:
            raise downloads.first_error from None
        raise
    finally:
        stats.bytes = downloads.bytes()
        downloads.close()
    return stats


def _copy_in_order(dest: ImageDestination, jobs: Sequence[_Job], downloads: _Downloads,
                   stats: LayerStats) -> None:
    """Start the missing layers' downloads; hand every layer to ``dest`` in order."""
    present, report = downloads.present, downloads.report
    stack = isinstance(dest, LayerStackDestination)
    for job in jobs:  # downloads start in manifest order: the first needed comes first
        if not job.present:
            downloads.start(job)
    sent: set[str] = set()
    for job in jobs:
        digest = str(job.descriptor["digest"])
        if job.present and stack:
            assert isinstance(dest, LayerStackDestination)
            if dest.reuse_layer(job.descriptor, job.diff_id):
                stats.skipped += 1
                report("skipped", job.descriptor, job.index)
                continue
            log.info("layer %d (%s) went missing at the destination; copying it",
                     job.index, digest)
        elif job.present or (digest in sent and not stack):
            stats.skipped += 1
            report("skipped", job.descriptor, job.index)
            continue
        spool = downloads.start(job)
        if present is not None and not job.present and (spool.skipped or present(job)):
            # Stored meanwhile by another copy (another process): stack that one.
            assert isinstance(dest, LayerStackDestination)
            if dest.reuse_layer(job.descriptor, job.diff_id):
                stats.skipped += 1
                report("skipped", job.descriptor, job.index)
                continue
            spool = downloads.start(job, recheck=False)
        _commit(dest, spool, job)
        sent.add(digest)
        stats.copied += 1
        report("done", job.descriptor, job.index)


def _check_presence(dest: ImageDestination, jobs: Sequence[_Job], pool: ThreadPoolExecutor,
                    stack: bool) -> None:
    """Ask the destination about every layer (in parallel: a registry answers HEADs)."""
    ask: Callable[[_Job], bool]
    if stack:
        assert isinstance(dest, LayerStackDestination)
        stack_dest = dest

        def ask(job: _Job) -> bool:
            return stack_dest.layer_present(job.descriptor, job.diff_id)
    else:
        def ask(job: _Job) -> bool:
            return dest.has_blob(str(job.descriptor["digest"]),
                                 int(job.descriptor.get("size", -1)))
    answers = list(pool.map(ask, jobs)) if len(jobs) > 1 else [ask(job) for job in jobs]
    for job, present in zip(jobs, answers, strict=True):
        job.present = present


def _commit(dest: ImageDestination, spool: Spool, job: _Job) -> None:
    """Hand the layer to the destination while it downloads; fail if it was not verified."""
    reader: BinaryIO = spool.reader()
    diff_id = job.diff_id or ""
    try:
        dest.put_layer(reader, job.descriptor, diff_id)
    except Exception as exc:
        # A decoder may trip over corrupt bytes before the digest is known; a failed
        # download explains that better, so wait for it and raise its error if any.
        # (Not on KeyboardInterrupt: that must not wait for the rest of the blob.)
        try:
            spool.wait()
        except Exception as download_error:
            raise download_error from exc
        raise
    finally:
        reader.close()
    # The destination may not have read to the end (it had the layer after all):
    # the blob still has to be verified before the copy counts it.
    spool.wait()
