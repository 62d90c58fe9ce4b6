"""Errors of :mod:`criolib.testing` (the public test bed).

::

    criolib.errors.CriolibError
    └── TestbedError
        ├── MissingHostPart      a system part (runc, registry, plugin) is not installed
        ├── ImageBuildError      a test image could not be built
        ├── RegistryStartError   the registry server did not come up
        └── PushError            the registry refused an image
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = ["ImageBuildError", "MissingHostPart", "PushError", "RegistryStartError", "TestbedError"]


class TestbedError(CriolibError):
    """Base class of every error raised by :mod:`criolib.testing`."""

    __test__ = False  # not a pytest test class, despite the name


class MissingHostPart(TestbedError):
    """A program or file the test bed needs is not on this machine."""


class ImageBuildError(TestbedError):
    """A test image could not be built."""


class RegistryStartError(TestbedError):
    """The registry server (or its token server) did not start."""


class PushError(TestbedError):
    """The registry refused a pushed blob or manifest."""
