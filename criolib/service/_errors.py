"""Errors of :mod:`criolib.service` (the Kubernetes CRI service).

::

    criolib.errors.CriolibError
    └── ServiceError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["ServiceError"]


class ServiceError(CriolibError):
    """Base class of every error raised by :mod:`criolib.service`."""
