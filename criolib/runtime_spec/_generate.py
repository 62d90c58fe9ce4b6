"""Generating config.json with CRI-O's secure defaults.

The counterpart of runtime-tools' ``generate`` package (runtime-spec v1.2,
config.md and config-linux.md). A :class:`Generator` starts from the profile
CRI-O gives a container that asks for nothing special: CRI-O's default
capabilities, ``noNewPrivileges``, masked and read-only ``/proc`` and ``/sys``
paths, the standard mounts, default rlimits and the RuntimeDefault seccomp
profile. ``privileged`` opens these up the way CRI-O does for a privileged
container. Each setter changes the document; :meth:`Generator.config` returns the
wire form and :meth:`Generator.spec` the typed :class:`Spec`.

The RuntimeDefault profile depends on the capabilities: syscalls such as
sethostname, mount and chroot are allowed only with the capability that governs
them (containers/common ``setupSeccomp``). CRI-O resolves the profile once the
capabilities are final, and so does the generator: while the profile is its own
default (not replaced by :meth:`Generator.set_seccomp`), the document it hands
out carries the profile resolved for the final bounding set.

Nothing is validated here: call :func:`validate` on the result.
"""

from __future__ import annotations

import copy
import os
import resource
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from criolib._atomic import atomic_write_bytes
from criolib.runtime_spec import _defaults
from criolib.runtime_spec._errors import RuntimeSpecError
from criolib.runtime_spec._generate_linux import LinuxSetters, host_devices
from criolib.runtime_spec._hostcaps import host_capabilities
from criolib.runtime_spec._seccomp import default_seccomp_profile, normalize_capability

if TYPE_CHECKING:
    from criolib.runtime_spec._model import Spec

__all__ = [
    "GENERATED_OCI_VERSION",
    "Generator",
    "clamp_oom_score_adj",
    "clamp_rlimit",
]

#: The ociVersion generated documents carry. The model is v1.2, but crun 1.8.1
#: (Debian 12) refuses any document newer than 1.1 ("unknown version specified")
#: and the default profile uses nothing v1.2 added; set_oci_version() raises it.
GENERATED_OCI_VERSION = "1.1.0"

_CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
_DEFAULT_CAP_SETS = ("bounding", "effective", "permitted")
_DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def clamp_rlimit(kind: str, soft: int, hard: int) -> tuple[int, int]:
    """``(soft, hard)`` lowered to what this process may grant.

    Without CAP_SYS_RESOURCE no process can raise a hard limit
    (MACHINE-NOTES.md); the runtime then fails with "setrlimit: Operation not
    permitted", so defaults are clamped to the caller's hard limit.
    """
    number = _RLIMITS.get(kind)
    if number is None:
        return soft, hard
    _, cur_hard = resource.getrlimit(number)
    if cur_hard == resource.RLIM_INFINITY:
        return soft, hard
    hard = min(hard, cur_hard)
    return min(soft, hard), hard


def clamp_oom_score_adj(value: int) -> int:
    """``value`` raised to this process's own oom_score_adj when it is lower.

    Lowering oom_score_adj needs CAP_SYS_RESOURCE, which these machines lack;
    containerd calls this ``restrict_oom_score_adj``.
    """
    try:
        current = int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return value
    return max(value, current)


_SCHED_POLICIES = ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO",
                   "SCHED_IDLE", "SCHED_DEADLINE")
_IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")


def _rlimit_name(kind: str) -> str:
    kind = kind.strip().upper()
    return kind if kind.startswith("RLIMIT_") else f"RLIMIT_{kind}"


