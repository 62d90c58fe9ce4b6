"""Transports and their registry: ``transport:name`` → an :class:`ImageReference`.

containers/image ``transports`` (``transports.Get``, ``alltransports.ParseImageName``):
each transport registers under its name; a second, different transport under a
taken name is an error (no silent replacement), and an unknown name raises
:class:`UnknownTransport` listing the known ones. Third-party transports are found
through the ``criolib.image.transports`` entry-point group, loaded the first time a
name is not known; one that fails to load is remembered, and asking for its name
raises :class:`TransportError` naming the entry point and the load error.

The local transports (``oci``, ``oci-archive``, ``docker-archive``, ``dir``) are
registered when this package is imported; ``docker`` and ``containers-storage``
register themselves through :func:`register_transport` when their modules are
imported, which the registry does on first use of their names (keeping httpx and
criolib.storage out of an ``oci:``-only program).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading

from criolib.image._errors import (
    DuplicateTransport,
    InvalidImageName,
    TransportError,
    UnknownTransport,
)
from criolib.image._transports._base import (
    ImageDestination,
    ImageReference,
    ImageSource,
    SystemContext,
    Transport,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ImageDestination",
    "ImageReference",
    "ImageSource",
    "SystemContext",
    "Transport",
    "get_transport",
    "parse_image_name",
    "register_transport",
    "transport_names",
]

log = logging.getLogger("criolib.image")

#: Where third-party packages declare transports (``name = "pkg.module:TRANSPORT"``).
ENTRY_POINT_GROUP = "criolib.image.transports"

#: Transports of criolib that register themselves when their module is imported.
_BUILTIN_MODULES = {
    "docker": "criolib.image._transports._docker",
    "containers-storage": "criolib.image._transports._storage",
}
_REGISTRY: dict[str, Transport] = {}
_LOCK = threading.Lock()
_entry_points_loaded = False
#: Entry points that failed to load: name -> (``module:attr``, the error).
_BROKEN: dict[str, tuple[str, BaseException]] = {}


def register_transport(transport: Transport) -> None:
    """Make ``transport`` reachable by its ``name``.

    Registering the same object again is a no-op; another transport under a taken
    name raises :class:`DuplicateTransport`.
    """
    name = transport.name
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidImageName(f"transport name {name!r}: must be a non-empty string "
                               "without ':'")
    with _LOCK:
        held = _REGISTRY.get(name)
        if held is not None and held is not transport:
            raise DuplicateTransport(f"transport {name!r} is already registered "
                                     f"({held!r}); refusing {transport!r}")
        _REGISTRY[name] = transport


def _load_entry_points() -> None:
    global _entry_points_loaded  # noqa: PLW0603 - a load-once flag
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            transport = ep.load()
        except Exception as exc:
            # Not fatal for other transports; raised when this one is asked for.
            log.warning("transport entry point %s (%s) failed to load", ep.name, ep.value,
                        exc_info=True)
            _BROKEN[ep.name] = (ep.value, exc)
            continue
        if _REGISTRY.get(ep.name) is not transport:
            register_transport(transport)


def _load_builtin(name: str) -> None:
    module = _BUILTIN_MODULES.get(name)
    if module is not None and name not in _REGISTRY:
        importlib.import_module(module)


def transport_names() -> list[str]:
    """The names of every known transport (criolib's, and registered ones), sorted."""
    with _LOCK:
        return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get_transport(name: str) -> Transport:
    """The transport registered as ``name``; :class:`UnknownTransport` if there is none."""
    transport = _REGISTRY.get(name)
    if transport is None:
        _load_builtin(name)
        transport = _REGISTRY.get(name)
    if transport is None:
        _load_entry_points()
        transport = _REGISTRY.get(name)
    if transport is None and name in _BROKEN:
        value, error = _BROKEN[name]
        raise TransportError(
            f"transport {name!r}: entry point {name} = {value!r} of group "
            f"{ENTRY_POINT_GROUP} failed to load: {type(error).__name__}: {error} "
            "(fix or uninstall the package that declares it)") from error
    if transport is None and name in _BUILTIN_MODULES:
        raise UnknownTransport(f"transport {name!r}: {_BUILTIN_MODULES[name]} was imported "
                               "but did not register it")
    if transport is None:
        raise UnknownTransport(f"unknown transport {name!r}; known transports: "
                               f"{', '.join(transport_names())}")
    return transport


def parse_image_name(image_name: str) -> ImageReference:
    """Parse ``transport:name`` (``docker://busybox``, ``oci:/srv/layout:app``...).

    containers/image ``alltransports.ParseImageName``: the text before the first
    ``:`` names the transport, which parses the rest.
    """
    name, colon, rest = image_name.partition(":")
    if not colon or not name:
        raise InvalidImageName(f"invalid image name {image_name!r}: want transport:name, "
                               f"such as docker://busybox (transports: "
                               f"{', '.join(transport_names())})")
    return get_transport(name).parse(rest)


def _register_local() -> None:
    from criolib.image._transports._dir import DIR_TRANSPORT
    from criolib.image._transports._docker_archive import DOCKER_ARCHIVE_TRANSPORT
    from criolib.image._transports._oci import OCI_TRANSPORT
    from criolib.image._transports._oci_archive import OCI_ARCHIVE_TRANSPORT

    for transport in (OCI_TRANSPORT, OCI_ARCHIVE_TRANSPORT, DOCKER_ARCHIVE_TRANSPORT,
                      DIR_TRANSPORT):
        register_transport(transport)


_register_local()
