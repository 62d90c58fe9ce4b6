"""Finding and executing CNI plugins.

CNI SPEC.md v1.1.0, section "Execution Protocol": a plugin is an executable found
by its ``type`` in ``CNI_PATH``; its parameters are the ``CNI_*`` environment
variables and its network configuration arrives on stdin. Section "Error": a
plugin that fails exits non-zero and prints an error result
(``{"cniVersion", "code", "msg", "details"}``) on stdout.

Every exec goes through :func:`criolib._exec.run` (argv list, explicit
environment, timeout); the environment holds ``CNI_*`` and ``PATH`` only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from criolib._exec import run
from criolib.cni._errors import PluginError, PluginNotFound, PluginTimeout
from criolib.errors import ExecError, ExecTimeout

__all__ = [
    "PluginExecutor",
    "RawExecutor",
    "build_env",
    "exec_plugin",
    "find_plugin",
]

log = logging.getLogger("criolib.cni")

#: The ``PATH`` plugins get: they run iptables, ip, modprobe... (libcni passes the
#: runtime's own PATH; an explicit one keeps the environment audited).
PLUGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: SPEC.md "Error": codes 1-99 are the spec's; criolib reports a plugin that
#: failed without a parsable error result with this one.
UNPARSABLE_ERROR_CODE = 999


def find_plugin(plugin_type: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """The executable for ``plugin_type`` in the first directory of ``dirs`` holding one.

    SPEC.md "Execution Protocol": ``CNI_PATH`` is a list of directories searched in
    order. A ``type`` with a slash is refused: it must name a file in those dirs.
    """
    if not plugin_type or "/" in plugin_type or plugin_type in {".", ".."}:
        raise PluginNotFound(f"invalid CNI plugin type {plugin_type!r}")
    for d in dirs:
        candidate = Path(d) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    where = ", ".join(os.fspath(d) for d in dirs) or "(no directories)"
    raise PluginNotFound(f"CNI plugin {plugin_type!r} not found in {where}; "
                         "install it or add its directory to the plugin dirs")


def build_env(
    command: str,
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "",
    args: str = "",
    path: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, str]:
    """The environment of one plugin call: ``CNI_*`` and ``PATH``, nothing else.

    SPEC.md "Parameters": ``VERSION``, ``STATUS`` and ``GC`` get only
    ``CNI_COMMAND`` and ``CNI_PATH``.
    """
    env = {"CNI_COMMAND": command, "PATH": PLUGIN_PATH,
           "CNI_PATH": os.pathsep.join(os.fspath(p) for p in path)}
    if command not in {"VERSION", "STATUS", "GC"}:
        env.update(CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME=ifname,
                   CNI_ARGS=args)
    return env


def _error_from_output(stdout: bytes, stderr: str, what: str, status: str) -> PluginError:
    try:
        doc: Any = json.loads(stdout or b"null")
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("code"), int):
        msg = str(doc.get("msg", ""))
        details = str(doc.get("details", ""))
        text = f"{msg}: {details}" if details else msg
        return PluginError(f"{what} failed (code {doc['code']}): {text}",
                           code=doc["code"], msg=msg, details=details)
    text = stderr.strip() or stdout.decode(errors="replace").strip() or status
    return PluginError(f"{what} failed: {text[-2000:]}", code=UNPARSABLE_ERROR_CODE,
                       msg=text[-2000:])


def exec_plugin(
    path: str | os.PathLike[str],
    env: Mapping[str, str],
    stdin: bytes,
    *,
    timeout: float = 60.0,
    what: str | None = None,
) -> bytes:
    """Run the plugin at ``path`` and return its stdout (the result, SPEC.md "Result").

    A non-zero exit raises :class:`PluginError` built from the error result on
    stdout; running past ``timeout`` raises :class:`PluginTimeout`.
    """
    what = what or f"CNI plugin {os.fspath(path)}"
    log.debug("%s: %s", what, env.get("CNI_COMMAND"))
    try:
        done = run([path], env=env, input=stdin, timeout=timeout, what=what)
    except ExecTimeout as exc:
        raise PluginTimeout(f"{what} did not finish within {timeout} s and was killed",
                            code=UNPARSABLE_ERROR_CODE, msg="timeout") from exc
    except ExecError as exc:
        if exc.returncode is None:  # never started
            raise PluginError(str(exc), code=UNPARSABLE_ERROR_CODE, msg=str(exc)) from exc
        raise _error_from_output(exc.stdout, exc.stderr, what,
                                 f"exit status {exc.returncode}") from exc
    return done.stdout


class PluginExecutor(Protocol):
    """How :class:`~criolib.cni.CNI` finds and runs plugins (swap it in tests)."""

    def find_plugin(self, plugin_type: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
        """The executable for ``plugin_type``; raises :class:`PluginNotFound`."""
        ...

    def exec_plugin(self, path: Path, env: Mapping[str, str], stdin: bytes, *,
                    timeout: float, what: str) -> bytes:
        """Run one plugin call and return its stdout; raises :class:`PluginError`."""
        ...


class RawExecutor:
    """The real :class:`PluginExecutor`: files on disk, run by :func:`exec_plugin`."""

    def find_plugin(self, plugin_type: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
        """See :func:`find_plugin`."""
        return find_plugin(plugin_type, dirs)

    def exec_plugin(self, path: Path, env: Mapping[str, str], stdin: bytes, *,
                    timeout: float, what: str) -> bytes:
        """See :func:`exec_plugin`."""
        return exec_plugin(path, env, stdin, timeout=timeout, what=what)
