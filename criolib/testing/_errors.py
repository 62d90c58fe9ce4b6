"""Errors of :mod:`criolib.testing` (the public test bed).

::

    criolib.errors.CriolibError
    └── TestbedError
        ├── TestbedValueError    a bad argument (also a ValueError)
        ├── UnknownTestImage     no test image by that name (also a KeyError)
        ├── MissingHostPart      a system part (runc, registry, plugin) or a Python
        │                        package of the ``testing`` extra is not installed
        ├── ImageBuildError      a test image could not be built
        │   └── BuildDirError    the build directory is not one the test bed may use
        ├── RegistryStartError   the registry server (or its token server) did not come up
        └── PushError            the registry refused an image, or the layout is malformed
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = [
    "BuildDirError",
    "ImageBuildError",
    "MissingHostPart",
    "PushError",
    "RegistryStartError",
    "TestbedError",
    "TestbedValueError",
    "UnknownTestImage",
    "missing_python_package",
]

#: What to install for the Python packages criolib.testing needs.
PIP_HINT = "pip install 'criolib[testing]'"


class TestbedError(CriolibError):
    """Base class of every error raised by :mod:`criolib.testing`."""

    __test__ = False  # not a pytest test class, despite the name


class TestbedValueError(TestbedError, ValueError):
    """An argument the test bed cannot use (a bad auth kind, ttl, entry kind...)."""


class UnknownTestImage(TestbedError, KeyError):
    """``images[name]`` for a name the build does not hold."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; the message reads better plain.
        return str(self.args[0]) if self.args else ""


class MissingHostPart(TestbedError):
    """A program, file or Python package the test bed needs is not on this machine."""


class ImageBuildError(TestbedError):
    """A test image could not be built."""


class BuildDirError(ImageBuildError):
    """The build directory holds something else, is a file, or cannot be written."""


class RegistryStartError(TestbedError):
    """The registry server (or its token server) did not start."""


class PushError(TestbedError):
    """The registry refused a pushed blob or manifest, or the layout is malformed."""


def missing_python_package(package: str, purpose: str, cause: ImportError) -> MissingHostPart:
    """The error for a missing package of the ``testing`` extra, with the pip command."""
    err = MissingHostPart(
        f"criolib.testing needs the Python package {package!r} for {purpose} "
        f"({cause}); install the extra: {PIP_HINT}"
    )
    err.__cause__ = cause
    return err
