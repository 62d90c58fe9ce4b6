"""Short names: aliases, unqualified-search registries and ``short-name-mode``.

containers-registries.conf(5) "Short-Name Aliasing" and "Short-Name Aliasing:
Modes"; containers/image ``pkg/shortnames`` and ``pkg/sysregistriesv2/shortnames.go``
(the machine-written ``short-name-aliases.conf`` cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._atomic import atomic_write_bytes
from ._errors import AmbiguousShortName, InvalidReference, RegistriesConfError, ShortNameError
from ._reference import Reference, parse_normalized, parse_reference

if TYPE_CHECKING:
    from ._registries_conf import RegistriesConf

__all__ = [
    "SHORT_NAME_MODES",
    "Alias",
    "Resolution",
    "add_alias",
    "load_alias_cache",
    "parse_aliases",
    "record_alias",
    "remove_alias",
    "resolve_short_name",
    "short_name_aliases_path",
]

#: Valid ``short-name-mode`` values; ``permissive`` is the default.
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")
_ALIASES_FILE = Path("containers/short-name-aliases.conf")


@attrs.frozen
class Alias:
    """A short-name alias; ``value`` is ``None`` when a later file erased it with ``""``."""

    value: Reference | None
    origin: str


def _is_registry(domain: str) -> bool:
    return any(c in domain for c in ".:") or domain == "localhost"


def _alias_name_problem(name: str) -> str:
    """sysregistriesv2 ``validateShortName``; ``""`` when ``name`` is a valid alias name."""
    try:
        ref = parse_reference(name)
    except InvalidReference as e:
        return f"cannot parse short name: {e}"
    if ref.digest is not None:
        return f"invalid short name {name!r}: must not contain digest"
    if ref.tag is not None:
        return f"invalid short name {name!r}: must not contain tag"
    if _is_registry(ref.domain):
        return f"invalid short name {name!r}: must not contain registry"
    return ""


def _alias_value(value: str) -> tuple[str, Reference | None]:
    """sysregistriesv2 ``parseShortNameValue``: (problem, normalised reference)."""
    try:
        ref = parse_reference(value)
    except InvalidReference as e:
        return f"parsing alias {value!r}: {e}", None
    if ref.digest is not None:
        return f"invalid alias {value!r}: must not contain digest", None
    if ref.tag is not None:
        return f"invalid alias {value!r}: must not contain tag", None
    if not _is_registry(ref.domain):
        return f"invalid alias {value!r}: must contain registry and repository", None
    try:
        return "", parse_normalized(value)
    except InvalidReference as e:
        return f"parsing alias {value!r}: {e}", None


def parse_aliases(table: Any, path: str, *, key: str = "aliases") -> dict[str, Alias]:
    """Validate an ``[aliases]`` table (sysregistriesv2 ``newShortNameAliasCache``).

    Names must be short names without tag or digest; values fully qualified
    references without tag or digest (normalised, so ``docker.io/alpine`` means
    ``docker.io/library/alpine``), or ``""`` to erase an earlier alias. Every
    malformed entry is reported at once, as :class:`RegistriesConfError`.
    """
    if not isinstance(table, dict):
        raise RegistriesConfError(f"{path}: {key}: must be a table", path=path, key=key)
    out: dict[str, Alias] = {}
    problems = []
    for name, value in table.items():
        name_problem = _alias_name_problem(name)
        if name_problem:
            problems.append(f"{key}.{name!r}: {name_problem}")
        if not isinstance(value, str):
            problems.append(f"{key}.{name!r}: value must be a string, not {value!r}")
            continue
        value_problem, ref = ("", None) if value == "" else _alias_value(value)
        if value_problem:
            problems.append(f"{key}.{name!r}: {value_problem}")
        elif not name_problem:
            out[name] = Alias(ref, path)
    if problems:
        raise RegistriesConfError(f"{path}: invalid short-name aliases:\n  "
                                  + "\n  ".join(problems), path=path, key=key)
    return out


def short_name_aliases_path() -> Path:
    """Where recorded aliases live (sysregistriesv2 ``shortNameAliasesConfPath``).

    ``/var/cache/containers/short-name-aliases.conf`` for root, else
    ``$XDG_CACHE_HOME`` (default ``$HOME/.cache``) ``/containers/short-name-aliases.conf``.
    """
    if os.geteuid() == 0:
        return Path("/var/cache") / _ALIASES_FILE
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / _ALIASES_FILE


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise RegistriesConfError(f"{path}: cannot read short-name aliases: {e}",
                                  path=str(path)) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistriesConfError(f"{path}: not valid TOML: {e}", path=str(path)) from e
    aliases = data.get("aliases", {})
    parse_aliases(aliases, str(path))  # validate: another process may have corrupted it
    return dict(aliases)


def load_alias_cache(path: str | os.PathLike[str] | None = None) -> dict[str, Alias]:
    """The aliases recorded in ``short-name-aliases.conf`` (missing file: none).

    Writers replace the file atomically, so it is read without taking the lock.
    """
    file = Path(path) if path is not None else short_name_aliases_path()
    return parse_aliases(_read_cache(file), str(file))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The writer lock containers/storage ``lockfile`` takes on ``<file>.lock`` (POSIX lock)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_cache(path: Path, aliases: Mapping[str, str]) -> None:
    lines = ["[aliases]"]
    # TOML basic strings accept JSON's escapes; names and values are reference text anyway.
    lines += [f"  {json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(aliases.items())]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode(), mode=0o600)


def add_alias(name: str, value: Reference | str, *,
              aliases_file: str | os.PathLike[str] | None = None) -> None:
    """Record ``name`` → ``value`` in the alias cache (``shortnames.Add``), replacing any.

    ``name`` must be a short name and ``value`` a fully qualified repository, both
    without tag or digest; otherwise :class:`InvalidReference`.
    """
    text = value.string() if isinstance(value, Reference) else value
    problem = _alias_name_problem(name) or _alias_value(text)[0]
    if problem:
        raise InvalidReference(f"cannot record short-name alias {name!r} = {text!r}: {problem}",
                               reference=text)
    path = Path(aliases_file) if aliases_file is not None else short_name_aliases_path()
    with _locked(path):
        aliases = _read_cache(path)
        aliases[name] = text
        _write_cache(path, aliases)


def remove_alias(name: str, *, aliases_file: str | os.PathLike[str] | None = None) -> None:
    """Drop ``name`` from the alias cache (``shortnames.Remove``).

    Raises :class:`ShortNameError` when the cache does not hold it: aliases in
    registries.conf files are the user's to edit.
    """
    path = Path(aliases_file) if aliases_file is not None else short_name_aliases_path()
    with _locked(path):
        aliases = _read_cache(path)
        if name not in aliases:
            raise ShortNameError(f"short-name alias {name!r} not found in {str(path)!r}: "
                                 "please check registries.conf files", name=name)
        del aliases[name]
        _write_cache(path, aliases)


@attrs.frozen
class Resolution:
    """The references a name may be pulled from, in order (``shortnames.Resolved``).

    ``alias`` is the file that defined the alias used, ``None`` when none was.
    ``short_name`` is the user's short name without tag or digest (``None`` for a
    fully qualified input). ``prompt`` is true when the caller should ask the user
    to choose one candidate (interactive, several candidates, enforcing or
    permissive mode); after pulling the choice, call :func:`record_alias`.
    """

    candidates: list[Reference] = attrs.field(hash=False)
    alias: str | None = None
    short_name: str | None = None
    prompt: bool = False
    #: Where the search registries or the alias came from, for :attr:`description`.
    origin: str = ""

    @property
    def description(self) -> str:
        """What the resolution did, for the user before pulling (``Resolved.Description``)."""
        if self.short_name is None or self.prompt:
            return ""
        if self.alias is not None:
            return f"Resolved {self.short_name!r} as an alias ({self.alias})"
        return (f"Resolving {self.short_name!r} using unqualified-search registries"
                f" ({self.origin})")


def _apply(alias: Reference, ref: Reference) -> Reference:
    """The alias with the user's tag and digest (containers-registries.conf(5))."""
    out = alias
    if ref.tag is not None:
        out = out.with_tag(ref.tag)
    if ref.digest is not None:
        out = out.with_digest(ref.digest)
    return out.with_default_tag()


