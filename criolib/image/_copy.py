"""``copy_image``: the front door for pulling, pushing and converting images.

containers/image ``copy.Image`` (``copy/copy.go``, ``copy/single.go``,
``copy/multiple.go``): check the policy for the source before anything is
opened for writing; read the source's manifest; from an index pick the instance
for the platform (or copy every instance with ``all_platforms``); convert the
manifest when the destination cannot store its type; copy the config and the
layers (skipping what the destination holds; see
:mod:`criolib.image._copy_layers`); then put the manifest and commit. A failure
before the commit leaves the destination as it was (each destination discards
what it wrote on :meth:`~criolib.image.ImageDestination.close`).

Two copies of the same image into the same destination in one process take
turns (a lock per destination and the digest of the instance copied, so a pull
by tag and one by that instance's digest share it): the second finds every blob
present and downloads nothing. Across processes there is no such lock; what
holds for containers-storage is that each layer is looked for at the
destination again right before its download (a copy that started later skips
what the other has stored by then) and again before it is applied, and
criolib.storage creates a layer under a per-layer-id lock and adopts one that
exists. So both copies succeed and the store holds each layer once, but two
copies that start the same layer at the same moment may both download it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from criolib.image._copy_layers import Reporter, copy_layers
from criolib.image._copy_spool import read_verified
from criolib.image._copy_types import CopyResult, LayerStackDestination, ProgressCallback
from criolib.image._errors import (
    DigestMismatch,
    ImageError,
    InvalidArgument,
    UnsupportedConversion,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    DockerManifest,
    DockerManifestList,
    Manifest,
    OCIIndex,
    OCIManifest,
    manifest_digest,
    manifest_to_bytes,
    parse_manifest,
    to_docker,
    to_oci,
)
from criolib.image._platform import Platform, choose_instance
from criolib.image._policy import Policy
from criolib.image._reference import Reference
from criolib.image._transports import parse_image_name
from criolib.image._transports._base import (
    ImageDestination,
    ImageReference,
    ImageSource,
    SystemContext,
)
from criolib.image._transports._docker import DockerReference
from criolib.image._transports._storage import StorageReference
from criolib.image._transports._storage_dest import StorageImageDestination

__all__ = ["DEFAULT_CONCURRENCY", "copy_image"]

log = logging.getLogger("criolib.image")

#: containers/image's default ``MaxParallelDownloads``.
DEFAULT_CONCURRENCY = 6
_INDEX_TYPES = (MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST)


def copy_image(
    src: str | ImageReference,
    dest: str | ImageReference,
    *,
    policy: Policy,
    ctx: SystemContext | None = None,
    src_ctx: SystemContext | None = None,
    dest_ctx: SystemContext | None = None,
    platform: Platform | None = None,
    all_platforms: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: ProgressCallback | None = None,
    preserve_digests: bool = False,
    remove_signatures: bool = True,
) -> CopyResult:
    """Copy the image ``src`` to ``dest`` (``transport:name`` text or references).

    containers/image ``copy.Image``. ``policy`` is checked for the source first
    (:class:`~criolib.image.PolicyDenied` before anything is written).
    ``src_ctx``/``dest_ctx`` default to ``ctx`` (default :class:`SystemContext`).
    From an index the instance for ``platform`` (default: the source context's,
    else this machine) is copied, or every instance with ``all_platforms``.
    ``concurrency`` layers download at once while the destination takes them in
    order. ``progress`` receives a :class:`ProgressEvent` per step, from worker
    threads but never two at once. ``preserve_digests`` refuses any manifest
    conversion (:class:`~criolib.image.UnsupportedConversion`). No transport here
    carries signatures, so there are none to copy or remove; ``remove_signatures``
    is accepted for containers/image's sake.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidArgument(f"copy_image: concurrency must be an int >= 1, not "
                              f"{concurrency!r}", argument="concurrency")
    src_ref = parse_image_name(src) if isinstance(src, str) else src
    dest_ref = parse_image_name(dest) if isinstance(dest, str) else dest
    short = isinstance(src_ref, DockerReference) and src_ref.short_name is not None
    if not short:
        policy.evaluate(src_ref.transport.name, src_ref.policy_scope())
    base = ctx if ctx is not None else SystemContext()
    sctx, dctx = src_ctx or base, dest_ctx or base
    wanted = platform or sctx.platform
    del remove_signatures  # nothing to remove: see the docstring
    with contextlib.ExitStack() as stack:
        source: ImageSource
        if isinstance(src_ref, DockerReference) and short:
            # The policy applies to what a short name resolves to, not to its
            # docker.io spelling: each candidate is checked before it is tried.
            def check(candidate: Reference) -> None:
                policy.evaluate(src_ref.transport.name, str(candidate))
            source = src_ref.new_source(sctx, check_candidate=check)
        else:
            source = src_ref.new_source(sctx)
        stack.callback(source.close)
        top, top_type = source.get_manifest()
        top_digest = manifest_digest(top)
        whole_index = top_type in _INDEX_TYPES and all_platforms
        if top_type in _INDEX_TYPES and not all_platforms:
            # Chosen before the destination opens: no platform, nothing written.
            index = parse_manifest(top, top_type)
            assert isinstance(index, OCIIndex | DockerManifestList)
            entry = choose_instance(index, wanted, image=str(src_ref))
            log.info("%s: chose instance %s for %s", source.reference, entry.digest,
                     entry.platform)
            top, top_type = source.get_manifest(entry.digest)
            _check_digest(top, entry.digest, f"{source.reference} instance")
        # Keyed on the instance actually copied: a pull by tag and one by the
        # instance's digest wait for each other.
        stack.enter_context(_one_at_a_time(_destination_key(dest_ref, dctx),
                                           top_digest if whole_index else manifest_digest(top)))
        destination = dest_ref.new_destination(dctx)
        stack.callback(destination.close)
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="criolib-copy")
        # Not waited for: after a failure a download thread may still sit in a
        # request the registry does not answer; its spool is closed and it writes
        # nothing more, and the copy must not hang until it gives up.
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        reporter = Reporter(progress)
        stack.callback(reporter.flush)
        copier = _Copier(source, destination, pool, reporter,
                         preserve_digests=preserve_digests,
                         spool_dir=dctx.spool_dir or _default_spool_dir(destination))
        if whole_index:
            result = copier.copy_index(top, top_type)
        else:
            result = copier.copy_single(top, top_type)
            destination.put_manifest(result.manifest, result.media_type)
        destination.commit()
        return result


