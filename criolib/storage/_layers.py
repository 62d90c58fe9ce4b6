"""Layer records and the layer store over ``layers.json`` (containers/storage ``layers.go``).

A layer is a directory the graph driver keeps plus a record here: its parent,
names, when it was made and the digests and sizes of the diff it came from
(``compressed-diff-digest``, ``diff-digest`` = the diff_id, containers/storage's
wire names). A record is written only after the driver's directory is complete,
so every layer in ``layers.json`` can be mounted; a crash in between leaves a
directory no record names, which :func:`criolib.storage.check` reports.

Ids follow containers/image: a base layer's id is its diff_id hex, any other is
``sha256(parent_id + "+" + diff_id_hex)``, so one diff on one parent is stored
once. Mount reference counts live in ``<runroot>/mounts.json`` (a tmpfs: after a
reboot nothing is mounted and nothing is counted).

:class:`LayerStore` does no locking: :class:`criolib.storage.Store` holds the
store lock around every call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from criolib._atomic import atomic_write_bytes
from criolib.storage._archive import ApplyResult, Compression
from criolib.storage._archive_codec import Decoder
from criolib.storage._drivers import GraphDriver
from criolib.storage._errors import (
    AmbiguousID,
    DigestMismatch,
    IDConflict,
    InvalidLayerID,
    LayerInUse,
    LayerUnknown,
    StorageError,
    StoreCorrupt,
)

__all__ = [
    "Layer",
    "LayerStore",
    "is_digest",
    "layer_id_for",
    "load_records",
    "lookup",
    "make_converter",
    "new_id",
    "save_records",
    "utcnow",
    "validate_id",
]

log = logging.getLogger("criolib.storage")

T = TypeVar("T")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
#: containers/storage marks layers still being written; such a record is never shown.
INCOMPLETE_FLAG = "incomplete"


# -- shared helpers for the three record files -------------------------------------


def utcnow() -> dt.datetime:
    """Now, in UTC (what records say as ``created``)."""
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    """A random 64-hex id (containers/storage ``stringid.GenerateRandomID``)."""
    return secrets.token_hex(32)


def is_digest(value: str) -> bool:
    """Whether ``value`` is ``sha256:`` and 64 lowercase hex digits."""
    return bool(_DIGEST.match(value))


def validate_id(kind: str, value: str) -> str:
    """``value`` if it can name a directory and a record, else :class:`InvalidLayerID`."""
    if not _ID.match(value) or value in {".", "..", "l"}:
        raise InvalidLayerID(f"{kind} id {value!r}: use letters, digits and . _ - "
                             "(at most 255, not starting with a punctuation mark)")
    return value


def layer_id_for(parent: str | None, diff_id: str) -> str:
    """The layer id of ``diff_id`` on ``parent`` (containers/image storage destination)."""
    if not is_digest(diff_id):
        raise DigestMismatch(f"diff_id {diff_id!r} is not a sha256 digest (sha256: and 64 "
                             "lowercase hex digits)", expected=diff_id)
    hex_ = diff_id.removeprefix("sha256:")
    if parent is None:
        return hex_
    return hashlib.sha256(f"{parent}+{hex_}".encode()).hexdigest()


def _format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any, _type: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    # Python 3.11's parser takes Go's RFC 3339 with nanoseconds (it drops past micro).
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def make_converter(cls: type[T], wire: Mapping[str, str]) -> tuple[
        Callable[[Mapping[str, Any]], T], Callable[[T], dict[str, Any]]]:
    """(from_json, to_json) for a record class, with containers/storage's wire names.

    Keys the class does not know go to its ``extra`` field and are written back,
    so a record another tool wrote keeps what criolib does not understand.
    Empty values are left out, like Go's ``omitempty``.
    """
    conv = cattrs.Converter(omit_if_default=True)
    conv.register_structure_hook(dt.datetime, _parse_time)
    conv.register_unstructure_hook(dt.datetime, _format_time)
    renames: dict[str, Any] = {name: override(rename=key) for name, key in wire.items()}
    renames["extra"] = override(omit=True)
    conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))
    conv.register_unstructure_hook(cls, make_dict_unstructure_fn(
        cls, conv, _cattrs_omit_if_default=True, **renames))
    known = set(wire.values())

    def from_json(data: Mapping[str, Any]) -> T:
        record = conv.structure(dict(data), cls)
        extra = {k: v for k, v in data.items() if k not in known}
        return attrs.evolve(record, extra=extra) if extra else record  # type: ignore[misc]

    def to_json(record: T) -> dict[str, Any]:
        out: dict[str, Any] = conv.unstructure(record, cls)
        extra: Mapping[str, Any] = getattr(record, "extra", {})
        out.update({k: v for k, v in extra.items() if k not in out})
        return {k: v for k, v in out.items() if v not in ((), [], {}, "", None)}

    return from_json, to_json


def load_records(path: Path, from_json: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """The records in the JSON list at ``path``; none if it is missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreCorrupt(f"{path}: cannot read: {exc}") from exc
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
        if not isinstance(data, list):
            raise TypeError(f"a JSON list was expected, not {type(data).__name__}")
        return [from_json(item) for item in data]
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
        raise StoreCorrupt(f"{path}: not a valid record list: {exc}") from exc


