"""criolib.conmon: the container monitor.

See docs/conmon.md.

Names are imported on first use (PEP 562): criolib's monitor process imports
``criolib.conmon._daemon``, which must not pay for attrs, the runtime client or the
other backends, so loading this package loads nothing but the error root.
"""

from __future__ import annotations

import logging
import typing as _typing

from criolib._lazy import lazy_exports as _lazy_exports
from criolib.conmon._errors import MonitorError

if _typing.TYPE_CHECKING:
    from criolib.conmon._api import (
        DEFAULT_CREATE_TIMEOUT,
        DEFAULT_EXEC_OUTPUT_LIMIT,
        DEFAULT_LOG_MAX_LINE,
        ContainerConfig,
        ContainerStatus,
        Created,
        ExecResult,
        ExitStatus,
        Monitor,
        check_container_id,
    )
    from criolib.conmon._backends import (
        BACKENDS,
        DEFAULT_RUN_DIR,
        ENTRY_POINT_GROUP,
        available_backends,
        open_monitor,
    )
    from criolib.conmon._client import CriolibMonitor
    from criolib.conmon._conmon import ConmonMonitor
    from criolib.conmon._errors import (
        AttachTimeout,
        BackendNotFound,
        ContainerExited,
        CreateFailed,
        ExecFailed,
        InvalidMonitorConfig,
        LogFormatError,
        MonitorGone,
        MonitorProtocolError,
        MonitorStartError,
        UnknownContainer,
    )
    from criolib.conmon._logread import (
        CRILogRecord,
        iter_cri_log,
        join_partial,
        parse_cri_log_line,
        read_cri_log,
    )
    from criolib.conmon._stdio import (
        STDERR,
        STDIN,
        STDOUT,
        Attachment,
        ExecProcess,
        PipeStream,
        PtyStream,
    )

#: Public name -> the private module that defines it.
_LAZY: dict[str, str] = {
    "DEFAULT_CREATE_TIMEOUT": "_api",
    "DEFAULT_EXEC_OUTPUT_LIMIT": "_api",
    "DEFAULT_LOG_MAX_LINE": "_api",
    "ContainerConfig": "_api",
    "ContainerStatus": "_api",
    "Created": "_api",
    "ExecResult": "_api",
    "ExitStatus": "_api",
    "Monitor": "_api",
    "check_container_id": "_api",
    "BACKENDS": "_backends",
    "DEFAULT_RUN_DIR": "_backends",
    "ENTRY_POINT_GROUP": "_backends",
    "available_backends": "_backends",
    "open_monitor": "_backends",
    "CriolibMonitor": "_client",
    "ConmonMonitor": "_conmon",
    "AttachTimeout": "_errors",
    "BackendNotFound": "_errors",
    "ContainerExited": "_errors",
    "CreateFailed": "_errors",
    "ExecFailed": "_errors",
    "InvalidMonitorConfig": "_errors",
    "LogFormatError": "_errors",
    "MonitorGone": "_errors",
    "MonitorProtocolError": "_errors",
    "MonitorStartError": "_errors",
    "UnknownContainer": "_errors",
    "CRILogRecord": "_logread",
    "iter_cri_log": "_logread",
    "join_partial": "_logread",
    "parse_cri_log_line": "_logread",
    "read_cri_log": "_logread",
    "STDERR": "_stdio",
    "STDIN": "_stdio",
    "STDOUT": "_stdio",
    "Attachment": "_stdio",
    "ExecProcess": "_stdio",
    "PipeStream": "_stdio",
    "PtyStream": "_stdio",
}


logging.getLogger("criolib.conmon").addHandler(logging.NullHandler())

__all__ = [
    "BACKENDS",
    "DEFAULT_CREATE_TIMEOUT",
    "DEFAULT_EXEC_OUTPUT_LIMIT",
    "DEFAULT_LOG_MAX_LINE",
    "DEFAULT_RUN_DIR",
    "ENTRY_POINT_GROUP",
    "STDERR",
    "STDIN",
    "STDOUT",
    "AttachTimeout",
    "Attachment",
    "BackendNotFound",
    "CRILogRecord",
    "ConmonMonitor",
    "ContainerConfig",
    "ContainerExited",
    "ContainerStatus",
    "CreateFailed",
    "Created",
    "CriolibMonitor",
    "ExecFailed",
    "ExecProcess",
    "ExecResult",
    "ExitStatus",
    "InvalidMonitorConfig",
    "LogFormatError",
    "Monitor",
    "MonitorError",
    "MonitorGone",
    "MonitorProtocolError",
    "MonitorStartError",
    "PipeStream",
    "PtyStream",
    "UnknownContainer",
    "available_backends",
    "check_container_id",
    "iter_cri_log",
    "join_partial",
    "open_monitor",
    "parse_cri_log_line",
    "read_cri_log",
]

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY, __all__, globals())
