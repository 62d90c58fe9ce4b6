"""The root of every exception criolib raises.

Each subpackage draws its own subtree in the docstring of its ``_errors.py``; every
class there derives from :class:`CriolibError`, so ``except CriolibError`` catches
anything the library raises on purpose::

    CriolibError
    ├── ExecError                      an outside program failed or timed out
    │   └── ExecTimeout
    ├── criolib.runtime_spec.RuntimeSpecError
    ├── criolib.storage.StorageError
    ├── criolib.image.ImageError
    ├── criolib.cni.CNIError
    ├── criolib.conmon.MonitorError
    ├── criolib.service.ServiceError
    └── criolib.testing.TestbedError
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CriolibError", "ExecError", "ExecTimeout"]


class CriolibError(Exception):
    """Base class of every error criolib raises on purpose."""


class ExecError(CriolibError):
    """An outside program (runtime, plugin, monitor, registry) failed.

    ``argv`` is what was run, ``returncode`` its exit status (negative for a signal,
    ``None`` when it never started) and ``stderr`` what it said, decoded.
    """

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        returncode: int | None = None,
        stdout: bytes = b"",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class ExecTimeout(ExecError):
    """An outside program ran longer than its timeout and was killed."""
