"""The CRI facade: one snake_case method per RPC of RuntimeService and ImageService.

CRI v1 (kubernetes/cri-api pkg/apis/runtime/v1/api.proto). Each method takes the
request class of :mod:`criolib.service._cri_types` and returns the response class;
the gRPC endpoint (:mod:`criolib.service._grpc`) calls them through
:data:`RPC_METHODS`. The work is done by the managers the facade builds at
:meth:`CRIService.start`: the image side (``_images.ImageService``), sandboxes
(``_sandbox.SandboxManager``) and containers (``_container.ContainerManager``); an RPC
whose manager is not there raises :class:`Unimplemented` naming it.

The managers' contract: ``SandboxManager`` then ``ContainerManager`` are built after
the storage, the records and the image side, each given the keyword arguments its
``__init__`` names from: ``service``, ``config``, ``store``, ``state`` (the
:class:`StateStore`), ``images``, ``names`` (its own :class:`NameRegistry`, restored
from the records), ``sandbox_names``, ``container_names``, ``namespaces_dir``
(``[crio.runtime] namespaces_dir``) and, for the container side, ``sandboxes``. They
implement :class:`SandboxOps` / :class:`ContainerOps`; a sandbox manager with a
``containers`` attribute gets the container manager there; each may have
``recover()`` (called at start, sandboxes first) and ``close()``. Then
``_recover.recover(service)``, when that module exists.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import threading
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
    Internal,
    ServiceError,
    Unavailable,
    Unimplemented,
)
from criolib.service._state import NameRegistry, StateStore

if TYPE_CHECKING:
    from criolib.storage import Store

__all__ = [
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


def _optional(module: str, name: str) -> Any:
    """``criolib.service.<module>.<name>``, or None while that module is not written."""
    full = f"criolib.service.{module}"
    try:
        return getattr(importlib.import_module(full), name)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        return None


def _build(cls: Any, pool: dict[str, Any]) -> Any:
    """``cls(**kwargs)`` with the arguments its ``__init__`` names, taken from ``pool``."""
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(cls).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in pool:
            kwargs[name] = pool[name]
        elif param.default is param.empty:
            raise Internal(f"{cls.__name__} needs {name!r}, which the service does not "
                           f"provide (it provides {', '.join(sorted(pool))})")
    return cls(**kwargs)


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
                image_service = _optional("_images", "ImageService")
                self.images = image_service(cfg, self.store) if image_service else None
                self._build_managers()
                for part in (self.sandboxes, self.containers):
                    recover_part = getattr(part, "recover", None)
                    if recover_part is not None:
                        recover_part()
                recover = _optional("_recover", "recover")
                if recover is not None:
                    recover(self)
            except BaseException:
                self._close_parts()
                raise
            self._started = True
            log.info("CRI service started: storage %s (%s), state %s", cfg.root,
                     cfg.storage_driver, cfg.state_dir)
        return self

    def _build_managers(self) -> None:
        pool: dict[str, Any] = {
            "service": self, "config": self.config, "store": self.store, "state": self.state,
            "images": self.images, "sandbox_names": self.sandbox_names,
            "container_names": self.container_names,
            "namespaces_dir": self.config.runtime.namespaces_dir,
        }
        sandbox_manager = _optional("_sandbox", "SandboxManager")
        if sandbox_manager is not None:
            self.sandboxes = _build(sandbox_manager, {**pool, "names": self.sandbox_names})
        container_manager = _optional("_container", "ContainerManager")
        if container_manager is not None:
            self.containers = _build(container_manager, {
                **pool, "names": self.container_names, "sandboxes": self.sandboxes})
            if self.sandboxes is not None and hasattr(self.sandboxes, "containers"):
                self.sandboxes.containers = self.containers

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
        """Let go of storage and records (mounts and containers stay); idempotent."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._close_parts()
            log.info("CRI service closed")

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

    def _check_started(self, rpc: str) -> None:
        if not self._started:
            raise Unavailable(f"{rpc}: the CRI service is not started (call start() or use "
                              "it as a context manager)")

    def _image_ops(self, rpc: str) -> ImageOps:
        self._check_started(rpc)
        if self.images is None:
            raise Unimplemented(f"{rpc} is not implemented by criolib.service yet")
        return self.images

    def _sandbox_ops(self, rpc: str) -> SandboxOps:
        self._check_started(rpc)
        if self.sandboxes is None:
            raise Unimplemented(f"{rpc} is not implemented by criolib.service yet")
        return self.sandboxes

    def _container_ops(self, rpc: str) -> ContainerOps:
        self._check_started(rpc)
        if self.containers is None:
            raise Unimplemented(f"{rpc} is not implemented by criolib.service yet")
        return self.containers

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
        return self._sandbox_ops("RunPodSandbox").run_pod_sandbox(request)

    def stop_pod_sandbox(
            self, request: cri.StopPodSandboxRequest) -> cri.StopPodSandboxResponse:
        return self._sandbox_ops("StopPodSandbox").stop_pod_sandbox(request)

    def remove_pod_sandbox(
            self, request: cri.RemovePodSandboxRequest) -> cri.RemovePodSandboxResponse:
        return self._sandbox_ops("RemovePodSandbox").remove_pod_sandbox(request)

    def pod_sandbox_status(
            self, request: cri.PodSandboxStatusRequest) -> cri.PodSandboxStatusResponse:
        return self._sandbox_ops("PodSandboxStatus").pod_sandbox_status(request)

    def list_pod_sandbox(
            self, request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse:
        return self._sandbox_ops("ListPodSandbox").list_pod_sandbox(request)

    # -- RuntimeService: containers ------------------------------------------------------

    def create_container(
            self, request: cri.CreateContainerRequest) -> cri.CreateContainerResponse:
        return self._container_ops("CreateContainer").create_container(request)

    def start_container(
            self, request: cri.StartContainerRequest) -> cri.StartContainerResponse:
        return self._container_ops("StartContainer").start_container(request)

    def stop_container(self, request: cri.StopContainerRequest) -> cri.StopContainerResponse:
        return self._container_ops("StopContainer").stop_container(request)

    def remove_container(
            self, request: cri.RemoveContainerRequest) -> cri.RemoveContainerResponse:
        return self._container_ops("RemoveContainer").remove_container(request)

    def list_containers(
            self, request: cri.ListContainersRequest) -> cri.ListContainersResponse:
        return self._container_ops("ListContainers").list_containers(request)

    def container_status(
            self, request: cri.ContainerStatusRequest) -> cri.ContainerStatusResponse:
        return self._container_ops("ContainerStatus").container_status(request)

    def update_container_resources(
        self, request: cri.UpdateContainerResourcesRequest
    ) -> cri.UpdateContainerResourcesResponse:
        return self._container_ops(
            "UpdateContainerResources").update_container_resources(request)

    def reopen_container_log(
            self, request: cri.ReopenContainerLogRequest) -> cri.ReopenContainerLogResponse:
        return self._container_ops("ReopenContainerLog").reopen_container_log(request)

    def exec_sync(self, request: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        return self._container_ops("ExecSync").exec_sync(request)

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
        return self._image_ops("ListImages").list_images(request)

    def image_status(self, request: cri.ImageStatusRequest) -> cri.ImageStatusResponse:
        return self._image_ops("ImageStatus").image_status(request)

    def pull_image(self, request: cri.PullImageRequest) -> cri.PullImageResponse:
        return self._image_ops("PullImage").pull_image(request)

    def remove_image(self, request: cri.RemoveImageRequest) -> cri.RemoveImageResponse:
        return self._image_ops("RemoveImage").remove_image(request)

    def image_fs_info(self, request: cri.ImageFsInfoRequest) -> cri.ImageFsInfoResponse:
        return self._image_ops("ImageFsInfo").image_fs_info(request)
