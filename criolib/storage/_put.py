"""Storing a layer tarball without holding the store lock while it extracts.

containers/storage holds its store lock for a whole ``ApplyDiff``: every reader
waits for a pull. Here (see ``_leases`` for the files):

1. under the shared lock, find the parent and any stored layer that already is
   this one (by id, diff_id or a known blob digest): leased first, checked after,
   so a delete cannot take it between the look and the use;
2. without a diff_id, hash the blob first (spooled when it cannot seek);
3. take the layer's creation lock (a second pull of the same layer waits here and
   then finds it), look again, and extract into staging while holding the
   staging lock shared: no store lock, so readers and other pulls go on;
4. take the exclusive store lock only to write the record.

A blob found by a digest it was not made from (a zstd pull of a layer stored
from gzip) is read and hashed once: if it decompresses to the layer's diff, its
digest joins the layer's known digests; if not, :class:`DigestMismatch`.

A caller already holding the exclusive store lock (inside :meth:`Store.writing`)
gets the same steps with the lock held throughout; it cannot wait for another
process's extraction of the same layer, so that raises :class:`LockTimeout`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from criolib.storage._archive_codec import Decoder
from criolib.storage._errors import DigestMismatch, IDConflict, LayerUnknown
from criolib.storage._faults import crash_point
from criolib.storage._layers import Layer
from criolib.storage._records import is_digest, layer_id_for, new_id, validate_id

if TYPE_CHECKING:
    from criolib.storage._store import Store

__all__ = ["create_empty_layer", "put_layer"]

log = logging.getLogger("criolib.storage")


def _check_digest(what: str, value: str | None) -> None:
    if value is not None and not is_digest(value):
        raise DigestMismatch(f"expected {what} {value!r} is not a sha256 digest (sha256: and "
                             "64 lowercase hex digits)", expected=value)


def put_layer(store: Store, diff: BinaryIO, parent: str | None, *, id: str | None,
              expected_diff_id: str | None, expected_digest: str | None,
              names: Sequence[str], metadata: str) -> Layer:
    """:meth:`Store.put_layer` with a diff (see the module docstring)."""
    _check_digest("diff_id", expected_diff_id)
    _check_digest("digest", expected_digest)
    if id is not None:
        validate_id("layer", id)
    locked = store.lock.held_exclusive
    parent_id = _lease_parent(store, parent)
    try:
        def find() -> Layer | None:
            return store.layer_store.find_existing(
                parent_id, layer_id=id if id is not None else (
                    layer_id_for(parent_id, expected_diff_id) if expected_diff_id else None),
                diff_id=expected_diff_id, digest=expected_digest)

        found = _find_leased(store, find)
        if found is not None:
            return _adopt(store, found, parent_id, diff, expected_diff_id=expected_diff_id,
                          expected_digest=expected_digest, names=names)
        with contextlib.ExitStack() as cleanup:
            if id is None and expected_diff_id is None:
                diff, expected_diff_id = _learn_diff_id(store, diff, cleanup)
                found = _find_leased(store, find)
                if found is not None:
                    return _adopt(store, found, parent_id, diff,
                                  expected_diff_id=expected_diff_id,
                                  expected_digest=expected_digest, names=names)
            assert expected_diff_id is not None or id is not None
            layer_id = id or layer_id_for(parent_id, expected_diff_id or "")
            store.locks.take([layer_id])
            try:
                return _create(store, layer_id, parent_id, diff, find, locked=locked,
                               expected_diff_id=expected_diff_id,
                               expected_digest=expected_digest, names=names,
                               metadata=metadata)
            except BaseException:
                store.locks.release([layer_id], everyone=False)
                raise
    finally:
        if parent_id is not None:
            store.locks.release([parent_id], everyone=False)  # the child holds it now


def _create(store: Store, layer_id: str, parent_id: str | None, diff: BinaryIO,
            find: Callable[[], Layer | None], *, locked: bool, expected_diff_id: str | None,
            expected_digest: str | None, names: Sequence[str], metadata: str) -> Layer:
    """Steps 3 and 4 of the module docstring, for a layer not stored yet."""
    with store.locks.creating(layer_id, timeout=store.lock.timeout, wait=not locked):
        found = _find_leased(store, find)
        if found is not None:
            return _adopt(store, found, parent_id, diff, expected_diff_id=expected_diff_id,
                          expected_digest=expected_digest, names=names)
        with store.locks.extracting(timeout=store.lock.timeout):
            result = store.layer_store.extract(
                layer_id, parent_id, diff, expected_diff_id=expected_diff_id,
                expected_digest=expected_digest)
        with store.writing():
            if parent_id is not None and parent_id not in store.layer_store:
                store.driver.remove(layer_id)  # its parent went: nothing to stand on
                raise LayerUnknown(f"layer {layer_id}: parent {parent_id} was deleted "
                                   "while the layer was being stored")
            layer = store.layer_store.record(layer_id, parent_id, result, names=names,
                                             metadata=metadata)
            crash_point("after-layer-record")
            return layer


def create_empty_layer(store: Store, parent: str | None, *, id: str | None,
                       names: Sequence[str], metadata: str) -> Layer:
    """:meth:`Store.create_layer`: an empty layer, made under the exclusive store lock."""
    if id is not None:
        validate_id("layer", id)
    with store.writing():
        parent_id = store.layer_store.get(parent).id if parent is not None else None
        ls = store.layer_store
        found = ls.find_existing(parent_id, layer_id=id) if id is not None else None
        if found is not None:
            if found.parent != parent_id:
                raise IDConflict(f"layer {found.id} exists on parent {found.parent}, "
                                 f"not {parent_id}")
            ls.add_names(found.id, names)
            return ls.get(found.id)
        layer_id = id or new_id()
        with store.locks.creating(layer_id, timeout=0.0, wait=False):
            layer = ls.create_empty(layer_id, parent_id, names=names, metadata=metadata)
        store.locks.take([layer.id])
        return layer


def _lease_parent(store: Store, parent: str | None) -> str | None:
    """The parent's id, leased (so that it stays until the child is recorded)."""
    if parent is None:
        return None
    with store.reading():
        parent_id = store.layer_store.get(parent).id
    store.locks.take([parent_id])
    with store.reading():
        if parent_id not in store.layer_store:
            store.locks.release([parent_id], everyone=False)
            raise LayerUnknown(f"layer {parent!r} (the parent) was deleted meanwhile")
    return parent_id


