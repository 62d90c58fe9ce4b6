"""Docker image references: parse, normalise, format.

distribution/reference (``reference.go``, ``regexp.go``, ``normalize.go``) as
vendored by containers/image (``docker/reference``)::

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain "/"] path-component ["/" path-component]*
    domain          := host [":" port-number]
    host            := domain-name | IPv4address | "[" IPv6address "]"
    domain-name     := domain-component ["." domain-component]*
    domain-component:= /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    path-component  := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
    separator       := /[_.]|__|[-]+/
    tag             := /[\\w][\\w.-]{0,127}/
    digest          := algorithm ":" hex    (sha256: 64, sha384: 96, sha512: 128 lowercase hex)

The name (domain, ``/`` and path) is at most 255 characters, as containers/image
checks it (distribution/reference v0.6 counts the path alone).
"""

from __future__ import annotations

import re

import attrs

from ._errors import InvalidReference

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "NAME_TOTAL_LENGTH_MAX",
    "Reference",
    "is_short_name",
    "parse_normalized",
    "parse_reference",
]

#: Docker Hub's canonical domain (normalize.go ``defaultDomain``).
DEFAULT_DOMAIN = "docker.io"
#: The legacy "Docker Index" domain, canonicalised to :data:`DEFAULT_DOMAIN`.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
#: The namespace of Docker Hub's official images.
OFFICIAL_REPO_NAME = "library"
#: The tag a name without tag or digest gets (``TagNameOnly``).
DEFAULT_TAG = "latest"
#: reference.go ``NameTotalLengthMax``.
NAME_TOTAL_LENGTH_MAX = 255
# No valid reference is longer (255 name + ":" 128 tag + "@sha512:" 128 hex); longer
# input is refused before the regular expressions see it, which keeps the
# backtracking engine's cost bounded on hostile input.
_INPUT_LENGTH_MAX = 1024

# regexp.go, with Go's ASCII \w spelt out.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
#: ``domainAndPort``: a host name, IPv4 address or bracketed IPv6 address, then ``:port``.
DOMAIN_PATTERN = r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    r"((?:" + DOMAIN_PATTERN + r"/)?" + _REMOTE_NAME + r")"
    r"(?::(" + _TAG + r"))?"
    r"(?:@(" + _DIGEST + r"))?"
)
_NAME_RE = re.compile(r"(?:(" + DOMAIN_PATTERN + r")/)?(" + _REMOTE_NAME + r")")
_DOMAIN_RE = re.compile(DOMAIN_PATTERN)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
# opencontainers/go-digest algorithm.go: the registered algorithms and their hex lengths.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _invalid(text: str, reason: str) -> InvalidReference:
    return InvalidReference(f"invalid reference {text!r}: {reason}", reference=text)


def _check_digest(text: str, digest: str) -> None:
    """go-digest ``Digest.Validate``: a registered algorithm and its exact lowercase hex."""
    algorithm, _, encoded = digest.partition(":")
    size = _DIGEST_HEX_LENGTHS.get(algorithm)
    if size is None:
        raise _invalid(text, f"unsupported digest algorithm {algorithm!r} "
                             f"(use one of {', '.join(_DIGEST_HEX_LENGTHS)})")
    if len(encoded) != size:
        raise _invalid(text, f"invalid checksum digest length: {algorithm} takes "
                             f"{size} hex digits, not {len(encoded)}")
    if not re.fullmatch(r"[a-f0-9]+", encoded):
        raise _invalid(text, "invalid checksum digest format: hex digits must be lowercase")


def is_domain(text: str) -> bool:
    """Whether ``text`` is a registry ``host[:port]`` as references spell it (regexp.go)."""
    return _DOMAIN_RE.fullmatch(text) is not None


