"""The graph driver seam and the registry that finds drivers by name.

Mirrors containers/storage ``drivers/driver.go``: a driver keeps layers as
directories under its home (``<graphroot>/<name>``), applies and exports layer
diffs, and mounts a layer with its parents as a container's root filesystem.
Drivers are found by name: the built-in ``overlay`` and ``vfs``, drivers a program
registers with :func:`register_driver`, and third-party drivers published as
entry points in the ``criolib.storage.drivers`` group (the entry point names a
factory ``(home, options) -> GraphDriver``). A duplicate name is an error, and an
unknown name is an error too: overlay never quietly becomes vfs.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from criolib.storage._errors import DriverError, DriverUnknown, DuplicateDriver

if TYPE_CHECKING:
    from criolib.storage._archive import ApplyResult, Compression

__all__ = [
    "ENTRY_POINT_GROUP",
    "DriverFactory",
    "GraphDriver",
    "driver_names",
    "get_driver",
    "register_driver",
]

log = logging.getLogger("criolib.storage")

#: The entry point group third-party graph drivers are published in.
ENTRY_POINT_GROUP = "criolib.storage.drivers"


@runtime_checkable
class GraphDriver(Protocol):
    """Where layers live on disk and how a stack of them becomes a root filesystem.

    containers/storage ``drivers.Driver`` (ProtoDriver + DiffDriver), cut down to
    what criolib's stores use. See docs/storage.md for the contract of each method.
    """

    name: str
    home: Path

    def create(self, layer_id: str, parent: str | None, *,
               staging: Path | None = None, durable: bool = True) -> Path: ...

    def apply_diff(self, layer_id: str, parent: str | None, source: BinaryIO, *,
                   expected_diff_id: str | None = None, expected_digest: str | None = None,
                   allow_devices: bool = True, durable: bool = True) -> ApplyResult: ...

    def diff_path(self, layer_id: str) -> Path: ...

    def mount(self, layer_id: str, *, options: Sequence[str] = ()) -> Path: ...

    def unmount(self, layer_id: str) -> None: ...

    def is_mounted(self, layer_id: str) -> bool: ...

    def remove(self, layer_id: str) -> None: ...

    def export_diff(self, layer_id: str, parent: str | None, sink: BinaryIO, *,
                    compression: Compression = "none") -> ApplyResult: ...

    def exists(self, layer_id: str) -> bool: ...

    def layer_ids(self) -> list[str]: ...

    def verify_layer(self, layer_id: str) -> list[str]: ...

    def repair_layer(self, layer_id: str) -> list[str]: ...

    def check_support(self) -> None: ...


#: Makes a driver: ``factory(home, options)``; ``options`` are ``key=value`` strings.
DriverFactory = Callable[[Path, Sequence[str]], GraphDriver]

_lock = threading.Lock()
_factories: dict[str, DriverFactory] = {}
#: Entry point name -> the entry point, read once, loaded only when asked for.
_entry_points: dict[str, importlib.metadata.EntryPoint] | None = None
#: Entry point name -> its factory, once loaded.
_loaded: dict[str, DriverFactory] = {}


def register_driver(name: str, factory: DriverFactory) -> None:
    """Make ``factory`` the driver called ``name``.

    A name already taken, by a registered driver or a third-party entry point,
    raises :class:`DuplicateDriver`: two drivers under one name would make which
    one runs depend on import order.
    """
    if not name or "/" in name or name in {".", ".."}:
        raise DuplicateDriver(f"graph driver name {name!r} cannot name a directory")
    with _lock:
        eps = _load_entry_points()
        if name in _factories or name in eps:
            where = "an entry point" if name in eps else "a registered driver"
            raise DuplicateDriver(f"graph driver {name!r} is already provided by {where}")
        _factories[name] = factory


def _load_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Read the ``criolib.storage.drivers`` entry points once (names only, nothing imported)."""
    global _entry_points  # noqa: PLW0603 - a process-wide cache, filled once under _lock
    if _entry_points is None:
        found: dict[str, importlib.metadata.EntryPoint] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            other = found.get(ep.name)
            if other is not None and other.value != ep.value:
                raise DuplicateDriver(
                    f"graph driver {ep.name!r} is published by two entry points: "
                    f"{other.value} and {ep.value}"
                )
            if ep.name in _factories:
                raise DuplicateDriver(
                    f"graph driver {ep.name!r} from entry point {ep.value} clashes with "
                    "a registered driver of that name"
                )
            found[ep.name] = ep
        _entry_points = found
    return _entry_points


def driver_names() -> list[str]:
    """Every driver name :func:`get_driver` knows, sorted: built-ins, registered, plug-ins."""
    with _lock:
        return sorted({*_factories, *_load_entry_points()})


def _factory(name: str) -> DriverFactory:
    with _lock:
        factory = _factories.get(name) or _loaded.get(name)
        if factory is not None:
            return factory
        ep = _load_entry_points().get(name)
        known = sorted({*_factories, *_load_entry_points()})
    if ep is None:
        raise DriverUnknown(
            f"unknown graph driver {name!r}; known drivers: {', '.join(known)}"
        )
    try:
        loaded = ep.load()
    except Exception as exc:  # a broken plug-in: whatever its import raised
        raise DriverError(
            f"graph driver {name!r}: cannot load entry point {ep.value}: {exc}"
        ) from exc
    if not callable(loaded):
        raise DriverError(f"graph driver {name!r}: entry point {ep.value} is not callable")
    plugin: DriverFactory = loaded
    with _lock:
        return _loaded.setdefault(name, plugin)


def get_driver(name: str, home: str | os.PathLike[str], *,
               options: Sequence[str] = ()) -> GraphDriver:
    """The driver called ``name`` keeping its layers under ``home`` (``<graphroot>/<name>``).

    ``options`` are the driver's ``key=value`` settings (storage.conf's
    ``[storage.options.<driver>]``, e.g. ``mountopt=nodev``). The driver's
    :meth:`~GraphDriver.check_support` runs before it is returned, so a driver that
    cannot work here raises :class:`DriverUnsupported` now, with the reason; an
    unknown name raises :class:`DriverUnknown`. There is no fallback to another driver.
    """
    factory = _factory(name)
    driver = factory(Path(os.path.abspath(home)), tuple(options))
    driver.check_support()
    log.debug("graph driver %s at %s", name, driver.home)
    return driver


def _reset_entry_points_for_tests() -> None:
    """Forget the cached entry points (tests install fake distributions)."""
    global _entry_points  # noqa: PLW0603
    with _lock:
        _entry_points = None
        _loaded.clear()
