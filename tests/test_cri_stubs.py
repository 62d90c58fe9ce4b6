"""The ``cri`` extra ships compiled CRI v1 stubs that import and carry the RPCs."""

from __future__ import annotations

import pytest


def test_cri_v1_stubs_import_with_the_installed_protobuf() -> None:
    api_pb2 = pytest.importorskip("cri_api.v1.api_pb2")
    api_pb2_grpc = pytest.importorskip("cri_api.v1.api_pb2_grpc")
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    runtime = {m.name for m in api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].methods}
    image = {m.name for m in api_pb2.DESCRIPTOR.services_by_name["ImageService"].methods}
    assert {"Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox",
            "PodSandboxStatus", "ListPodSandbox", "CreateContainer", "StartContainer",
            "StopContainer", "RemoveContainer", "ListContainers", "ContainerStatus",
            "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec", "Attach",
            "PortForward", "Status", "UpdateRuntimeConfig", "RuntimeConfig"} <= runtime
    assert {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"} <= image
    assert hasattr(api_pb2_grpc, "add_RuntimeServiceServicer_to_server")
    # A request round-trips through the wire format.
    req = api_pb2.VersionRequest(version="v1")
    assert api_pb2.VersionRequest.FromString(req.SerializeToString()).version == "v1"
