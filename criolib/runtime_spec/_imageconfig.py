"""Applying an OCI image's configuration to a runtime spec.

image-spec v1.1 config.md ("config" properties: User, Env, Entrypoint, Cmd,
WorkingDir, Volumes, StopSignal, Labels) mapped onto runtime-spec v1.2 the way
CRI-O does for a Kubernetes container: the CRI ``command`` replaces Entrypoint,
``args`` replaces Cmd, CRI env wins over the image's by name, and ``User`` is
resolved against the image's own /etc/passwd and /etc/group — looked up inside
the rootfs, never through a symlink that leads out of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from criolib._securejoin import secure_join
from criolib.runtime_spec._errors import InvalidArgument, RuntimeSpecError
from criolib.runtime_spec._generate import Generator
from criolib.runtime_spec._runtime_proc import signal_name, signal_number

__all__ = [
    "STOP_SIGNAL_ANNOTATION",
    "ImageConfigError",
    "ImageSettings",
    "ResolvedUser",
    "UnknownUser",
    "apply_image_config",
    "normalize_stop_signal",
    "resolve_user",
]

log = logging.getLogger("criolib.runtime_spec")

#: Where the image's StopSignal is recorded, as containerd and CRI-O record it.
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"
_MAX_ID = 2**32 - 2


class ImageConfigError(RuntimeSpecError, ValueError):
    """The image config (or a CRI override of it) cannot make a process."""


class UnknownUser(ImageConfigError):
    """A user or group name is not in the image's /etc/passwd or /etc/group."""


