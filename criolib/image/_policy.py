"""policy.json: which images may be pulled, per transport and scope.

containers-policy.json(5) and containers/image ``signature/policy_config.go``
(strict parsing: unknown or duplicate fields reject the file) and
``policy_eval.go`` (the most specific scope wins: the image's identity, then its
namespaces, then the transport's ``""``, then ``default``). criolib evaluates
``insecureAcceptAnything`` and ``reject``; it verifies no signatures, so
``signedBy``, ``sigstoreSigned`` and ``signedBaseLayer`` raise
:class:`UnsupportedPolicyRequirement` instead of being accepted.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import InvalidReference, PolicyDenied, PolicyError, UnsupportedPolicyRequirement
from ._reference import parse_reference

__all__ = ["SYSTEM_POLICY_PATH", "Policy", "PolicyRequirement", "policy_namespaces"]

SYSTEM_POLICY_PATH = Path("/etc/containers/policy.json")
_USER_POLICY = Path(".config/containers/policy.json")
_EVALUATED = ("insecureAcceptAnything", "reject")
_SIGNATURE_TYPES = ("signedBy", "sigstoreSigned", "signedBaseLayer")
_SIGNED_BY_FIELDS = {"type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"}
_KEY_TYPES = ("GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs")
_IDENTITY_TYPES = ("matchExact", "matchRepoDigestOrExact", "matchRepository",
                   "exactReference", "exactRepository", "remapIdentity")
# Transports whose scopes are absolute paths (dir, oci and oci-archive in the man page).
_PATH_TRANSPORTS = ("dir", "oci", "oci-archive", "sif")
_DOCKER_TRANSPORTS = ("docker", "atomic", "docker-daemon")
# Transports whose references have no policy identity: only "" and default apply.
_UNSCOPED_TRANSPORTS = ("tarball", "docker-archive")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


@attrs.frozen
class PolicyRequirement:
    """One requirement object: its ``type`` and the object as written."""

    type: str
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


def _label(transport: str | None, scope: str | None) -> str:
    if transport is None:
        return "default"
    return f"transports.{transport}[{json.dumps(scope)}]"


class _Reader:
    """Strict reading of one policy document; errors name the file and the JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, field: str, message: str, cls: type[PolicyError] = PolicyError,
              **kw: Any) -> PolicyError:
        where = f"{self.source}: {field}: " if field else f"{self.source}: "
        return cls(where + message, path=self.source, field=field, **kw)

    def requirements(self, value: Any, field: str) -> tuple[PolicyRequirement, ...]:
        if not isinstance(value, list):
            raise self.error(field, "must be an array of policy requirements")
        if not value:
            raise self.error(field, "the list of policy requirements must not be empty")
        return tuple(self.requirement(item, f"{field}[{i}]") for i, item in enumerate(value))

    def requirement(self, value: Any, field: str) -> PolicyRequirement:
        if not isinstance(value, dict):
            raise self.error(field, "a policy requirement must be an object")
        kind = value.get("type")
        if not isinstance(kind, str):
            raise self.error(field, "a policy requirement needs a string \"type\"")
        if kind in _EVALUATED:
            extra = sorted(set(value) - {"type"})
            if extra:
                raise self.error(field, f"unknown field(s) {', '.join(extra)} in {kind!r}")
        elif kind == "signedBy":
            self.signed_by(value, field)
        elif kind not in _SIGNATURE_TYPES:
            raise self.error(field, f"unknown policy requirement type {kind!r}; criolib knows "
                                    f"{', '.join(_EVALUATED + _SIGNATURE_TYPES)}",
                             UnsupportedPolicyRequirement, requirement=kind)
        return PolicyRequirement(kind, dict(value))

    def signed_by(self, value: Mapping[str, Any], field: str) -> None:
        """policy_config.go ``prSignedBy``: known fields, a key type, exactly one key source."""
        extra = sorted(set(value) - _SIGNED_BY_FIELDS)
        if extra:
            raise self.error(field, f"unknown field(s) {', '.join(extra)} in 'signedBy'")
        if value.get("keyType") not in _KEY_TYPES:
            raise self.error(f"{field}.keyType", f"invalid keyType {value.get('keyType')!r}")
        sources = [k for k in ("keyPath", "keyPaths", "keyData") if k in value]
        if len(sources) != 1:
            raise self.error(field, "exactly one of keyPath, keyPaths and keyData must be "
                                    f"specified, not {sources or 'none'}")
        identity = value.get("signedIdentity", {"type": "matchRepoDigestOrExact"})
        if not isinstance(identity, dict) or identity.get("type") not in _IDENTITY_TYPES:
            raise self.error(f"{field}.signedIdentity", f"invalid signedIdentity {identity!r}")

    def scope(self, transport: str, scope: str, field: str) -> None:
        """The transport's ``ValidatePolicyConfigurationScope`` for transports criolib knows."""
        if scope == "":
            return
        problem = ""
        if transport in _PATH_TRANSPORTS:
            if not scope.startswith("/"):
                problem = "must be an absolute path"
            elif scope == "/":
                problem = 'use the transport default scope "" instead of "/"'
            elif posixpath.normpath(scope) != scope or scope.startswith("//"):
                problem = f"uses a non-canonical path, perhaps {posixpath.normpath(scope)!r}"
        elif transport == "containers-storage":
            store, close, _ = scope[1:].partition("]")
            root = store.split("@", 1)[-1]
            if not scope.startswith("[") or not close or not root.startswith("/"):
                problem = "must start with [driver@/graph/root] or [/graph/root]"
        if problem:
            raise self.error(field, f"invalid {transport} scope {scope!r}: {problem}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate field {key!r}")
        out[key] = value
    return out


