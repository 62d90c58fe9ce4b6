"""The container side of the CRI RuntimeService: what reads and adjusts containers.

:class:`ContainerBase` holds what every container RPC needs (records, the runtime
clients per handler, the monitors per backend, a lock per container) and serves
ContainerStatus, ListContainers, UpdateContainerResources, ReopenContainerLog and
ExecSync, as CRI-O's ``server/container_{status,list,update_resources,reopen_log,
execsync}.go`` do. A record's state is refreshed from its monitor: an exit file means
EXITED with the exit code, the finish time and the reason (``Completed``,
``OOMKilled``, ``Error``); a monitor gone without an exit record is asked of the
runtime (stopped or unknown: EXITED, exit code 255, reason ``Error``; still running:
killed first, as nothing would record its exit). ListContainers only looks for the
exit file and whether the monitor process lives.
:mod:`criolib.service._container` adds the lifecycle RPCs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from criolib.conmon import (
    ContainerExited,
    ExitStatus,
    Monitor,
    MonitorError,
    UnknownContainer,
    open_monitor,
)
from criolib.runtime_spec import (
    STATUS_STOPPED,
    ContainerNotFound,
    RuntimeClient,
    RuntimeSpecError,
)
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import (
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from criolib.service._images import ImageService
from criolib.service._spec import resources_to_wire
from criolib.service._state import ContainerRecord, NameRegistry, SandboxRecord, StateStore
from criolib.storage import Store

__all__ = [
    "LOST_EXIT_CODE",
    "LOST_KILL_WAIT",
    "TIMED_OUT_MESSAGE",
    "ContainerBase",
    "SandboxLookup",
    "exit_reason",
]

log = logging.getLogger("criolib.service")

#: What CRI-O (conmon's ``TimedOutMessage``) answers an exec sync that ran out of time.
TIMED_OUT_MESSAGE = b"command timed out"
#: The exit code recorded for a container whose monitor died without recording one.
LOST_EXIT_CODE = 255
#: Seconds to wait for a container whose monitor died to stop after SIGKILL.
LOST_KILL_WAIT = 10.0

State = cri.ContainerState


class SandboxLookup(Protocol):
    """The sandbox side, as the container side needs it."""

    def sandbox(self, ref: str) -> SandboxRecord: ...


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    """ContainerStatus ``reason`` (CRI-O's): ``OOMKilled``, ``Completed`` or ``Error``."""
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def _alive(pid: object) -> bool:
    """Whether process ``pid`` exists and is not a zombie (unknown pids count as alive:
    the caller then trusts the record)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


class ContainerBase:
    """Records, runtimes, monitors and locks; the read and adjust RPCs."""

    def __init__(self, *, config: Config, state: StateStore, names: NameRegistry,
                 store: Store, images: ImageService, sandboxes: SandboxLookup) -> None:
        self.config = config
        self.state = state
        self.names = names
        self.store = store
        self.images = images
        self.sandboxes = sandboxes
        self._lock = threading.Lock()
        self._ctr_locks: dict[str, threading.RLock] = {}
        self._runtimes: dict[str, RuntimeClient] = {}
        self._monitors: dict[str, Monitor] = {}
        try:
            self.monitor = open_monitor(config.runtime.monitor,
                                        run_dir=config.runtime.container_attach_socket_dir)
        except MonitorError as exc:
            raise ServiceError(f"[crio.runtime] monitor {config.runtime.monitor!r} cannot be "
                               f"used: {exc}") from exc
        self._monitors[self.monitor.name] = self.monitor

    # -- plumbing --------------------------------------------------------------------

    def runtime(self, handler: str) -> RuntimeClient:
        """The OCI runtime client of a runtime handler (``""``: the default one)."""
        key = handler or self.config.runtime.default_runtime
        with self._lock:
            client = self._runtimes.get(key)
            if client is None:
                cfg = self.config.runtime.handler(key)
                try:
                    client = RuntimeClient(cfg.resolved_path(), root=cfg.runtime_root)
                except RuntimeSpecError as exc:
                    raise FailedPrecondition(f"runtime handler {key!r} cannot be used: "
                                             f"{exc}") from exc
                self._runtimes[key] = client
        return client

    def monitor_for(self, record: ContainerRecord) -> Monitor:
        """The monitor backend that runs the container (the record says which)."""
        backend = record.monitor_backend or self.monitor.name
        with self._lock:
            found = self._monitors.get(backend)
            if found is None:
                try:
                    found = open_monitor(
                        backend, run_dir=self.config.runtime.container_attach_socket_dir)
                except MonitorError as exc:
                    raise ServiceError(f"container {record.id}: its monitor backend "
                                       f"{backend!r} cannot be used: {exc}") from exc
                self._monitors[backend] = found
        return found

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        """Hold the container's own lock (never a global one across runtime calls)."""
        with self._lock:
            lock = self._ctr_locks.setdefault(container_id, threading.RLock())
        with lock:
            yield

    def forget_lock(self, container_id: str) -> None:
        with self._lock:
            self._ctr_locks.pop(container_id, None)

    def find(self, ref: str, rpc: str) -> ContainerRecord:
        """The container by id or unique prefix; :class:`NotFound` naming the RPC."""
        if not ref:
            raise InvalidRequest(f"{rpc}: container_id is empty")
        try:
            return self.state.container(ref)
        except NotFound:
            raise NotFound(f"{rpc}: container {ref!r} not found") from None

    def exit_file(self, container_id: str) -> Path:
        return Path(self.config.runtime.container_exits_dir) / container_id

    # -- state ---------------------------------------------------------------------------

    def record_exit(self, record: ContainerRecord, status: ExitStatus) -> ContainerRecord:
        """Save the container as EXITED with ``status``."""
        return self.state.update_container(
            record.id, state=State.CONTAINER_EXITED, exit_code=status.exit_code,
            finished_at=int(status.finished_at * 1e9),
            reason=exit_reason(status.exit_code, status.oom_killed), message="")

    def _lost(self, record: ContainerRecord, cause: str) -> ContainerRecord:
        """The monitor left no exit: ask the runtime; stopped or unknown is EXITED.

        A container that still runs without its monitor is killed first: nothing would
        record its exit or take its output (the kubelet then restarts it).
        """
        runtime_client: RuntimeClient | None = None
        try:
            runtime_client = self.runtime(record.runtime_handler)
            status = runtime_client.state(record.id).status
        except ContainerNotFound:
            status = STATUS_STOPPED
        except (RuntimeSpecError, ServiceError) as exc:
            log.warning("container %s: %s, and its runtime state is unknown: %s",
                        record.id, cause, exc)
            return record
        message = f"the container's monitor ended without recording its exit ({cause})"
        if status != STATUS_STOPPED and runtime_client is not None:
            log.warning("container %s: %s while it runs: killing it", record.id, cause)
            status = self._kill_unmonitored(runtime_client, record)
            if status != STATUS_STOPPED:
                return record
            message += "; it was still running and was killed"
        else:
            log.warning("container %s: %s; the runtime says it stopped", record.id, cause)
        return self.state.update_container(
            record.id, state=State.CONTAINER_EXITED, exit_code=LOST_EXIT_CODE,
            finished_at=record.finished_at or time.time_ns(), reason="Error",
            message=message)

    @staticmethod
    def _kill_unmonitored(runtime: RuntimeClient, record: ContainerRecord) -> str:
        """SIGKILL a container whose monitor is gone; its runtime status afterwards."""
        try:
            runtime.kill(record.id, "SIGKILL", all=bool(record.extra.get("pid_host")))
        except ContainerNotFound:
            return STATUS_STOPPED
        except RuntimeSpecError as exc:
            log.debug("container %s: kill: %s", record.id, exc)
        deadline = time.monotonic() + LOST_KILL_WAIT
        while True:
            try:
                status = runtime.state(record.id).status
            except ContainerNotFound:
                return STATUS_STOPPED
            except RuntimeSpecError as exc:
                log.warning("container %s: runtime state after the kill: %s", record.id, exc)
                return ""
            if status == STATUS_STOPPED or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def refresh(self, record: ContainerRecord, *, cheap: bool = False) -> ContainerRecord:
        """The record with its exit recorded if the container exited.

        ``cheap`` only looks for the exit file and whether the monitor process is alive
        (ListContainers); otherwise, or when the monitor died, the monitor is asked,
        and the runtime when the monitor is gone.
        """
        if record.state == State.CONTAINER_EXITED:
            return record
        if (cheap and not self.exit_file(record.id).exists()
                and _alive(record.extra.get("monitor_pid"))):
            return record
        monitor = self.monitor_for(record)
        try:
            status = monitor.status(record.id)
        except UnknownContainer:
            return self._lost(record, "its monitor has no record of it")
        except MonitorError as exc:
            log.warning("container %s: asking its monitor failed: %s", record.id, exc)
            return record
        if status.exit is not None:
            return self.record_exit(record, status.exit)
        return record if status.running else self._lost(record, "its monitor is gone")

    # -- conversions ---------------------------------------------------------------------

    @staticmethod
    def image_spec(record: ContainerRecord) -> cri.ImageSpec:
        return cri.ImageSpec(image=record.image_name or record.image_ref)

    @staticmethod
    def image_ref(record: ContainerRecord) -> str:
        """CRI-O's ``ImageRef``: a repo digest of the image when it has one, else its id."""
        return str(record.extra.get("repo_digest") or record.image_id)

    def to_container(self, record: ContainerRecord) -> cri.Container:
        return cri.Container(
            id=record.id, pod_sandbox_id=record.sandbox_id, metadata=record.metadata,
            image=self.image_spec(record), image_ref=self.image_ref(record),
            state=record.state, created_at=record.created_at, labels=dict(record.labels),
            annotations=dict(record.annotations), image_id=record.image_id)

    def to_status(self, record: ContainerRecord) -> cri.ContainerStatus:
        linux = record.config.linux
        user = record.extra.get("user")
        return cri.ContainerStatus(
            id=record.id, metadata=record.metadata, state=record.state,
            created_at=record.created_at,
            started_at=record.started_at if record.state != State.CONTAINER_CREATED else 0,
            finished_at=record.finished_at if record.state == State.CONTAINER_EXITED else 0,
            exit_code=record.exit_code if record.state == State.CONTAINER_EXITED else 0,
            image=self.image_spec(record), image_ref=self.image_ref(record),
            image_id=record.image_id, reason=record.reason, message=record.message,
            labels=dict(record.labels), annotations=dict(record.annotations),
            mounts=list(record.mounts), log_path=record.log_path,
            resources=cri.ContainerResources(linux=linux.resources) if linux else None,
            user=cri.ContainerUser(linux=cri.LinuxContainerUser(**user)) if user else None,
            stop_signal=record.config.stop_signal)

    def _info(self, record: ContainerRecord) -> dict[str, str]:
        spec: Any = None
        with contextlib.suppress(OSError, ValueError):
            spec = json.loads((Path(record.bundle) / "config.json").read_bytes())
        return {"info": json.dumps({
            "sandboxID": record.sandbox_id, "pid": record.pid, "runtimeSpec": spec,
            "privileged": bool(record.extra.get("privileged")),
            "runtimeHandler": record.runtime_handler, "monitor": record.monitor_backend,
            "bundle": record.bundle, "rootfs": record.rootfs})}

    # -- RPCs -----------------------------------------------------------------------------

    def container_status(
            self, request: cri.ContainerStatusRequest) -> cri.ContainerStatusResponse:
        """ContainerStatus: the record refreshed from the monitor; ``verbose`` adds
        ``info["info"]`` (sandbox id, pid, the runtime spec), as CRI-O does."""
        record = self.refresh(self.find(request.container_id, "ContainerStatus"))
        info = self._info(record) if request.verbose else {}
        return cri.ContainerStatusResponse(status=self.to_status(record), info=info)

    def list_containers(
            self, request: cri.ListContainersRequest) -> cri.ListContainersResponse:
        """ListContainers: filtered by id (or prefix), sandbox id (or prefix), state and
        labels (every pair must match); states refreshed from the exit files."""
        flt = request.filter or cri.ContainerFilter()
        found = []
        for record in self.state.containers():
            if flt.id and not record.id.startswith(flt.id):
                continue
            if flt.pod_sandbox_id and not record.sandbox_id.startswith(flt.pod_sandbox_id):
                continue
            if any(record.labels.get(k) != v for k, v in flt.label_selector.items()):
                continue
            try:
                fresh = self.refresh(record, cheap=True)
            except NotFound:
                continue  # removed while we listed
            if flt.state is not None and fresh.state != flt.state.state:
                continue
            found.append(self.to_container(fresh))
        return cri.ListContainersResponse(containers=found)

    def update_container_resources(
        self, request: cri.UpdateContainerResourcesRequest
    ) -> cri.UpdateContainerResourcesResponse:
        """UpdateContainerResources: ``runtime update`` with the new limits (a created
        or running container); the record keeps them for ContainerStatus."""
        record = self.find(request.container_id, "UpdateContainerResources")
        with self.locked(record.id):
            record = self.refresh(self.state.container(record.id))
            if record.state == State.CONTAINER_EXITED:
                raise FailedPrecondition(f"UpdateContainerResources: container {record.id} "
                                         "has exited")
            if request.linux is None:
                return cri.UpdateContainerResourcesResponse()
            wire = resources_to_wire(request.linux)
            try:
                self.runtime(record.runtime_handler).update(record.id, wire)
            except RuntimeSpecError as exc:
                raise ServiceError(f"UpdateContainerResources: container {record.id}: "
                                   f"{exc}") from exc
            linux = record.config.linux or cri.LinuxContainerConfig()
            config = attrs.evolve(record.config,
                                  linux=attrs.evolve(linux, resources=request.linux))
            self.state.update_container(record.id, config=config)
        return cri.UpdateContainerResourcesResponse()

    def reopen_container_log(
            self, request: cri.ReopenContainerLogRequest) -> cri.ReopenContainerLogResponse:
        """ReopenContainerLog: the monitor reopens the log file (after the kubelet
        rotated it); a container that is not running is :class:`FailedPrecondition`."""
        record = self.refresh(self.find(request.container_id, "ReopenContainerLog"))
        if record.state != State.CONTAINER_RUNNING:
            raise FailedPrecondition(f"ReopenContainerLog: container {record.id} is not "
                                     f"running ({record.state.name})")
        try:
            self.monitor_for(record).reopen_log(record.id)
        except ContainerExited as exc:
            raise FailedPrecondition(f"ReopenContainerLog: container {record.id} has "
                                     "exited") from exc
        except MonitorError as exc:
            raise ServiceError(f"ReopenContainerLog: container {record.id}: {exc}") from exc
        return cri.ReopenContainerLogResponse()

    def exec_sync(self, request: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        """ExecSync: run ``cmd`` in the container through its monitor.

        As CRI-O: a container that is not created or running is :class:`NotFound`; a
        command that outlives ``timeout`` is killed and answered with exit code -1 and
        stderr ``command timed out`` (not an error: the kubelet's probes then fail
        instead of going Unknown).
        """
        record = self.refresh(self.find(request.container_id, "ExecSync"))
        if not request.cmd:
            raise InvalidRequest(f"ExecSync: container {record.id}: cmd is empty")
        if record.state == State.CONTAINER_EXITED:
            raise NotFound(f"ExecSync: container {record.id} is not created or running")
        if request.timeout < 0:
            raise InvalidRequest(f"ExecSync: timeout {request.timeout} is negative")
        try:
            result = self.monitor_for(record).exec_sync(
                record.id, list(request.cmd), timeout=request.timeout or None)
        except ContainerExited as exc:
            raise NotFound(f"ExecSync: container {record.id} is not created or running"
                           ) from exc
        except MonitorError as exc:
            raise ServiceError(f"ExecSync in container {record.id} of "
                               f"{request.cmd!r}: {exc}") from exc
        if result.timed_out:
            log.info("exec %r in container %s timed out after %d s", request.cmd, record.id,
                     request.timeout)
            return cri.ExecSyncResponse(stdout=b"", stderr=TIMED_OUT_MESSAGE, exit_code=-1)
        return cri.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr,
                                    exit_code=result.exit_code)

    def remove_exit_file(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.exit_file(container_id))
