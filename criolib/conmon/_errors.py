"""Errors of :mod:`criolib.conmon` (the container monitor).

::

    criolib.errors.CriolibError
    └── MonitorError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["MonitorError"]


class MonitorError(CriolibError):
    """Base class of every error raised by :mod:`criolib.conmon`."""
