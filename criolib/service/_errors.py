"""Errors of :mod:`criolib.service` (the Kubernetes CRI service).

Every class carries ``code``, the name of the gRPC status (``grpc.StatusCode``) the
kubelet expects for it; the gRPC endpoint answers with that code and the message.

::

    criolib.errors.CriolibError
    └── ServiceError                              code UNKNOWN
        ├── NotFound (LookupError)                NOT_FOUND: an unknown sandbox, container
        │                                         or image id (names it)
        ├── InvalidRequest (ValueError)           INVALID_ARGUMENT: a request field that
        │   │                                     cannot be used (names the field)
        │   └── ConfigError                       INVALID_ARGUMENT: a bad service config
        │                                         (names the file, the table and the key)
        ├── AlreadyExists                         ALREADY_EXISTS: a name held by a finished
        │                                         object (CRI-O's "name is reserved"; names
        │                                         the holder's id)
        ├── FailedPrecondition                    FAILED_PRECONDITION: the object is not in
        │                                         a state that allows it (names both)
        ├── DeadlineExceeded (TimeoutError)       DEADLINE_EXCEEDED: a wait ran out of time
        ├── Unimplemented (NotImplementedError)   UNIMPLEMENTED: an RPC criolib does not
        │                                         serve (yet); names it
        ├── Internal                              INTERNAL: a bug or a broken invariant
        └── Unavailable                           UNAVAILABLE: the service is not started,
                                                  is closing, or a socket is in use

Errors of the other packages that reach the service are answered with the code
:func:`grpc_code_for` maps them to (a ``LookupError`` is NOT_FOUND, a ``ValueError``
INVALID_ARGUMENT, a ``TimeoutError`` DEADLINE_EXCEEDED...).
"""

from __future__ import annotations

from criolib.errors import CriolibError

__all__ = [
    "AlreadyExists",
    "ConfigError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidRequest",
    "NotFound",
    "ServiceError",
    "Unavailable",
    "Unimplemented",
    "grpc_code_for",
]


class ServiceError(CriolibError):
    """Base class of every error raised by :mod:`criolib.service`.

    ``code`` is the ``grpc.StatusCode`` name the gRPC endpoint answers with.
    """

    code: str = "UNKNOWN"


class NotFound(ServiceError, LookupError):
    """No sandbox, container or image by that id or name; the message names it."""

    code = "NOT_FOUND"


class InvalidRequest(ServiceError, ValueError):
    """A request field that cannot be used; the message names the field and why."""

    code = "INVALID_ARGUMENT"


class ConfigError(InvalidRequest):
    """The service's TOML config cannot be used: names the file, the table and the key."""

    code = "INVALID_ARGUMENT"


class AlreadyExists(ServiceError):
    """A name held by another object (CRI-O's "name is reserved"); names the holder."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The object is not in a state that allows the call (a removed sandbox, a running
    container asked to be removed without a stop...); names the object and its state."""

    code = "FAILED_PRECONDITION"


class DeadlineExceeded(ServiceError, TimeoutError):
    """A wait (for a name's first request, a stop, an exec) ran out of time."""

    code = "DEADLINE_EXCEEDED"


class Unimplemented(ServiceError, NotImplementedError):
    """An RPC criolib does not serve (streaming, stats, events, metrics...); names it."""

    code = "UNIMPLEMENTED"


class Internal(ServiceError):
    """A broken invariant inside the service; the message says which."""

    code = "INTERNAL"


class Unavailable(ServiceError):
    """The service is not started or is closing, or its socket is in use by another server."""

    code = "UNAVAILABLE"


#: Builtin bases of other packages' errors -> gRPC code; first match wins, so the more
#: specific come first (a storage LayerExists is a FileExistsError, an OSError).
_BY_BUILTIN: tuple[tuple[type[BaseException], str], ...] = (
    (NotImplementedError, "UNIMPLEMENTED"),
    (TimeoutError, "DEADLINE_EXCEEDED"),
    (FileExistsError, "ALREADY_EXISTS"),
    (PermissionError, "PERMISSION_DENIED"),
    (LookupError, "NOT_FOUND"),
    (ValueError, "INVALID_ARGUMENT"),
)


def grpc_code_for(exc: BaseException) -> str:
    """The ``grpc.StatusCode`` name to answer ``exc`` with.

    A :class:`ServiceError` says its own ``code``. Another :class:`CriolibError`
    (criolib.storage, image, cni, conmon, runtime_spec) is mapped by the builtin it
    inherits: ``LookupError`` (``KeyError``: an unknown image, layer, container)
    NOT_FOUND, ``ValueError`` INVALID_ARGUMENT, ``TimeoutError`` DEADLINE_EXCEEDED,
    ``FileExistsError`` ALREADY_EXISTS, ``PermissionError`` (a policy or registry
    refusal) PERMISSION_DENIED; anything else UNKNOWN. An exception that is not a
    CriolibError is a bug: INTERNAL.
    """
    if isinstance(exc, ServiceError):
        return exc.code
    if not isinstance(exc, CriolibError):
        return "INTERNAL"
    for base, code in _BY_BUILTIN:
        if isinstance(exc, base):
            return code
    return "UNKNOWN"
