"""Errors of :mod:`criolib.image` (references, registries, manifests, transports and copying).

::

    criolib.errors.CriolibError
    └── ImageError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["ImageError"]


class ImageError(CriolibError):
    """Base class of every error raised by :mod:`criolib.image`."""