def save_records(path: Path, records: Iterable[T], to_json: Callable[[T], dict[str, Any]]
                 ) -> None:
    """Replace the JSON list at ``path`` atomically (temp file, fsync, rename)."""
    data = json.dumps([to_json(r) for r in records], indent=1, sort_keys=False)
    atomic_write_bytes(path, data.encode() + b"\n", mode=0o600)


def lookup(kind: str, ref: str, by_id: Mapping[str, T], by_name: Mapping[str, str],
           unknown: Callable[[str], StorageError]) -> T:
    """The record ``ref`` names: an id, a name, or a unique id prefix (containers/storage).

    An ambiguous prefix raises :class:`AmbiguousID` naming the candidates.
    """
    if ref in by_id:
        return by_id[ref]
    if ref in by_name:
        return by_id[by_name[ref]]
    if ref and all(c in "0123456789abcdef" for c in ref):
        found = [i for i in by_id if i.startswith(ref)]
        if len(found) == 1:
            return by_id[found[0]]
        if found:
            raise AmbiguousID(f"{kind} id prefix {ref!r} matches {len(found)} {kind}s: "
                              f"{', '.join(sorted(i[:12] for i in found))}")
    raise unknown(f"{kind} {ref!r} not known")


# -- layers ---------------------------------------------------------------------------


@attrs.frozen
class Layer:
    """One layer's record (containers/storage ``Layer``, the fields criolib uses).

    ``uncompressed_digest`` is the diff_id; ``compressed_digest`` the digest of the
    blob as it was given (the same as the diff_id for an uncompressed blob).
    """

    id: str
    parent: str | None = None
    names: tuple[str, ...] = ()
    created: dt.datetime | None = None
    compressed_digest: str | None = None
    compressed_size: int | None = None
    uncompressed_digest: str | None = None
    uncompressed_size: int | None = None
    compression: str | None = None
    metadata: str = ""
    flags: Mapping[str, Any] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def diff_id(self) -> str | None:
        """The digest of the uncompressed diff (image-spec's DiffID)."""
        return self.uncompressed_digest


_LAYER_WIRE = {
    "id": "id", "parent": "parent", "names": "names", "created": "created",
    "compressed_digest": "compressed-diff-digest", "compressed_size": "compressed-size",
    "uncompressed_digest": "diff-digest", "uncompressed_size": "diff-size",
    "compression": "compression", "metadata": "metadata", "flags": "flags",
}
layer_from_json, layer_to_json = make_converter(Layer, _LAYER_WIRE)


@attrs.frozen
class _Mount:
    id: str
    path: str
    count: int