def _default_spool_dir(dest: ImageDestination) -> Path | None:
    """The store's staging directory for containers-storage, else ``None`` (the tempdir).

    containers/image puts a pull's blobs under the store's graph root too
    (``storage_dest.go`` ``directory``): the temp directory may be a small tmpfs.
    """
    if not isinstance(dest, StorageImageDestination):
        return None
    staging = Path(dest.store.graphroot) / "staging"
    try:
        staging.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        log.info("no spool directory in %s (%s); using the temp directory", staging, exc)
        return None
    return staging


def _check_digest(data: bytes, digest: str, what: str) -> None:
    actual = manifest_digest(data, digest.partition(":")[0])
    if actual != digest:
        raise DigestMismatch(f"{what} {digest}: the manifest has digest {actual}",
                             what=what, expected=digest, actual=actual)


# -- one copy at a time per destination and image -------------------------------------

_inflight_lock = threading.Lock()
_inflight: dict[tuple[str, str], list[Any]] = {}  # key -> [lock, users]


def _destination_key(ref: ImageReference, ctx: SystemContext) -> str:
    """What two copies must not write at once: the store, not the name, for storage."""
    if isinstance(ref, StorageReference):
        if ref.spec.graphroot is None and ctx.store is not None:
            return f"containers-storage:[{ctx.store.graphroot}]"
        return f"containers-storage:{ref.spec}"
    return f"{ref.transport.name}:{ref.string_within_transport()}"


@contextlib.contextmanager
def _one_at_a_time(destination: str, digest: str) -> Iterator[None]:
    key = (destination, digest)
    with _inflight_lock:
        entry = _inflight.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        lock: threading.Lock = entry[0]
        if not lock.acquire(blocking=False):
            log.info("%s is being copied to %s already; waiting for it", digest, destination)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()
    finally:
        with _inflight_lock:
            entry[1] -= 1
            if entry[1] == 0:
                _inflight.pop(key, None)


# -- the copier -----------------------------------------------------------------------