def _find_leased(store: Store, find: Callable[[], Layer | None]) -> Layer | None:
    """What ``find`` finds under the shared lock, leased and seen again after the lease."""
    for _ in range(3):
        with store.reading():
            found = find()
        if found is None:
            return None
        store.locks.take([found.id])
        with store.reading():
            if found.id in store.layer_store:
                return store.layer_store.get(found.id)
        store.locks.release([found.id], everyone=False)
    return None


def _adopt(store: Store, found: Layer, parent_id: str | None, diff: BinaryIO, *,
           expected_diff_id: str | None, expected_digest: str | None,
           names: Sequence[str]) -> Layer:
    """Return the stored layer ``found`` for this diff: names added, a new blob verified."""
    if found.parent != parent_id:
        raise IDConflict(f"layer {found.id} exists on parent {found.parent}, not {parent_id}")
    if expected_diff_id is not None and found.diff_id not in (None, expected_diff_id):
        raise IDConflict(f"layer {found.id} has diff_id {found.diff_id}, not "
                         f"{expected_diff_id}")
    new_digest = None
    if expected_digest is not None and expected_digest not in found.known_digests:
        if found.diff_id is None:
            raise IDConflict(f"layer {found.id} was not made from a blob; it cannot be "
                             f"blob {expected_digest}")
        _verify_blob(diff, expected_digest, found)
        new_digest = expected_digest
    if not names and new_digest is None:
        return found
    with store.writing():
        ls = store.layer_store
        if found.id not in ls:  # leased: only a crash or a repair makes this happen
            raise LayerUnknown(f"layer {found.id} was removed meanwhile")
        if new_digest is not None:
            ls.add_digest(found.id, new_digest)
        if names:
            ls.add_names(found.id, names)
        return ls.get(found.id)


def _verify_blob(diff: BinaryIO, digest: str, layer: Layer) -> None:
    """Read ``diff`` whole: it must have ``digest`` and decompress to the layer's diff_id."""
    decoder = Decoder(diff, f"{layer.id} (blob {digest})")
    decoder.drain()
    if decoder.raw_digest != digest:
        raise DigestMismatch(f"layer {layer.id}: blob has digest {decoder.raw_digest}, "
                             f"expected {digest}", expected=digest, actual=decoder.raw_digest)
    if decoder.digest != layer.diff_id:
        raise DigestMismatch(
            f"layer {layer.id}: blob {digest} decompresses to {decoder.digest}, not the "
            f"layer's diff_id {layer.diff_id}", expected=layer.diff_id or "",
            actual=decoder.digest)
    log.debug("layer %s: blob %s verified; known from now on", layer.id, digest)


def _learn_diff_id(store: Store, diff: BinaryIO, cleanup: contextlib.ExitStack
                   ) -> tuple[BinaryIO, str]:
    """(stream to apply, diff_id) of a diff whose diff_id nobody told us."""
    try:
        seekable = diff.seekable()
    except (AttributeError, OSError):
        seekable = False
    if not seekable:
        # An O_TMPFILE in staging/: same filesystem, and a crash leaves nothing.
        staging = store.graphroot / "staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        spool = cleanup.enter_context(tempfile.TemporaryFile(dir=staging))  # noqa: SIM115
        shutil.copyfileobj(diff, spool, 1 << 20)
        diff = spool
        diff.seek(0)
    start = diff.tell()
    decoder = Decoder(diff, "being stored")
    decoder.drain()
    diff.seek(start)
    return diff, decoder.digest
