"""What the three record files share: ids, times, the converter, atomic load and save.

``layers.json``, ``images.json`` and ``containers.json`` are JSON lists of records
with containers/storage's field names (``compressed-diff-digest``,
``big-data-names``...). Each is replaced atomically (temp file, fsync, rename);
a failure to write one raises :class:`MetadataIOError` naming the file and what
was being recorded, and a file that cannot be read raises :class:`StoreCorrupt`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from criolib._atomic import atomic_write_bytes
from criolib.storage._errors import (
    AmbiguousID,
    DigestMismatch,
    InvalidID,
    InvalidLayerID,
    MetadataIOError,
    StorageError,
    StoreCorrupt,
)

__all__ = [
    "format_time",
    "is_digest",
    "layer_id_for",
    "load_records",
    "lookup",
    "make_converter",
    "metadata_error",
    "new_id",
    "save_records",
    "utcnow",
    "validate_id",
    "validate_image_id",
]

T = TypeVar("T")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


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
    """``value`` if it can name a directory and a record.

    A bad layer id raises :class:`InvalidLayerID`, any other :class:`InvalidID`.
    """
    if not isinstance(value, str) or not _ID.match(value) or value in {".", "..", "l"}:
        error = InvalidLayerID if kind == "layer" else InvalidID
        raise error(f"{kind} id {value!r}: use letters, digits and . _ - "
                    "(at most 255, not starting with a punctuation mark)")
    return value


def validate_image_id(value: str) -> str:
    """``value`` if it is an image id: 64 lowercase hex (a config digest's hex), else InvalidID."""
    if not isinstance(value, str) or not _HEX64.match(value):
        raise InvalidID(f"image id {value!r}: an image id is the config digest's 64 "
                        "lowercase hex digits")
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


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (what Go's ``time.Time`` marshals to)."""
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
    conv.register_unstructure_hook(dt.datetime, format_time)
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


def metadata_error(exc: OSError, path: Path, what: str) -> MetadataIOError:
    """A :class:`MetadataIOError` for ``exc`` while ``what`` (names the object) at ``path``."""
    reason = exc.strerror or str(exc)
    return MetadataIOError(f"{path}: cannot {what}: {reason}", filename=path,
                           errno=exc.errno)


def load_records(path: Path, from_json: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """The records in the JSON list at ``path``; none if it is missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _corrupt(path, f"cannot read: {exc}") from exc
    if not raw.strip():
        return []
    try:
        data = json.loads(raw)
        if not isinstance(data, list):
            raise TypeError(f"a JSON list was expected, not {type(data).__name__}")
        return [from_json(item) for item in data]
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
        raise _corrupt(path, f"not a valid record list: {exc}") from exc


def _corrupt(path: Path, why: str) -> StoreCorrupt:
    error = StoreCorrupt(f"{path}: {why}")
    error.path = path  # type: ignore[attr-defined]  # the file, for check()'s report
    return error


def save_records(path: Path, records: Iterable[T], to_json: Callable[[T], dict[str, Any]],
                 *, what: str = "") -> None:
    """Replace the JSON list at ``path`` atomically (temp file, fsync, rename).

    ``what`` names the change for the :class:`MetadataIOError` raised when the
    write fails (the old file stays as it was).
    """
    data = json.dumps([to_json(r) for r in records], indent=1, sort_keys=False)
    try:
        atomic_write_bytes(path, data.encode() + b"\n", mode=0o600)
    except OSError as exc:
        raise metadata_error(exc, path, f"record {what or 'the change'}") from exc


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