def resolve_short_name(name: str, conf: RegistriesConf, *, mode: str | None = None,
                       interactive: bool = False,
                       aliases_file: str | os.PathLike[str] | None = None) -> Resolution:
    """Resolve ``name`` to the references to try, in order (``shortnames.Resolve``).

    A fully qualified name is returned as is (normalised, ``:latest`` added if it
    has no tag or digest). For a short name an alias wins (the alias cache
    ``aliases_file``, default :func:`short_name_aliases_path`, before the conf
    files' ``[aliases]``), tag and digest carried over; otherwise each
    unqualified-search registry gives a candidate. ``disabled`` mode, or a single
    candidate, returns them all; with several, ``permissive`` returns them all
    unless ``interactive``, and ``enforcing`` raises :class:`AmbiguousShortName`
    unless ``interactive`` (then :attr:`Resolution.prompt` is set).
    """
    mode = mode or conf.short_name_mode
    if mode not in SHORT_NAME_MODES:
        raise ShortNameError(f"unsupported short-name mode {mode!r} (use one of "
                             f"{', '.join(SHORT_NAME_MODES)})", name=name)
    ref = parse_reference(name)
    if _is_registry(ref.domain):
        return Resolution([parse_normalized(name).with_default_tag()])
    short = ref.name
    cache_path = Path(aliases_file) if aliases_file is not None else short_name_aliases_path()
    alias = load_alias_cache(cache_path).get(short) or conf.aliases.get(short)
    if alias is not None and alias.value is not None:
        return Resolution([_apply(alias.value, ref)], alias=alias.origin, short_name=short,
                          origin=alias.origin)
    registries = conf.unqualified_search_registries
    origin = conf.unqualified_search_registries_origin
    if not registries:
        where = (f"no unqualified-search registries are defined in {origin!r}" if origin
                 else "no containers-registries.conf(5) sets unqualified-search-registries")
        raise ShortNameError(f"short-name {name!r} did not resolve to an alias and {where}",
                             name=name)
    candidates = []
    for registry in registries:
        try:
            candidates.append(parse_normalized(f"{registry}/{name}").with_default_tag())
        except InvalidReference as e:
            raise ShortNameError(f"creating a reference for {name!r} with unqualified-search "
                                 f"registry {registry!r}: {e}", name=name) from e
    resolution = Resolution(candidates, short_name=short, origin=origin)
    if mode == "disabled" or len(candidates) == 1:
        return resolution
    if interactive:
        return attrs.evolve(resolution, prompt=True)
    if mode == "permissive":
        return resolution
    listed = ", ".join(c.string() for c in candidates)
    raise AmbiguousShortName(
        f"short name {name!r} is ambiguous: short-name-mode is \"enforcing\" and it may mean "
        f"any of {listed} (unqualified-search-registries in {origin}), but there is no "
        f"terminal to ask which. Use a fully qualified name such as {candidates[0].string()!r}"
        f", or add an alias for it to the [aliases] table of a registries.conf file "
        f"(\"{short}\" = \"{candidates[0].name}\")",
        name=name, candidates=[c.string() for c in candidates])


def record_alias(resolution: Resolution, pulled: Reference, *,
                 aliases_file: str | os.PathLike[str] | None = None) -> bool:
    """After a successful pull, record the user's choice as an alias (``PullCandidate.Record``).

    containers/image records only a candidate the user picked at a prompt
    (enforcing or permissive mode, several candidates): ``resolution.prompt``.
    Returns whether an alias was written; ``pulled`` must be one of the candidates.
    """
    if not resolution.prompt or resolution.short_name is None:
        return False
    chosen = pulled.name_only()
    if chosen not in {c.name_only() for c in resolution.candidates}:
        raise ShortNameError(f"{pulled.string()} is not a candidate for short name "
                             f"{resolution.short_name!r}", name=resolution.short_name)
    add_alias(resolution.short_name, chosen, aliases_file=aliases_file)
    return True
