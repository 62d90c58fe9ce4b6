"""The image configuration document: typed, with its exact wire names.

image-spec v1.1 config.md (``application/vnd.oci.image.config.v1+json``), which is
also the shape of Docker's ``application/vnd.docker.container.image.v1+json``
(docker image-spec v1.2). The spec is open: properties criolib does not model
(Docker's ``container_config``, ``docker_version``, ``Healthcheck``, ``OnBuild``,
vendor keys) are kept in each object's ``extra`` and written back. An absent
property reads as ``None``; so does an explicit JSON ``null``, which Go writes for
empty slices and maps.

These are plain attrs value types; reading and writing them is
:mod:`criolib.image._manifest`'s converter (``parse_image_config``,
``image_config_to_dict``). Applying a config to a runtime spec is
:mod:`criolib.runtime_spec`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ContainerConfig", "History", "ImageConfig", "RootFS"]


def _wire(name: str, **more: object) -> dict[str, object]:
    return {"wire": name, **more}


@attrs.frozen(kw_only=True)
class ContainerConfig:
    """The ``config`` object: how to run a container (config.md "Properties")."""

    user: str | None = attrs.field(default=None, metadata=_wire("User"))
    exposed_ports: Mapping[str, Any] | None = attrs.field(default=None,
                                                          metadata=_wire("ExposedPorts"))
    env: tuple[str, ...] | None = attrs.field(default=None, metadata=_wire("Env"))
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, metadata=_wire("Entrypoint"))
    cmd: tuple[str, ...] | None = attrs.field(default=None, metadata=_wire("Cmd"))
    volumes: Mapping[str, Any] | None = attrs.field(default=None, metadata=_wire("Volumes"))
    working_dir: str | None = attrs.field(default=None, metadata=_wire("WorkingDir"))
    labels: Mapping[str, str] | None = attrs.field(default=None, metadata=_wire("Labels"))
    stop_signal: str | None = attrs.field(default=None, metadata=_wire("StopSignal"))
    args_escaped: bool | None = attrs.field(default=None, metadata=_wire("ArgsEscaped"))
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class RootFS:
    """``rootfs``: the layers' uncompressed digests, bottom first (config.md "rootfs")."""

    type: str = attrs.field(default="layers", metadata={"required": True})
    diff_ids: tuple[str, ...] = attrs.field(default=(), metadata=_wire("diff_ids",
                                                                      required=True))
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class History:
    """One ``history`` entry: how a layer (or an empty step) was made."""

    created: str | None = None
    author: str | None = None
    created_by: str | None = attrs.field(default=None, metadata=_wire("created_by"))
    comment: str | None = None
    empty_layer: bool | None = attrs.field(default=None, metadata=_wire("empty_layer"))
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ImageConfig:
    """An OCI (or Docker) image configuration (image-spec v1.1 config.md).

    ``architecture``, ``os`` and ``rootfs`` are REQUIRED by the spec; the rest is
    optional and ``None`` when absent.
    """

    architecture: str
    os: str
    rootfs: RootFS
    created: str | None = None
    author: str | None = None
    os_version: str | None = attrs.field(default=None, metadata=_wire("os.version"))
    os_features: tuple[str, ...] | None = attrs.field(default=None,
                                                      metadata=_wire("os.features"))
    variant: str | None = None
    config: ContainerConfig | None = None
    history: tuple[History, ...] | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        """``rootfs.diff_ids``: one per layer of the manifest, in order."""
        return self.rootfs.diff_ids