@attrs.frozen
class Reference:
    """A parsed image reference: ``domain/path[:tag][@digest]``.

    distribution/reference ``reference``. ``domain`` is ``""`` for a name parsed
    without one (``busybox``); ``tag`` and ``digest`` are ``None`` when absent.
    The constructor does not validate: build references with :func:`parse_reference`
    or :func:`parse_normalized`, or derive them with :meth:`with_tag`/:meth:`with_digest`.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name, ``domain/path`` (``Named.Name()``)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def string(self) -> str:
        """The full reference, ``name[:tag][@digest]`` (``Reference.String()``)."""
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    def __str__(self) -> str:
        return self.string()

    @property
    def familiar_name(self) -> str:
        """The name as the Docker UI shows it (normalize.go ``familiarizeName``).

        ``docker.io/library/busybox`` → ``busybox``; ``docker.io/user/app`` →
        ``user/app``; other domains are kept.
        """
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        parts = self.path.split("/")
        if len(parts) == 2 and parts[0] == OFFICIAL_REPO_NAME:
            return parts[1]
        return self.path

    def familiar(self) -> str:
        """The reference as the Docker UI shows it (``FamiliarString``): tag and digest kept.

        ``docker.io/library/busybox:latest`` → ``busybox:latest``; use
        :attr:`familiar_name` for the name alone.
        """
        text = self.familiar_name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    def with_tag(self, tag: str) -> Reference:
        """This reference with ``tag`` (any digest is kept), like ``reference.WithTag``."""
        if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
            raise InvalidReference(f"invalid tag {tag!r} for {self.name}: a tag is "
                                   r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", reference=self.name)
        return attrs.evolve(self, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """This reference with ``digest`` (any tag is kept), like ``reference.WithDigest``."""
        if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
            raise InvalidReference(f"invalid digest {digest!r} for {self.name}: "
                                   "want algorithm:hex", reference=self.name)
        _check_digest(f"{self.name}@{digest}", digest)
        return attrs.evolve(self, digest=digest)

    def name_only(self) -> Reference:
        """This reference without tag or digest (``reference.TrimNamed``)."""
        return attrs.evolve(self, tag=None, digest=None)

    def with_default_tag(self) -> Reference:
        """This reference, tagged ``latest`` if it has neither tag nor digest (``TagNameOnly``)."""
        if self.tag is None and self.digest is None:
            return attrs.evolve(self, tag=DEFAULT_TAG)
        return self


def parse_reference(text: str) -> Reference:
    """Parse ``text`` as it stands, without normalisation (``reference.Parse``).

    ``busybox`` parses with an empty domain, and ``foo/bar`` with domain ``foo``:
    only :func:`parse_normalized` decides what is a registry the Docker way.
    Raises :class:`InvalidReference` naming the input and the fault.
    """
    if not isinstance(text, str):
        raise InvalidReference(f"invalid reference {text!r}: not a string", reference=str(text))
    if text == "":
        raise _invalid(text, "repository name must have at least one component")
    if len(text) > _INPUT_LENGTH_MAX:
        raise InvalidReference(f"invalid reference {text[:64]!r}... ({len(text)} characters):"
                               f" too long to be a reference", reference=text)
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        if text.lower() != text and _REFERENCE_RE.fullmatch(text.lower()) is not None:
            raise _invalid(text, "repository name must be lowercase")
        raise _invalid(text, "invalid reference format")
    name, tag, digest = match.groups()
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"repository name must not be more than "
                             f"{NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None:
        _check_digest(text, digest)
    name_match = _NAME_RE.fullmatch(name)
    assert name_match is not None  # name matched the same grammar inside _REFERENCE_RE
    domain, path = name_match.groups()
    return Reference(domain=domain or "", path=path, tag=tag, digest=digest)


def _split_docker_domain(text: str) -> tuple[str, str]:
    """normalize.go ``SplitDockerDomain``: pick the registry the way Docker does."""
    first, slash, rest = text.partition("/")
    if not slash or (not any(c in first for c in ".:") and first != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_NAME}/{remainder}"
    return domain, remainder


def parse_normalized(text: str) -> Reference:
    """Parse a familiar name into a fully qualified reference (``ParseNormalizedNamed``).

    A first component without ``.`` or ``:`` that is not ``localhost`` is not a
    registry: ``busybox`` → ``docker.io/library/busybox``, ``user/app`` →
    ``docker.io/user/app``; ``index.docker.io`` becomes ``docker.io``. No tag is
    added (see :meth:`Reference.with_default_tag`).
    """
    if not isinstance(text, str):
        raise InvalidReference(f"invalid reference {text!r}: not a string", reference=str(text))
    if _IDENTIFIER_RE.fullmatch(text):
        raise _invalid(text, "cannot specify 64-byte hexadecimal strings as a repository name")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise _invalid(text, f"repository name ({remote}) must be lowercase")
    ref = parse_reference(f"{domain}/{remainder}")
    if ref.domain != domain:
        # A first component that looks like a host but breaks the domain grammar
        # ("a_b.com/x") would otherwise silently become part of the path.
        raise _invalid(text, f"{domain!r} is not a valid registry host[:port]")
    return ref


def is_short_name(text: str) -> bool:
    """Whether ``text`` names no registry (containers/image ``shortnames.IsShortName``).

    True when the reference's first component has no ``.`` or ``:`` and is not
    ``localhost``: ``fedora``, ``library/fedora:40``. False for ``quay.io/x``,
    ``localhost/x`` and for text that is not a reference at all.
    """
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return False
    return not (any(c in ref.domain for c in ".:") or ref.domain == "localhost")
