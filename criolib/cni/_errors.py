"""Errors of :mod:`criolib.cni` (pod networking through CNI plugins).

::

    criolib.errors.CriolibError
    └── CNIError
        ├── ConfigError(CNIError, ValueError)   a bad network configuration file
        ├── PluginNotFound(CNIError, FileNotFoundError)
        ├── PluginError                         a plugin's error result (SPEC.md "Error")
        │   └── PluginTimeout(PluginError, TimeoutError)
        ├── NetNSError(CNIError, OSError)       pinning, entering or removing a namespace
        └── ResultError(CNIError, ValueError)   a result that does not parse or convert
"""

from __future__ import annotations

from pathlib import Path

from criolib.errors import CriolibError

__all__ = [
    "CNIError",
    "ConfigError",
    "NetNSError",
    "PluginError",
    "PluginNotFound",
    "PluginTimeout",
    "ResultError",
]


class CNIError(CriolibError):
    """Base class of every error raised by :mod:`criolib.cni`."""


class ConfigError(CNIError, ValueError):
    """A network configuration (SPEC.md "Configuration format") is invalid.

    ``path`` names the file when the configuration came from one.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class PluginNotFound(CNIError, FileNotFoundError):
    """No executable for a plugin ``type`` in the plugin directories."""


class PluginError(CNIError):
    """A plugin failed and returned an error result (SPEC.md v1.1.0 "Error").

    ``code`` is the result's error code (1-99 well known, e.g. 7 invalid network
    config, 11 try again later), ``msg`` and ``details`` its text.
    """

    def __init__(self, message: str, *, code: int, msg: str, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.msg = msg
        self.details = details


class PluginTimeout(PluginError, TimeoutError):
    """A plugin ran longer than its timeout and was killed."""


class NetNSError(CNIError, OSError):
    """Creating, entering or removing a pinned namespace failed.

    Carries ``errno`` and ``filename`` like :class:`OSError`.
    """


class ResultError(CNIError, ValueError):
    """A plugin result does not parse, or cannot be converted to the asked version."""