def _docker_namespaces(identity: str) -> list[str]:
    """policyconfiguration ``DockerReferenceNamespaces``: repo, parents, ``*.`` domains."""
    try:
        name = parse_reference(identity).name
    except InvalidReference:
        return []
    out = []
    while True:
        out.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    host = name.split(":", 1)[0]  # the port is not part of a wildcard match
    while "." in host:
        host = host.split(".", 1)[1]
        out.append("*." + host)
    return out


def _storage_namespaces(identity: str) -> list[str]:
    """storage_reference.go ``PolicyConfigurationNamespaces`` for ``[driver@root]name@id``.

    The name without the image id, ``name:tag`` of a ``name:tag@digest``, the
    repository and its parents within the store, the store, the store without driver.
    """
    if not identity.startswith("[") or "]" not in identity:
        return []
    spec, rest = identity[1:].split("]", 1)
    store = f"[{spec}]"
    parts = rest.split("@")
    if len(parts) > 1 and _IMAGE_ID.fullmatch(parts[-1]):
        named, image_id = "@".join(parts[:-1]), parts[-1]
    elif _IMAGE_ID.fullmatch(rest):
        named, image_id = "", rest
    else:
        named, image_id = rest, ""
    out = []
    try:
        ref = parse_reference(named) if named else None
    except InvalidReference:
        ref = None
    if ref is not None:
        if image_id:
            out.append(store + ref.string())
        if ref.tag is not None and ref.digest is not None:
            out.append(f"{store}{ref.name}:{ref.tag}")
        components = ref.name.split("/")
        while components:
            out.append(store + "/".join(components))
            components.pop()
    return [*out, store, "[" + spec.split("@", 1)[-1] + "]"]


def _path_namespaces(identity: str) -> list[str]:
    """oci/dir ``PolicyConfigurationNamespaces``: the directory and its parents, never ``/``."""
    path = identity
    last = path.rsplit("/", 1)[-1]
    if ":" in last:  # an older "dir:tag" identity: the directory comes first
        path = path[: len(path) - len(last) + last.index(":")]
    out = []
    while path and path != "/":
        out.append(path)
        path = path.rsplit("/", 1)[0]
    return [p for p in out if p != identity]


def policy_namespaces(transport: str, identity: str) -> list[str]:
    """The scopes tried after ``identity`` itself, most specific first (``""`` not included).

    ``docker``: ``host/ns/repo``, ``host/ns``, ``host``, then ``*.`` parent domains;
    path transports (``dir``, ``oci``, ``oci-archive``): parent directories;
    ``containers-storage``: the image name's parents within the store, then the store.
    """
    if transport in _DOCKER_TRANSPORTS:
        return [n for n in _docker_namespaces(identity) if n != identity]
    if transport in _PATH_TRANSPORTS:
        return _path_namespaces(identity)
    if transport == "containers-storage":
        return _storage_namespaces(identity)
    return []


