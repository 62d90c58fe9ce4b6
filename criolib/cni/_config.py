"""Network configuration lists: loading, validation and version selection.

Implements CNI SPEC.md v1.1.0 section "Section 1: Network configuration format"
(``name``, ``cniVersion``, ``cniVersions``, ``disableCheck``, ``disableGC``,
``plugins``) and libcni's file rules (libcni/conf.go ``ConfFromFile``,
``ConfListFromFile``, ``ConfListFromConf``, ``ConfFiles``): ``.conflist`` files
hold a list; ``.conf`` and ``.json`` files hold one plugin and are wrapped into a
list of one, named after the plugin's ``name``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define, field

from criolib.cni._errors import ConfigError

__all__ = [
    "CNI_SPEC_VERSIONS",
    "CONF_EXTENSIONS",
    "NetworkConfigList",
    "NetworkSet",
    "NetworkWatcher",
    "load_conf_bytes",
    "load_conf_file",
    "load_networks",
    "pick_version",
]

log = logging.getLogger("criolib.cni")

#: The CNI spec versions criolib speaks, oldest first.
CNI_SPEC_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
#: File name extensions libcni loads (``ConfFiles`` with these extensions).
CONF_EXTENSIONS: tuple[str, ...] = (".conf", ".conflist", ".json")

# SPEC.md "name": starts with an alphanumeric character, then alphanumerics,
# underscore, dot or hyphen.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


@define(frozen=True)
class NetworkConfigList:
    """One network: a validated configuration list (SPEC.md v1.1.0 section 1).

    ``cni_version`` is the version criolib talks to the plugins, picked by
    :func:`pick_version`. ``plugins`` are the raw plugin objects, untouched (the
    spec leaves them open); ``raw`` is the whole document as loaded.
    """

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    cni_versions: tuple[str, ...] = ()
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] = field(factory=dict, eq=False, repr=False)
    path: Path | None = field(default=None, eq=False)

    def to_json(self) -> bytes:
        """The list as JSON bytes, with ``cniVersion`` set to the picked version."""
        doc = dict(self.raw)
        doc["cniVersion"] = self.cni_version
        return json.dumps(doc, sort_keys=True).encode()


def pick_version(doc: Mapping[str, Any], *, path: Path | None = None) -> str:
    """The spec version to use for ``doc`` (SPEC.md v1.1.0 "cniVersions").

    The highest of ``cniVersions`` criolib supports, else ``cniVersion``.
    """
    versions = doc.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise ConfigError("cniVersions must be a list of strings", path=path)
        known: list[str] = [v for v in versions if v in CNI_SPEC_VERSIONS]
        if known:
            return max(known, key=_version_key)
    version = doc.get("cniVersion")
    if version is None:
        if versions is not None:
            raise ConfigError(
                f"no supported version in cniVersions {versions}; "
                f"criolib supports {', '.join(CNI_SPEC_VERSIONS)}",
                path=path,
            )
        raise ConfigError("cniVersion is required", path=path)
    if not isinstance(version, str):
        raise ConfigError("cniVersion must be a string", path=path)
    if version not in CNI_SPEC_VERSIONS:
        raise ConfigError(
            f"unsupported cniVersion {version!r}; criolib supports {', '.join(CNI_SPEC_VERSIONS)}",
            path=path,
        )
    return version


def _check_name(name: Any, path: Path | None) -> str:
    if name is None or name == "":
        raise ConfigError("network name is required", path=path)
    if not isinstance(name, str):
        raise ConfigError("network name must be a string", path=path)
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid network name {name!r}: it must start with a letter or digit and "
            "hold only letters, digits, '_', '.' and '-'",
            path=path,
        )
    return name


def _check_bool(doc: Mapping[str, Any], key: str, path: Path | None) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be a boolean", path=path)
    return value


def _check_plugin(plugin: Any, index: int, path: Path | None) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise ConfigError(f"plugins[{index}] must be an object", path=path)
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise ConfigError(f"plugins[{index}] has no 'type'", path=path)
    return plugin


def _from_list(doc: dict[str, Any], path: Path | None) -> NetworkConfigList:
    name = _check_name(doc.get("name"), path)
    version = pick_version(doc, path=path)
    plugins = doc.get("plugins")
    if not isinstance(plugins, list):
        raise ConfigError("'plugins' must be a list of plugin objects", path=path)
    if not plugins:
        raise ConfigError("'plugins' is empty", path=path)
    checked = tuple(_check_plugin(p, i, path) for i, p in enumerate(plugins))
    raw_versions = doc.get("cniVersions")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=checked,
        cni_versions=tuple(raw_versions) if isinstance(raw_versions, list) else (),
        disable_check=_check_bool(doc, "disableCheck", path),
        disable_gc=_check_bool(doc, "disableGC", path),
        raw=doc,
        path=path,
    )


def _from_single(doc: dict[str, Any], path: Path | None) -> NetworkConfigList:
    # libcni ConfListFromConf: the list takes the plugin's name and cniVersion.
    _check_plugin(doc, 0, path)
    wrapped: dict[str, Any] = {"name": doc.get("name"), "plugins": [doc]}
    for key in ("cniVersion", "cniVersions", "disableCheck", "disableGC"):
        if key in doc:
            wrapped[key] = doc[key]
    return _from_list(wrapped, path)


def load_conf_bytes(
    data: bytes | str, *, single: bool = False, path: Path | None = None
) -> NetworkConfigList:
    """Parse and validate one configuration document.

    ``single`` says the document is one plugin (a ``.conf``/``.json`` file) to wrap
    into a list. Raises :class:`ConfigError` and nothing else.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", path=path) from exc
    if not isinstance(doc, dict):
        raise ConfigError("the configuration must be a JSON object", path=path)
    return _from_single(doc, path) if single else _from_list(doc, path)


