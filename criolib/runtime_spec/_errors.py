"""Errors of :mod:`criolib.runtime_spec`.

The OCI runtime spec, its generator, validation and runtime client.

::

    criolib.errors.CriolibError
    └── RuntimeSpecError
        ├── SpecFormatError (ValueError)   a document is not JSON, or a value has the wrong
        │                                  JSON type (names the document and the JSON path)
        ├── InvalidSpec (ValueError)       validate() found errors; .problems lists them all
        ├── InvalidArgument (ValueError)   a caller's argument cannot be used (a container id
        │                                  starting with "-", an unknown signal, an empty
        │                                  argv); names the argument and the container
        ├── ImageConfigError (ValueError)  an image config (or its CRI override) cannot make
        │   │                              a process: a field of the wrong type, no command
        │   └── UnknownUser                a user or group is not in the image's /etc files
        ├── SeccompProfileError (ValueError)   a profile cannot be resolved (unknown arch)
        ├── RuntimeNotFound                the runtime binary (runc, crun) is not installed
        ├── BundleNotFound                 a bundle directory or its config.json is missing
        ├── ExitStatusUnavailable          a container init is not our child: no exit status
        └── RuntimeCommandError (ExecError)   a runtime command failed: names the container,
            │                                  the operation, the runtime, the exit status
            │                                  and the runtime's own message from its log
            ├── ContainerNotFound (LookupError)   no container with that id
            ├── ContainerExists            the id is taken
            ├── PrivilegeError             refused for want of a capability (a negative
            │                              oomScoreAdj, rlimits above the hard limit)
            ├── FeaturesUnsupported        the runtime has no `features` command
            └── RuntimeTimeout (ExecTimeout)   ran past its timeout and was killed

ImageConfigError and UnknownUser live in ``_imageconfig``, SeccompProfileError in
``_seccomp``; all are exported by :mod:`criolib.runtime_spec`. Paths inside an image's
rootfs are resolved by :func:`criolib._securejoin.secure_join`, whose ``SymlinkLoop``
(a CriolibError and OSError) :func:`apply_image_config` wraps into ImageConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from criolib.errors import CriolibError, ExecError, ExecTimeout

__all__ = ["InvalidArgument", "RuntimeSpecError", "SpecFormatError"]


class RuntimeSpecError(CriolibError):
    """Base class of every error raised by :mod:`criolib.runtime_spec`."""


class InvalidArgument(RuntimeSpecError, ValueError):
    """An argument a caller passed cannot be used; the message names it and its container.

    Raised before any runtime runs: a container id that is empty or starts with "-"
    (both runtimes would read it as an option), a signal that is neither a known
    name nor a number, an ``exec`` without a program, a negative ``preserve_fds``,
    a log format the client cannot read.
    """


class SpecFormatError(RuntimeSpecError, ValueError):
    """A runtime-spec document (config.json, state, features) cannot be read as its type.

    Raised for malformed JSON and for structural faults: a value of the wrong JSON
    type (a string where an integer belongs), an object where an array belongs, a
    missing required property. Semantic rules (absolute paths, known namespace types,
    ranges) are :func:`validate`'s job, not this error's.

    ``source`` names the document (``"config.json"`` or the file path the caller gave),
    ``path`` is the JSON path of the bad value (``"process.user.uid"``; empty for the
    document itself) and ``reason`` says what is wrong with it.
    """

    def __init__(self, source: str, path: str, reason: str) -> None:
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[SpecFormatError], tuple[str, str, str]]:
        # The default pickling passes the formatted message as the only argument.
        return (type(self), (self.source, self.path, self.reason))


# --- the OCI runtime client (criolib.runtime_spec._runtime) ---------------------------

__all__ += [
    "BundleNotFound",
    "ContainerExists",
    "ContainerNotFound",
    "ExitStatusUnavailable",
    "FeaturesUnsupported",
    "PrivilegeError",
    "RuntimeCommandError",
    "RuntimeNotFound",
    "RuntimeTimeout",
]


class RuntimeNotFound(RuntimeSpecError):
    """The OCI runtime binary is not installed (the message names its Debian package)."""


class BundleNotFound(RuntimeSpecError):
    """A bundle directory, or the config.json in it, does not exist.

    Checked before the runtime runs because crun reports it only on its stderr,
    which during ``create`` is the container's.
    """


class ExitStatusUnavailable(RuntimeSpecError):
    """A container's init exited but is not this process's child, so its status is lost."""


class RuntimeCommandError(RuntimeSpecError, ExecError):
    """An OCI runtime command failed.

    ``runtime`` (``"runc"``), ``operation`` (``"create"``), ``container_id`` (or None),
    ``argv``, ``returncode`` (None when it never ran to an exit) and
    ``runtime_message`` (the error lines of the runtime's log, or its stderr) say
    what failed; the message puts them in one sentence with the known cause.
    """

    def __init__(
        self,
        message: str,
        *,
        runtime: str,
        operation: str,
        container_id: str | None,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        runtime_message: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, argv=argv, returncode=returncode, stderr=stderr)
        self.runtime = runtime
        self.operation = operation
        self.container_id = container_id
        self.runtime_message = runtime_message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: the default pickling would pass only the message.
        return (_rebuild_command_error, (type(self), str(self), {
            "runtime": self.runtime, "operation": self.operation,
            "container_id": self.container_id, "argv": self.argv,
            "returncode": self.returncode, "runtime_message": self.runtime_message,
            "stderr": self.stderr}))


def _rebuild_command_error(
    cls: type[RuntimeCommandError], message: str, fields: dict[str, Any]
) -> RuntimeCommandError:
    return cls(message, **fields)


class ContainerNotFound(RuntimeCommandError, LookupError):
    """The runtime knows no container with that id (in its ``--root``)."""


class ContainerExists(RuntimeCommandError):
    """``create`` was given an id the runtime already holds."""


class PrivilegeError(RuntimeCommandError):
    """The runtime was refused something the config asks for, for want of a capability.

    On machines without CAP_SYS_RESOURCE: a ``process.oomScoreAdj`` below the
    caller's, or ``process.rlimits`` above the caller's hard limits. The message
    says which and what value would work.
    """


class FeaturesUnsupported(RuntimeCommandError):
    """The runtime has no ``features`` command (runtime-spec features.md)."""


class RuntimeTimeout(RuntimeCommandError, ExecTimeout):
    """A runtime command ran past its timeout and was killed."""


# --- validation (criolib.runtime_spec._validate) ---------------------------------------

__all__ += ["InvalidSpec"]

if TYPE_CHECKING:
    from criolib.runtime_spec._validate import Problem


class InvalidSpec(RuntimeSpecError, ValueError):
    """A config.json breaks the runtime spec: :func:`check` found errors.

    ``problems`` holds every :class:`Problem` :func:`validate` found, warnings
    included; the message lists them all, one per line.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = sum(p.severity == "error" for p in self.problems)
        lines = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"config.json is not valid: {errors} error(s){lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        # The default pickling would pass the formatted message as the problems.
        return (type(self), (self.problems,))
