"""CreateContainer, StartContainer, StopContainer, RemoveContainer, and recovery.

CRI v1 (kubernetes/cri-api api.proto) as CRI-O's ``server/container_{create,start,
stop,remove}.go`` serve it, over criolib.storage (the rootfs), criolib.runtime_spec
(the spec, the runtime) and criolib.conmon (the monitor, grouped by sandbox):

- **create**: the name ``k8s_<name>_<pod>_<namespace>_<uid>_<attempt>`` is reserved
  with a digest of the request as key (an identical retry while the first is in
  flight gets its answer); the image is resolved in storage, a storage container made
  on it (its id is the container's) and mounted; the spec is built
  (:mod:`criolib.service._spec`) and saved in ``store.container_dir(id)``; the monitor
  runs the runtime's ``create``; the record is saved CREATED. Any failure undoes every
  step (monitor, runtime, mount, storage container, name) and raises naming the
  container and the cause.
- **stop**: the stop signal (the CRI's, the image's, or SIGTERM), ``timeout`` seconds,
  then SIGKILL (to every process when the pid namespace is the host's); idempotent.
- **remove**: idempotent (an unknown id is success, as in CRI-O); stops a running
  container at once, deletes it from the runtime and the monitor, removes the storage
  container (and its mount) and the record, and frees the name.
- :meth:`ContainerManager.recover`: after a restart, records are refreshed (exits that
  happened meanwhile recorded, containers whose monitor is gone asked of the runtime),
  lost rootfs mounts made again, and what a crash left half-made removed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from criolib.conmon import (
    ContainerConfig,
    CreateFailed,
    Monitor,
    MonitorError,
    MonitorGone,
    UnknownContainer,
)
from criolib.errors import CriolibError
from criolib.runtime_spec import (
    STATUS_CREATED,
    STATUS_RUNNING,
    ContainerNotFound,
    RuntimeClient,
    RuntimeCommandError,
    RuntimeSpecError,
)
from criolib.service import _cri_types as cri
from criolib.service._container_ops import ContainerBase
from criolib.service._errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidRequest,
    NotFound,
    ServiceError,
)
from criolib.service._images_lookup import split_names
from criolib.service._spec import build_spec
from criolib.service._state import ContainerRecord, SandboxRecord, cri_to_json
from criolib.storage import ContainerUnknown, NameConflict, StorageError

__all__ = ["KILL_WAIT", "ContainerManager", "container_name"]

log = logging.getLogger("criolib.service")

#: Seconds to wait for a container to exit after SIGKILL before giving up.
KILL_WAIT = 30.0

State = cri.ContainerState


def container_name(config: cri.ContainerConfig, sandbox: SandboxRecord) -> str:
    """CRI-O's container name: ``k8s_<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>``."""
    meta = config.metadata or cri.ContainerMetadata()
    pod = sandbox.metadata
    return f"k8s_{meta.name}_{pod.name}_{pod.namespace}_{pod.uid}_{meta.attempt}"


