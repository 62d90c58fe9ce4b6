"""Errors of :mod:`criolib.storage` (layers, images and containers on disk).

::

    criolib.errors.CriolibError
    └── StorageError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["StorageError"]


class StorageError(CriolibError):
    """Base class of every error raised by :mod:`criolib.storage`."""