class Generator(LinuxSetters):
    """Builds a config.json, starting from CRI-O's secure default profile.

    ``Generator()`` is that profile; ``Generator(template=doc)`` starts from an
    existing document (a wire-form mapping or a :class:`Spec`);
    ``Generator(privileged=True)`` is CRI-O's privileged profile.
    """

    def __init__(
        self,
        *,
        template: Mapping[str, Any] | Spec | None = None,
        privileged: bool = False,
    ) -> None:
        self._seccomp_caps: tuple[str, ...] | None = None
        if template is None:
            self._doc = _default_config()
            self._auto_seccomp = True
        else:
            if isinstance(template, Mapping):
                self._doc = copy.deepcopy(dict(template))
            else:
                from criolib.runtime_spec._convert import spec_to_dict

                self._doc = spec_to_dict(template)
            # A template whose profile is the default one resolved for its own
            # capabilities (a generator's earlier output) keeps following them.
            caps = self._bounding()
            linux = self._doc.get("linux")
            current = linux.get("seccomp") if isinstance(linux, dict) else None
            self._auto_seccomp = current is not None and current == default_seccomp_profile(
                capabilities=caps)
            if self._auto_seccomp:
                self._seccomp_caps = caps
        if privileged:
            self.set_privileged()
        self._sync_seccomp()

    # -- the result -----------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """A copy of the document in its wire form (config.json as a dict)."""
        self._sync_seccomp()
        return copy.deepcopy(self._doc)

    def spec(self) -> Spec:
        """The document as a typed :class:`Spec`."""
        from criolib.runtime_spec._convert import spec_from_dict

        self._sync_seccomp()
        return spec_from_dict(self._doc)

    def save(self, bundle: str | os.PathLike[str]) -> Path:
        """Write ``bundle/config.json`` atomically; returns its path."""
        from criolib.runtime_spec._convert import dump_spec

        path = Path(bundle) / "config.json"
        try:
            atomic_write_bytes(path, dump_spec(self.spec(), indent=2), mode=0o600)
        except OSError as exc:
            raise RuntimeSpecError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    @property
    def default_seccomp(self) -> bool:
        """Whether the seccomp profile is the RuntimeDefault one, kept in step with the caps."""
        return self._auto_seccomp

    def set_default_seccomp(self) -> Self:
        """Use CRI-O's RuntimeDefault seccomp profile, resolved for the final capabilities.

        The state of a new generator; undoes :meth:`set_seccomp` and privileged's
        unconfined profile. runtime-spec v1.2 config-linux.md "Seccomp".
        """
        self._auto_seccomp = True
        self._seccomp_caps = None
        self._sync_seccomp()
        return self

    # -- internals ------------------------------------------------------------------

    def _bounding(self) -> tuple[str, ...]:
        process = self._doc.get("process")
        caps = process.get("capabilities") if isinstance(process, dict) else None
        bounding = caps.get("bounding") if isinstance(caps, dict) else None
        return tuple(sorted({c for c in bounding or () if isinstance(c, str)}))

    def _sync_seccomp(self) -> None:
        """Resolve the default profile for the bounding set, if it changed since last time."""
        if not self._auto_seccomp:
            return
        caps = self._bounding()
        if caps != self._seccomp_caps or "seccomp" not in self._section("linux"):
            self._section("linux")["seccomp"] = default_seccomp_profile(capabilities=caps)
            self._seccomp_caps = caps

    # -- root, hostname, annotations ---------------------------------------------------

    def set_root(self, path: str, *, readonly: bool | None = None) -> Self:
        root = self._section("root")
        root["path"] = path
        if readonly is not None:
            root["readonly"] = readonly
        return self

    def set_root_readonly(self, readonly: bool = True) -> Self:
        self._section("root")["readonly"] = readonly
        return self

    def set_oci_version(self, version: str) -> Self:
        """Declare the runtime-spec version the document follows (default 1.1.0)."""
        self._doc["ociVersion"] = version
        return self

    def set_hostname(self, hostname: str) -> Self:
        self._doc["hostname"] = hostname
        return self

    def set_domainname(self, domainname: str) -> Self:
        self._doc["domainname"] = domainname
        return self

    def add_annotation(self, key: str, value: str) -> Self:
        self._section("annotations")[key] = value
        return self

    # -- process ----------------------------------------------------------------------

    def set_args(self, args: Sequence[str]) -> Self:
        self._section("process")["args"] = list(args)
        return self

    def set_cwd(self, cwd: str) -> Self:
        self._section("process")["cwd"] = cwd
        return self

    def set_terminal(self, terminal: bool = True) -> Self:
        """Give the process a terminal; with one, ``TERM=xterm`` unless TERM is set.

        CRI-O sets TERM only for a container with ``tty`` (runtime-spec v1.2
        config.md "Process" ``terminal``).
        """
        self._section("process")["terminal"] = terminal
        if terminal and "TERM" not in self.env():
            self.set_env("TERM", "xterm")
        return self

    def set_console_size(self, height: int, width: int) -> Self:
        """Set ``process.consoleSize`` in characters (used only with a terminal).

        runtime-spec v1.2 config.md "Process".
        """
        self._section("process")["consoleSize"] = {"height": height, "width": width}
        return self

    def set_env(self, name: str, value: str) -> Self:
        """Set ``name=value``, replacing an earlier value of ``name``."""
        env = self._list("process", "env")
        prefix = f"{name}="
        env[:] = [e for e in env if not e.startswith(prefix)]
        env.append(f"{name}={value}")
        return self

    def unset_env(self, name: str) -> Self:
        env = self._list("process", "env")
        env[:] = [e for e in env if e.split("=", 1)[0] != name]
        return self

    def env(self) -> dict[str, str]:
        """The process environment as a dict (later entries win)."""
        out: dict[str, str] = {}
        for entry in self._doc.get("process", {}).get("env", []) or []:
            name, _, value = entry.partition("=")
            out[name] = value
        return out

    def set_user(
        self, uid: int, gid: int, *, additional_gids: Iterable[int] = (), umask: int | None = None
    ) -> Self:
        user: dict[str, Any] = {"uid": uid, "gid": gid}
        extra = sorted(set(additional_gids))
        if extra:
            user["additionalGids"] = extra
        if umask is not None:
            user["umask"] = umask
        self._section("process")["user"] = user
        return self

    def set_no_new_privileges(self, value: bool = True) -> Self:
        self._section("process")["noNewPrivileges"] = value
        return self

    def set_oom_score_adj(self, value: int, *, restrict: bool = True) -> Self:
        """Set ``process.oomScoreAdj``; ``restrict`` raises it to what this process may set."""
        self._section("process")["oomScoreAdj"] = clamp_oom_score_adj(value) if restrict else value
        return self

    def set_scheduler(
        self,
        policy: str,
        *,
        nice: int | None = None,
        priority: int | None = None,
        flags: Iterable[str] = (),
        runtime: int | None = None,
        deadline: int | None = None,
        period: int | None = None,
    ) -> Self:
        """Set ``process.scheduler`` for sched_setattr(2) (``SCHED_FIFO``, ...).

        runtime-spec v1.2 config.md "Linux Process" (new in v1.2: runc 1.1.5 and
        crun 1.8.1 ignore it); ``runtime``, ``deadline`` and ``period`` are in ns.
        """
        if policy not in _SCHED_POLICIES:
            raise RuntimeSpecError(f"unknown scheduling policy {policy!r} (known: "
                                   f"{', '.join(_SCHED_POLICIES)})")
        sched: dict[str, Any] = {"policy": policy}
        for key, value in (("nice", nice), ("priority", priority), ("runtime", runtime),
                           ("deadline", deadline), ("period", period)):
            if value is not None:
                sched[key] = value
        if flags:
            sched["flags"] = list(flags)
        self._section("process")["scheduler"] = sched
        return self

    def set_io_priority(self, class_: str, priority: int) -> Self:
        """Set ``process.ioPriority``: ``IOPRIO_CLASS_RT``/``_BE``/``_IDLE``, level 0 to 7.

        runtime-spec v1.2 config.md "Linux Process" (new in v1.2: runc 1.1.5 and
        crun 1.8.1 ignore it).
        """
        if class_ not in _IOPRIO_CLASSES:
            raise RuntimeSpecError(f"unknown I/O priority class {class_!r} (known: "
                                   f"{', '.join(_IOPRIO_CLASSES)})")
        self._section("process")["ioPriority"] = {"class": class_, "priority": priority}
        return self

    def set_apparmor_profile(self, profile: str) -> Self:
        self._section("process")["apparmorProfile"] = profile
        return self

    def set_selinux_label(self, label: str) -> Self:
        self._section("process")["selinuxLabel"] = label
        return self

    # -- capabilities ---------------------------------------------------------------------

    def capabilities(self, which: str = "bounding") -> list[str]:
        caps = self._doc.get("process", {}).get("capabilities", {}) or {}
        return list(caps.get(which, []) or [])

    def set_capabilities(self, caps: Iterable[str],
                         sets: Iterable[str] = _DEFAULT_CAP_SETS) -> Self:
        """Make ``caps`` the whole of each capability set in ``sets``."""
        names = sorted({normalize_capability(c) for c in caps})
        section = self._section("process", "capabilities")
        for s in sets:
            section[s] = list(names)
        return self

    def add_capability(self, cap: str, sets: Iterable[str] = _DEFAULT_CAP_SETS) -> Self:
        """Add ``cap`` (``NET_ADMIN`` or ``CAP_NET_ADMIN``); ``ALL`` adds every one."""
        caps = host_capabilities() if cap.upper() == "ALL" else (normalize_capability(cap),)
        for s in sets:
            current = self._list("process", "capabilities", s)
            current.extend(c for c in caps if c not in current)
            current.sort()
        return self

    def drop_capability(self, cap: str, sets: Iterable[str] = _CAP_SETS) -> Self:
        """Drop ``cap`` from every set; ``ALL`` empties them."""
        section = self._section("process", "capabilities")
        for s in sets:
            if s not in section:
                continue
            section[s] = [] if cap.upper() == "ALL" else [
                c for c in section[s] if c != normalize_capability(cap)]
        return self

    # -- rlimits ------------------------------------------------------------------------

    def set_rlimit(self, kind: str, hard: int, soft: int, *, clamp: bool = False) -> Self:
        """Set an rlimit (``RLIMIT_NOFILE``); ``clamp`` lowers it to the caller's hard limit."""
        kind = _rlimit_name(kind)
        if clamp:
            soft, hard = clamp_rlimit(kind, soft, hard)
        limits = self._list("process", "rlimits")
        limits[:] = [r for r in limits if r.get("type") != kind]
        limits.append({"type": kind, "hard": hard, "soft": soft})
        return self

    def remove_rlimit(self, kind: str) -> Self:
        """Remove an rlimit (``RLIMIT_NOFILE``, ``nofile``: named as :meth:`set_rlimit` takes)."""
        kind = _rlimit_name(kind)
        limits = self._list("process", "rlimits")
        limits[:] = [r for r in limits if r.get("type") != kind]
        return self

    # -- profiles -------------------------------------------------------------------------

    def set_privileged(self) -> Self:
        """Open the container up as CRI-O does for ``privileged: true``.

        Every capability this host has (:func:`host_capabilities`), no seccomp
        filter, ``noNewPrivileges`` off (privileged implies the kubelet's
        allowPrivilegeEscalation), no masked or read-only paths, read-write /sys
        and cgroup mounts, the host's devices, and every device allowed in the
        device cgroup (cri-o server/container_create_linux.go). Calling it again
        changes nothing more.
        """
        self.set_capabilities(host_capabilities())
        self.set_seccomp(None)
        self.set_no_new_privileges(False)
        linux = self._section("linux")
        linux.pop("maskedPaths", None)
        linux.pop("readonlyPaths", None)
        for mount in self._list("mounts"):
            if mount.get("type") in ("sysfs", "cgroup", "cgroup2"):
                options = mount.get("options") or []
                mount["options"] = [o for o in options if o not in ("ro", "rw")] + ["rw"]
        linux["devices"] = host_devices()
        self._section("linux", "resources")["devices"] = [{"allow": True, "access": "rwm"}]
        return self

    def set_default_rlimits(self) -> Self:
        """CRI-O's default rlimits, each clamped to this process's hard limit."""
        for kind, hard, soft in _defaults.DEFAULT_RLIMITS:
            self.set_rlimit(kind, hard, soft, clamp=True)
        return self


def _default_config() -> dict[str, Any]:
    """CRI-O's profile for a container that asks for nothing special."""
    caps = sorted(_defaults.DEFAULT_CAPABILITIES)
    doc: dict[str, Any] = {
        "ociVersion": GENERATED_OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [_defaults.DEFAULT_PATH_ENV],
            "cwd": "/",
            "capabilities": {s: list(caps) for s in _DEFAULT_CAP_SETS},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "mounts": _defaults.default_mounts(),
        "linux": {
            "namespaces": [{"type": t} for t in _DEFAULT_NAMESPACES],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": list(_defaults.MASKED_PATHS),
            "readonlyPaths": list(_defaults.READONLY_PATHS),
        },
    }
    limits = doc["process"]["rlimits"] = []
    for kind, hard, soft in _defaults.DEFAULT_RLIMITS:
        got_soft, got_hard = clamp_rlimit(kind, soft, hard)
        limits.append({"type": kind, "hard": got_hard, "soft": got_soft})
    return doc
