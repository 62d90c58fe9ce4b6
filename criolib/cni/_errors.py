"""Errors of :mod:`criolib.cni` (pod networking through CNI plugins).

::

    criolib.errors.CriolibError
    └── CNIError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["CNIError"]


class CNIError(CriolibError):
    """Base class of every error raised by :mod:`criolib.cni`."""