@attrs.frozen
class Policy:
    """A parsed policy.json (containers-policy.json(5)); ``source`` names its file."""

    default: tuple[PolicyRequirement, ...]
    transports: Mapping[str, Mapping[str, tuple[PolicyRequirement, ...]]] = attrs.field(
        factory=dict, hash=False)
    source: str = "<policy>"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Policy:
        """Read ``path``, else ``$HOME/.config/containers/policy.json`` if it exists, else
        ``/etc/containers/policy.json`` (``DefaultPolicy``).

        A missing file is a :class:`PolicyError`: like skopeo, criolib does not guess
        a policy. Use :meth:`insecure_accept_anything` to opt out explicitly.
        """
        if path is None:
            home = Path(os.environ.get("HOME") or Path.home())
            user = home / _USER_POLICY
            path = user if user.exists() else SYSTEM_POLICY_PATH
        file = Path(path)
        try:
            data = file.read_bytes()
        except FileNotFoundError as e:
            raise PolicyError(
                f"no signature policy: {file} does not exist. Create it (see "
                "containers-policy.json(5); {\"default\": [{\"type\": \"reject\"}]} plus the "
                "transports and scopes to allow), or opt out explicitly with "
                "Policy.insecure_accept_anything() (the CLI's --insecure-policy)",
                path=str(file)) from e
        except OSError as e:
            raise PolicyError(f"{file}: cannot read: {e.strerror or e}", path=str(file)) from e
        return cls.from_bytes(data, source=str(file))

    @classmethod
    def from_bytes(cls, data: bytes | str, source: str = "<policy>") -> Policy:
        """Parse policy.json text strictly (``NewPolicyFromBytes``)."""
        try:
            obj = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as e:
            raise PolicyError(f"{source}: invalid policy JSON: {e}", path=source) from e
        return cls.from_dict(obj, source=source)

    @classmethod
    def from_dict(cls, obj: Any, source: str = "<policy>") -> Policy:
        """Build a policy from the decoded JSON object, with the same checks as a file."""
        r = _Reader(source)
        if not isinstance(obj, dict):
            raise r.error("", "a policy must be a JSON object")
        extra = sorted(set(obj) - {"default", "transports"})
        if extra:
            raise r.error(extra[0], f"unknown field(s) {', '.join(map(repr, extra))}")
        if obj.get("default") is None:
            raise r.error("default", "the default policy is missing")
        default = r.requirements(obj["default"], "default")
        raw_transports = obj.get("transports")
        raw_transports = {} if raw_transports is None else raw_transports
        if not isinstance(raw_transports, dict):
            raise r.error("transports", "must be an object of transport names")
        transports: dict[str, dict[str, tuple[PolicyRequirement, ...]]] = {}
        for name, scopes in raw_transports.items():
            if not isinstance(scopes, dict):
                raise r.error(f"transports.{name}", "must be an object of scopes")
            transports[name] = {}
            for scope, reqs in scopes.items():
                field = _label(name, scope)
                r.scope(name, scope, field)
                transports[name][scope] = r.requirements(reqs, field)
        return cls(default=default, transports=transports, source=source)

    @classmethod
    def insecure_accept_anything(cls) -> Policy:
        """A policy accepting every image (``{"default": [{"type": "insecureAcceptAnything"}]}``).

        For tests and the CLI's ``--insecure-policy``: it skips every check.
        """
        return cls(default=(PolicyRequirement("insecureAcceptAnything",
                                              {"type": "insecureAcceptAnything"}),),
                   source="<insecure-accept-anything>")

    def requirements_for(self, transport: str,
                         scope: str) -> tuple[str, tuple[PolicyRequirement, ...]]:
        """The requirements that apply to an image, and the label of the entry that matched.

        policy_eval.go ``requirementsForImageRef``: the transport's entry for the
        identity ``scope``, then for each of :func:`policy_namespaces`, then its
        ``""`` entry, then the global ``default``.
        """
        scopes = self.transports.get(transport)
        if scopes is not None:
            identity = "" if transport in _UNSCOPED_TRANSPORTS else scope
            tried = [identity, *policy_namespaces(transport, identity)] if identity else []
            for candidate in [*tried, ""]:
                if candidate in scopes:
                    return _label(transport, candidate), scopes[candidate]
        return _label(None, None), self.default

    def evaluate(self, transport: str, scope: str) -> None:
        """Allow the image or raise: ``transport`` as in ``docker``, ``scope`` its identity.

        Every requirement must be met (policy_eval.go ``IsRunningImageAllowed``):
        a ``reject`` raises :class:`PolicyDenied`; otherwise a signature requirement
        raises :class:`UnsupportedPolicyRequirement`, since criolib cannot check it.
        """
        label, reqs = self.requirements_for(transport, scope)
        image = f"{transport}:{scope}"
        if any(r.type == "reject" for r in reqs):
            raise PolicyDenied(f"{image} is rejected by policy {self.source}: {label} "
                               "requires \"reject\"", image=image, scope=label)
        for r in reqs:
            if r.type != "insecureAcceptAnything":
                raise UnsupportedPolicyRequirement(
                    f"{image}: {label} of policy {self.source} requires {r.type!r}, but "
                    "criolib cannot verify signatures, so it cannot accept this image. "
                    "Verify it with another tool, or allow it explicitly with an "
                    "insecureAcceptAnything entry for its scope (or --insecure-policy)",
                    requirement=r.type, path=self.source, field=label)