def load_conf_file(path: Path | str) -> NetworkConfigList:
    """Load one ``.conflist``, ``.conf`` or ``.json`` file (libcni ``ConfListFromFile``)."""
    p = Path(path)
    if p.suffix not in CONF_EXTENSIONS:
        raise ConfigError(
            f"unknown extension {p.suffix!r}; expected one of {', '.join(CONF_EXTENSIONS)}", path=p
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=p) from exc
    return load_conf_bytes(data, single=p.suffix != ".conflist", path=p)


@define(frozen=True)
class NetworkSet:
    """The networks of a configuration directory.

    ``errors`` maps each file that failed to load to its :class:`ConfigError`;
    ``default`` is the default network's name, or None when none loaded.
    """

    networks: dict[str, NetworkConfigList]
    errors: dict[Path, ConfigError]
    default: str | None

    def default_network(self) -> NetworkConfigList | None:
        """The default network, if any."""
        return self.networks.get(self.default) if self.default is not None else None


def _conf_files(directory: Path) -> list[Path]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if os.path.splitext(e.name)[1] in CONF_EXTENSIONS and not e.is_dir()
    )


def load_networks(directory: Path | str, *, default_name: str | None = None) -> NetworkSet:
    """Load every configuration in ``directory``, sorted by file name.

    Bad files are collected in :attr:`NetworkSet.errors` while the others load; a
    second file declaring a name already loaded is an error of that file. The
    default network is ``default_name`` when it loaded, else the first valid one
    (CRI-O's ocicni rule).
    """
    networks: dict[str, NetworkConfigList] = {}
    errors: dict[Path, ConfigError] = {}
    for path in _conf_files(Path(directory)):
        try:
            net = load_conf_file(path)
        except ConfigError as exc:
            log.warning("skipping CNI config %s: %s", path, exc.problem)
            errors[path] = exc
            continue
        if net.name in networks:
            other = networks[net.name].path
            errors[path] = ConfigError(
                f"network {net.name!r} is already defined in {other}", path=path
            )
            continue
        networks[net.name] = net
    if default_name is not None and default_name in networks:
        default: str | None = default_name
    else:
        default = next(iter(networks), None)
    return NetworkSet(networks=networks, errors=errors, default=default)


class NetworkWatcher:
    """Reload a configuration directory when it changes.

    A change is a different mtime of the directory or a different set of
    ``(file name, mtime, size)`` among its configuration files.
    """

    def __init__(self, directory: Path | str, *, default_name: str | None = None) -> None:
        self.directory = Path(directory)
        self.default_name = default_name
        self._stamp: object = None
        self._current: NetworkSet | None = None

    def _take_stamp(self) -> object:
        try:
            dir_mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        files: list[tuple[str, int, int]] = []
        for p in _conf_files(self.directory):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((p.name, st.st_mtime_ns, st.st_size))
        return (dir_mtime, tuple(files))

    def networks(self) -> NetworkSet:
        """The current networks, reloaded only if the directory changed."""
        stamp = self._take_stamp()
        if self._current is None or stamp != self._stamp:
            self._current = load_networks(self.directory, default_name=self.default_name)
            self._stamp = stamp
        return self._current
