"""The CRI facade: one snake_case method per RPC of RuntimeService and ImageService.

CRI v1 (kubernetes/cri-api pkg/apis/runtime/v1/api.proto). Each method takes the
request class of :mod:`criolib.service._cri_types` and returns the response class;
the gRPC endpoint (:mod:`criolib.service._grpc`) calls them through
:data:`RPC_METHODS`. The work is done by the managers the facade builds at
:meth:`CRIService.start`: the image side (``_images.ImageService``), sandboxes
(``_sandbox.SandboxManager``) and containers (``_container.ContainerManager``, which
the sandbox manager gets as its ``containers``); each is recovered at start (sandboxes
first) and closed by :meth:`CRIService.close`.

Every RPC that reaches a manager counts as in flight while it runs: once
:meth:`CRIService.close` begins, new ones are refused (:class:`Unavailable`) and the
close waits for those in flight (at most :data:`CLOSE_WAIT` seconds) before it lets go
of the storage and the records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import attrs

import criolib
from criolib.service import _cri_types as cri
from criolib.service._config import Config
from criolib.service._errors import (
    ConfigError,
    ServiceError,
    Unavailable,
    Unimplemented,
)
from criolib.service._state import NameRegistry, StateStore

if TYPE_CHECKING:
    from criolib.service._container import ContainerManager
    from criolib.service._sandbox import SandboxManager
    from criolib.storage import Store

__all__ = [
    "CLOSE_WAIT",
    "CRI_API_VERSION",
    "IMAGE_RPCS",
    "KUBELET_API_VERSION",
    "RPC_METHODS",
    "RUNTIME_NAME",
    "RUNTIME_RPCS",
    "CRIService",
    "ContainerOps",
    "ImageOps",
    "SandboxOps",
]

log = logging.getLogger("criolib.service")

RUNTIME_NAME = "criolib"
#: VersionResponse.runtime_api_version: the CRI version served.
CRI_API_VERSION = "v1"
#: VersionResponse.version: the kubelet runtime API version (CRI-O and containerd say 0.1.0).
KUBELET_API_VERSION = "0.1.0"

#: Seconds :meth:`CRIService.close` waits for the calls in flight to end.
CLOSE_WAIT = 30.0

#: The RPCs of runtime.v1.RuntimeService, in the descriptor's order.
RUNTIME_RPCS: tuple[str, ...] = (
    "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
    "ListPodSandbox", "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer",
    "ListContainers", "ContainerStatus", "UpdateContainerResources", "ReopenContainerLog",
    "ExecSync", "Exec", "Attach", "PortForward", "ContainerStats", "ListContainerStats",
    "PodSandboxStats", "ListPodSandboxStats", "UpdateRuntimeConfig", "Status",
    "CheckpointContainer", "GetContainerEvents", "ListMetricDescriptors",
    "ListPodSandboxMetrics", "RuntimeConfig", "UpdatePodSandboxResources",
)
#: The RPCs of runtime.v1.ImageService.
IMAGE_RPCS: tuple[str, ...] = (
    "ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo",
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


#: CRI method name -> :class:`CRIService` method name, for every RPC of both services.
RPC_METHODS: dict[str, str] = {name: _snake(name) for name in RUNTIME_RPCS + IMAGE_RPCS}


class ImageOps(Protocol):
    """What the facade asks of the image side (``_images.ImageService``)."""

    def list_images(self, request: cri.ListImagesRequest) -> cri.ListImagesResponse: ...
    def image_status(self, request: cri.ImageStatusRequest) -> cri.ImageStatusResponse: ...
    def pull_image(self, request: cri.PullImageRequest) -> cri.PullImageResponse: ...
    def remove_image(self, request: cri.RemoveImageRequest) -> cri.RemoveImageResponse: ...
    def image_fs_info(self, request: cri.ImageFsInfoRequest) -> cri.ImageFsInfoResponse: ...


class SandboxOps(Protocol):
    """What the facade asks of ``_sandbox.SandboxManager(service)``."""

    def run_pod_sandbox(
        self, request: cri.RunPodSandboxRequest) -> cri.RunPodSandboxResponse: ...
    def stop_pod_sandbox(
        self, request: cri.StopPodSandboxRequest) -> cri.StopPodSandboxResponse: ...
    def remove_pod_sandbox(
        self, request: cri.RemovePodSandboxRequest) -> cri.RemovePodSandboxResponse: ...
    def pod_sandbox_status(
        self, request: cri.PodSandboxStatusRequest) -> cri.PodSandboxStatusResponse: ...
    def list_pod_sandbox(
        self, request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse: ...


class ContainerOps(Protocol):
    """What the facade asks of ``_container.ContainerManager(service)``."""

    def create_container(
        self, request: cri.CreateContainerRequest) -> cri.CreateContainerResponse: ...
    def start_container(
        self, request: cri.StartContainerRequest) -> cri.StartContainerResponse: ...
    def stop_container(
        self, request: cri.StopContainerRequest) -> cri.StopContainerResponse: ...
    def remove_container(
        self, request: cri.RemoveContainerRequest) -> cri.RemoveContainerResponse: ...
    def list_containers(
        self, request: cri.ListContainersRequest) -> cri.ListContainersResponse: ...
    def container_status(
        self, request: cri.ContainerStatusRequest) -> cri.ContainerStatusResponse: ...
    def update_container_resources(
        self, request: cri.UpdateContainerResourcesRequest
    ) -> cri.UpdateContainerResourcesResponse: ...
    def reopen_container_log(
        self, request: cri.ReopenContainerLogRequest) -> cri.ReopenContainerLogResponse: ...
    def exec_sync(self, request: cri.ExecSyncRequest) -> cri.ExecSyncResponse: ...


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class CRIService:
    """The CRI RuntimeService and ImageService of one :class:`Config`, in process.

    :meth:`start` opens the storage (``criolib.storage.Store`` on ``root`` /
    ``runroot`` / ``storage_driver`` / ``storage_option``), the records under
    ``state_dir`` and the managers, and recovers what a previous run left;
    :meth:`close` lets go of them. Containers keep running across a close: their
    monitors own them. Use as a context manager. Safe to call from many threads.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._started = False
        #: guards ``_active`` and ``_closing``; notified when a call ends
        self._calls = threading.Condition()
        self._active = 0
        self._closing = False
        self._store: Store | None = None
        self._state: StateStore | None = None
        self.sandbox_names = NameRegistry("sandbox")
        self.container_names = NameRegistry("container")
        self.images: ImageOps | None = None
        self.sandboxes: SandboxOps | None = None
        self.containers: ContainerOps | None = None
        #: UpdateRuntimeConfig's pod CIDR (kept; CNI configs carry their own ranges).
        self.pod_cidr = ""

    def __repr__(self) -> str:
        return f"CRIService(root={str(self.config.root)!r}, started={self._started})"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> CRIService:
        """Open storage, records and managers; recover the previous run's objects."""
        with self._lock:
            if self._started:
                return self
            from criolib.storage import StorageError, Store

            cfg = self.config
            try:
                self._store = Store(cfg.root, cfg.runroot, cfg.storage_driver,
                                    cfg.storage_option)
            except StorageError as exc:
                raise ServiceError(f"cannot open the storage at {cfg.root} "
                                   f"({cfg.storage_driver}): {exc}") from exc
            try:
                self._state = StateStore(cfg.state_dir)
                self.sandbox_names.restore((r.name, r.id) for r in self.state.sandboxes())
                self.container_names.restore((r.name, r.id) for r in self.state.containers())
                sandboxes, containers = self._build_managers()
                sandboxes.recover()
                containers.recover()
            except BaseException:
                self._close_parts()
                raise
            self._started = True
            log.info("CRI service started: storage %s (%s), state %s", cfg.root,
                     cfg.storage_driver, cfg.state_dir)
        return self

    def _build_managers(self) -> tuple[SandboxManager, ContainerManager]:
        from criolib.service._container import ContainerManager
        from criolib.service._images import ImageService
        from criolib.service._sandbox import SandboxManager

        cfg = self.config
        images = ImageService(cfg, self.store)
        self.images = images
        sandboxes = SandboxManager(config=cfg, state=self.state, names=self.sandbox_names,
                                   namespaces_dir=cfg.runtime.namespaces_dir)
        self.sandboxes = sandboxes
        containers = ContainerManager(config=cfg, state=self.state,
                                      names=self.container_names, store=self.store,
                                      images=images, sandboxes=sandboxes)
        self.containers = containers
        sandboxes.containers = containers
        return sandboxes, containers

    def _close_parts(self) -> None:
        for part in (self.containers, self.sandboxes, self.images):
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except ServiceError as exc:
                    log.warning("closing %s: %s", type(part).__name__, exc)
        self.containers = self.sandboxes = self.images = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self._state = None

    def close(self) -> None:
        """Let go of storage and records (mounts and containers stay); idempotent.

        New calls are refused from now on (:class:`Unavailable`); calls in flight are
        waited for, at most :data:`CLOSE_WAIT` seconds (then the parts are closed under
        them, logged).
        """
        with self._lock:
            if not self._started:
                return
            with self._calls:
                self._closing = True
                deadline = time.monotonic() + CLOSE_WAIT
                while self._active and time.monotonic() < deadline:
                    self._calls.wait(deadline - time.monotonic())
                if self._active:
                    log.warning("closing the CRI service with %d call(s) still in flight "
                                "after %.0f s", self._active, CLOSE_WAIT)
            self._started = False
            try:
                self._close_parts()
            finally:
                with self._calls:
                    self._closing = False
            log.info("CRI service closed")

    @contextlib.contextmanager
    def _in_flight(self, rpc: str) -> Iterator[None]:
        """Count the call as in flight; refuse it when not started or closing."""
        with self._calls:
            if self._closing:
                raise Unavailable(f"{rpc}: the CRI service is closing")
            if not self._started:
                raise Unavailable(f"{rpc}: the CRI service is not started (call start() or "
                                  "use it as a context manager)")
            self._active += 1
        try:
            yield
        finally:
            with self._calls:
                self._active -= 1
                self._calls.notify_all()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def store(self) -> Store:
        """The storage (open between :meth:`start` and :meth:`close`)."""
        if self._store is None:
            raise Unavailable("the CRI service is not started: its storage is closed")
        return self._store

    @property
    def state(self) -> StateStore:
        """The sandbox and container records (between :meth:`start` and :meth:`close`)."""
        if self._state is None:
            raise Unavailable("the CRI service is not started: its records are closed")
        return self._state

    def __enter__(self) -> CRIService:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def call(self, rpc: str, request: Any) -> Any:
        """Run the RPC named ``rpc`` (``"RunPodSandbox"``) with its request object."""
        method = RPC_METHODS.get(rpc)
        if method is None:
            raise Unimplemented(f"unknown CRI method {rpc!r}")
        return getattr(self, method)(request)

    # -- delegation ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _image_ops(self, rpc: str) -> Iterator[ImageOps]:
        with self._in_flight(rpc):
            if self.images is None:
                raise Unavailable(f"{rpc}: the CRI service's image side is closed")
            yield self.images

    @contextlib.contextmanager
    def _sandbox_ops(self, rpc: str) -> Iterator[SandboxOps]:
        with self._in_flight(rpc):
            if self.sandboxes is None:
                raise Unavailable(f"{rpc}: the CRI service's sandbox side is closed")
            yield self.sandboxes

    @contextlib.contextmanager
    def _container_ops(self, rpc: str) -> Iterator[ContainerOps]:
        with self._in_flight(rpc):
            if self.containers is None:
                raise Unavailable(f"{rpc}: the CRI service's container side is closed")
            yield self.containers

    # -- RuntimeService: runtime --------------------------------------------------------

    def version(self, request: cri.VersionRequest) -> cri.VersionResponse:
        """Version: criolib's name and version, CRI ``v1``."""
        return cri.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                   runtime_version=criolib.__version__,
                                   runtime_api_version=CRI_API_VERSION)

    def _runtime_condition(self) -> cri.RuntimeCondition:
        problem = ""
        if not self._started:
            problem = "the CRI service is not started"
        else:
            try:
                self.config.runtime.handler().resolved_path()
            except ConfigError as exc:
                problem = str(exc)
        return cri.RuntimeCondition(type="RuntimeReady", status=not problem,
                                    reason="RuntimeNotReady" if problem else "",
                                    message=problem)

    def _network_condition(self) -> cri.RuntimeCondition:
        from criolib.cni import load_networks

        net = self.config.network
        wanted = net.cni_default_network or None
        found = load_networks(net.network_dir, default_name=wanted)
        if wanted is not None and wanted not in found.networks:
            problem = f"CNI network {wanted!r} not found in {net.network_dir}"
        elif found.default_network() is None:
            problem = f"no CNI network configuration in {net.network_dir}"
            if found.errors:
                problem += " (" + "; ".join(str(e) for e in found.errors.values()) + ")"
        else:
            problem = ""
        return cri.RuntimeCondition(type="NetworkReady", status=not problem,
                                    reason="NetworkPluginNotReady" if problem else "",
                                    message=problem)

    def status(self, request: cri.StatusRequest) -> cri.StatusResponse:
        """Status: RuntimeReady (started, default runtime found) and NetworkReady (a CNI
        network config loads from ``network_dir``); ``verbose`` adds the config as JSON."""
        conditions = [self._runtime_condition(), self._network_condition()]
        info: dict[str, str] = {}
        if request.verbose:
            info["config"] = json.dumps(_jsonable(attrs.asdict(self.config)), sort_keys=True)
            info["podCIDR"] = self.pod_cidr
        handlers = [cri.RuntimeHandler(name=name, features=cri.RuntimeHandlerFeatures())
                    for name in sorted(self.config.runtime.runtimes)]
        return cri.StatusResponse(status=cri.RuntimeStatus(conditions=conditions), info=info,
                                  runtime_handlers=handlers, features=cri.RuntimeFeatures())

    def runtime_config(self, request: cri.RuntimeConfigRequest) -> cri.RuntimeConfigResponse:
        """RuntimeConfig: the cgroup driver (cgroupfs, the only one here)."""
        return cri.RuntimeConfigResponse(linux=cri.LinuxRuntimeConfiguration(
            cgroup_driver=cri.CgroupDriver.CGROUPFS))

    def update_runtime_config(
        self, request: cri.UpdateRuntimeConfigRequest
    ) -> cri.UpdateRuntimeConfigResponse:
        """UpdateRuntimeConfig: the pod CIDR is kept (CNI configs carry their ranges)."""
        network = request.runtime_config.network_config if request.runtime_config else None
        if network is not None and network.pod_cidr != self.pod_cidr:
            log.info("pod CIDR set to %r", network.pod_cidr)
            self.pod_cidr = network.pod_cidr
        return cri.UpdateRuntimeConfigResponse()

    # -- RuntimeService: sandboxes -------------------------------------------------------

    def run_pod_sandbox(self, request: cri.RunPodSandboxRequest) -> cri.RunPodSandboxResponse:
        with self._sandbox_ops("RunPodSandbox") as ops:
            return ops.run_pod_sandbox(request)

    def stop_pod_sandbox(
            self, request: cri.StopPodSandboxRequest) -> cri.StopPodSandboxResponse:
        with self._sandbox_ops("StopPodSandbox") as ops:
            return ops.stop_pod_sandbox(request)

    def remove_pod_sandbox(
            self, request: cri.RemovePodSandboxRequest) -> cri.RemovePodSandboxResponse:
        with self._sandbox_ops("RemovePodSandbox") as ops:
            return ops.remove_pod_sandbox(request)

    def pod_sandbox_status(
            self, request: cri.PodSandboxStatusRequest) -> cri.PodSandboxStatusResponse:
        with self._sandbox_ops("PodSandboxStatus") as ops:
            return ops.pod_sandbox_status(request)

    def list_pod_sandbox(
            self, request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse:
        with self._sandbox_ops("ListPodSandbox") as ops:
            return ops.list_pod_sandbox(request)

    # -- RuntimeService: containers ------------------------------------------------------

    def create_container(
            self, request: cri.CreateContainerRequest) -> cri.CreateContainerResponse:
        with self._container_ops("CreateContainer") as ops:
            return ops.create_container(request)

    def start_container(
            self, request: cri.StartContainerRequest) -> cri.StartContainerResponse:
        with self._container_ops("StartContainer") as ops:
            return ops.start_container(request)

    def stop_container(self, request: cri.StopContainerRequest) -> cri.StopContainerResponse:
        with self._container_ops("StopContainer") as ops:
            return ops.stop_container(request)

    def remove_container(
            self, request: cri.RemoveContainerRequest) -> cri.RemoveContainerResponse:
        with self._container_ops("RemoveContainer") as ops:
            return ops.remove_container(request)

    def list_containers(
            self, request: cri.ListContainersRequest) -> cri.ListContainersResponse:
        with self._container_ops("ListContainers") as ops:
            return ops.list_containers(request)

    def container_status(
            self, request: cri.ContainerStatusRequest) -> cri.ContainerStatusResponse:
        with self._container_ops("ContainerStatus") as ops:
            return ops.container_status(request)

    def update_container_resources(
        self, request: cri.UpdateContainerResourcesRequest
    ) -> cri.UpdateContainerResourcesResponse:
        with self._container_ops("UpdateContainerResources") as ops:
            return ops.update_container_resources(request)

    def reopen_container_log(
            self, request: cri.ReopenContainerLogRequest) -> cri.ReopenContainerLogResponse:
        with self._container_ops("ReopenContainerLog") as ops:
            return ops.reopen_container_log(request)

    def exec_sync(self, request: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        with self._container_ops("ExecSync") as ops:
            return ops.exec_sync(request)

    # -- RuntimeService: not served yet (streaming, stats, events, metrics, checkpoint) ---

    @staticmethod
    def _not_served(rpc: str, what: str) -> Unimplemented:
        return Unimplemented(f"{rpc} is not implemented by criolib.service ({what} come "
                             "later)")

    def exec(self, request: cri.ExecRequest) -> cri.ExecResponse:
        raise self._not_served("Exec", "streaming RPCs")

    def attach(self, request: cri.AttachRequest) -> cri.AttachResponse:
        raise self._not_served("Attach", "streaming RPCs")

    def port_forward(self, request: cri.PortForwardRequest) -> cri.PortForwardResponse:
        raise self._not_served("PortForward", "streaming RPCs")

    def container_stats(self, request: cri.ContainerStatsRequest) -> cri.ContainerStatsResponse:
        raise self._not_served("ContainerStats", "stats")

    def list_container_stats(
            self, request: cri.ListContainerStatsRequest) -> cri.ListContainerStatsResponse:
        raise self._not_served("ListContainerStats", "stats")

    def pod_sandbox_stats(
            self, request: cri.PodSandboxStatsRequest) -> cri.PodSandboxStatsResponse:
        raise self._not_served("PodSandboxStats", "stats")

    def list_pod_sandbox_stats(
            self, request: cri.ListPodSandboxStatsRequest) -> cri.ListPodSandboxStatsResponse:
        raise self._not_served("ListPodSandboxStats", "stats")

    def checkpoint_container(
            self, request: cri.CheckpointContainerRequest) -> cri.CheckpointContainerResponse:
        raise self._not_served("CheckpointContainer", "checkpoints")

    def get_container_events(
            self, request: cri.GetEventsRequest) -> Iterator[cri.ContainerEventResponse]:
        raise self._not_served("GetContainerEvents", "events")

    def list_metric_descriptors(
        self, request: cri.ListMetricDescriptorsRequest
    ) -> cri.ListMetricDescriptorsResponse:
        raise self._not_served("ListMetricDescriptors", "metrics")

    def list_pod_sandbox_metrics(
        self, request: cri.ListPodSandboxMetricsRequest
    ) -> cri.ListPodSandboxMetricsResponse:
        raise self._not_served("ListPodSandboxMetrics", "metrics")

    def update_pod_sandbox_resources(
        self, request: cri.UpdatePodSandboxResourcesRequest
    ) -> cri.UpdatePodSandboxResourcesResponse:
        raise self._not_served("UpdatePodSandboxResources", "pod-level resources")

    # -- ImageService -----------------------------------------------------------------

    def list_images(self, request: cri.ListImagesRequest) -> cri.ListImagesResponse:
        with self._image_ops("ListImages") as ops:
            return ops.list_images(request)

    def image_status(self, request: cri.ImageStatusRequest) -> cri.ImageStatusResponse:
        with self._image_ops("ImageStatus") as ops:
            return ops.image_status(request)

    def pull_image(self, request: cri.PullImageRequest) -> cri.PullImageResponse:
        with self._image_ops("PullImage") as ops:
            return ops.pull_image(request)

    def remove_image(self, request: cri.RemoveImageRequest) -> cri.RemoveImageResponse:
        with self._image_ops("RemoveImage") as ops:
            return ops.remove_image(request)

    def image_fs_info(self, request: cri.ImageFsInfoRequest) -> cri.ImageFsInfoResponse:
        with self._image_ops("ImageFsInfo") as ops:
            return ops.image_fs_info(request)
