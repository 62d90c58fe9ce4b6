"""What the service remembers across restarts, and who holds which name.

- :class:`SandboxRecord` / :class:`ContainerRecord`: everything PodSandboxStatus,
  ContainerStatus and the List RPCs answer, and what StopPodSandbox and
  RemovePodSandbox need after a restart (namespace paths, the CNI network to DEL).
  Records are values: change one with :func:`attrs.evolve` (or
  :meth:`StateStore.update_sandbox`) and :meth:`StateStore.put` it.
- :class:`StateStore`: one JSON file per object under ``state_dir/sandboxes/`` and
  ``state_dir/containers/``, written atomically, all loaded when it opens; a file
  that cannot be read is moved to ``state_dir/damaged/`` and reported, not fatal.
- :class:`NameRegistry`: CRI names (``k8s_<name>_<namespace>_<uid>_<attempt>``) and
  their reservations. A retried RunPodSandbox or CreateContainer whose first request
  is still running waits for it and gets its result instead of CRI-O's "name is
  reserved".
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import attrs
import cattrs

from criolib._atomic import atomic_write_bytes
from criolib.service import _cri_types as cri
from criolib.service._errors import (
    AlreadyExists,
    DeadlineExceeded,
    Internal,
    InvalidRequest,
    NotFound,
    ServiceError,
)

__all__ = [
    "RECORD_VERSION",
    "RESERVE_TIMEOUT",
    "ContainerRecord",
    "DamagedRecord",
    "NameRegistry",
    "Reservation",
    "SandboxRecord",
    "StateStore",
    "cri_from_json",
    "cri_to_json",
]

log = logging.getLogger("criolib.service")
_T = TypeVar("_T")

#: Version of the record files' layout (``{"version": 1, "record": {...}}``).
RECORD_VERSION = 1
#: Seconds :meth:`NameRegistry.reserve` waits at most for a request in flight (a hung
#: first request must not hold its retries forever).
RESERVE_TIMEOUT = 120.0


@attrs.frozen(kw_only=True)
class SandboxRecord:
    """A pod sandbox as the service remembers it.

    ``config`` is the RunPodSandbox request's config as given (metadata, labels,
    annotations, DNS, ports, Linux options); ``namespaces`` maps a namespace kind
    (``net``, ``ipc``, ``uts``) to its pinned path (absent for NODE modes);
    ``network_name`` is the CNI network attached (empty when none: host network, or
    not attached yet), kept for DEL after the namespace is gone; ``ip`` and
    ``additional_ips`` what CNI gave. ``extra`` is open for what the managers add.
    """

    id: str
    name: str
    config: cri.PodSandboxConfig = attrs.field(factory=cri.PodSandboxConfig)
    created_at: int = 0
    state: cri.PodSandboxState = cri.PodSandboxState.SANDBOX_READY
    runtime_handler: str = ""
    namespaces: dict[str, str] = attrs.field(factory=dict)
    network_name: str = ""
    ip: str = ""
    additional_ips: list[str] = attrs.field(factory=list)
    hostname: str = ""
    sandbox_dir: str = ""
    log_directory: str = ""
    cgroup_parent: str = ""
    shm_path: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def metadata(self) -> cri.PodSandboxMetadata:
        return self.config.metadata or cri.PodSandboxMetadata()

    @property
    def labels(self) -> dict[str, str]:
        return self.config.labels

    @property
    def annotations(self) -> dict[str, str]:
        return self.config.annotations


@attrs.frozen(kw_only=True)
class ContainerRecord:
    """A container as the service remembers it.

    ``config`` is the CreateContainer request's config; ``image_ref`` the image as
    the request named it, ``image_id`` the image's id in storage and ``image_name``
    the resolved name; ``log_path`` is absolute; ``monitor_backend`` says which
    monitor runs it (``criolib`` or ``conmon``); times are nanoseconds since the
    epoch, 0 when it has not happened; ``reason``/``message`` are ContainerStatus's
    (``Completed``, ``OOMKilled``, ``Error``). ``mounts`` are the mounts as made.
    """

    id: str
    name: str
    sandbox_id: str
    config: cri.ContainerConfig = attrs.field(factory=cri.ContainerConfig)
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    state: cri.ContainerState = cri.ContainerState.CONTAINER_CREATED
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    image_ref: str = ""
    image_id: str = ""
    image_name: str = ""
    log_path: str = ""
    runtime_handler: str = ""
    monitor_backend: str = ""
    bundle: str = ""
    rootfs: str = ""
    mounts: list[cri.Mount] = attrs.field(factory=list)
    pid: int = 0
    stop_signal: str = ""
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def metadata(self) -> cri.ContainerMetadata:
        return self.config.metadata or cri.ContainerMetadata()

    @property
    def labels(self) -> dict[str, str]:
        return self.config.labels

    @property
    def annotations(self) -> dict[str, str]:
        return self.config.annotations


# -- JSON -------------------------------------------------------------------------------

_converter = cattrs.Converter()
_converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
_converter.register_structure_hook(bytes, lambda v, _: base64.b64decode(v))


def cri_to_json(obj: Any) -> Any:
    """A CRI object (or record) as JSON-ready data: enums as numbers, bytes as base64."""
    return _converter.unstructure(obj)


def cri_from_json(cls: type[_T], data: Any) -> _T:
    """The inverse of :func:`cri_to_json`; a wrong shape is an :class:`InvalidRequest`."""
    try:
        return _converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc))
        raise InvalidRequest(f"cannot read {cls.__name__} from JSON: {problems}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest(f"cannot read {cls.__name__} from JSON: {exc}") from exc


# -- the store ----------------------------------------------------------------------------

Kind = Literal["sandboxes", "containers"]
Record = SandboxRecord | ContainerRecord
_KINDS: tuple[Kind, ...] = ("sandboxes", "containers")
_WHAT: dict[Kind, str] = {"sandboxes": "sandbox", "containers": "container"}
_CLASSES: dict[Kind, type[SandboxRecord] | type[ContainerRecord]] = {
    "sandboxes": SandboxRecord, "containers": ContainerRecord}


@attrs.frozen
class DamagedRecord:
    """A record file that could not be read: where it was, where it went, and why."""

    path: Path
    moved_to: Path | None
    reason: str


def _check_id(what: str, id_: str) -> None:
    if not id_ or "/" in id_ or id_.startswith(".") or "\0" in id_:
        raise InvalidRequest(f"{what} id {id_!r} cannot name a record file")


class StateStore:
    """Sandbox and container records under ``state_dir``; safe to share between threads.

    Opening loads every record; damaged files are listed in :attr:`damaged` (and
    logged). A ``state_dir`` that cannot be made is a :class:`ServiceError`.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self._lock = threading.RLock()
        self._records: dict[Kind, dict[str, Any]] = {"sandboxes": {}, "containers": {}}
        self.damaged: list[DamagedRecord] = []
        try:
            for kind in _KINDS:
                (self.state_dir / kind).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ServiceError(f"cannot use {self.state_dir} as the service's state "
                               f"directory: {exc.strerror}") from exc
        for kind in _KINDS:
            self._load(kind)

    def _load(self, kind: Kind) -> None:
        cls = _CLASSES[kind]
        for path in sorted((self.state_dir / kind).glob("*.json")):
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_bytes())
                if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
                    raise ValueError(f"not a version {RECORD_VERSION} record")
                record = _converter.structure(doc["record"], cls)
                if record.id != path.stem:
                    raise ValueError(f"holds id {record.id!r}, not its file name's")
            except cattrs.BaseValidationError as exc:
                self._set_aside(path, kind, "; ".join(cattrs.transform_error(exc)))
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(path, kind, f"{type(exc).__name__}: {exc}")
                continue
            self._records[kind][record.id] = record

    def _set_aside(self, path: Path, kind: Kind, reason: str) -> None:
        damaged_dir = self.state_dir / "damaged"
        aside = damaged_dir / f"{kind}-{path.name}-{time.time_ns()}"
        target: Path | None = aside
        try:
            damaged_dir.mkdir(exist_ok=True, mode=0o700)
            os.replace(path, aside)
        except OSError as move_exc:
            log.error("cannot move damaged record %s aside: %s", path, move_exc)
            target = None
        log.warning("damaged %s record %s set aside as %s: %s", _WHAT[kind], path, target, reason)
        self.damaged.append(DamagedRecord(path, target, reason))

    def _path(self, kind: Kind, id_: str) -> Path:
        return self.state_dir / kind / f"{id_}.json"

    def _write(self, kind: Kind, record: Record) -> None:
        data = json.dumps({"version": RECORD_VERSION, "record": _converter.unstructure(record)},
                          sort_keys=True).encode()
        try:
            atomic_write_bytes(self._path(kind, record.id), data, mode=0o600)
        except OSError as exc:
            raise ServiceError(f"cannot save the record of {_WHAT[kind]} {record.id}: "
                               f"{exc.strerror}") from exc

    # -- sandboxes and containers --------------------------------------------------------

    def sandbox_dir(self, sandbox_id: str) -> Path:
        """``state_dir/sandboxes/<id>/``: the sandbox's files (resolv.conf, hosts, shm)."""
        _check_id("sandbox", sandbox_id)
        return self.state_dir / "sandboxes" / sandbox_id

    def put(self, record: Record) -> None:
        """Save a record (new or changed) to disk, then in memory."""
        kind: Kind = "sandboxes" if isinstance(record, SandboxRecord) else "containers"
        _check_id(_WHAT[kind], record.id)
        with self._lock:
            self._write(kind, record)
            self._records[kind][record.id] = record

    def sandboxes(self) -> list[SandboxRecord]:
        """Every sandbox record, oldest first."""
        with self._lock:
            found: list[SandboxRecord] = list(self._records["sandboxes"].values())
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def containers(self, sandbox_id: str | None = None) -> list[ContainerRecord]:
        """Every container record (of one sandbox when ``sandbox_id`` is given), oldest first."""
        with self._lock:
            found: list[ContainerRecord] = list(self._records["containers"].values())
        if sandbox_id is not None:
            found = [r for r in found if r.sandbox_id == sandbox_id]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    def _find(self, kind: Kind, ref: str) -> Any:
        what = _WHAT[kind]
        with self._lock:
            records = self._records[kind]
            if ref in records:
                return records[ref]
            matches = [id_ for id_ in records if ref and id_.startswith(ref)]
        if len(matches) > 1:
            raise InvalidRequest(f"{what} id prefix {ref!r} is ambiguous: it starts "
                                 f"{len(matches)} ids ({', '.join(sorted(matches)[:3])}...)")
        if not matches:
            raise NotFound(f"{what} {ref!r} not found")
        return records[matches[0]]

    def sandbox(self, ref: str) -> SandboxRecord:
        """The sandbox by id or unique id prefix (crictl's short ids); else :class:`NotFound`."""
        record: SandboxRecord = self._find("sandboxes", ref)
        return record

    def container(self, ref: str) -> ContainerRecord:
        """The container by id or unique id prefix; else :class:`NotFound`."""
        record: ContainerRecord = self._find("containers", ref)
        return record

    def update_sandbox(self, sandbox_id: str, **changes: Any) -> SandboxRecord:
        """Change fields of a sandbox record and save it, as one step; the new record."""
        with self._lock:
            record = attrs.evolve(self.sandbox(sandbox_id), **changes)
            self.put(record)
        return record

    def update_container(self, container_id: str, **changes: Any) -> ContainerRecord:
        """Change fields of a container record and save it, as one step; the new record."""
        with self._lock:
            record = attrs.evolve(self.container(container_id), **changes)
            self.put(record)
        return record

    def _delete(self, kind: Kind, id_: str) -> None:
        _check_id(_WHAT[kind], id_)
        with self._lock:
            try:
                self._path(kind, id_).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ServiceError(f"cannot remove the record of {_WHAT[kind]} {id_}: "
                                   f"{exc.strerror}") from exc
            self._records[kind].pop(id_, None)

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Forget a sandbox (its record file); idempotent. Its directory is the caller's."""
        self._delete("sandboxes", sandbox_id)

    def delete_container(self, container_id: str) -> None:
        """Forget a container (its record file); idempotent."""
        self._delete("containers", container_id)