@attrs.frozen
class ResolvedUser:
    """A user spec resolved to ids: ``uid``, ``gid``, supplementary ``groups``, ``home``."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str | None = None
    name: str | None = None


@attrs.frozen
class ImageSettings:
    """What applying an image config decided, beyond the spec itself."""

    args: tuple[str, ...]
    user: ResolvedUser
    stop_signal: str | None
    volumes: tuple[str, ...]
    exposed_ports: tuple[str, ...]


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    """Lines of /etc/passwd or /etc/group inside ``rootfs``, split on ':'."""
    try:
        path = secure_join(rootfs, f"/etc/{name}")
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ImageConfigError(f"cannot read /etc/{name} in {rootfs}: {exc.strerror or exc}"
                               ) from exc
    return [line.split(":") for line in text.splitlines()
            if line and not line.startswith("#") and line.count(":") >= 2]


def _id(value: str) -> int | None:
    if value.isdigit():
        n = int(value)
        if n > _MAX_ID:
            raise ImageConfigError(f"user or group id {value} is out of range")
        return n
    return None


def resolve_user(spec: str, rootfs: str | os.PathLike[str] | None) -> ResolvedUser:
    """Resolve an image ``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``…).

    Names come from the rootfs's /etc/passwd and /etc/group; a numeric uid that
    has no passwd entry runs with gid 0 and no supplementary groups, as Docker and
    CRI-O do. Supplementary groups are those listing the user by name.
    """
    user_part, _, group_part = (spec or "").partition(":")
    root = Path(rootfs) if rootfs is not None else None
    passwd = _read_db(root, "passwd") if root is not None else []
    groups = _read_db(root, "group") if root is not None else []

    uid = _id(user_part) if user_part else 0
    entry = None
    for fields in passwd:
        if len(fields) < 4:
            continue
        if (uid is None and fields[0] == user_part) or (uid is not None and fields[2] == str(uid)):
            entry = fields
            break
    if uid is None:
        if entry is None:
            where = f" in {root}/etc/passwd" if root is not None else " (no rootfs to look in)"
            raise UnknownUser(f"image user {user_part!r} not found{where}")
        uid = _id(entry[2])
        if uid is None:
            raise ImageConfigError(f"/etc/passwd entry for {user_part!r} has a bad uid")
    gid = _id(entry[3]) if entry is not None else 0
    name = entry[0] if entry is not None else None
    home = entry[5] if entry is not None and len(entry) > 5 else None

    if group_part:
        gid = _id(group_part)
        if gid is None:
            match = next((g for g in groups if g[0] == group_part and len(g) >= 3), None)
            if match is None:
                where = f" in {root}/etc/group" if root is not None else ""
                raise UnknownUser(f"image group {group_part!r} not found{where}")
            gid = _id(match[2])
    extra: list[int] = []
    if name is not None and not group_part:
        for g in groups:
            members = g[3].split(",") if len(g) > 3 else []
            gid_of = _id(g[2]) if len(g) > 2 else None
            if name in members and gid_of is not None and gid_of != gid:
                extra.append(gid_of)
    return ResolvedUser(uid=uid, gid=gid if gid is not None else 0,
                        additional_gids=tuple(sorted(set(extra))), home=home, name=name)


def _strings(cfg: Mapping[str, Any], field: str) -> list[str] | None:
    """``cfg[field]`` when it is an array of strings (None when absent or null)."""
    value = cfg.get(field)
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ImageConfigError(f"image config: {field} must be an array of strings, "
                               f"not {type(value).__name__} {value!r}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ImageConfigError(f"image config: {field}[{index}] must be a string, "
                                   f"not {type(item).__name__} {item!r}")
    return list(value)


def _string(cfg: Mapping[str, Any], field: str) -> str | None:
    value = cfg.get(field)
    if value is not None and not isinstance(value, str):
        raise ImageConfigError(f"image config: {field} must be a string, "
                               f"not {type(value).__name__} {value!r}")
    return value


def _object(cfg: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = cfg.get(field)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ImageConfigError(f"image config: {field} must be an object, "
                               f"not {type(value).__name__} {value!r}")
    return value


def _override(name: str, value: Sequence[str] | None) -> list[str] | None:
    """A CRI ``command``/``args`` override, checked: a list of strings, never one string."""
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ImageConfigError(f"{name} must be a list of strings, not {value!r}")
    return list(value)


def _image_env(entries: Sequence[str]) -> dict[str, str]:
    """The image's Env by name. Entries without "=" or without a name are skipped.

    CRI-O's ``mergeEnvs`` skips them (an image Env entry is ``NAME=VALUE``,
    image-spec config.md); Docker's API would read a bare ``NAME`` as "unset".
    Either way it never becomes ``NAME=``.
    """
    merged: dict[str, str] = {}
    for entry in entries:
        name, eq, value = entry.partition("=")
        if not eq or not name:
            log.debug("image config: Env entry %r is not NAME=VALUE; skipped", entry)
            continue
        merged[name] = value
    return merged


def _cri_env(env: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(env, Mapping):
        items = list(env.items())
    elif isinstance(env, str):
        raise ImageConfigError(f"env must be a mapping or a list of NAME=VALUE, not {env!r}")
    else:
        items = []
        for entry in env:
            name, eq, value = entry.partition("=") if isinstance(entry, str) else ("", "", "")
            if not eq:
                raise ImageConfigError(f"env entry {entry!r} is not NAME=VALUE")
            items.append((name, value))
    for name, value in items:
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise ImageConfigError(f"env {name!r}={value!r}: names and values are strings, "
                                   "names not empty")
    return dict(items)


def normalize_stop_signal(value: str) -> str:
    """An image's StopSignal (``"SIGQUIT"``, ``"quit"``, ``"3"``) as its signal name.

    Raises :class:`ImageConfigError` unless it names a signal (signal(7)) by name or
    number, so a typo is found when the container is made, not when it is stopped.
    """
    try:
        return signal_name(signal_number(value))
    except InvalidArgument as exc:
        raise ImageConfigError(f"image config: StopSignal {value!r} is not a signal: {exc}"
                               ) from exc


def _mkdirs(rootfs: str | os.PathLike[str], path: str, what: str) -> None:
    """Create ``path`` and its missing parents inside ``rootfs``, 0755, owned by us (root)."""
    try:
        os.makedirs(secure_join(rootfs, path), mode=0o755, exist_ok=True)
    except OSError as exc:
        raise ImageConfigError(f"cannot create {what} {path} in {rootfs}: "
                               f"{exc.strerror or exc}") from exc


def _argv(cfg: Mapping[str, Any], command: Sequence[str] | None,
          args: Sequence[str] | None) -> list[str]:
    """Entrypoint + Cmd, with the CRI's ``command`` replacing Entrypoint and ``args`` Cmd."""
    entrypoint = _strings(cfg, "Entrypoint") or []
    cmd = _strings(cfg, "Cmd") or []
    command_list, args_list = _override("command", command), _override("args", args)
    if command_list:
        entrypoint, cmd = command_list, args_list or []
    elif args_list:
        cmd = args_list
    if not entrypoint + cmd:
        raise ImageConfigError("no command: the image has no Entrypoint or Cmd and the "
                               "container gives no command or args")
    return entrypoint + cmd


