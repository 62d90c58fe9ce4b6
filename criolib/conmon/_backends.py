"""The monitor backends by name, and :func:`open_monitor`, the front door.

Built in: ``"criolib"`` (:class:`~criolib.conmon.CriolibMonitor`) and ``"conmon"``
(:class:`~criolib.conmon.ConmonMonitor`, the system binary). Third parties add theirs
as entry points in the group ``criolib.monitors``: the name is the backend's, the
object a factory called as ``factory(run_dir, **options)`` returning a
:class:`~criolib.conmon.Monitor`. A name given twice is an error, never a silent
override (STYLE.md "Plug-ins").
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from criolib.conmon._errors import BackendNotFound, InvalidMonitorConfig, MonitorError

if TYPE_CHECKING:
    from criolib.conmon._api import Monitor

__all__ = ["BACKENDS", "DEFAULT_RUN_DIR", "ENTRY_POINT_GROUP", "available_backends",
           "open_monitor"]

log = logging.getLogger("criolib.conmon")

#: Where monitors keep their records and sockets unless told otherwise.
DEFAULT_RUN_DIR = Path("/run/criolib/monitor")
#: The entry-point group third-party backends register under.
ENTRY_POINT_GROUP = "criolib.monitors"

MonitorFactory = Callable[..., "Monitor"]


def _check_options(name: str, factory: Callable[..., Any], run_dir: Path,
                   options: dict[str, Any]) -> None:
    """:class:`InvalidMonitorConfig` unless ``factory(run_dir, **options)`` fits its
    signature (checked first, so a TypeError inside the backend stays what it is)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the call say
    try:
        signature.bind(run_dir, **options)
    except TypeError as exc:
        raise InvalidMonitorConfig(
            f"monitor backend {name!r} does not take these options "
            f"({', '.join(sorted(options)) or 'none'}): {exc}") from None


def _criolib(run_dir: Path, **options: Any) -> Monitor:
    from criolib.conmon._client import CriolibMonitor

    _check_options("criolib", CriolibMonitor, run_dir, options)
    return CriolibMonitor(run_dir, **options)


def _conmon(run_dir: Path, **options: Any) -> Monitor:
    from criolib.conmon._conmon import ConmonMonitor

    _check_options("conmon", ConmonMonitor, run_dir, options)
    return ConmonMonitor(run_dir, **options)


#: The built-in backends: name -> factory(run_dir, **options).
BACKENDS: Mapping[str, MonitorFactory] = {"conmon": _conmon, "criolib": _criolib}


def available_backends() -> dict[str, MonitorFactory]:
    """The built-in backends and those registered under ``criolib.monitors``.

    A name registered twice (or taking a built-in's name) raises :class:`MonitorError`
    naming both sources; an entry point that cannot be loaded raises one naming it.
    """
    found: dict[str, MonitorFactory] = dict(BACKENDS)
    sources = {name: "criolib" for name in BACKENDS}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {entry.value!r}"
        if entry.dist is not None:
            origin += f" of {entry.dist.name}"
        if entry.name in found:
            raise MonitorError(
                f"monitor backend {entry.name!r} is registered twice: by "
                f"{sources[entry.name]} and by {origin}; uninstall one of them")
        try:
            factory = entry.load()
        except Exception as exc:
            raise MonitorError(f"monitor backend {entry.name!r} ({origin}) cannot be "
                               f"loaded: {exc}") from exc
        if not callable(factory):
            raise MonitorError(f"monitor backend {entry.name!r} ({origin}) is not callable")
        found[entry.name] = factory
        sources[entry.name] = origin
    return found


def open_monitor(backend: str = "auto", run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR,
                 **options: Any) -> Monitor:
    """A monitor of the named backend, keeping its state under ``run_dir``.

    ``"auto"`` is ``"conmon"`` when the ``conmon`` binary is on PATH, else
    ``"criolib"``. ``options`` go to the backend's constructor (``python=``,
    ``idle_exit=`` for criolib's; ``binary=`` for conmon). An unknown name raises
    :class:`BackendNotFound` listing the known ones; options the backend does not
    take raise :class:`InvalidMonitorConfig`.
    """
    if not isinstance(backend, str):
        raise InvalidMonitorConfig(f"monitor backend must be a name, not {backend!r}")
    factories = available_backends()
    name = backend
    if backend == "auto":
        name = "conmon" if shutil.which("conmon") else "criolib"
        log.debug("monitor backend auto: %s", name)
    factory = factories.get(name)
    if factory is None:
        known = ", ".join(["auto", *sorted(factories)])
        raise BackendNotFound(f"no monitor backend {backend!r}; known: {known}")
    path = Path(run_dir)
    if not path.is_absolute():
        path = path.absolute()
    if factory not in BACKENDS.values():
        _check_options(name, factory, path, options)
    return factory(path, **options)
