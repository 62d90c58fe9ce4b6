"""Errors of :mod:`criolib.conmon` (the container monitor).

::

    criolib.errors.CriolibError
    └── MonitorError
        ├── InvalidMonitorConfig (ValueError)  a ContainerConfig or argument cannot be used
        │                                      (a bad id, a relative path, a negative size)
        ├── BackendNotFound                    an unknown backend name, or the conmon binary
        │                                      is not installed (names the Debian package)
        ├── MonitorStartError                  the monitor process did not come up (its own
        │                                      words from its log are in the message)
        ├── MonitorGone                        the monitor of a container is not running and
        │                                      left no exit record: the container is lost
        ├── MonitorProtocolError               the monitor answered something unreadable
        ├── UnknownContainer (LookupError)     no container with that id under this run dir
        ├── ContainerExited                    attach/exec/resize on a container that exited
        ├── AttachTimeout (TimeoutError)       no output came from an attach or exec stream
        │                                      within the time asked
        ├── CreateFailed                       the runtime's create failed; the runtime
        │                                      client's diagnosis (RuntimeCommandError:
        │                                      PrivilegeError...) is ``.runtime_error`` and
        │                                      ``__cause__``
        ├── ExecFailed                         the runtime's exec failed itself (not the
        │                                      process's exit status); ``.runtime_error``
        └── LogFormatError (ValueError)        a CRI log line does not parse (names file, line)
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = [
    "AttachTimeout",
    "BackendNotFound",
    "ContainerExited",
    "CreateFailed",
    "ExecFailed",
    "InvalidMonitorConfig",
    "LogFormatError",
    "MonitorError",
    "MonitorGone",
    "MonitorProtocolError",
    "MonitorStartError",
    "UnknownContainer",
]


class MonitorError(CriolibError):
    """Base class of every error raised by :mod:`criolib.conmon`."""


class InvalidMonitorConfig(MonitorError, ValueError):
    """A container config or an argument cannot be used; the message names which."""


class BackendNotFound(MonitorError):
    """The monitor backend asked for does not exist or is not installed."""


class MonitorStartError(MonitorError):
    """The monitor process did not start; the message carries what it logged."""


class MonitorGone(MonitorError):
    """A container's monitor died without recording the container's exit."""


class MonitorProtocolError(MonitorError):
    """The monitor sent a reply that cannot be read."""


class UnknownContainer(MonitorError, LookupError):
    """No container with that id is (or was) monitored under this run directory."""


class ContainerExited(MonitorError):
    """The container has exited: it can no longer be attached to, resized or exec'd in."""


class AttachTimeout(MonitorError, TimeoutError):
    """Reading an attach connection or an exec's stream took longer than its timeout."""


class CreateFailed(MonitorError):
    """The OCI runtime's ``create`` failed under the monitor.

    ``runtime_error`` is the runtime client's diagnosis
    (a :class:`criolib.runtime_spec.RuntimeCommandError`), also the ``__cause__``.
    """

    def __init__(self, message: str, *, container_id: str,
                 runtime_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.container_id = container_id
        self.runtime_error = runtime_error

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.container_id, self.runtime_error))


class ExecFailed(MonitorError):
    """The OCI runtime's ``exec`` failed itself (the process never ran)."""

    def __init__(self, message: str, *, container_id: str,
                 runtime_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.container_id = container_id
        self.runtime_error = runtime_error

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.container_id, self.runtime_error))


class LogFormatError(MonitorError, ValueError):
    """A line of a CRI log file is not ``<time> <stream> <P|F> <message>``."""


def _rebuild(cls: type[CreateFailed | ExecFailed], message: str, container_id: str,
             runtime_error: BaseException | None) -> CreateFailed | ExecFailed:
    return cls(message, container_id=container_id, runtime_error=runtime_error)