class _Copier:
    """Copies manifests, configs and layers from one source to one destination."""

    def __init__(self, source: ImageSource, dest: ImageDestination, pool: ThreadPoolExecutor,
                 report: Reporter, *, preserve_digests: bool, spool_dir: Path | None) -> None:
        self.spool_dir = spool_dir
        self.source = source
        self.dest = dest
        self.pool = pool
        self.report = report
        self.preserve_digests = preserve_digests

    def _convert(self, manifest: Manifest, data: bytes, media_type: str) -> tuple[bytes, str]:
        """The manifest in a type the destination stores (the source's bytes if possible)."""
        supported = self.dest.supported_manifest_types
        if media_type in supported:
            return data, media_type
        index = isinstance(manifest, OCIIndex | DockerManifestList)
        for target in supported:
            if (target in _INDEX_TYPES) != index:
                continue
            if self.preserve_digests:
                raise UnsupportedConversion(
                    f"{self.dest.reference} cannot store a {media_type}, and converting it "
                    f"to {target} would change its digest, which preserve_digests forbids")
            converted: Manifest
            if target in (MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_INDEX):
                converted = to_oci(manifest)
            elif target in (MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST):
                converted = to_docker(manifest)
            else:  # pragma: no cover - a destination with an exotic type
                continue
            log.info("%s: converting the %s to %s", self.dest.reference, media_type, target)
            return manifest_to_bytes(converted), target
        kind = "indexes" if index else "image manifests"
        raise UnsupportedConversion(
            f"{self.dest.reference} stores {', '.join(supported)}: no way to store "
            f"{kind} of type {media_type}" + (" (copy one platform instead of all)"
                                               if index else ""))

    def _config(self, descriptor: dict[str, Any], image: str) -> bytes:
        """The config blob: from the destination if it holds it, else fetched and put."""
        digest, size = str(descriptor["digest"]), int(descriptor.get("size", -1))
        stack = isinstance(self.dest, LayerStackDestination)
        report = self.report.for_image(image)
        if stack:
            assert isinstance(self.dest, LayerStackDestination)
            stored = self.dest.stored_config(digest)
            if stored is not None:
                report("skipped", descriptor, None)
                return stored
        report("started", descriptor, None)
        stream = self.source.get_blob(digest, size)
        try:
            data = read_verified(stream, digest, size, what=f"config of {image}")
        finally:
            stream.close()
        if stack or not self.dest.has_blob(digest, len(data)):
            self.dest.put_blob(io.BytesIO(data), digest, len(data),
                               str(descriptor.get("mediaType", "")))
        report("done", descriptor, None, len(data))
        return data

    def copy_single(self, data: bytes, media_type: str) -> CopyResult:
        """Copy one image's config and layers; return what to put as its manifest."""
        manifest = parse_manifest(data, media_type)
        if not isinstance(manifest, OCIManifest | DockerManifest):
            raise ImageError(f"{self.source.reference}: expected an image manifest, got a "
                             f"{media_type}")
        digest = manifest_digest(data)
        out, out_type = self._convert(manifest, data, media_type)
        doc = json.loads(out)
        config = self._config(doc["config"], digest)
        diff_ids = _diff_ids(config)
        stats = copy_layers(self.source, self.dest, doc.get("layers") or [], diff_ids,
                            pool=self.pool, report=self.report.for_image(digest),
                            spool_dir=self.spool_dir)
        return CopyResult(manifest_digest=manifest_digest(out), manifest=out,
                          media_type=out_type, config_digest=str(doc["config"]["digest"]),
                          layers_copied=stats.copied, layers_skipped=stats.skipped,
                          bytes_copied=stats.bytes, source_digest=digest)

    def copy_index(self, data: bytes, media_type: str) -> CopyResult:
        """Copy every instance of an index, then the index (rewritten if any changed)."""
        index = parse_manifest(data, media_type)
        assert isinstance(index, OCIIndex | DockerManifestList)
        out, out_type = self._convert(index, data, media_type)
        results = []
        entries = []
        for entry in index.manifests:
            inst, inst_type = self.source.get_manifest(entry.digest)
            _check_digest(inst, entry.digest, f"{self.source.reference} instance")
            result = self.copy_single(inst, inst_type)
            self.dest.put_manifest(result.manifest, result.media_type,
                                   instance=result.manifest_digest)
            results.append(result)
            entries.append(attrs.evolve(entry, digest=result.manifest_digest,
                                        size=len(result.manifest),
                                        media_type=result.media_type))
        if any(r.manifest_digest != e.digest for r, e in zip(results, index.manifests,
                                                              strict=True)):
            base = parse_manifest(out, out_type)
            assert isinstance(base, OCIIndex | DockerManifestList)
            out = manifest_to_bytes(attrs.evolve(base, manifests=tuple(entries)))
        self.dest.put_manifest(out, out_type)
        return CopyResult(
            manifest_digest=manifest_digest(out), manifest=out, media_type=out_type,
            config_digest=None, layers_copied=sum(r.layers_copied for r in results),
            layers_skipped=sum(r.layers_skipped for r in results),
            bytes_copied=sum(r.bytes_copied for r in results),
            source_digest=manifest_digest(data), instances=tuple(results))


def _diff_ids(config: bytes) -> list[str | None]:
    """``rootfs.diff_ids`` of an image config (empty for a config that is not one)."""
    try:
        doc = json.loads(config)
    except ValueError:
        return []
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [i if isinstance(i, str) else None for i in ids] if isinstance(ids, list) else []
