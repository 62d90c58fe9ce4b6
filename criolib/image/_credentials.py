"""Registry credentials from auth.json and docker config.json files.

containers-auth.json(5) and containers/image ``pkg/docker/config``: which files
are read in which order, how a key matches (``host/ns/repo`` down to ``host``, then
the legacy ``https://index.docker.io/v1/`` forms), and ``login``/``logout`` edits
that keep everything else in the file. Credential helpers are not run: where one
holds the credentials, :class:`UnsupportedCredentialHelper` says so.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from .._atomic import atomic_write_bytes
from ._errors import CredentialsError, InvalidReference, UnsupportedCredentialHelper
from ._reference import Reference
from ._registries_conf import AUTH_FILE_HELPER

__all__ = [
    "AuthFile",
    "Credentials",
    "auth_file_paths",
    "default_auth_file",
    "get_credentials",
    "login",
    "logout",
]

logger = logging.getLogger("criolib.image")

_DOCKER_HUB_HOSTS = ("docker.io", "registry-1.docker.io")
_DOCKER_HUB_KEY = "index.docker.io"


@attrs.frozen
class Credentials:
    """A user name and password, or an identity token (an OAuth2 refresh token).

    containers/image ``types.DockerAuthConfig``. ``source`` names where they were
    found. Secrets stay out of ``repr``.
    """

    username: str = ""
    password: str = attrs.field(default="", repr=False)
    identity_token: str = attrs.field(default="", repr=False)
    source: str = attrs.field(default="", eq=False)


@attrs.frozen
class AuthFile:
    """One credentials file to search; ``legacy`` is the ``~/.dockercfg`` format (auths only)."""

    path: Path
    legacy: bool = False


def default_auth_file() -> Path:
    """The read/write auth.json (``getPathToAuth``): where :func:`login` writes by default.

    ``$REGISTRY_AUTH_FILE`` if set (as podman, skopeo and buildah honour it), else
    ``$XDG_RUNTIME_DIR/containers/auth.json``, else ``/run/containers/$UID/auth.json``.
    """
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "containers/auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def auth_file_paths(*, auth_file: str | os.PathLike[str] | None = None) -> list[AuthFile]:
    """The files searched for credentials, in order (``getAuthFilePaths``).

    An explicit ``auth_file`` (or ``$REGISTRY_AUTH_FILE``) is the only one read.
    Otherwise: the primary file (:func:`default_auth_file`; skipped when
    ``$XDG_RUNTIME_DIR`` names a missing directory), then
    ``$XDG_CONFIG_HOME/containers/auth.json`` (default ``~/.config``), then
    ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``), then
    ``~/.dockercfg``.
    """
    explicit = auth_file if auth_file is not None else os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return [AuthFile(Path(explicit))]
    home = Path(os.environ.get("HOME") or Path.home())
    files = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and not Path(runtime).exists():
        logger.warning("$XDG_RUNTIME_DIR %s does not exist; not reading its auth.json", runtime)
    else:
        files.append(AuthFile(default_auth_file()))
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(AuthFile(config_home / "containers/auth.json"))
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(AuthFile(Path(docker_config) / "config.json" if docker_config
                          else home / ".docker/config.json"))
    files.append(AuthFile(home / ".dockercfg", legacy=True))
    return files


def _key_for(ref_or_host: Reference | str) -> str:
    """The lookup key: a Reference's repository name, or a host[/namespace...] text."""
    if isinstance(ref_or_host, Reference):
        if not ref_or_host.domain:
            raise InvalidReference(f"invalid reference {ref_or_host.string()!r}: credentials "
                                   "need a registry domain (use parse_normalized)",
                                   reference=ref_or_host.string())
        return ref_or_host.name
    return _validate_key(ref_or_host)


def _validate_key(key: str) -> str:
    """config.go ``validateKey``: a registry, namespace or repository, nothing more."""
    problem = ""
    if key.startswith(("http://", "https://")):
        problem = "contains an http[s]:// prefix"
    elif "@" in key:
        problem = "contains a '@' character"
    elif "/" in key and ":" in key.split("/", 1)[1]:
        problem = "contains a ':' character after host[:port]"
    elif not key:
        problem = "is empty"
    if problem:
        raise InvalidReference(f"invalid credentials key {key!r}: {problem}; give a host, "
                               "host/namespace or a Reference", reference=key)
    return key


def _normalize_registry(registry: str) -> str:
    """config.go ``normalizeRegistry``: Docker Hub's hosts all mean ``index.docker.io``."""
    return _DOCKER_HUB_KEY if registry in _DOCKER_HUB_HOSTS else registry


