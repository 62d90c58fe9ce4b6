"""storage.conf: where the store lives and which driver it uses.

containers-storage.conf(5): a TOML file whose options all sit under a global
``[storage]`` table: ``driver``, ``graphroot``, ``runroot``, ``driver_priority``,
``transient_store``...; ``[storage.options]`` for options every driver shares and
``[storage.options.<driver>]`` (``mountopt``, ``mount_program``, ``size``...) for
one driver's. The first file found wins: ``$CONTAINERS_STORAGE_CONF``; for a user
other than root ``$XDG_CONFIG_HOME/containers/storage.conf`` (or
``~/.config/containers/storage.conf``); ``/etc/containers/storage.conf``;
``/usr/share/containers/storage.conf``.

Where a file does not say, criolib's own defaults apply, never podman's store:
overlay in ``/var/lib/criolib/storage`` with ``/run/criolib/storage`` (a user
other than root: ``$XDG_DATA_HOME/criolib/storage`` and
``$XDG_RUNTIME_DIR/criolib/storage``). A graphroot given without a runroot gets
one of its own, ``<default runroot>-<sha256(graphroot)[:12]>``: two stores never
count their mounts in one runroot.

``driver`` is used as given (no fallback); without it, the first entry of
``driver_priority`` that works here is chosen. ``rootless_storage_path`` takes
``$UID`` and ``$USER``; every path takes environment variables. Settings that
would change what the store means and that criolib does not implement
(``transient_store = true``, ``imagestore``, ``additionalimagestores``) raise
:class:`ConfigError`; other keys this module does not know are logged and
ignored, like containers/storage does; a known key of the wrong type raises
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.storage._drivers import get_driver
from criolib.storage._errors import ConfigError, DriverUnknown, DriverUnsupported
from criolib.storage._markers import runroot_for

__all__ = [
    "DEFAULT_GRAPHROOT",
    "DEFAULT_RUNROOT",
    "StorageConfig",
    "config_search_path",
    "split_driver_options",
]

log = logging.getLogger("criolib.storage")

#: criolib's own defaults for root (podman's and CRI-O's store is not criolib's to share).
DEFAULT_GRAPHROOT = Path("/var/lib/criolib/storage")
DEFAULT_RUNROOT = Path("/run/criolib/storage")
DEFAULT_DRIVER = "overlay"
ENV_CONF = "CONTAINERS_STORAGE_CONF"

_STR, _BOOL, _LIST, _TABLE = "a string", "a boolean", "a list of strings", "a table"
#: ``[storage]`` keys: what type each must have.
_STORAGE_KEYS = {
    "driver": _STR, "graphroot": _STR, "runroot": _STR, "rootless_storage_path": _STR,
    "imagestore": _STR, "driver_priority": _LIST, "transient_store": _BOOL,
    "options": _TABLE,
}
#: ``[storage.options]`` keys shared by every driver (anything goes for their values).
_SHARED_OPTION_KEYS = {
    "additionalimagestores", "pull_options", "remap-uids", "remap-gids", "remap-user",
    "remap-group", "root-auto-userns-user", "auto-userns-min-size",
    "auto-userns-max-size", "disable-volatile", "mountopt", "size", "ignore_chown_errors",
    "mount_program", "skip_mount_home", "force_mask", "use_composefs",
}
#: Per-driver tables under ``[storage.options]``.
_DRIVER_TABLES = {"overlay", "vfs", "btrfs", "thinpool", "zfs", "aufs"}
_SCALAR = (str, bool, int, float)


@attrs.frozen
class StorageConfig:
    """What storage.conf says: the store's place, its driver and the driver's options.

    ``driver_options`` are ``key=value`` strings for the chosen driver (from
    ``[storage.options.<driver>]``, and ``mountopt``/``size``/... from
    ``[storage.options]`` when the driver's table does not set them);
    ``options`` is the raw ``[storage.options]`` table for callers that need
    more; ``source`` is the file read (``None`` for the built-in defaults).
    """

    driver: str = DEFAULT_DRIVER
    graphroot: Path = DEFAULT_GRAPHROOT
    runroot: Path = DEFAULT_RUNROOT
    driver_options: tuple[str, ...] = ()
    driver_priority: tuple[str, ...] = ()
    transient_store: bool = False
    imagestore: Path | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    source: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> StorageConfig:
        """Read ``path``, or the first storage.conf of the search path, or the defaults.

        A ``path`` given but missing raises :class:`ConfigError`; so does a file
        that is not TOML or a known key of the wrong type.
        """
        if path is not None:
            target = Path(path)
            if not target.is_file():
                raise ConfigError(f"{target}: storage.conf not found")
            return cls.parse(_read(target), source=target)
        for candidate in config_search_path():
            if candidate.is_file():
                return cls.parse(_read(candidate), source=candidate)
        log.debug("no storage.conf found; using containers/storage's defaults")
        return cls.parse("")

    @classmethod
    def parse(cls, text: str, *, source: Path | None = None) -> StorageConfig:
        """The configuration a storage.conf text describes (``source`` names it in errors)."""
        where = str(source) if source is not None else "<storage.conf>"
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
        for key in doc:
            if key != "storage":
                log.info("%s: ignoring unknown table or key %r (only [storage] is read)",
                         where, key)
        storage = doc.get("storage", {})
        _check(where, "storage", storage, _TABLE)
        for key, value in storage.items():
            kind = _STORAGE_KEYS.get(key)
            if kind is None:
                log.info("%s: ignoring unknown key storage.%s", where, key)
                continue
            _check(where, f"storage.{key}", value, kind)
        options: dict[str, Any] = dict(storage.get("options", {}))
        _check_options(where, options)
        _refuse_unsupported(where, storage, options)
        priority = tuple(storage.get("driver_priority", ()))
        graphroot = _path(where, "graphroot", storage.get("graphroot"), DEFAULT_GRAPHROOT)
        runroot = _path(where, "runroot", storage.get("runroot"), DEFAULT_RUNROOT)
        if os.geteuid() != 0:
            graphroot, runroot = _rootless_roots(where, storage, source, graphroot, runroot)
        elif not storage.get("runroot") and graphroot != DEFAULT_GRAPHROOT:
            runroot = runroot_for(graphroot, DEFAULT_RUNROOT)
        driver = storage.get("driver") or (
            _first_supported(where, priority, graphroot, options) if priority
            else DEFAULT_DRIVER)
        imagestore = storage.get("imagestore") or None
        return cls(
            driver=driver,
            graphroot=graphroot,
            runroot=runroot,
            driver_options=_driver_options(driver, options),
            driver_priority=priority,
            transient_store=bool(storage.get("transient_store", False)),
            imagestore=Path(os.path.expandvars(imagestore)) if imagestore else None,
            options=options,
            source=source,
        )


def config_search_path() -> list[Path]:
    """Where storage.conf is looked for, first match wins (containers-storage.conf(5) FILES)."""
    paths = _users_own_files()
    return [*paths, Path("/etc/containers/storage.conf"),
            Path("/usr/share/containers/storage.conf")]


def _users_own_files() -> list[Path]:
    """$CONTAINERS_STORAGE_CONF, and for a user other than root their config home's file."""
    paths = []
    env = os.environ.get(ENV_CONF)
    if env:
        paths.append(Path(env))
    if os.geteuid() != 0:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        paths.append(Path(xdg) / "containers" / "storage.conf")
    return paths


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read storage.conf: {exc}") from exc


def _check(where: str, key: str, value: object, kind: str) -> None:
    ok = {
        _STR: isinstance(value, str),
        _BOOL: isinstance(value, bool),
        _TABLE: isinstance(value, dict),
        _LIST: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: {key} must be {kind}, not {_describe(value)}")


def _check_options(where: str, options: Mapping[str, Any]) -> None:
    """Type-check ``[storage.options]`` and its per-driver tables; log unknown keys."""
    for key, value in options.items():
        if key in _DRIVER_TABLES:
            _check(where, f"storage.options.{key}", value, _TABLE)
            for sub, subvalue in value.items():
                _check_scalar(where, f"storage.options.{key}.{sub}", subvalue)
        elif key in _SHARED_OPTION_KEYS:
            if key in {"additionalimagestores"}:
                _check(where, f"storage.options.{key}", value, _LIST)
        else:
            log.info("%s: ignoring unknown key storage.options.%s", where, key)


def _check_scalar(where: str, key: str, value: object) -> None:
    if not isinstance(value, _SCALAR):
        raise ConfigError(
            f"{where}: {key} must be a string, number or boolean, not {_describe(value)}")


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _path(where: str, key: str, value: str | None, default: Path) -> Path:
    if not value:
        return default
    # containers-storage.conf(5): these paths take environment variables ($HOME/...).
    expanded = Path(os.path.expandvars(value))
    if not expanded.is_absolute():
        raise ConfigError(f"{where}: storage.{key} must be an absolute path, not {value!r}")
    return expanded


def _rootless_roots(where: str, storage: Mapping[str, Any], source: Path | None,
                    graphroot: Path, runroot: Path) -> tuple[Path, Path]:
    """Where a user other than root keeps a store (containers-storage.conf(5)).

    A system file's graphroot and runroot are root's: a user gets
    ``rootless_storage_path`` (with ``$UID`` and ``$USER``) or
    ``$XDG_DATA_HOME/criolib/storage``, and ``$XDG_RUNTIME_DIR/criolib/storage``;
    only the user's own file may set them.
    """
    own = source is not None and source in _users_own_files()
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    # containers/storage's fallback when there is no XDG_RUNTIME_DIR (a fixed name, as
    # there: the store lock inside decides who uses it, not the name).
    runtime = (os.environ.get("XDG_RUNTIME_DIR")
               or f"/tmp/criolib-user-{os.geteuid()}")  # noqa: S108
    if storage.get("rootless_storage_path"):
        graphroot = _path(where, "rootless_storage_path",
                          _user_vars(storage["rootless_storage_path"]), graphroot)
    elif not (own and storage.get("graphroot")):
        graphroot = Path(data) / "criolib" / "storage"
    default_runroot = Path(runtime) / "criolib" / "storage"
    if not (own and storage.get("runroot")):
        runroot = (default_runroot if graphroot == Path(data) / "criolib" / "storage"
                   else runroot_for(graphroot, default_runroot))
    return graphroot, runroot


_USER_VAR = re.compile(r"\$(\{)?(UID|USER)(?(1)\})")


def _user_vars(value: str) -> str:
    """``$UID``/``${UID}`` and ``$USER``/``${USER}`` replaced (containers-storage.conf(5))."""
    uid = os.geteuid()

    def sub(match: re.Match[str]) -> str:
        if match.group(2) == "UID":
            return str(uid)
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return os.environ.get("USER", str(uid))

    return _USER_VAR.sub(sub, value)


def _refuse_unsupported(where: str, storage: Mapping[str, Any],
                        options: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for settings that would change the store's meaning."""
    refused = []
    if storage.get("transient_store") is True:
        refused.append("storage.transient_store = true (metadata on the runroot)")
    if storage.get("imagestore"):
        refused.append("storage.imagestore (images in a separate store)")
    if options.get("additionalimagestores"):
        refused.append("storage.options.additionalimagestores (read-only image stores)")
    if refused:
        raise ConfigError(f"{where}: {'; '.join(refused)}: not supported by criolib; remove "
                          "the setting or use containers/storage")


def _first_supported(where: str, priority: Sequence[str], graphroot: Path,
                     options: Mapping[str, Any]) -> str:
    """The first driver of ``driver_priority`` that is known and works under ``graphroot``."""
    reasons = []
    for name in priority:
        try:
            get_driver(name, graphroot / name, options=_driver_options(name, options))
        except (DriverUnknown, DriverUnsupported) as exc:
            reasons.append(f"{name}: {exc}")
            log.info("%s: driver_priority: skipping %s: %s", where, name, exc)
            continue
        return name
    raise ConfigError(f"{where}: no driver of storage.driver_priority works here: "
                      + "; ".join(reasons))


def _driver_options(driver: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    """``key=value`` options for ``driver``: its own table over the shared keys."""
    merged: dict[str, Any] = {
        k: v for k, v in options.items()
        if k in _SHARED_OPTION_KEYS and isinstance(v, _SCALAR)
        and k not in {"auto-userns-min-size", "auto-userns-max-size", "disable-volatile",
                      "remap-uids", "remap-gids", "remap-user", "remap-group",
                      "root-auto-userns-user"}
    }
    own = options.get(driver, {})
    if isinstance(own, dict):
        merged.update(own)
    # Settings that ask for what criolib does anyway: not worth a driver's refusal.
    if merged.get("ignore_chown_errors") in (False, "false"):
        del merged["ignore_chown_errors"]
    merged.pop("skip_mount_home", None)  # criolib never bind-mounts the driver's home
    return tuple(f"{k}={_option_text(v)}" for k, v in merged.items() if v != "")


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def split_driver_options(driver: str, options: Sequence[str]) -> tuple[str, ...]:
    """Options for ``driver`` from a list that may prefix them (``overlay.mountopt=...``).

    containers/storage's ``--storage-opt`` form names the driver; options naming
    another driver are dropped, unprefixed ones are kept.
    """
    kept = []
    for option in options:
        key = option.partition("=")[0]
        prefix, dot, _rest = key.partition(".")
        if dot and prefix in _DRIVER_TABLES | {driver}:
            if prefix == driver:
                kept.append(option[len(prefix) + 1:])
            continue
        kept.append(option)
    return tuple(kept)
