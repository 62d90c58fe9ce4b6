"""Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
ListPodSandbox (CRI v1, kubernetes/cri-api api.proto ``RuntimeService``).

A sandbox without an infra process, like CRI-O's default (``drop_infra_ctr``): its
net, ipc and uts namespaces are pinned with :class:`criolib.cni.PodNamespaces`
(unless the pod uses the node's), its network comes from CNI, and its directory
``state_dir/sandboxes/<id>/`` holds hostname, resolv.conf, hosts and the shm tmpfs
that the containers bind-mount. The flow follows cri-o server/sandbox_run_linux.go,
sandbox_stop_linux.go and sandbox_remove.go:

- Run: check the request (:mod:`._sandbox_plan`), reserve the name (a retry of a
  request still in flight waits for it and gets its id), save a record marked
  ``creating`` (so a crash leaves something :meth:`SandboxManager.recover` can
  clean), make the files, shm, namespaces and the CNI attachment, and save the
  record READY. Any failure undoes what was made and releases the name.
- Stop (idempotent, unknown ids succeed as in CRI-O): stop the containers
  (``[crio.runtime] ctr_stop_timeout`` each), CNI DEL (from the cache, also when the
  namespace is gone), remove the namespaces, kill the PID namespace holder and
  unmount shm (CRI-O does all at stop), NOTREADY.
- Remove (idempotent): stop if needed, remove the containers, the directory and the
  record; release the name.

Stop and Remove of one sandbox take its lock exclusively; the container side holds it
shared (:meth:`SandboxManager.guard`) while it creates a container, so a pod is
never taken down under a CreateContainer, and many containers can be created at once.

A pod with ``namespace_options.pid`` POD gets a PID namespace holder (CRI-O's infra
process for that case, :mod:`._sandbox_pid`): ``namespaces["pid"]`` is
``/proc/<holder>/ns/pid`` and ``extra["pid_holder"]`` its pids and start times.

What the container side reads from a :class:`SandboxRecord` (``sandbox(ref)``):
``namespaces`` (kind -> pinned path; a kind absent is the host's), ``sandbox_dir``
(``hostname``, ``resolv.conf``, ``hosts`` to bind-mount), ``shm_path`` (a tmpfs, or
``/dev/shm`` for IPC NODE), ``hostname``, ``cgroup_parent``, ``log_directory``,
``runtime_handler`` (as requested; ``""`` is the default runtime), and in ``extra``:
``sysctls`` (checked, names with dots: for each container's ``linux.sysctl``),
``pid_holder`` (only for pid POD) and
``namespace_options`` (JSON; use :func:`._sandbox_plan.namespace_options` on the
record for the :class:`NamespaceOption`, which also covers requests without one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs

from criolib.cni import (
    NetNSError,
    NetworkConfigList,
    PinnedNamespace,
    PodNamespaces,
    release_pin_dirs,
)
from criolib.errors import CriolibError
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import InvalidRequest, NotFound, ServiceError
from criolib.service._sandbox_files import (
    hosts_text,
    is_mountpoint,
    mount_shm,
    remove_tree,
    resolv_conf_text,
    unmount,
    write_file,
)
from criolib.service._sandbox_net import PodNetwork
from criolib.service._sandbox_pid import holder_alive, kill_pid_holder, start_pid_holder
from criolib.service._sandbox_plan import PodPlan, namespace_options, plan_pod
from criolib.service._state import NameRegistry, SandboxRecord, StateStore, cri_to_json

__all__ = ["ContainerHooks", "RWLock", "SandboxManager"]

#: Namespace directories shared with other programs: never unmounted by close().
_SYSTEM_NS_DIRS = frozenset({Path("/run"), Path("/var/run").resolve()})
log = logging.getLogger("criolib.service")

_READY = cri.PodSandboxState.SANDBOX_READY
_NOTREADY = cri.PodSandboxState.SANDBOX_NOTREADY
_HOST_SHM = "/dev/shm"  # noqa: S108 - the host's IPC namespace's shm, for IPC NODE


class ContainerHooks(Protocol):
    """What the sandbox side asks of the container side (``ContainerManager``)."""

    def stop_all(self, sandbox_id: str, timeout: int) -> None: ...
    def remove_all(self, sandbox_id: str) -> None: ...


class RWLock:
    """A readers-writer lock: many shared holders or one exclusive one.

    Writers are preferred: once a writer waits, new readers wait too, so a steady
    stream of shared holds cannot starve it. Not reentrant.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _describe(record: SandboxRecord) -> str:
    meta = record.metadata
    return f"pod {meta.namespace}/{meta.name} (sandbox {record.id[:12]})"


