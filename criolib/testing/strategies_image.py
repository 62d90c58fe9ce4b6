"""hypothesis strategies for docker image references, for criolib's tests and users' own.

This module imports hypothesis, a test-only dependency (``criolib[test]``); nothing
in criolib imports it but tests. It draws text, not criolib objects, so it stays
independent of :mod:`criolib.image`'s classes.

The grammar is distribution/reference's (``regexp.go``): a domain (host name,
IPv4 address or bracketed IPv6 address, optional port), lowercase path components
joined by ``.``, ``_``, ``__`` or dashes, a ``[\\w][\\w.-]{0,127}`` tag and a
``sha256``/``sha384``/``sha512`` digest of lowercase hex; the name (domain and
path) is at most 255 characters.

:func:`reference_parts` draws ``(domain, path, tag, digest)`` that parse back to
exactly those parts: a reference without a domain has a one-component path,
since ``a/b`` reads as domain ``a``. :func:`reference_strings` formats them.
:func:`reference_texts` draws hostile near-misses for "parses or raises" tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = [
    "digests",
    "domains",
    "format_reference",
    "hosts",
    "path_components",
    "paths",
    "reference_parts",
    "reference_strings",
    "reference_texts",
    "short_names",
    "tags",
]

Strategy = st.SearchStrategy

_LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = _LOWER_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEX = "0123456789abcdef"
_DIGEST_SIZES = {"sha256": 64, "sha384": 96, "sha512": 128}
NAME_TOTAL_LENGTH_MAX = 255


def format_reference(domain: str, path: str, tag: str | None = None,
                     digest: str | None = None) -> str:
    """``domain/path[:tag][@digest]`` (no domain: ``path[:tag][@digest]``)."""
    text = f"{domain}/{path}" if domain else path
    if tag is not None:
        text += ":" + tag
    if digest is not None:
        text += "@" + digest
    return text


def _domain_components() -> Strategy[str]:
    """``[a-zA-Z0-9]`` or ``[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]``."""
    edge = st.sampled_from(_ALNUM)
    longer = st.builds(lambda a, mid, b: a + mid + b, edge, st.text(_ALNUM + "-", max_size=6),
                       edge)
    return edge | longer


def hosts() -> Strategy[str]:
    """Host names, dotted IPv4 addresses, ``localhost`` and bracketed IPv6 addresses."""
    names = st.lists(_domain_components(), min_size=1, max_size=4).map(".".join)
    ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
    ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]").filter(
        lambda s: "." not in s)  # IPv4-mapped dotted forms are outside the grammar
    return st.one_of(names, ipv4, st.just("localhost"), ipv6)


def domains() -> Strategy[str]:
    """Registry domains: a host with an optional ``:port``."""
    port = st.integers(0, 65535).map(lambda p: f":{p}")
    return st.builds(lambda h, p: h + p, hosts(), st.just("") | port)


def path_components() -> Strategy[str]:
    """Lowercase alphanumerics joined by ``.``, ``_``, ``__`` or runs of ``-``."""
    run = st.text(_LOWER_ALNUM, min_size=1, max_size=6)
    sep = st.sampled_from([".", "_", "__", "-", "--", "---"])
    tail = st.lists(st.tuples(sep, run), max_size=3)
    return st.builds(lambda head, rest: head + "".join(s + r for s, r in rest), run, tail)


def paths(*, min_components: int = 1, max_components: int = 4) -> Strategy[str]:
    """Repository paths of ``min_components`` to ``max_components`` components."""
    return st.lists(path_components(), min_size=min_components,
                    max_size=max_components).map("/".join)


def tags() -> Strategy[str]:
    """Tags: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``."""
    first = _ALNUM + "_"
    return st.builds(lambda a, rest: a + rest, st.sampled_from(first),
                     st.text(first + ".-", max_size=127))


def digests() -> Strategy[str]:
    """Valid digests: ``sha256:`` + 64, ``sha384:`` + 96 or ``sha512:`` + 128 lowercase hex."""
    return st.sampled_from(sorted(_DIGEST_SIZES)).flatmap(
        lambda alg: st.text(_HEX, min_size=_DIGEST_SIZES[alg],
                            max_size=_DIGEST_SIZES[alg]).map(lambda h: f"{alg}:{h}"))


def reference_parts(*, qualified: bool | None = None
                    ) -> Strategy[tuple[str, str, str | None, str | None]]:
    """``(domain, path, tag, digest)`` that parse (without normalisation) to exactly these.

    ``qualified=True`` always draws a domain, ``False`` never (then the path has
    one component), ``None`` either.
    """
    with_domain = st.tuples(domains(), paths())
    without = st.tuples(st.just(""), paths(max_components=1))
    names = {True: with_domain, False: without, None: with_domain | without}[qualified]
    return st.tuples(names, st.none() | tags(), st.none() | digests()).map(
        lambda t: (t[0][0], t[0][1], t[1], t[2])).filter(
        lambda p: len(format_reference(p[0], p[1])) <= NAME_TOTAL_LENGTH_MAX)


def reference_strings(*, qualified: bool | None = None) -> Strategy[str]:
    """Valid reference text, formatted from :func:`reference_parts`."""
    return reference_parts(qualified=qualified).map(lambda p: format_reference(*p))


def short_names() -> Strategy[str]:
    """Names without a registry: the first component has no ``.``/``:``, is not localhost."""
    first = path_components().filter(lambda c: "." not in c and c != "localhost")
    rest = st.lists(path_components(), max_size=2)
    return st.builds(lambda a, b, tag: "/".join([a, *b]) + (f":{tag}" if tag else ""),
                     first, rest, st.none() | tags())


@st.composite
def _mutated(draw: st.DrawFn, alphabet: str) -> str:
    """A valid reference with one edit: a character inserted or deleted, a tail
    upper-cased, or a tail repeated."""
    text = draw(reference_strings())
    i = draw(st.integers(0, len(text)))
    op = draw(st.sampled_from(["insert", "delete", "upper", "repeat"]))
    if op == "insert":
        return text[:i] + draw(st.sampled_from(alphabet)) + text[i:]
    if op == "delete":
        return text[:i] + text[i + 1:]
    if op == "upper":
        return text[:i] + text[i:].upper()
    return text + text[i:]


def reference_texts() -> Strategy[str]:
    """Near-misses and noise: reference characters in any order, and mutated references."""
    alphabet = _ALNUM + "._-:/@[]%+ \n\x00é"
    return st.one_of(st.text(alphabet, max_size=80), _mutated(alphabet), reference_strings())