def _normalize_key(key: str, legacy: bool) -> str:
    """config.go ``normalizeAuthFileKey``: URL keys (``https://host/v1/``) to host names."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    if legacy or stripped != key:
        stripped = stripped.split("/", 1)[0]
    return _normalize_registry(stripped)


def _load(file: AuthFile) -> dict[str, Any]:
    """The file's JSON object (``{}`` when missing), legacy files wrapped as ``auths``."""
    try:
        raw = file.path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CredentialsError(f"{file.path}: cannot read: {e.strerror or e}",
                               path=str(file.path)) from e
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        # json's message quotes no content, only a position: safe for a secrets file.
        raise CredentialsError(f"{file.path}: not valid JSON: {e}", path=str(file.path)) from e
    if not isinstance(data, dict):
        raise CredentialsError(f"{file.path}: must hold a JSON object", path=str(file.path))
    if file.legacy:
        data = {"auths": data}
    for field in ("auths", "credHelpers"):
        if data.get(field) is None:  # absent or null: Go decodes both to an empty map
            data.pop(field, None)
            continue
        value = data[field]
        if not isinstance(value, dict) or not all(isinstance(v, dict if field == "auths"
                                                               else str) for v in value.values()):
            raise CredentialsError(f"{file.path}: {field!r} must be an object of "
                                   f"{'objects' if field == 'auths' else 'strings'}",
                                   path=str(file.path))
    return data


def _decode(file: AuthFile, key: str, entry: dict[str, Any]) -> Credentials:
    """config.go ``decodeDockerAuth``: base64 ``user:password`` plus ``identitytoken``."""
    auth, token = entry.get("auth", ""), entry.get("identitytoken", "")
    if not isinstance(auth, str) or not isinstance(token, str):
        raise CredentialsError(f"{file.path}: auths[{key!r}]: 'auth' and 'identitytoken' must "
                               "be strings", path=str(file.path))
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as e:
        raise CredentialsError(f"{file.path}: auths[{key!r}].auth is not base64 of "
                               "'user:password'", path=str(file.path)) from e
    user, colon, password = decoded.partition(":")
    if not colon:
        if decoded:  # never log the text: it is a secret
            logger.warning("%s: auths[%r].auth has no ':' between user and password; ignored",
                           file.path, key)
        return Credentials(source=str(file.path))
    return Credentials(user, password.strip("\x00"), token, source=str(file.path))


def _find_in_file(file: AuthFile, key: str, registry: str) -> Credentials | None:
    """config.go ``findCredentialsInFile``: the best matching entry of one file."""
    data = _load(file)
    helper = data.get("credHelpers", {}).get(registry)
    if helper is not None:
        raise UnsupportedCredentialHelper(
            f"{file.path}: credHelpers sends {registry} to credential helper "
            f"docker-credential-{helper}, which criolib does not run; log in with criolib "
            "(login()) into another auth file, or pass credentials explicitly",
            helper=helper, registry=registry, path=str(file.path))
    auths: dict[str, Any] = data.get("auths", {})
    candidates = [registry] if file.legacy else list(_key_hierarchy(key))
    found = next(((k, auths[k]) for k in candidates if k in auths), None)
    if found is None:
        normalized = _normalize_registry(registry)
        found = next(((k, v) for k, v in auths.items()
                      if _normalize_key(k, file.legacy) == normalized), None)
    if found is None:
        return None
    creds = _decode(file, found[0], found[1])
    empty = not (creds.username or creds.password or creds.identity_token)
    store = data.get("credsStore")
    if empty and isinstance(store, str) and store:
        # Docker writes an empty entry per host whose secret went to its credsStore.
        raise UnsupportedCredentialHelper(
            f"{file.path}: the credentials for {registry} are in the credsStore "
            f"docker-credential-{store}, which criolib does not run; log in with criolib "
            "(login()) into another auth file, or pass credentials explicitly",
            helper=store, registry=registry, path=str(file.path))
    return None if empty else creds


def _key_hierarchy(key: str) -> Iterator[str]:
    """config.go ``authKeyLookupOrder``: ``host/ns/repo``, ``host/ns``, ``host``."""
    while True:
        yield key
        if "/" not in key:
            return
        key = key.rsplit("/", 1)[0]