class LayerStore:
    """The layers of one store: ``<graphroot>/layers.json`` and the driver's directories.

    Not locked and not thread-safe by itself: :class:`criolib.storage.Store`
    serialises access with its :class:`~criolib.storage.StoreLock`.
    """

    def __init__(self, graphroot: Path, runroot: Path, driver: GraphDriver) -> None:
        self.graphroot = graphroot
        self.runroot = runroot
        self.driver = driver
        self.path = graphroot / "layers.json"
        self.mounts_path = runroot / "mounts.json"
        self._layers: dict[str, Layer] = {}
        self._names: dict[str, str] = {}
        self._mounts: dict[str, _Mount] = {}
        self.hidden: list[Layer] = []  # records flagged incomplete: debris for check()

    # -- loading and saving -------------------------------------------------------

    def load(self) -> None:
        """Read ``layers.json`` and ``mounts.json`` again."""
        layers: dict[str, Layer] = {}
        hidden = []
        for layer in load_records(self.path, layer_from_json):
            if layer.flags.get(INCOMPLETE_FLAG):
                hidden.append(layer)
            else:
                layers[layer.id] = layer
        self._layers, self.hidden = layers, hidden
        self._names = {n: lay.id for lay in layers.values() for n in lay.names}
        self._mounts = {}
        with contextlib.suppress(FileNotFoundError):
            raw = self.mounts_path.read_bytes()
            try:
                entries = json.loads(raw) if raw.strip() else []
                self._mounts = {e["id"]: _Mount(str(e["id"]), str(e["path"]), int(e["count"]))
                                for e in entries}
            except (ValueError, TypeError, KeyError) as exc:
                raise StoreCorrupt(f"{self.mounts_path}: not a valid mount list: {exc}") from exc

    def save(self) -> None:
        """Write ``layers.json`` atomically (incomplete records are dropped here)."""
        save_records(self.path, self._layers.values(), layer_to_json)
        self.hidden = []

    def _save_mounts(self) -> None:
        self.runroot.mkdir(parents=True, exist_ok=True)
        entries = [{"id": m.id, "path": m.path, "count": m.count}
                   for m in self._mounts.values() if m.count > 0]
        atomic_write_bytes(self.mounts_path, json.dumps(entries).encode(), mode=0o600,
                           durable=False)  # the runroot is a tmpfs: no fsync to pay for

    # -- lookups ------------------------------------------------------------------

    def layers(self) -> list[Layer]:
        """Every layer, oldest first (parents before children)."""
        return list(self._layers.values())

    def get(self, ref: str) -> Layer:
        """The layer with id, name or unique id prefix ``ref``; :class:`LayerUnknown` if none."""
        return lookup("layer", ref, self._layers, self._names, LayerUnknown)

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except (LayerUnknown, AmbiguousID):
            return False
        return True

    def by_diff_id(self, diff_id: str) -> list[Layer]:
        """Layers whose uncompressed diff has this digest (any parent)."""
        return [lay for lay in self._layers.values() if lay.uncompressed_digest == diff_id]

    def by_compressed_digest(self, digest: str) -> list[Layer]:
        """Layers made from a blob with this digest (any parent)."""
        return [lay for lay in self._layers.values() if lay.compressed_digest == digest]

    def children(self, layer_id: str) -> list[Layer]:
        return [lay for lay in self._layers.values() if lay.parent == layer_id]

    def chain(self, layer_id: str) -> list[Layer]:
        """``layer_id`` and its ancestors, nearest first."""
        out = []
        current: str | None = layer_id
        while current is not None:
            layer = self.get(current)
            out.append(layer)
            current = layer.parent
        return out

    # -- creating -----------------------------------------------------------------

    def find_existing(self, parent: str | None, *, layer_id: str | None = None,
                      diff_id: str | None = None, digest: str | None = None) -> Layer | None:
        """A stored layer that already is what would be created, if any (dedup)."""
        if layer_id is not None and layer_id in self._layers:
            return self._layers[layer_id]
        for layer in self._layers.values():
            if layer.parent != parent:
                continue
            if diff_id is not None and layer.uncompressed_digest == diff_id:
                return layer
            if digest is not None and layer.compressed_digest == digest:
                return layer
        return None

    def create_layer(self, diff: BinaryIO | None, parent: str | None, *,
                     id: str | None = None, expected_diff_id: str | None = None,
                     expected_digest: str | None = None, names: Sequence[str] = (),
                     metadata: str = "", flags: Mapping[str, Any] | None = None,
                     ) -> tuple[Layer, bool]:
        """Store a layer (empty when ``diff`` is ``None``) on ``parent``; ``(layer, created)``.

        The id follows the module's rule; without ``expected_diff_id`` (and ``id``)
        the diff is hashed first to learn it (spooled to an anonymous file when not
        seekable). The same layer is never stored twice: an existing layer with the
        id, or on the same parent with the diff_id or blob digest, is returned (with
        ``names`` added) and ``diff`` is not applied. The driver applies in staging;
        the record is written only after the directory is complete, so a crash never
        leaves a record without its directory. A diff not matching
        ``expected_diff_id`` or ``expected_digest`` raises :class:`DigestMismatch`.
        """
        parent_id = self.get(parent).id if parent is not None else None
        with contextlib.ExitStack() as cleanup:
            if diff is not None and id is None and expected_diff_id is None:
                found = (self.find_existing(parent_id, digest=expected_digest)
                         if expected_digest is not None else None)
                if found is None:
                    diff, expected_diff_id = self._learn_diff_id(diff, cleanup)
            else:
                found = None
            if id is not None:
                validate_id("layer", id)
            elif expected_diff_id is not None:
                id = layer_id_for(parent_id, expected_diff_id)
            found = found or self.find_existing(
                parent_id, layer_id=id, diff_id=expected_diff_id,
                digest=expected_digest if diff is not None else None)
            if found is not None:
                if found.parent != parent_id:
                    raise IDConflict(f"layer {found.id} exists on parent {found.parent}, "
                                     f"not {parent_id}")
                self.add_names(found.id, names)
                return self._layers[found.id], False
            id = id or new_id()
            self.discard_debris(id)
            result = None
            if diff is None:
                self.driver.create(id, parent_id)
            else:
                result = self._apply(id, parent_id, diff, expected_diff_id, expected_digest)
        self._layers[id] = Layer(
            id=id, parent=parent_id, created=utcnow(), metadata=metadata,
            flags=dict(flags or {}),
            compressed_digest=result.digest if result else None,
            compressed_size=result.compressed_size if result else None,
            uncompressed_digest=result.diff_id if result else None,
            uncompressed_size=result.uncompressed_size if result else None,
            compression=result.compression if result else None)
        self.add_names(id, names, save=False)
        self.save()
        return self._layers[id], True

    def _learn_diff_id(self, diff: BinaryIO, cleanup: contextlib.ExitStack
                       ) -> tuple[BinaryIO, str]:
        """(stream to apply, diff_id) of a diff whose diff_id nobody told us."""
        try:
            seekable = diff.seekable()
        except (AttributeError, OSError):
            seekable = False
        if not seekable:
            # An O_TMPFILE in staging/: same filesystem, and a crash leaves nothing.
            staging = self.graphroot / "staging"
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

    def _apply(self, layer_id: str, parent: str | None, diff: BinaryIO,
               expected_diff_id: str | None, expected_digest: str | None) -> ApplyResult:
        result = self.driver.apply_diff(layer_id, parent, diff,
                                        expected_diff_id=expected_diff_id)
        if expected_digest is not None and result.digest != expected_digest:
            self.driver.remove(layer_id)
            raise DigestMismatch(f"layer {layer_id}: blob has digest {result.digest}, "
                                 f"expected {expected_digest}", expected=expected_digest,
                                 actual=result.digest)
        return result

    def __contains__(self, layer_id: object) -> bool:
        """Whether a layer has exactly this id (no names, no prefixes)."""
        return layer_id in self._layers

    def discard_debris(self, layer_id: str) -> None:
        """Remove a directory left for ``layer_id`` by a crash (it has no record)."""
        if layer_id not in self._layers and self.driver.exists(layer_id):
            log.info("removing layer directory %s left without a record", layer_id)
            self.driver.remove(layer_id)  # unmounts first

    def diff_to(self, ref: str, sink: BinaryIO, *, compression: Compression = "none"
                ) -> ApplyResult:
        """Write the layer's changes (against its parent) to ``sink`` as a layer tarball."""
        layer = self.get(ref)
        return self.driver.export_diff(layer.id, layer.parent, sink, compression=compression)

    # -- names --------------------------------------------------------------------

    def add_names(self, layer_id: str, names: Iterable[str], *, save: bool = True) -> None:
        """Give ``layer_id`` these names; a name another layer had moves here."""
        self._set_names(layer_id, [*self._layers[layer_id].names, *names], save=save)

    def set_names(self, layer_id: str, names: Iterable[str]) -> None:
        self._set_names(self.get(layer_id).id, list(names))

    def _set_names(self, layer_id: str, names: list[str], *, save: bool = True) -> None:
        wanted = tuple(dict.fromkeys(names))
        if wanted == self._layers[layer_id].names:
            return
        for name in wanted:
            other = self._names.get(name)
            if other is not None and other != layer_id:
                o = self._layers[other]
                self._layers[other] = attrs.evolve(
                    o, names=tuple(n for n in o.names if n != name))
        for name in self._layers[layer_id].names:
            self._names.pop(name, None)
        self._layers[layer_id] = attrs.evolve(self._layers[layer_id], names=wanted)
        self._names.update(dict.fromkeys(wanted, layer_id))
        if save:
            self.save()

    # -- removing -----------------------------------------------------------------

    def remove(self, ref: str, *, used_by: Sequence[str] = ()) -> Layer:
        """Forget and delete a layer; :class:`LayerInUse` if anything still uses it.

        ``used_by`` names users the caller knows of (images, containers); children
        and mounts are checked here. The record goes first, then the directory: a
        crash in between leaves a directory without a record, never the reverse.
        """
        layer = self.get(ref)
        users = [*used_by, *(f"layer {c.id}" for c in self.children(layer.id))]
        if self.mounted(layer.id):
            users.append(f"{self.mounted(layer.id)} mount(s) at {self._mounts[layer.id].path}")
        if users:
            raise LayerInUse(f"layer {layer.id} is in use by {', '.join(users)}",
                             layer_id=layer.id, users=tuple(users))
        self.forget([layer.id])
        self.delete_dirs([layer.id])
        return layer

    def forget(self, layer_ids: Iterable[str]) -> None:
        """Drop records (one atomic write); the directories stay for :meth:`delete_dirs`."""
        counted = False
        for layer_id in layer_ids:
            layer = self._layers.pop(layer_id)
            for name in layer.names:
                self._names.pop(name, None)
            counted |= self._mounts.pop(layer_id, None) is not None
        self.save()
        if counted:
            self._save_mounts()

    def delete_dirs(self, layer_ids: Iterable[str]) -> None:
        """Unmount and delete the driver's directories of layers that have no record."""
        for layer_id in layer_ids:
            if self.driver.exists(layer_id):
                self.driver.remove(layer_id)  # unmounts first

    # -- mounts -------------------------------------------------------------------

    def mounted(self, layer_id: str) -> int:
        """How many times the layer is mounted (by every process of this boot)."""
        mount = self._mounts.get(layer_id)
        return mount.count if mount else 0

    def mounts(self) -> dict[str, tuple[int, Path]]:
        """layer id -> (reference count, mount point) for every counted mount."""
        return {m.id: (m.count, Path(m.path)) for m in self._mounts.values() if m.count > 0}

    def mount_is_live(self, layer_id: str) -> bool:
        """Whether the counted mount of ``layer_id`` is really there.

        A driver that does not mount (vfs) hands out the layer's own directory,
        which is "mounted" as long as it exists.
        """
        current = self._mounts.get(layer_id)
        if current is None or not self.driver.exists(layer_id):
            return False
        if self.driver.is_mounted(layer_id):
            return True
        return Path(current.path) == self.driver.diff_path(layer_id)

    def mount(self, ref: str, *, options: Sequence[str] = ()) -> Path:
        """Mount the layer with its parents; shares one mount between callers."""
        layer_id = self.get(ref).id
        current = self._mounts.get(layer_id)
        if current is not None and current.count > 0 and self.mount_is_live(layer_id):
            self._mounts[layer_id] = attrs.evolve(current, count=current.count + 1)
            path = Path(current.path)
        else:
            # No count, or a count for a mount that is gone (a reboot without a
            # tmpfs runroot, or an unmount behind our back): start again.
            path = self.driver.mount(layer_id, options=options)
            self._mounts[layer_id] = _Mount(layer_id, str(path), 1)
        self._save_mounts()
        return path

    def unmount(self, ref: str, *, force: bool = False) -> bool:
        """Drop one reference (all with ``force``); unmount at zero. Whether still mounted."""
        layer_id = self.get(ref).id
        current = self._mounts.get(layer_id)
        count = 0 if current is None or force else current.count - 1
        if count > 0 and current is not None:
            self._mounts[layer_id] = attrs.evolve(current, count=count)
        else:
            self._mounts.pop(layer_id, None)
            if self.driver.exists(layer_id) and self.driver.is_mounted(layer_id):
                self.driver.unmount(layer_id)
        self._save_mounts()
        return count > 0

    def drop_mount_count(self, layer_id: str) -> None:
        """Forget a stale count (its mount is gone); for repair."""
        if self._mounts.pop(layer_id, None) is not None:
            self._save_mounts()

