"""Applying an OCI image's configuration to a runtime spec.

image-spec v1.1 config.md ("config" properties: User, Env, Entrypoint, Cmd,
WorkingDir, Volumes, StopSignal, Labels) mapped onto runtime-spec v1.2 the way
CRI-O does for a Kubernetes container: the CRI ``command`` replaces Entrypoint,
``args`` replaces Cmd, CRI env wins over the image's by name, and ``User`` is
resolved against the image's own /etc/passwd and /etc/group — looked up inside
the rootfs, never through a symlink that leads out of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from criolib._securejoin import secure_join
from criolib.runtime_spec._errors import RuntimeSpecError
from criolib.runtime_spec._generate import Generator

__all__ = [
    "STOP_SIGNAL_ANNOTATION",
    "ImageConfigError",
    "ImageSettings",
    "ResolvedUser",
    "UnknownUser",
    "apply_image_config",
    "resolve_user",
]

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


def _env_merge(base: Sequence[str], overrides: Mapping[str, str] | Sequence[str]) -> list[str]:
    items = list(overrides.items()) if isinstance(overrides, Mapping) else [
        tuple(e.split("=", 1)) if "=" in e else (e, "") for e in overrides]
    merged: dict[str, str] = {}
    for e in base:
        k, _, v = e.partition("=")
        merged[k] = v
    for k, v in items:
        merged[k] = v
    return [f"{k}={v}" for k, v in merged.items()]


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
) -> ImageSettings:
    """Fill ``gen``'s process from an image config and CRI overrides.

    ``image_config`` is the whole config document (with a ``config`` key) or its
    ``config`` object. ``command``/``args`` are the CRI's overrides of
    Entrypoint/Cmd; ``env`` overrides the image's Env by name; ``user`` overrides
    ``User``. ``volumes="mkdir"`` creates each image volume's directory in the
    rootfs (CRI-O's default ``image_volumes``); ``"ignore"`` leaves them.
    """
    is_whole_doc = any(k in image_config for k in ("config", "rootfs", "architecture", "os"))
    cfg = image_config.get("config") or {} if is_whole_doc else image_config
    if not isinstance(cfg, Mapping):
        raise ImageConfigError("image config: 'config' is not an object")
    entrypoint = list(cfg.get("Entrypoint") or [])
    cmd = list(cfg.get("Cmd") or [])
    if command:
        entrypoint, cmd = list(command), list(args or [])
    elif args:
        cmd = list(args)
    argv = entrypoint + cmd
    if not argv:
        raise ImageConfigError("no command: the image has no Entrypoint or Cmd and the "
                               "container gives no command or args")
    gen.set_args(argv)

    image_env = [e for e in cfg.get("Env") or [] if isinstance(e, str)]
    for entry in _env_merge(image_env, env):
        name, _, value = entry.partition("=")
        gen.set_env(name, value)

    cwd = working_dir or cfg.get("WorkingDir") or "/"
    if not str(cwd).startswith("/"):
        raise ImageConfigError(f"working directory {cwd!r} is not absolute")
    gen.set_cwd(cwd)

    resolved = resolve_user(user if user is not None else cfg.get("User") or "", rootfs)
    gen.set_user(resolved.uid, resolved.gid, additional_gids=resolved.additional_gids)
    if "HOME" not in gen.env():
        gen.set_env("HOME", resolved.home or "/")

    stop_signal = cfg.get("StopSignal") or None
    if stop_signal:
        gen.add_annotation(STOP_SIGNAL_ANNOTATION, str(stop_signal))
    for key, value in (cfg.get("Labels") or {}).items():
        gen.add_annotation(str(key), str(value))

    vols = tuple(sorted((cfg.get("Volumes") or {}).keys()))
    if volumes == "mkdir" and rootfs is not None:
        for vol in vols:
            try:
                secure_join(rootfs, vol).mkdir(mode=0o755, parents=True, exist_ok=True)
            except OSError as exc:
                raise ImageConfigError(f"cannot create image volume {vol} in {rootfs}: "
                                       f"{exc.strerror or exc}") from exc
    return ImageSettings(args=tuple(argv), user=resolved,
                         stop_signal=str(stop_signal) if stop_signal else None, volumes=vols,
                         exposed_ports=tuple(sorted((cfg.get("ExposedPorts") or {}).keys())))