def _helpers_to_use(helpers: Sequence[str] | None, registry: str) -> None:
    """Refuse registries.conf ``credential-helpers`` entries that would have to be run."""
    for helper in helpers or (AUTH_FILE_HELPER,):
        if helper == AUTH_FILE_HELPER:
            return
        raise UnsupportedCredentialHelper(
            f"registries.conf credential-helpers lists docker-credential-{helper} before "
            f"{AUTH_FILE_HELPER} (or without it); criolib does not run credential helpers, so "
            f"it cannot look up {registry} there; put {AUTH_FILE_HELPER!r} first",
            helper=helper, registry=registry)


def get_credentials(ref_or_host: Reference | str, *,
                    auth_file: str | os.PathLike[str] | None = None,
                    credential_helpers: Sequence[str] | None = None) -> Credentials | None:
    """The credentials for a repository or registry, or ``None`` (``GetCredentialsForRef``).

    For ``quay.io/ns/app`` each file of :func:`auth_file_paths` is searched for
    ``quay.io/ns/app``, ``quay.io/ns``, ``quay.io``, then URL-style keys of the host
    (``https://index.docker.io/v1/`` for ``docker.io``); the first file with a
    match wins. ``credential_helpers`` is registries.conf's list, tried in order:
    reaching any entry but ``containers-auth.json`` (the auth files) raises
    :class:`UnsupportedCredentialHelper`. Raises :class:`CredentialsError` for an
    unreadable file and :class:`UnsupportedCredentialHelper` where a helper holds
    the secret.
    """
    key = _key_for(ref_or_host)
    registry = key.split("/", 1)[0]
    for i, helper in enumerate(credential_helpers or (AUTH_FILE_HELPER,)):
        if helper != AUTH_FILE_HELPER:
            # containers/image would ask this helper next: say so rather than guess.
            after = " after the auth files had none" if i else ""
            raise UnsupportedCredentialHelper(
                f"registries.conf credential-helpers asks docker-credential-{helper} for "
                f"{registry}{after}; criolib does not run credential helpers: list only "
                f"{AUTH_FILE_HELPER!r}, or pass credentials explicitly",
                helper=helper, registry=registry)
        for file in auth_file_paths(auth_file=auth_file):
            creds = _find_in_file(file, key, registry)
            if creds is not None:
                logger.debug("found credentials for %s in %s", key, file.path)
                return creds
    logger.debug("no credentials for %s", key)
    return None


@contextlib.contextmanager
def _edit(path: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write ``path`` under a lock on its directory; written only if changed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Serialises criolib's own writers; readers need no lock (atomic replace).
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _load(AuthFile(path))
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            text = json.dumps(data, indent="\t") + "\n"
            try:
                atomic_write_bytes(path, text.encode(), mode=0o600)
            except OSError as e:
                raise CredentialsError(f"{path}: cannot write: {e.strerror or e}",
                                       path=str(path)) from e
    finally:
        os.close(fd)


def _helper_for(data: dict[str, Any], key: str, path: Path) -> None:
    helper = data.get("credHelpers", {}).get(key)
    if helper is not None:
        raise UnsupportedCredentialHelper(
            f"{path}: credHelpers sends {key} to docker-credential-{helper}, which criolib "
            "does not run; remove that entry or use another auth file",
            helper=helper, registry=key, path=str(path))


def login(host: str, username: str, password: str, *,
          auth_file: str | os.PathLike[str] | None = None,
          credential_helpers: Sequence[str] | None = None) -> Path:
    """Store ``username``/``password`` for ``host`` (``SetCredentials``); return the file.

    ``host`` may also be ``host/namespace[/repo]``. The file (``auth_file`` or
    :func:`default_auth_file`) is rewritten atomically with mode 0600; its other
    entries and fields are kept.
    """
    key = _validate_key(host)
    _helpers_to_use(credential_helpers, key.split("/", 1)[0])
    path = Path(auth_file) if auth_file is not None else default_auth_file()
    with _edit(path) as data:
        _helper_for(data, key, path)
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        data.setdefault("auths", {})[key] = {"auth": token}
    return path


def logout(host: str, *, auth_file: str | os.PathLike[str] | None = None,
           credential_helpers: Sequence[str] | None = None) -> bool:
    """Remove the entry for ``host`` (``RemoveAuthentication``); False if there was none.

    Only the exact key is removed, from ``auth_file`` or :func:`default_auth_file`.
    """
    key = _validate_key(host)
    _helpers_to_use(credential_helpers, key.split("/", 1)[0])
    path = Path(auth_file) if auth_file is not None else default_auth_file()
    if not path.exists():
        return False
    with _edit(path) as data:
        _helper_for(data, key, path)
        removed = data.get("auths", {}).pop(key, None) is not None
    return removed
