"""The service's configuration: TOML in the shape of crio.conf's sections.

crio.conf(5) tables ``[crio]``, ``[crio.api]``, ``[crio.runtime]``,
``[crio.runtime.runtimes.<name>]``, ``[crio.image]`` and ``[crio.network]``; every
key is optional and has a default that works on a stock machine. Unknown keys are
refused (CRI-O refuses them too), naming the file, the table and the key.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from criolib.service._errors import ConfigError

__all__ = [
    "DEFAULT_CAPABILITIES",
    "MONITOR_BACKENDS",
    "APIConfig",
    "Config",
    "ImageConfig",
    "NetworkOptions",
    "RuntimeHandlerConfig",
    "RuntimeOptions",
    "load_config",
]

#: crio.conf's default_capabilities (CRI-O 1.26+).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "KILL",
)
#: ``[crio.runtime] monitor``: criolib's own monitor, the system conmon, or either.
MONITOR_BACKENDS = ("auto", "conmon", "criolib")
_CGROUP_MANAGERS = ("cgroupfs",)


@attrs.frozen(kw_only=True)
class APIConfig:
    """``[crio.api]``: where the gRPC endpoint listens and its message size limits."""

    listen: Path = Path("/run/criolib/criolib.sock")
    grpc_max_send_msg_size: int = 16 * 1024 * 1024
    grpc_max_recv_msg_size: int = 16 * 1024 * 1024


@attrs.frozen(kw_only=True)
class RuntimeHandlerConfig:
    """``[crio.runtime.runtimes.<name>]``: one OCI runtime (a CRI runtime handler).

    ``runtime_path`` ``""`` means ``name`` found on ``PATH`` when the runtime is first
    used (:meth:`resolved_path`); ``runtime_root`` is the runtime's ``--root``, never
    the host's /run/runc (podman's).
    """

    name: str
    runtime_path: str = ""
    runtime_root: Path = Path("/run/criolib/runc")

    def resolved_path(self) -> str:
        """The runtime binary: ``runtime_path``, or ``name`` looked up on ``PATH``."""
        if self.runtime_path:
            return self.runtime_path
        found = shutil.which(self.name)
        if found is None:
            raise ConfigError(f"[crio.runtime.runtimes.{self.name}] runtime_path is empty "
                              f"and {self.name!r} is not on PATH: install it or set "
                              "runtime_path")
        return found


def _default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {name: RuntimeHandlerConfig(name=name, runtime_root=Path(f"/run/criolib/{name}"))
            for name in ("runc", "crun")}


@attrs.frozen(kw_only=True)
class RuntimeOptions:
    """``[crio.runtime]``: OCI runtimes, the monitor and container defaults.

    ``namespaces_dir`` is where pods' namespaces are pinned (``<dir>/netns/<id>``,
    ``ipcns``, ``utsns``; CRI-O's key: ``ip netns`` sees the network ones under
    /var/run).
    """

    default_runtime: str = "runc"
    cgroup_manager: str = "cgroupfs"
    monitor: str = "auto"
    container_exits_dir: Path = Path("/run/criolib/exits")
    container_attach_socket_dir: Path = Path("/run/criolib/monitor")
    log_dir: Path = Path("/var/log/criolib/pods")
    namespaces_dir: Path = Path("/var/run")
    default_capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    default_sysctls: tuple[str, ...] = ()
    seccomp_profile: str = ""
    seccomp_use_default_when_empty: bool = False
    pids_limit: int = 1024
    log_size_max: int = -1
    ctr_stop_timeout: int = 30
    no_pivot: bool = False
    runtimes: Mapping[str, RuntimeHandlerConfig] = attrs.field(factory=_default_runtimes)

    def handler(self, name: str = "") -> RuntimeHandlerConfig:
        """The runtime for a CRI ``runtime_handler`` (``""`` = ``default_runtime``).

        An unknown handler is a :class:`ConfigError` (an InvalidRequest) naming it
        and the known ones.
        """
        key = name or self.default_runtime
        try:
            return self.runtimes[key]
        except KeyError:
            raise ConfigError(f"no runtime handler {key!r} in [crio.runtime.runtimes] "
                              f"(configured: {', '.join(sorted(self.runtimes))})") from None


@attrs.frozen(kw_only=True)
class ImageConfig:
    """``[crio.image]``: credentials, signature policy and registries.

    An empty path means the system's file: ``/etc/containers/policy.json``
    (accept-anything when absent, logged), ``/etc/containers/registries.conf``
    (+ ``.d``), no global auth file.
    """

    global_auth_file: str = ""
    signature_policy: str = ""
    registries_conf: str = ""
    insecure_registries: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class NetworkOptions:
    """``[crio.network]``: CNI configuration and plugins.

    ``cache_dir`` (a criolib key) is libcni's result cache, read back for DEL.
    """

    network_dir: Path = Path("/etc/cni/net.d/")
    plugin_dirs: tuple[str, ...] = ("/opt/cni/bin/", "/usr/lib/cni/")
    cni_default_network: str = ""
    cache_dir: Path = Path("/var/lib/cni")


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration; ``[crio]``'s own keys are attributes here.

    ``root``/``runroot``/``storage_driver``/``storage_option`` open the
    :class:`criolib.storage.Store`; ``state_dir`` holds the sandbox and container
    records (and the sandboxes' resolv.conf, hosts, hostname and shm).
    """

    root: Path = Path("/var/lib/criolib/storage")
    runroot: Path = Path("/run/criolib/storage")
    storage_driver: str = "overlay"
    storage_option: tuple[str, ...] = ()
    state_dir: Path = Path("/run/criolib/service")
    api: APIConfig = attrs.field(factory=APIConfig)
    runtime: RuntimeOptions = attrs.field(factory=RuntimeOptions)
    image: ImageConfig = attrs.field(factory=ImageConfig)
    network: NetworkOptions = attrs.field(factory=NetworkOptions)

    @classmethod
    def for_root(cls, directory: str | os.PathLike[str], *,
                 storage_driver: str = "overlay") -> Config:
        """Defaults with every path the service writes under ``directory`` (for tests).

        ``storage/`` (root), ``run/`` (runroot ``run/storage``, records
        ``run/service``, socket ``run/criolib.sock``, exits, monitor, runtime roots
        ``run/<runtime>``, pinned namespaces ``run/netns/<id>``...), ``log/pods``,
        and ``cni/net.d`` (an empty network directory: add a conflist for
        NetworkReady) and ``cni/cache``. Plugin directories stay the system's.
        """
        base = Path(os.path.abspath(directory))
        run = base / "run"
        runtimes = {name: attrs.evolve(handler, runtime_root=run / name)
                    for name, handler in _default_runtimes().items()}
        return cls(
            root=base / "storage", runroot=run / "storage", storage_driver=storage_driver,
            state_dir=run / "service",
            api=APIConfig(listen=run / "criolib.sock"),
            runtime=RuntimeOptions(container_exits_dir=run / "exits",
                                   container_attach_socket_dir=run / "monitor",
                                   log_dir=base / "log" / "pods", namespaces_dir=run,
                                   runtimes=runtimes),
            network=NetworkOptions(network_dir=base / "cni" / "net.d",
                                   cache_dir=base / "cni" / "cache"),
        )


