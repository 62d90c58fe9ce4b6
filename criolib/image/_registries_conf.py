"""registries.conf: registry entries, mirrors, search registries, short-name settings.

containers-registries.conf(5) (version 2, and the deprecated version 1 converted
as containers/image ``pkg/sysregistriesv2`` does) and containers-registries.conf.d(5)
(drop-ins loaded in alpha-numerical order, later files overriding earlier ones).
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._errors import BlockedRegistry, InvalidReference, RegistriesConfError
from ._reference import Reference, is_domain, parse_normalized
from ._shortnames import SHORT_NAME_MODES, Alias, parse_aliases

__all__ = [
    "AUTH_FILE_HELPER",
    "PULL_FROM_MIRROR_VALUES",
    "Mirror",
    "PullSource",
    "RegistriesConf",
    "Registry",
]

logger = logging.getLogger("criolib.image")

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
SYSTEM_REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")
_USER_REGISTRIES_CONF = Path(".config/containers/registries.conf")
_USER_REGISTRIES_CONF_D = Path(".config/containers/registries.conf.d")
#: The reserved ``credential-helpers`` value meaning "the auth files" (containers-auth.json(5)).
AUTH_FILE_HELPER = "containers-auth.json"
#: Valid ``pull-from-mirror`` values of a ``[[registry.mirror]]``.
PULL_FROM_MIRROR_VALUES = ("all", "digest-only", "tag-only")

_REGISTRY_KEYS = {"prefix", "location", "insecure", "blocked", "mirror",
                  "mirror-by-digest-only", "pull-from-mirror"}
_MIRROR_KEYS = {"location", "insecure", "pull-from-mirror"}
_TOP_KEYS = {"registry", "unqualified-search-registries", "credential-helpers",
             "short-name-mode", "additional-layer-store-auth-helper", "aliases", "registries"}


@attrs.frozen
class Mirror:
    """A ``[[registry.mirror]]`` table: an endpoint tried before the primary location."""

    location: str
    insecure: bool = False
    #: ``all``, ``digest-only`` or ``tag-only``: which pulls may use this mirror.
    pull_from_mirror: str = "all"


@attrs.frozen
class Registry:
    """A ``[[registry]]`` table (containers-registries.conf(5) "NAMESPACED SETTINGS").

    ``location`` is ``""`` only for a wildcard prefix (``*.example.com``) that
    rewrites nothing; ``origin`` is the file the entry came from.
    """

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    mirror_by_digest_only: bool = False
    origin: str = ""


@attrs.frozen
class PullSource:
    """One place to pull an image from: a mirror, or the primary location last.

    containers/image ``sysregistriesv2.PullSource``. ``reference_rewritten`` is the
    image's reference at that endpoint (prefix replaced by the location);
    ``endpoint_location`` is the configured location (``""`` for a wildcard entry
    without one, the image's own reference when no entry matches).
    """

    endpoint_location: str
    insecure: bool
    reference_rewritten: Reference
    is_mirror: bool


def _matching_prefix_length(ref: str, prefix: str) -> int:
    """sysregistriesv2 ``refMatchingPrefix``: the length of ``ref`` ``prefix`` covers, or -1.

    The image name must start with ``prefix`` and continue with ``:``, ``/`` or
    ``@`` (or end). ``*.example.com`` matches any subdomain depth of
    ``example.com`` (not ``example.com`` itself) before the first ``/``.
    """
    if prefix.startswith("*."):
        index = ref.find(prefix[1:])
        if index == -1 or "/" in ref[:index]:
            return -1
        index += len(prefix) - 1
    elif ref.startswith(prefix):
        index = len(prefix)
    else:
        return -1
    if index == len(ref) or ref[index] in ":/@":
        return index
    return -1


class _File:
    """One registries.conf file being read: typed access that names the file and key."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, key: str, message: str) -> RegistriesConfError:
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        return RegistriesConfError(where + message, path=self.path, key=key)

    def get(self, table: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
        key = f"{where}.{name}" if where else name
        value = table.get(name)
        if value is None:
            return None
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self.error(key, f"must be an array of strings, not {value!r}")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be a {kind.__name__}, not {value!r}")
        return value

    def location(self, value: str | None, key: str) -> str:
        """sysregistriesv2 ``parseLocation``: trailing ``/`` dropped, no URI scheme."""
        trimmed = (value or "").rstrip("/")
        if trimmed.startswith(("http://", "https://")):
            raise self.error(key, f"invalid location {value!r}: URI schemes are not supported")
        return trimmed


def _parse_registry(f: _File, table: Any, i: int) -> Registry:
    where = f"registry[{i}]"
    if not isinstance(table, dict):
        raise f.error(where, "must be a table ([[registry]])")
    _warn_unknown(f, table, _REGISTRY_KEYS, where)
    location = f.location(f.get(table, "location", str, where), f"{where}.location")
    prefix_raw = f.get(table, "prefix", str, where)
    if not prefix_raw:
        if not location:
            raise f.error(where, "both location and prefix are unset")
        prefix = location
    else:
        prefix = f.location(prefix_raw, f"{where}.prefix")
        if prefix.startswith("*."):
            if any(c in prefix for c in "/@:"):
                raise f.error(f"{where}.prefix", f"wildcarded prefix {prefix!r} must be in "
                                                 "the format *.example.com")
        elif not location:
            raise f.error(f"{where}.location", "location is unset and prefix is not in the "
                                               "format *.example.com")
    if table.get("pull-from-mirror") is not None:
        raise f.error(f"{where}.pull-from-mirror",
                      f"must not be set for a non-mirror registry {prefix!r}")
    by_digest = bool(f.get(table, "mirror-by-digest-only", bool, where))
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise f.error(f"{where}.mirror", "must be an array of tables ([[registry.mirror]])")
    mirrors = [_parse_mirror(f, m, f"{where}.mirror[{j}]", prefix, by_digest)
               for j, m in enumerate(raw_mirrors)]
    return Registry(prefix=prefix, location=location,
                    insecure=bool(f.get(table, "insecure", bool, where)),
                    blocked=bool(f.get(table, "blocked", bool, where)),
                    mirrors=tuple(mirrors), mirror_by_digest_only=by_digest, origin=f.path)


def _parse_mirror(f: _File, m: Any, where: str, prefix: str, by_digest: bool) -> Mirror:
    if not isinstance(m, dict):
        raise f.error(where, "must be a table ([[registry.mirror]])")
    _warn_unknown(f, m, _MIRROR_KEYS, where)
    location = f.location(f.get(m, "location", str, where), f"{where}.location")
    if not location:
        raise f.error(f"{where}.location", "mirror location is unset")
    pull_from = f.get(m, "pull-from-mirror", str, where) or ""
    if pull_from and by_digest:
        raise f.error(f"{where}.pull-from-mirror",
                      f"cannot be set together with mirror-by-digest-only of {prefix!r}")
    if pull_from and pull_from not in PULL_FROM_MIRROR_VALUES:
        raise f.error(f"{where}.pull-from-mirror",
                      f"unsupported value {pull_from!r} (use one of "
                      f"{', '.join(PULL_FROM_MIRROR_VALUES)})")
    return Mirror(location=location, insecure=bool(f.get(m, "insecure", bool, where)),
                  pull_from_mirror=pull_from or "all")


def _warn_unknown(f: _File, table: Mapping[str, Any], known: set[str], where: str) -> None:
    # containers/image ignores undecoded keys (it logs them); a typo still deserves a trace.
    for key in table:
        if key not in known:
            logger.warning("%s: unknown key %s ignored", f.path, f"{where}.{key}" if where else key)


@attrs.frozen
class _Parsed:
    """One file's settings; ``None`` means "not set here" for the drop-in merge."""

    registries: tuple[Registry, ...]
    search: tuple[str, ...] | None
    helpers: tuple[str, ...] | None
    mode: str | None
    als_helper: str | None
    aliases: dict[str, Alias]


def _parse_file(path: str, text: str, *, drop_in: bool) -> _Parsed:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistriesConfError(f"{path}: not valid TOML: {e}", path=path) from e
    f = _File(path)
    _warn_unknown(f, data, _TOP_KEYS, "")
    v1 = data.get("registries")
    if _is_v1(v1):
        # As containers/image: a v2 setting present at all, even an empty array, is mixing.
        v2_keys = [k for k in _TOP_KEYS - {"registries"} if k in data]
        if drop_in:
            raise f.error("registries", "drop-in files must use the version 2 format "
                                        "([[registry]] tables), not [registries.*]")
        if v2_keys:
            raise f.error("registries", f"mixing the version 1 [registries.*] tables with "
                                        f"version 2 settings ({', '.join(sorted(v2_keys))}) "
                                        "is not supported")
        return _convert_v1(f, v1)
    raw = data.get("registry", [])
    if not isinstance(raw, list):
        raise f.error("registry", "must be an array of tables ([[registry]])")
    regs = [_parse_registry(f, table, i) for i, table in enumerate(raw)]
    _check_conflicts(f, regs)
    search = f.get(data, "unqualified-search-registries", list, "")
    if search is not None:
        search = [f.location(s, "unqualified-search-registries") for s in search]
        for s in search:
            if not is_domain(s):
                raise f.error("unqualified-search-registries",
                              f"invalid entry {s!r}: must be host[:port]")
    helpers = f.get(data, "credential-helpers", list, "")
    mode = f.get(data, "short-name-mode", str, "") or None
    if mode is not None and mode not in SHORT_NAME_MODES:
        raise f.error("short-name-mode", f"invalid short-name mode {mode!r} (use one of "
                                         f"{', '.join(SHORT_NAME_MODES)})")
    als = f.get(data, "additional-layer-store-auth-helper", str, "") or None
    aliases = parse_aliases(data.get("aliases", {}), path)
    return _Parsed(registries=_dedupe(regs), search=None if search is None else tuple(search),
                   helpers=None if helpers is None else tuple(helpers), mode=mode,
                   als_helper=als, aliases=aliases)


def _is_v1(v1: Any) -> bool:
    """Whether a ``[registries.*]`` table sets any version 1 list (``hasSetField``)."""
    return isinstance(v1, dict) and any(
        isinstance(v1.get(kind), dict) and "registries" in v1[kind]
        for kind in ("search", "insecure", "block"))


def _convert_v1(f: _File, v1: Any) -> _Parsed:
    """sysregistriesv2 ``V1RegistriesConf.ConvertToV2``: search, insecure and block lists."""
    if not isinstance(v1, dict):
        raise f.error("registries", "must be a table")
    lists: dict[str, list[str]] = {}
    for kind in ("search", "insecure", "block"):
        table = v1.get(kind, {})
        if not isinstance(table, dict):
            raise f.error(f"registries.{kind}", "must be a table")
        lists[kind] = f.get(table, "registries", list, f"registries.{kind}") or []
    entries: dict[str, dict[str, bool]] = {}
    for kind, flag in (("block", "blocked"), ("insecure", "insecure")):
        for loc in lists[kind]:
            location = f.location(loc, f"registries.{kind}.registries")
            if not location:
                raise f.error(f"registries.{kind}.registries", "invalid location: cannot be empty")
            entries.setdefault(location, {})[flag] = True
    regs = [Registry(prefix=loc, location=loc, insecure=flags.get("insecure", False),
                     blocked=flags.get("blocked", False), origin=f.path)
            for loc, flags in entries.items()]
    search = tuple(f.location(s, "registries.search.registries") for s in lists["search"])
    return _Parsed(registries=_dedupe(regs), search=search if lists["search"] else None,
                   helpers=None, mode=None, als_helper=None, aliases={})


def _check_conflicts(f: _File, regs: Sequence[Registry]) -> None:
    """A location listed twice must agree on ``insecure`` and ``blocked`` (postProcess)."""
    seen: dict[str, Registry] = {}
    for reg in regs:
        key = reg.location or reg.prefix
        other = seen.setdefault(key, reg)
        for attr in ("insecure", "blocked"):
            if getattr(other, attr) != getattr(reg, attr):
                raise f.error("registry", f"registry {key!r} is defined multiple times with "
                                          f"conflicting {attr!r} setting")


def _dedupe(regs: Sequence[Registry]) -> tuple[Registry, ...]:
    """The first entry of a prefix wins within a file; entries are sorted by prefix."""
    unique: dict[str, Registry] = {}
    for reg in regs:
        unique.setdefault(reg.prefix, reg)
    return tuple(unique[p] for p in sorted(unique))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RegistriesConfError(f"{path}: not UTF-8 text: {e}", path=str(path)) from e
    except OSError as e:
        raise RegistriesConfError(f"{path}: cannot read: {e.strerror or e}",
                                  path=str(path)) from e


def _dropins(dirs: Sequence[Path]) -> list[Path]:
    """Every ``*.conf`` file directly in each directory, in alpha-numerical order per directory."""
    files: list[Path] = []
    for d in dirs:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise RegistriesConfError(f"{d}: cannot list drop-in directory: {e.strerror or e}",
                                      path=str(d)) from e
        files.extend(Path(e.path) for e in entries
                     if e.name.endswith(".conf") and not e.is_dir())
    return files


@attrs.frozen
class RegistriesConf:
    """The merged registries configuration (containers-registries.conf(5) version 2).

    ``sources`` lists the files read, in order. ``aliases`` are those of the conf
    files only; the machine-written alias cache is read by short-name resolution.
    """

    registries: tuple[Registry, ...] = ()
    unqualified_search_registries: tuple[str, ...] = ()
    #: The file that set ``unqualified-search-registries`` (for error messages).
    unqualified_search_registries_origin: str = ""
    short_name_mode: str = "permissive"
    aliases: Mapping[str, Alias] = attrs.field(factory=dict, hash=False)
    credential_helpers: tuple[str, ...] = (AUTH_FILE_HELPER,)
    additional_layer_store_auth_helper: str = ""
    sources: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             dropin_dirs: Sequence[str | os.PathLike[str]] | None = None) -> RegistriesConf:
        """Read registries.conf and its drop-ins the way containers/image finds them.

        ``path`` (or ``$CONTAINERS_REGISTRIES_CONF``) must exist. Without one,
        ``$HOME/.config/containers/registries.conf`` is used if it exists, with only
        ``$HOME/.config/containers/registries.conf.d``; otherwise
        ``/etc/containers/registries.conf`` (missing is fine) with
        ``/etc/containers/registries.conf.d`` then the user's ``registries.conf.d``.
        An explicit path keeps both drop-in directories, as containers/image does;
        ``dropin_dirs`` replaces the directories (``[]`` for none).
        """
        home = Path(os.environ.get("HOME") or Path.home())
        explicit = path if path is not None else os.environ.get("CONTAINERS_REGISTRIES_CONF")
        dirs: list[Path] = [SYSTEM_REGISTRIES_CONF_D, home / _USER_REGISTRIES_CONF_D]
        if explicit:
            main, must_exist = Path(explicit), True
        elif (home / _USER_REGISTRIES_CONF).exists():
            main, must_exist = home / _USER_REGISTRIES_CONF, True
            dirs = [home / _USER_REGISTRIES_CONF_D]
        else:
            main, must_exist = SYSTEM_REGISTRIES_CONF, False
        if dropin_dirs is not None:
            dirs = [Path(d) for d in dropin_dirs]
        files: list[tuple[str, str, bool]] = []
        if must_exist or main.exists():
            files.append((str(main), _read(main), False))
        files.extend((str(p), _read(p), True) for p in _dropins(dirs))
        return cls.from_texts(files)

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> RegistriesConf:
        """Parse one registries.conf document (no drop-ins)."""
        return cls.from_texts([(source, text, False)])

    @classmethod
    def from_texts(cls, files: Sequence[tuple[str, str, bool]]) -> RegistriesConf:
        """Merge ``(source, text, is_drop_in)`` documents in order.

        sysregistriesv2 ``updateWithConfigurationFrom``: ``[[registry]]`` tables
        replace earlier ones with the same prefix; the other settings replace earlier
        values when a later file sets them; aliases merge entry by entry. Drop-ins
        must be version 2.
        """
        registries: dict[str, Registry] = {}
        search: tuple[str, ...] = ()
        origin = ""
        helpers: tuple[str, ...] = ()
        mode = ""
        als = ""
        aliases: dict[str, Alias] = {}
        for source, text, drop_in in files:
            parsed = _parse_file(source, text, drop_in=drop_in)
            registries.update((r.prefix, r) for r in parsed.registries)
            if parsed.search is not None:
                search, origin = parsed.search, source
            if parsed.helpers is not None:
                helpers = parsed.helpers
            mode = parsed.mode or mode
            als = parsed.als_helper or als
            aliases.update(parsed.aliases)
        return cls(registries=tuple(registries[p] for p in sorted(registries)),
                   unqualified_search_registries=search,
                   unqualified_search_registries_origin=origin,
                   short_name_mode=mode or "permissive", aliases=aliases,
                   credential_helpers=helpers or (AUTH_FILE_HELPER,),
                   additional_layer_store_auth_helper=als,
                   sources=tuple(source for source, _, _ in files))

    def find_registry(self, ref: Reference | str) -> Registry | None:
        """The ``[[registry]]`` with the longest matching prefix, or ``None``.

        ``ref`` is a fully qualified image name, repository or host, as text or a
        :class:`Reference` (matched with its tag and digest, so prefixes naming a
        tag work as the man page describes).
        """
        text = ref.string() if isinstance(ref, Reference) else ref
        best: Registry | None = None
        for reg in self.registries:
            if _matching_prefix_length(text, reg.prefix) != -1 and (
                    best is None or len(reg.prefix) > len(best.prefix)):
                best = reg
        return best

    def is_insecure(self, ref: Reference | str) -> bool:
        """Whether the matching entry allows plain HTTP and unverified TLS (``insecure``)."""
        reg = self.find_registry(ref)
        return reg is not None and reg.insecure

    def check_not_blocked(self, ref: Reference | str) -> None:
        """Raise :class:`BlockedRegistry` if the matching entry has ``blocked = true``."""
        reg = self.find_registry(ref)
        if reg is not None and reg.blocked:
            text = ref.string() if isinstance(ref, Reference) else ref
            raise BlockedRegistry(
                f"registry {reg.prefix} is blocked in {reg.origin or ', '.join(self.sources)}"
                f" (pulling {text} is forbidden)", reference=text, prefix=reg.prefix)

    def pull_sources(self, ref: Reference) -> list[PullSource]:
        """Where to pull ``ref`` from: the mirrors in order, then the primary location.

        sysregistriesv2 ``PullSourcesFromReference``: ``mirror-by-digest-only``
        and each mirror's ``pull-from-mirror`` decide which mirrors a tag or digest
        reference may use; each source's reference has the entry's prefix replaced
        by that endpoint's location. Raises :class:`BlockedRegistry` for a blocked
        entry, :class:`RegistriesConfError` when a rewrite gives no valid reference.
        """
        if not ref.domain:
            raise InvalidReference(f"invalid reference {ref.string()!r}: pull sources need a "
                                   "fully qualified reference (use parse_normalized)",
                                   reference=ref.string())
        self.check_not_blocked(ref)
        reg = self.find_registry(ref)
        if reg is None:
            return [PullSource(ref.string(), False, ref, False)]
        digested = ref.digest is not None
        mirrors: list[Mirror] = []
        if reg.mirror_by_digest_only:
            mirrors = list(reg.mirrors) if digested else []
        else:
            mirrors = [m for m in reg.mirrors
                       if not (m.pull_from_mirror == "digest-only" and not digested)
                       and not (m.pull_from_mirror == "tag-only" and digested)]
        sources = [PullSource(m.location, m.insecure, self._rewrite(ref, reg, m.location), True)
                   for m in mirrors]
        sources.append(PullSource(reg.location, reg.insecure,
                                  self._rewrite(ref, reg, reg.location), False))
        # containers/image checks "blocked" again for each endpoint it connects to.
        usable = []
        for source in sources:
            other = self.find_registry(source.reference_rewritten)
            if other is not None and other.blocked:
                logger.debug("skipping %s for %s: blocked by %s",
                             source.reference_rewritten.string(), ref.string(), other.prefix)
                continue
            usable.append(source)
        if not usable:
            self.check_not_blocked(sources[-1].reference_rewritten)
        return usable

    def _rewrite(self, ref: Reference, reg: Registry, location: str) -> Reference:
        """sysregistriesv2 ``Endpoint.rewriteReference``: prefix replaced by ``location``."""
        text = ref.string()
        if not location:  # a wildcard entry without location keeps the reference as is
            return ref
        length = _matching_prefix_length(text, reg.prefix)
        if length < 0:
            raise RegistriesConfError(f"{reg.origin}: prefix {reg.prefix!r} does not match "
                                      f"{text}", path=reg.origin, key="prefix")
        new = location + text[length:]
        try:
            rewritten = parse_normalized(new)
        except InvalidReference as e:
            raise RegistriesConfError(f"{reg.origin}: rewriting {text} for prefix {reg.prefix!r}"
                                      f" with location {location!r} gives an invalid reference:"
                                      f" {e}", path=reg.origin, key="location") from e
        if rewritten.string() != new:
            raise RegistriesConfError(f"{reg.origin}: rewriting {text} for prefix {reg.prefix!r}"
                                      f" with location {location!r} gives {new!r}, which is not"
                                      f" canonical (it means {rewritten.string()!r}); spell out"
                                      " the /library namespace for docker.io", path=reg.origin,
                                      key="location")
        return rewritten