def _request_key(request: cri.CreateContainerRequest) -> str:
    data = json.dumps(cri_to_json(request), sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()


def _create_error(name: str, exc: BaseException) -> BaseException:
    """The exception CreateContainer raises for ``exc``: a ServiceError naming both."""
    prefix = f"CreateContainer {name}"
    if isinstance(exc, ServiceError):
        try:
            return type(exc)(f"{prefix}: {exc}")
        except TypeError:
            return exc
    if isinstance(exc, CreateFailed):
        return ServiceError(f"{prefix}: the runtime could not create it: {exc}")
    if isinstance(exc, CriolibError | OSError):
        cls = InvalidRequest if isinstance(exc, ValueError) else ServiceError
        return cls(f"{prefix}: {exc}")
    if isinstance(exc, Exception):
        return Internal(f"{prefix}: {type(exc).__name__}: {exc}")
    return exc


class ContainerManager(ContainerBase):
    """The container RPCs of the CRI RuntimeService (see the module docstring).

    Built by the facade with the service's config, records, container names, storage,
    ImageService and sandbox manager (anything with ``sandbox(ref) -> SandboxRecord``).
    Safe to call from many threads: each container has its own lock.
    """

    # -- CreateContainer ---------------------------------------------------------------

    def create_container(
            self, request: cri.CreateContainerRequest) -> cri.CreateContainerResponse:
        config = request.config
        if config is None:
            raise InvalidRequest("CreateContainer: config is missing")
        if config.metadata is None or not config.metadata.name:
            raise InvalidRequest("CreateContainer: config.metadata.name is required")
        if config.image is None or not config.image.image:
            raise InvalidRequest(f"CreateContainer {config.metadata.name}: config.image.image "
                                 "is required")
        if not request.pod_sandbox_id:
            raise InvalidRequest(f"CreateContainer {config.metadata.name}: pod_sandbox_id "
                                 "is required")
        guard = getattr(self.sandboxes, "guard", None)
        # Stop/RemovePodSandbox hold the sandbox exclusively: none runs during the create.
        hold = (guard(request.pod_sandbox_id) if guard is not None
                else contextlib.nullcontext())
        with hold:
            return self._create_in(request, config)

    def _create_in(self, request: cri.CreateContainerRequest,
                   config: cri.ContainerConfig) -> cri.CreateContainerResponse:
        assert config.metadata is not None
        try:
            sandbox = self.sandboxes.sandbox(request.pod_sandbox_id)
        except NotFound:
            raise NotFound(f"CreateContainer {config.metadata.name}: sandbox "
                           f"{request.pod_sandbox_id!r} not found") from None
        if sandbox.state != cri.PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f"CreateContainer {config.metadata.name}: sandbox "
                                     f"{sandbox.id} is not ready ({sandbox.state.name})")
        name = container_name(config, sandbox)
        reservation = self.names.reserve(name, _request_key(request))
        if not reservation.owner:
            if isinstance(reservation.result, cri.CreateContainerResponse):
                return reservation.result
            return cri.CreateContainerResponse(container_id=reservation.holder or "")
        try:
            container_id = self._create(name, sandbox, config)
        except BaseException:
            reservation.release()
            raise
        response = cri.CreateContainerResponse(container_id=container_id)
        reservation.complete(container_id, response)
        log.info("created container %s (%s) in sandbox %s", container_id[:12], name,
                 sandbox.id[:12])
        return response

    def _log_path(self, sandbox: SandboxRecord, config: cri.ContainerConfig) -> str:
        if not config.log_path:
            return ""
        directory = sandbox.log_directory or os.path.join(self.config.runtime.log_dir,
                                                          sandbox.id)
        path = os.path.join(directory, config.log_path)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return path

    def _storage_container(self, image_id: str, name: str, container_id: str) -> None:
        try:
            self.store.create_container(image_id, names=[name], id=container_id)
            return
        except NameConflict:
            stale = self.store.container(name)
        if any(r.id == stale.id for r in self.state.containers()):
            raise AlreadyExists(f"container name {name!r} is held by container {stale.id}")
        log.warning("removing storage container %s left with name %s by an earlier run",
                    stale.id[:12], name)
        self.store.delete_container(stale.id)
        self.store.create_container(image_id, names=[name], id=container_id)

    def _create(self, name: str, sandbox: SandboxRecord, config: cri.ContainerConfig) -> str:
        cid = secrets.token_hex(32)
        undo: list[Callable[[], None]] = []
        assert config.image is not None
        try:
            image = self.images.resolve_image(config.image.image)
            image_config = self.images.image_config(image.id)
            self._storage_container(image.id, name, cid)
            undo.append(lambda: self._delete_storage(cid))
            rootfs = self.store.mount(cid)
            bundle = self.store.container_dir(cid)
            log_path = self._log_path(sandbox, config)
            built = build_spec(container_id=cid, config=self.config, request=config,
                               sandbox=sandbox, image_config=image_config, rootfs=rootfs,
                               log_path=log_path)
            built.generator.save(bundle)
            handler = sandbox.runtime_handler or self.config.runtime.default_runtime
            runtime = self.runtime(handler)
            monitor = self.monitor
            undo.append(lambda: self._drop_runtime(runtime, monitor, cid))
            created = monitor.create(ContainerConfig(
                container_id=cid, bundle=bundle, runtime=runtime,
                exit_dir=Path(self.config.runtime.container_exits_dir).absolute(),
                log_path=log_path or None, terminal=config.tty, stdin=config.stdin,
                stdin_once=config.stdin and config.stdin_once,
                log_size_max=self.config.runtime.log_size_max, group=sandbox.id,
                no_pivot=self.config.runtime.no_pivot))
            _, digests = split_names(image)
            self.state.put(ContainerRecord(
                id=cid, name=name, sandbox_id=sandbox.id, config=copy.deepcopy(config),
                created_at=time.time_ns(), state=State.CONTAINER_CREATED,
                image_ref=config.image.image, image_id=image.id,
                image_name=image.names[0] if image.names else "", log_path=log_path,
                runtime_handler=handler, monitor_backend=monitor.name, bundle=str(bundle),
                rootfs=str(rootfs), mounts=built.mounts, pid=created.pid,
                stop_signal=built.stop_signal,
                extra={"repo_digest": digests[0] if digests else "",
                       "user": {"uid": built.user.uid, "gid": built.user.gid,
                                "supplemental_groups": list(built.user.supplemental_groups)},
                       "privileged": built.privileged, "pid_host": built.pid_host,
                       "monitor_pid": created.monitor_pid}))
        except BaseException as exc:
            for step in reversed(undo):
                try:
                    step()
                except (CriolibError, OSError) as undo_exc:
                    log.error("CreateContainer %s: undoing a step failed: %s", name, undo_exc)
            error = _create_error(name, exc)
            if error is exc:
                raise
            raise error from exc
        return cid

    def _drop_runtime(self, runtime: RuntimeClient, monitor: Monitor, cid: str) -> None:
        with contextlib.suppress(ContainerNotFound):
            runtime.delete(cid, force=True)
        with contextlib.suppress(UnknownContainer, MonitorGone):
            monitor.wait(cid, timeout=KILL_WAIT)
        with contextlib.suppress(UnknownContainer):
            monitor.forget(cid)
        self.remove_exit_file(cid)

    def _delete_storage(self, cid: str) -> None:
        with contextlib.suppress(ContainerUnknown):
            self.store.delete_container(cid)

    # -- StartContainer -----------------------------------------------------------------

    def start_container(
            self, request: cri.StartContainerRequest) -> cri.StartContainerResponse:
        record = self.find(request.container_id, "StartContainer")
        with self.locked(record.id):
            record = self.refresh(self.state.container(record.id))
            if record.state != State.CONTAINER_CREATED:
                raise FailedPrecondition(f"StartContainer: container {record.id} is "
                                         f"{record.state.name}, not CONTAINER_CREATED")
            try:
                self.runtime(record.runtime_handler).start(record.id)
            except RuntimeSpecError as exc:
                raise ServiceError(f"StartContainer: container {record.id} ({record.name}): "
                                   f"{exc}") from exc
            self.state.update_container(record.id, state=State.CONTAINER_RUNNING,
                                        started_at=time.time_ns())
        return cri.StartContainerResponse()

    # -- StopContainer ------------------------------------------------------------------

    def stop_container(self, request: cri.StopContainerRequest) -> cri.StopContainerResponse:
        if not request.container_id:
            raise InvalidRequest("StopContainer: container_id is empty")
        try:
            record = self.state.container(request.container_id)
        except NotFound:
            # api.proto: StopContainer is idempotent; CRI-O answers an unknown id with
            # success (cri-tools "StopContainer should not return an error if not found").
            log.info("StopContainer: container %s is not known: nothing to do",
                     request.container_id)
            return cri.StopContainerResponse()
        self._stop(record, request.timeout)
        return cri.StopContainerResponse()

    def _kill(self, record: ContainerRecord, signal: str, *, every: bool = False) -> None:
        try:
            self.runtime(record.runtime_handler).kill(record.id, signal, all=every)
        except ContainerNotFound:
            pass
        except RuntimeCommandError as exc:
            # Already stopped between our look and the kill: the wait tells.
            log.debug("container %s: kill %s: %s", record.id, signal, exc)

    def _wait(self, record: ContainerRecord, timeout: float) -> ContainerRecord | None:
        try:
            status = self.monitor_for(record).wait(record.id, timeout=timeout)
        except (MonitorGone, UnknownContainer):
            refreshed = self.refresh(record)
            return refreshed if refreshed.state == State.CONTAINER_EXITED else None
        except MonitorError as exc:
            raise ServiceError(f"StopContainer: container {record.id}: waiting for it "
                               f"failed: {exc}") from exc
        return None if status is None else self.record_exit(record, status)

    def _stop(self, record: ContainerRecord, timeout: int) -> ContainerRecord:
        with self.locked(record.id):
            record = self.refresh(self.state.container(record.id))
            if record.state == State.CONTAINER_EXITED:
                return record
            # A created container's init waits for start, as pid 1 of its namespace that
            # ignores SIGTERM: no grace period to sit out (containerd returns at once too).
            if timeout > 0 and record.state != State.CONTAINER_CREATED:
                self._kill(record, record.stop_signal or "SIGTERM")
                done = self._wait(record, timeout)
                if done is not None:
                    return done
                log.info("container %s did not stop within %d s of %s: SIGKILL", record.id,
                         timeout, record.stop_signal or "SIGTERM")
            self._kill(record, "SIGKILL", every=bool(record.extra.get("pid_host")))
            done = self._wait(record, KILL_WAIT)
            if done is None:
                raise DeadlineExceeded(f"StopContainer: container {record.id} did not exit "
                                       f"within {KILL_WAIT:.0f} s of SIGKILL")
            return done

    def stop_all(self, sandbox_id: str, timeout: int) -> None:
        """Stop every container of a sandbox at once (StopPodSandbox); the first error
        is raised after all were tried."""
        errors: list[BaseException] = []

        def stop(record: ContainerRecord) -> None:
            try:
                self._stop(record, timeout)
            except (NotFound, ServiceError) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=stop, args=(r,), daemon=True)
                   for r in self.state.containers(sandbox_id)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    # -- RemoveContainer ----------------------------------------------------------------

    def remove_container(
            self, request: cri.RemoveContainerRequest) -> cri.RemoveContainerResponse:
        if not request.container_id:
            raise InvalidRequest("RemoveContainer: container_id is empty")
        try:
            record = self.state.container(request.container_id)
        except NotFound:
            log.info("RemoveContainer: container %s is not known: nothing to do",
                     request.container_id)
            return cri.RemoveContainerResponse()
        self._remove(record)
        return cri.RemoveContainerResponse()

    def _remove(self, record: ContainerRecord) -> None:
        with self.locked(record.id):
            try:
                record = self.state.container(record.id)
            except NotFound:
                return
            if record.state != State.CONTAINER_EXITED:
                record = self._stop(record, 0)
            try:
                self._drop_runtime(self.runtime(record.runtime_handler),
                                   self.monitor_for(record), record.id)
                self._delete_storage(record.id)
            except (RuntimeSpecError, MonitorError, StorageError) as exc:
                raise ServiceError(f"RemoveContainer: container {record.id} "
                                   f"({record.name}): {exc}") from exc
            self.state.delete_container(record.id)
            self.names.release(record.name, record.id)
        self.forget_lock(record.id)
        log.info("removed container %s (%s)", record.id[:12], record.name)

    def remove_all(self, sandbox_id: str) -> None:
        """Remove every container of a sandbox (RemovePodSandbox); the first error is
        raised after all were tried."""
        first: ServiceError | None = None
        for record in self.state.containers(sandbox_id):
            try:
                self._remove(record)
            except ServiceError as exc:
                log.error("RemovePodSandbox %s: %s", sandbox_id, exc)
                first = first or exc
        if first is not None:
            raise first

    # -- restart --------------------------------------------------------------------------

    def recover(self) -> None:
        """Bring the records in line with what happened while the service was down.

        Names are restored; running containers stay RUNNING (a CREATED one the runtime
        says runs becomes RUNNING); exits are recorded; a container whose monitor is
        gone is EXITED with reason ``Error`` when the runtime says it stopped; lost
        rootfs mounts are made again; storage containers, runtime containers and
        monitor records that no record names (a crash inside CreateContainer) go.
        """
        records = self.state.containers()
        self.names.restore((r.name, r.id) for r in records)
        for record in records:
            try:
                self._recover_one(record)
            except (CriolibError, OSError) as exc:
                log.error("recovering container %s: %s", record.id, exc)
        self._remove_orphans({r.id for r in records})

    def _recover_one(self, record: ContainerRecord) -> None:
        record = self.refresh(record)
        if record.state == State.CONTAINER_CREATED:
            try:
                status = self.runtime(record.runtime_handler).state(record.id).status
            except RuntimeSpecError:
                status = STATUS_CREATED
            if status == STATUS_RUNNING:
                record = self.state.update_container(
                    record.id, state=State.CONTAINER_RUNNING,
                    started_at=record.started_at or time.time_ns())
        try:
            if self.store.mounted(record.id) == 0:
                log.info("container %s: mounting its root filesystem again", record.id[:12])
                self.store.mount(record.id)
        except StorageError as exc:
            log.warning("container %s: its storage is not usable: %s", record.id, exc)

    def _remove_orphans(self, known: set[str]) -> None:
        sandbox_ids = {s.id for s in self.state.sandboxes()}
        try:
            stored = self.store.containers()
        except StorageError as exc:
            log.warning("listing storage containers: %s", exc)
            stored = []
        for ctr in stored:
            if ctr.id in known or ctr.id in sandbox_ids:
                continue
            if not any(n.startswith("k8s_") for n in ctr.names):
                continue
            log.warning("removing half-made container %s (%s)", ctr.id[:12],
                        ", ".join(ctr.names))
            self._drop_orphan(ctr.id)
            with contextlib.suppress(StorageError):
                self._delete_storage(ctr.id)

    def _drop_orphan(self, cid: str) -> None:
        """A half-made container's runtime state, whatever handler made it: no record
        names the handler, so every configured handler's runtime root is asked."""
        dropped = False
        for handler in self.config.runtime.runtimes:
            try:
                runtime = self.runtime(handler)
                runtime.state(cid)
            except (ContainerNotFound, ServiceError):
                continue
            except RuntimeSpecError as exc:
                log.debug("half-made container %s: runtime %s: %s", cid[:12], handler, exc)
                continue
            with contextlib.suppress(RuntimeSpecError, MonitorError, ServiceError):
                self._drop_runtime(runtime, self.monitor, cid)
                dropped = True
        if not dropped:  # no runtime has it: the monitor may still hold a record
            with contextlib.suppress(UnknownContainer, MonitorError):
                self.monitor.forget(cid)
            self.remove_exit_file(cid)

    def close(self) -> None:
        """Let go of the runtime clients' scratch space; containers keep running."""
        with self._lock:
            clients = list(self._runtimes.values())
            self._runtimes.clear()
        for client in clients:
            client.close()