def _creating(record: SandboxRecord) -> bool:
    return bool(record.extra.get("creating"))


class SandboxManager:
    """The pod sandboxes of one service: the sandbox RPCs and what containers need.

    ``containers`` (settable) is the container side; when set, Stop and Remove call
    its ``stop_all`` / ``remove_all``. ``namespaces_dir`` is where namespaces are
    pinned (default ``[crio.runtime] namespaces_dir``). Safe to call from many threads:
    one readers-writer lock per sandbox (:meth:`guard`), none across pods.
    """

    def __init__(self, *, config: Config, state: StateStore, names: NameRegistry,
                 namespaces_dir: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.state = state
        self.names = names
        self.namespaces_dir = Path(namespaces_dir if namespaces_dir is not None
                                   else config.runtime.namespaces_dir)
        self.network = PodNetwork(config)
        self.containers: ContainerHooks | None = None
        self._guard = threading.Lock()
        self._locks: dict[str, RWLock] = {}
        #: the unshare processes of the PID namespace holders this process started
        self._holders: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"SandboxManager(state_dir={str(self.state.state_dir)!r})"

    def _lock(self, sandbox_id: str) -> RWLock:
        with self._guard:
            return self._locks.setdefault(sandbox_id, RWLock())

    def _current(self, sandbox_id: str) -> SandboxRecord | None:
        try:
            record = self.state.sandbox(sandbox_id)
        except NotFound:
            return None
        return record if record.id == sandbox_id else None

    def _lookup(self, rpc: str, ref: str) -> SandboxRecord | None:
        """The sandbox ``ref`` names (id or unique prefix), None when unknown."""
        if not ref:
            raise InvalidRequest(f"{rpc}: pod_sandbox_id is required")
        try:
            record = self.state.sandbox(ref)
        except NotFound:
            return None
        return None if _creating(record) else record

    # -- for the container side --------------------------------------------------------

    def sandbox(self, ref: str) -> SandboxRecord:
        """The sandbox by id or unique id prefix; :class:`NotFound` naming ``ref``."""
        record = self.state.sandbox(ref)
        if _creating(record):
            raise NotFound(f"sandbox {ref!r} not found (it is still being created)")
        return record

    @contextlib.contextmanager
    def guard(self, ref: str) -> Iterator[str]:
        """Hold sandbox ``ref`` (id or unique prefix) shared: Stop and Remove of it wait
        until the block ends and cannot be under way inside it. Many guards of one
        sandbox run at once. Yields the full id (``ref`` when unknown); the caller
        re-checks the sandbox (:meth:`sandbox`, its state) inside the block.
        """
        try:
            sandbox_id = self.state.sandbox(ref).id
        except NotFound:
            sandbox_id = ref
        with self._lock(sandbox_id).shared():
            yield sandbox_id

    # -- RunPodSandbox -----------------------------------------------------------------

    def run_pod_sandbox(self, request: cri.RunPodSandboxRequest) -> cri.RunPodSandboxResponse:
        """RunPodSandbox: a READY sandbox; a retry of a request in flight gets its id."""
        plan = plan_pod(request, self.config)
        what = f"pod {plan.metadata.namespace}/{plan.metadata.name} ({plan.name})"
        net = None if plan.host_network else self.network.network(what)
        reservation = self.names.reserve(plan.name, plan.key)
        if not reservation.owner:
            log.info("%s: a retry of a request that ran meanwhile; sandbox %s", what,
                     reservation.holder)
            result = reservation.result
            if isinstance(result, cri.RunPodSandboxResponse):
                return result
            return cri.RunPodSandboxResponse(pod_sandbox_id=reservation.holder or "")
        try:
            response = self._create(plan, net)
        except BaseException:
            reservation.release()
            raise
        reservation.complete(response.pod_sandbox_id, response)
        return response

    def _new_record(self, plan: PodPlan, net: NetworkConfigList | None) -> SandboxRecord:
        sandbox_id = secrets.token_hex(32)
        sandbox_dir = self.state.sandbox_dir(sandbox_id)
        log_directory = plan.config.log_directory
        own_log = not log_directory
        if own_log:
            log_directory = str(self.config.runtime.log_dir / sandbox_id)
        namespaces = {kind: str(self.namespaces_dir / f"{kind}ns" / sandbox_id)
                      for kind in plan.namespace_kinds}
        extra: dict[str, Any] = {
            "creating": True, "sysctls": dict(plan.sysctls),
            "namespace_options": cri_to_json(plan.options),
            "cni_config": net.to_json().decode() if net is not None else "",
            "own_log_directory": own_log, "network_down": net is None,
            "port_mappings": list(plan.port_mappings),
        }
        return SandboxRecord(
            id=sandbox_id, name=plan.name, config=plan.config, created_at=time.time_ns(),
            state=_NOTREADY, runtime_handler=plan.runtime_handler, namespaces=namespaces,
            network_name=net.name if net is not None else "", hostname=plan.hostname,
            sandbox_dir=str(sandbox_dir), log_directory=log_directory,
            cgroup_parent=plan.cgroup_parent,
            shm_path=_HOST_SHM if plan.host_ipc else str(sandbox_dir / "shm"), extra=extra)

    def _create(self, plan: PodPlan, net: NetworkConfigList | None) -> cri.RunPodSandboxResponse:
        record = self._new_record(plan, net)
        what = _describe(record)
        self.state.put(record)
        attempted: list[bool] = []
        try:
            if plan.shared_pid:
                record = self._hold_pid_namespace(record, what)
                self.state.put(record)
            ips = self._make(record, plan, net, what, attempted)
            extra = {k: v for k, v in record.extra.items() if k != "creating"}
            final = attrs.evolve(record, state=_READY, ip=ips[0] if ips else "",
                                 additional_ips=ips[1:], extra=extra)
            self.state.put(final)
        except BaseException as exc:
            log.warning("%s: RunPodSandbox failed, undoing it: %s", what, exc)
            if not attempted:  # no ADD ran: nothing to DEL
                record = attrs.evolve(record, extra=dict(record.extra, network_down=True))
            try:
                self._teardown(record, what)
                self._forget(record, what)
            except ServiceError as undo_exc:
                log.error("%s: undoing a failed RunPodSandbox: %s (the record stays for "
                          "the next start to clean)", what, undo_exc)
            if isinstance(exc, CriolibError) and not isinstance(exc, ServiceError):
                raise ServiceError(f"{what}: RunPodSandbox failed: {exc}") from exc
            raise
        log.info("%s: ready (%s, ip %s)", what, record.name, final.ip or "none")
        return cri.RunPodSandboxResponse(pod_sandbox_id=record.id)

    def _hold_pid_namespace(self, record: SandboxRecord, what: str) -> SandboxRecord:
        info, proc = start_pid_holder(what)
        self._holders[record.id] = proc
        return attrs.evolve(record, namespaces=dict(record.namespaces, pid=info["ns"]),
                            extra=dict(record.extra, pid_holder=info))

    def _make(self, record: SandboxRecord, plan: PodPlan, net: NetworkConfigList | None,
              what: str, attempted: list[bool]) -> list[str]:
        sandbox_dir = Path(record.sandbox_dir)
        try:
            sandbox_dir.mkdir(mode=0o755)
        except OSError as exc:
            raise ServiceError(f"{what}: cannot create the sandbox directory {sandbox_dir}: "
                               f"{exc.strerror}") from exc
        write_file(sandbox_dir / "hostname", plan.hostname + "\n", what)
        write_file(sandbox_dir / "resolv.conf", resolv_conf_text(plan.config.dns_config, what),
                   what)
        if not plan.host_ipc:
            mount_shm(Path(record.shm_path), what)
        if plan.namespace_kinds:
            try:
                PodNamespaces.create(record.id, plan.namespace_kinds, hostname=plan.hostname,
                                     base=self.namespaces_dir)
            except NetNSError as exc:
                raise ServiceError(f"{what}: cannot pin the pod's namespaces "
                                   f"({', '.join(plan.namespace_kinds)}): {exc}") from exc
        ips: list[str] = []
        if net is not None:
            # DEL on the way back even when ADD fails: its own rollback may not finish
            attempted.append(True)
            ips = self.network.add(net, record.id, record.namespaces["net"],
                                   metadata=plan.metadata, port_mappings=plan.port_mappings,
                                   what=what)
        write_file(sandbox_dir / "hosts", hosts_text(plan.hostname, ips,
                                                     host_network=plan.host_network, what=what),
                   what)
        try:
            Path(record.log_directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"{what}: cannot create the log directory "
                               f"{record.log_directory}: {exc.strerror}") from exc
        return ips

    # -- taking a sandbox down ------------------------------------------------------------

    def _network_down(self, record: SandboxRecord, what: str) -> SandboxRecord:
        """CNI DEL once (it is idempotent, but a DEL runs every plugin); saved."""
        if record.extra.get("network_down") or not record.network_name:
            return record
        self.network.delete(str(record.extra.get("cni_config", "")), record.network_name,
                            record.id, record.namespaces.get("net", ""),
                            metadata=record.metadata, what=what)
        extra = dict(record.extra, network_down=True)
        if self._current(record.id) is None:
            return attrs.evolve(record, extra=extra)
        return self.state.update_sandbox(record.id, extra=extra)

    def _release_namespaces(self, record: SandboxRecord, what: str) -> None:
        for kind, path in record.namespaces.items():
            if kind == "pid":
                continue  # a holder process, not a pin
            try:
                PinnedNamespace(path).remove()
            except NetNSError as exc:
                raise ServiceError(f"{what}: cannot remove the pod's {kind} namespace "
                                   f"{path}: {exc}") from exc

    def _teardown(self, record: SandboxRecord, what: str) -> SandboxRecord:
        """CNI DEL, namespaces, shm: everything but the directory; idempotent."""
        record = self._network_down(record, what)
        self._release_namespaces(record, what)
        holder = record.extra.get("pid_holder")
        if isinstance(holder, dict):
            kill_pid_holder(holder, what, self._holders.get(record.id))
            self._holders.pop(record.id, None)
        if record.shm_path and record.shm_path != _HOST_SHM:
            unmount(Path(record.shm_path), what)
        return record

    def _forget(self, record: SandboxRecord, what: str) -> None:
        """Remove the directory (and the log directory criolib chose) and the record."""
        remove_tree(Path(record.sandbox_dir), what)
        if record.extra.get("own_log_directory") and record.log_directory:
            remove_tree(Path(record.log_directory), what)
        self.state.delete_sandbox(record.id)

    def _stop(self, record: SandboxRecord) -> SandboxRecord:
        what = _describe(record)
        if self.containers is not None:
            self.containers.stop_all(record.id, self.config.runtime.ctr_stop_timeout)
        record = self._teardown(record, what)
        if record.state != _NOTREADY:
            record = self.state.update_sandbox(record.id, state=_NOTREADY)
            log.info("%s: stopped", what)
        return record

    # -- StopPodSandbox / RemovePodSandbox ----------------------------------------------

    def stop_pod_sandbox(
            self, request: cri.StopPodSandboxRequest) -> cri.StopPodSandboxResponse:
        """StopPodSandbox: idempotent; an unknown id succeeds (CRI-O: "probably been
        stopped already"), the kubelet relies on it."""
        found = self._lookup("StopPodSandbox", request.pod_sandbox_id)
        if found is None:
            log.info("StopPodSandbox: no sandbox %r; nothing to stop", request.pod_sandbox_id)
            return cri.StopPodSandboxResponse()
        with self._lock(found.id).exclusive():
            record = self._current(found.id)
            if record is not None:
                self._stop(record)
        return cri.StopPodSandboxResponse()

    def remove_pod_sandbox(
            self, request: cri.RemovePodSandboxRequest) -> cri.RemovePodSandboxResponse:
        """RemovePodSandbox: stop if needed, remove the containers and everything of the
        pod, release its name; idempotent, an unknown id succeeds."""
        found = self._lookup("RemovePodSandbox", request.pod_sandbox_id)
        if found is None:
            log.info("RemovePodSandbox: no sandbox %r; nothing to remove",
                     request.pod_sandbox_id)
            return cri.RemovePodSandboxResponse()
        with self._lock(found.id).exclusive():
            record = self._current(found.id)
            if record is not None:
                record = self._stop(record)
                if self.containers is not None:
                    self.containers.remove_all(record.id)
                self._forget(record, _describe(record))
                self.names.release(record.name, record.id)
                log.info("%s: removed", _describe(record))
        with self._guard:
            self._locks.pop(found.id, None)
        return cri.RemovePodSandboxResponse()

    # -- PodSandboxStatus / ListPodSandbox ----------------------------------------------

    def pod_sandbox_status(
            self, request: cri.PodSandboxStatusRequest) -> cri.PodSandboxStatusResponse:
        """PodSandboxStatus: NotFound for an unknown id; ``verbose`` adds ``info``."""
        if not request.pod_sandbox_id:
            raise InvalidRequest("PodSandboxStatus: pod_sandbox_id is required")
        record = self.sandbox(request.pod_sandbox_id)
        ready = record.state == _READY
        network = cri.PodSandboxNetworkStatus(
            ip=record.ip if ready else "",
            additional_ips=[cri.PodIP(ip=ip) for ip in record.additional_ips] if ready else [])
        status = cri.PodSandboxStatus(
            id=record.id, metadata=record.metadata, state=record.state,
            created_at=record.created_at, network=network,
            linux=cri.LinuxPodSandboxStatus(
                namespaces=cri.Namespace(options=namespace_options(record))),
            labels=dict(record.labels), annotations=dict(record.annotations),
            runtime_handler=record.runtime_handler)
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps(self._info(record), sort_keys=True)
        return cri.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())

    @staticmethod
    def _info(record: SandboxRecord) -> dict[str, Any]:
        extra = record.extra
        return {
            "id": record.id, "name": record.name, "sandboxDir": record.sandbox_dir,
            "namespaces": dict(record.namespaces), "hostname": record.hostname,
            "network": {"name": record.network_name, "ip": record.ip,
                        "additionalIPs": list(record.additional_ips),
                        "portMappings": extra.get("port_mappings", []),
                        "attached": not extra.get("network_down", False)},
            "logDirectory": record.log_directory, "cgroupParent": record.cgroup_parent,
            "shmPath": record.shm_path, "sysctls": extra.get("sysctls", {}),
            "runtimeHandler": record.runtime_handler, "config": cri_to_json(record.config),
            "infraProcess": extra.get("pid_holder"),
        }

    def list_pod_sandbox(self, request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse:
        """ListPodSandbox: every sandbox, or those the filter's id (or id prefix), state
        and labels all match."""
        wanted = request.filter
        items = []
        for record in self.state.sandboxes():
            if _creating(record):
                continue
            if wanted is not None:
                if wanted.id and not record.id.startswith(wanted.id):
                    continue
                if wanted.state is not None and record.state != wanted.state.state:
                    continue
                if any(record.labels.get(k) != v for k, v in wanted.label_selector.items()):
                    continue
            items.append(cri.PodSandbox(
                id=record.id, metadata=record.metadata, state=record.state,
                created_at=record.created_at, labels=dict(record.labels),
                annotations=dict(record.annotations), runtime_handler=record.runtime_handler))
        return cri.ListPodSandboxResponse(items=items)

    # -- restart ------------------------------------------------------------------------

    def _lost(self, record: SandboxRecord) -> str:
        """What a READY sandbox lost while the service was down ("" when nothing)."""
        holder = record.extra.get("pid_holder")
        if holder is not None and not (isinstance(holder, dict) and holder_alive(holder)):
            return f"its PID namespace holder {record.namespaces.get('pid', '')}"
        for kind, path in record.namespaces.items():
            if kind == "pid":
                continue
            try:
                PinnedNamespace.open(path, kind)
            except NetNSError as exc:
                return f"its {kind} namespace {path} ({exc})"
        if record.shm_path and record.shm_path != _HOST_SHM \
                and not is_mountpoint(Path(record.shm_path)):
            return f"its shm mount {record.shm_path}"
        return ""

    def close(self) -> None:
        """Undo the shared mounts of empty pin directories under a namespaces dir of the
        service's own (``Config.for_root`` and the like), so nothing stays mounted. The
        system's /run and /var/run are left alone: other programs pin there too, and a
        pin made between our check and the unmount would be detached with it."""
        if self.namespaces_dir.resolve() in _SYSTEM_NS_DIRS:
            return
        try:
            release_pin_dirs(self.namespaces_dir)
        except NetNSError as exc:
            log.warning("releasing pin directories under %s: %s", self.namespaces_dir, exc)

    def recover(self) -> None:
        """After a restart: clean half-made sandboxes, restore names, and mark READY
        sandboxes that lost their namespaces or shm (a reboot, a hand) NOTREADY."""
        for record in self.state.sandboxes():
            what = _describe(record)
            if _creating(record):
                try:
                    self._teardown(record, what)
                    self._forget(record, what)
                except ServiceError as exc:
                    log.error("%s: cannot clean a RunPodSandbox cut short: %s", what, exc)
                    continue
                self.names.release(record.name, record.id)
                log.warning("%s: RunPodSandbox was cut short by the last stop; cleaned", what)
                continue
            self.names.restore([(record.name, record.id)])
            if record.state == _READY:
                lost = self._lost(record)
                if lost:
                    log.warning("%s: lost %s while the service was down; NOTREADY", what, lost)
                    self.state.update_sandbox(record.id, state=_NOTREADY)
        self.network.gc({r.id for r in self.state.sandboxes()})