# -- names ------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Entry:
    key: str
    holder: str | None = None
    result: Any = None
    state: str = "in_flight"  # then "done" or "released"


class Reservation:
    """The answer of :meth:`NameRegistry.reserve`.

    ``owner`` True: the caller holds the name and does the work, then calls
    :meth:`complete` with the new object's id (and the response to share with
    retries), or :meth:`release` on failure. As a context manager, leaving without
    :meth:`complete` releases the name. ``owner`` False: an earlier request with the
    same key did it; ``holder`` is the object's id and ``result`` its response.
    """

    def __init__(self, registry: NameRegistry, name: str, entry: _Entry, *,
                 owner: bool) -> None:
        self.registry = registry
        self.name = name
        self.owner = owner
        self._entry = entry

    @property
    def holder(self) -> str | None:
        return self._entry.holder

    @property
    def result(self) -> Any:
        return self._entry.result

    def complete(self, holder_id: str, result: Any = None) -> None:
        """The work is done: ``holder_id`` now holds the name; waiters get ``result``."""
        self.registry._finish(self.name, self._entry, holder_id, result)

    def release(self) -> None:
        """Give the name up (the work failed): a waiting retry takes it over."""
        if self.owner and self._entry.state == "in_flight":
            self.registry._drop(self.name, self._entry)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class NameRegistry:
    """Unique names of one kind (``"sandbox"``, ``"container"``) and who holds them.

    Thread-safe. :meth:`reserve` makes the caller the owner of a free name; for a name
    whose first request (same ``key``, e.g. a digest of the request) is still in
    flight it waits and returns that request's result; for a name held by an object
    that a request with the same key finished, it returns that object (CRI-O's
    ResourceStore: the kubelet retries the same attempt when its first call timed
    out, and gets the resource made meanwhile). A name held by a finished object of
    another key (or restored at start, whose key is unknown), or in flight for a
    different key, is :class:`AlreadyExists`.
    """

    def __init__(self, kind: str = "object", *, max_wait: float = RESERVE_TIMEOUT) -> None:
        self.kind = kind
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._names: dict[str, _Entry] = {}

    def reserve(self, name: str, key: str, *, timeout: float | None = None) -> Reservation:
        """Reserve ``name`` for a request identified by ``key`` (see the class).

        Waiting for a request in flight lasts at most ``timeout`` seconds (None: the
        registry's ``max_wait``, :data:`RESERVE_TIMEOUT` by default), then
        :class:`DeadlineExceeded` naming the name: a hung first request does not hold
        its retries forever.
        """
        if not name:
            raise InvalidRequest(f"a {self.kind} name must not be empty")
        if timeout is None:
            timeout = self.max_wait
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._names.get(name)
                if entry is None:
                    entry = _Entry(key)
                    self._names[name] = entry
                    return Reservation(self, name, entry, owner=True)
                if entry.state == "done" and key and entry.key == key:
                    log.info("%s name %r: a retry of the request that made %s %s", self.kind,
                             name, self.kind, entry.holder)
                    return Reservation(self, name, entry, owner=False)
                if entry.state == "done":
                    raise AlreadyExists(f"{self.kind} name {name!r} is reserved by "
                                        f"{self.kind} {entry.holder}")
                if entry.key != key:
                    raise AlreadyExists(f"{self.kind} name {name!r} is reserved by a request "
                                        "in flight with a different configuration")
                log.info("%s name %r: waiting for the request in flight", self.kind, name)
                while entry.state == "in_flight":
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeadlineExceeded(f"{self.kind} name {name!r}: the first request "
                                               f"did not finish within {timeout} s")
                    self._cond.wait(remaining)
                if entry.state == "done":
                    return Reservation(self, name, entry, owner=False)
                # The first request failed and let go: try to take the name over.

    def _finish(self, name: str, entry: _Entry, holder_id: str, result: Any) -> None:
        with self._cond:
            if self._names.get(name) is not entry or entry.state != "in_flight":
                raise Internal(f"{self.kind} name {name!r}: completing a reservation that "
                               "is not in flight")
            entry.holder, entry.result, entry.state = holder_id, result, "done"
            self._cond.notify_all()

    def _drop(self, name: str, entry: _Entry) -> None:
        with self._cond:
            if self._names.get(name) is entry:
                del self._names[name]
            entry.state = "released"
            entry.result = None
            self._cond.notify_all()

    def restore(self, names: Iterable[tuple[str, str]]) -> None:
        """Mark ``(name, holder_id)`` pairs held by existing objects (at start)."""
        with self._cond:
            for name, holder_id in names:
                self._names[name] = _Entry("", holder=holder_id, state="done")

    def release(self, name: str, holder_id: str | None = None) -> None:
        """Free a name (its object was removed); only if ``holder_id`` holds it, when given.

        Idempotent; a name still in flight is left to its request.
        """
        with self._cond:
            entry = self._names.get(name)
            if entry is None or entry.state != "done":
                return
            if holder_id is not None and entry.holder != holder_id:
                return
            self._drop(name, entry)

    def holder(self, name: str) -> str | None:
        """The id of the object holding ``name`` (None when free or still in flight)."""
        with self._cond:
            entry = self._names.get(name)
            return entry.holder if entry is not None and entry.state == "done" else None