def _annotate(gen: Generator, cfg: Mapping[str, Any]) -> str | None:
    """Labels as annotations, then the StopSignal annotation, which no label overrides."""
    raw_signal = _string(cfg, "StopSignal")
    stop_signal = normalize_stop_signal(raw_signal) if raw_signal else None
    for key, value in _object(cfg, "Labels").items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ImageConfigError(f"image config: Labels {key!r}: {value!r} is not a "
                                   "non-empty name with a string value")
        if key != STOP_SIGNAL_ANNOTATION:
            gen.add_annotation(key, value)
    if stop_signal:
        gen.add_annotation(STOP_SIGNAL_ANNOTATION, stop_signal)
    return stop_signal


def apply_image_config(
    gen: Generator,
    image_config: Mapping[str, Any],
    *,
    rootfs: str | os.PathLike[str] | None = None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | Sequence[str] = (),
    working_dir: str | None = None,
    user: str | None = None,
    volumes: Literal["mkdir", "ignore"] = "mkdir",
    create_workdir: bool = True,
) -> ImageSettings:
    """Fill ``gen``'s process from an image config and CRI overrides.

    image-spec v1.1 config.md "Properties" mapped as CRI-O maps them.
    ``image_config`` is the whole config document (with a ``config`` key) or its
    ``config`` object; a field of the wrong JSON type raises
    :class:`ImageConfigError` naming it. ``command``/``args`` are the CRI's
    overrides of Entrypoint/Cmd; ``env`` overrides the image's Env by name (image
    Env entries that are not ``NAME=VALUE`` are skipped, as CRI-O does); ``user``
    overrides ``User``. ``volumes="mkdir"`` creates each image volume's directory in
    the rootfs (CRI-O's default ``image_volumes``); ``"ignore"`` leaves them. With
    ``create_workdir`` (CRI-O always does) the working directory is created in the
    rootfs, mode 0755 and owned by the caller, as CRI-O's ``setupWorkingDirectory``
    does. Labels become annotations, except that the StopSignal annotation
    (:data:`STOP_SIGNAL_ANNOTATION`) is only ever written from StopSignal: a label
    of that name is not copied.
    """
    if not isinstance(image_config, Mapping):
        raise ImageConfigError(f"image config must be an object, not {image_config!r}")
    is_whole_doc = any(k in image_config for k in ("config", "rootfs", "architecture", "os"))
    cfg = image_config.get("config") or {} if is_whole_doc else image_config
    if not isinstance(cfg, Mapping):
        raise ImageConfigError("image config: 'config' is not an object")
    argv = _argv(cfg, command, args)
    gen.set_args(argv)

    merged = _image_env(_strings(cfg, "Env") or []) | _cri_env(env)
    for name, value in merged.items():
        gen.set_env(name, value)

    cwd = working_dir or _string(cfg, "WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise ImageConfigError(f"working directory {cwd!r} is not absolute")
    gen.set_cwd(cwd)

    if user is not None and not isinstance(user, str):
        raise ImageConfigError(f"user must be a string, not {user!r}")
    resolved = resolve_user(user if user is not None else _string(cfg, "User") or "", rootfs)
    gen.set_user(resolved.uid, resolved.gid, additional_gids=resolved.additional_gids)
    if "HOME" not in gen.env():
        gen.set_env("HOME", resolved.home or "/")

    stop_signal = _annotate(gen, cfg)

    vols = tuple(sorted(str(v) for v in _object(cfg, "Volumes")))
    ports = tuple(sorted(str(p) for p in _object(cfg, "ExposedPorts")))
    if rootfs is not None:
        if volumes == "mkdir":
            for vol in vols:
                _mkdirs(rootfs, vol, "image volume")
        if create_workdir:
            _mkdirs(rootfs, cwd, "working directory")
    return ImageSettings(args=tuple(argv), user=resolved, stop_signal=stop_signal,
                         volumes=vols, exposed_ports=ports)