# -- loading ---------------------------------------------------------------------------

_Check = Callable[[Any], Any]


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _path(v: Any) -> Path:
    if not isinstance(v, str) or not v:
        raise TypeError("a non-empty path string")
    return Path(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("an integer")
    return v


def _positive(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise TypeError("a positive integer")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError("an array of strings")
    return tuple(v)


def _one_of(*choices: str) -> _Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise TypeError(f"one of {', '.join(repr(c) for c in choices)}")
        return v
    return check


def _sysctls(v: Any) -> tuple[str, ...]:
    items = _strings(v)
    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise TypeError(f"an array of \"key=value\" strings ({item!r} is not one)")
    return items


#: table -> key -> check (also the list of every key a table may hold).
_KEYS: dict[str, dict[str, _Check]] = {
    "crio": {"root": _path, "runroot": _path, "storage_driver": _str,
             "storage_option": _strings, "state_dir": _path},
    "crio.api": {"listen": _path, "grpc_max_send_msg_size": _positive,
                 "grpc_max_recv_msg_size": _positive},
    "crio.runtime": {
        "default_runtime": _str, "cgroup_manager": _one_of(*_CGROUP_MANAGERS),
        "monitor": _one_of(*MONITOR_BACKENDS), "container_exits_dir": _path,
        "container_attach_socket_dir": _path, "log_dir": _path, "namespaces_dir": _path,
        "default_capabilities": _strings, "default_sysctls": _sysctls,
        "seccomp_profile": _str, "seccomp_use_default_when_empty": _bool,
        "pids_limit": _int, "log_size_max": _int,
        "ctr_stop_timeout": _int, "no_pivot": _bool},
    "crio.runtime.runtimes.*": {"runtime_path": _str, "runtime_root": _path},
    "crio.image": {"global_auth_file": _str, "signature_policy": _str,
                   "registries_conf": _str, "insecure_registries": _strings},
    "crio.network": {"network_dir": _path, "plugin_dirs": _strings,
                     "cni_default_network": _str, "cache_dir": _path},
}
_SUBTABLES: dict[str, tuple[str, ...]] = {
    "": ("crio",), "crio": ("api", "runtime", "image", "network"), "crio.runtime": ("runtimes",),
}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``base``; a dotted key ``"crio.api.listen"`` is a path."""
    for key, given in extra.items():
        head, *rest = key.split(".")
        value = _nest(rest, given) if rest else given
        if isinstance(value, Mapping) and isinstance(base.get(head), dict):
            _merge(base[head], value)
        elif isinstance(value, Mapping):
            base[head] = {}
            _merge(base[head], value)
        else:
            base[head] = value


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(parts):
        value = {part: value}
    result: dict[str, Any] = value
    return result


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, table: str, key: str | None, problem: str) -> ConfigError:
        where = f"[{table}]" if table else "the top level"
        what = f"{where} {key}" if key else where
        return ConfigError(f"{self.source}: {what}: {problem}")

    def table(self, doc: Mapping[str, Any], table: str, pattern: str) -> dict[str, Any]:
        """The checked values of one table's plain keys; unknown keys refused."""
        checks = _KEYS.get(pattern, {})
        subtables = _SUBTABLES.get(pattern, ())
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key in subtables:
                if not isinstance(value, Mapping):
                    raise self.fail(table, key, "must be a table")
                continue
            check = checks.get(key)
            if check is None:
                known = sorted([*checks, *subtables])
                raise self.fail(table, key, "unknown key (known: "
                                f"{', '.join(known) if known else 'none'})")
            try:
                values[key] = check(value)
            except TypeError as exc:
                raise self.fail(table, key, f"expected {exc}, got {value!r}") from None
        return values

    def sub(self, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = doc.get(name, {})
        return value if isinstance(value, Mapping) else {}

    def config(self, doc: Mapping[str, Any]) -> Config:
        self.table(doc, "", "")
        crio = self.sub(doc, "crio")
        top = self.table(crio, "crio", "crio")
        api = APIConfig(**self.table(self.sub(crio, "api"), "crio.api", "crio.api"))
        rt_doc = self.sub(crio, "runtime")
        rt = self.table(rt_doc, "crio.runtime", "crio.runtime")
        runtimes = _default_runtimes()
        for name, handler_doc in self.sub(rt_doc, "runtimes").items():
            table = f"crio.runtime.runtimes.{name}"
            if not isinstance(handler_doc, Mapping):
                raise self.fail("crio.runtime.runtimes", name, "must be a table")
            if not name or "/" in name:
                raise self.fail("crio.runtime.runtimes", name, "not a usable runtime name")
            values = self.table(handler_doc, table, "crio.runtime.runtimes.*")
            base = runtimes.get(name) or RuntimeHandlerConfig(
                name=name, runtime_root=Path(f"/run/criolib/{name}"))
            runtimes[name] = attrs.evolve(base, **values)
        default = rt.get("default_runtime", RuntimeOptions().default_runtime)
        if default not in runtimes:
            raise self.fail("crio.runtime", "default_runtime",
                            f"{default!r} names no [crio.runtime.runtimes.{default}] table "
                            f"(configured: {', '.join(sorted(runtimes))})")
        runtime = RuntimeOptions(**rt, runtimes=runtimes)
        image = ImageConfig(**self.table(self.sub(crio, "image"), "crio.image", "crio.image"))
        network = NetworkOptions(**self.table(self.sub(crio, "network"), "crio.network",
                                              "crio.network"))
        return Config(**top, api=api, runtime=runtime, image=image, network=network)


def load_config(path: str | os.PathLike[str] | None = None, *,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Read a crio.conf-shaped TOML file (``None``: the defaults) into a :class:`Config`.

    ``overrides`` are merged over the file, in its shape
    (``{"crio": {"root": "/x"}}``) or with dotted keys (``{"crio.api.listen": "/s"}``).
    A file that cannot be read or parsed, an unknown key, a value of the wrong type,
    or a ``default_runtime`` without its ``[crio.runtime.runtimes.<name>]`` table is a
    :class:`ConfigError` naming the file, the table and the key.
    """
    doc: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = os.fspath(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the config: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if overrides:
        source = "<overrides>" if path is None else f"{source} (with overrides)"
        _merge(doc, overrides)
    return _Reader(source).config(doc)
