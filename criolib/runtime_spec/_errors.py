"""Errors of :mod:`criolib.runtime_spec`.

The OCI runtime spec, its generator, validation and runtime client.

::

    criolib.errors.CriolibError
    └── RuntimeSpecError
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["RuntimeSpecError"]


class RuntimeSpecError(CriolibError):
    """Base class of every error raised by :mod:`criolib.runtime_spec`."""
