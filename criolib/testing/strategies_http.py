"""hypothesis strategies for the HTTP auth texts registries and token services exchange.

This module imports hypothesis, a test-only dependency (``criolib[test]``); nothing
in criolib imports it but tests. It serves the parsers of the registry auth flow:
``WWW-Authenticate`` challenges (RFC 7235 §4.1, RFC 6750 §3), ``Authorization:
Basic`` credentials (RFC 7617) and token scopes (distribution docs/spec/auth/scope.md).

Each well-formed strategy draws the *parts* (a scheme and its params, a scope's
type, name and actions) so a test can format them with the helpers here and check
that parsing gives the parts back; :func:`header_texts` draws what a hostile peer
may send instead.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from hypothesis import strategies as st

__all__ = [
    "TCHARS",
    "basic_authorization",
    "basic_credentials",
    "challenges",
    "format_challenge",
    "format_scope",
    "header_texts",
    "scope_parts",
    "scope_values",
]

Strategy = st.SearchStrategy

#: RFC 9110 §5.6.2 ``tchar``: what a token (a scheme, a param name) is made of.
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 9110 §5.6.4 qdtext and quoted-pair, without obs-text: printable ASCII and blanks.
_QUOTABLE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t"


def header_texts() -> Strategy[str]:
    """Any header value a peer can send: Latin-1 text without CR or LF (http.server's view)."""
    return st.text(st.characters(min_codepoint=0, max_codepoint=0xFF,
                                 blacklist_characters="\r\n"), max_size=80)


# -- WWW-Authenticate ---------------------------------------------------------------------


def _tokens(max_size: int = 12) -> Strategy[str]:
    return st.text(TCHARS, min_size=1, max_size=max_size)


def challenges() -> Strategy[tuple[str, dict[str, tuple[str, bool]]]]:
    """A scheme and its auth-params, each value with whether to write it quoted.

    Param names differ case-insensitively (parsers lower-case them); unquoted values
    are tokens, quoted ones any printable text.
    """
    def params(names: list[str]) -> Strategy[dict[str, tuple[str, bool]]]:
        values = st.one_of(
            st.tuples(st.text(_QUOTABLE, max_size=20), st.just(True)),
            st.tuples(_tokens(20), st.just(False)),
        )
        return st.tuples(*[values for _ in names]).map(lambda vs: dict(zip(names, vs,
                                                                            strict=True)))

    names = st.lists(_tokens(), max_size=5, unique_by=str.lower)
    return st.tuples(_tokens(), names.flatmap(params))


def format_challenge(scheme: str, params: Mapping[str, tuple[str, bool]]) -> str:
    """``scheme k1="v1", k2=v2`` with RFC 9110 quoted-string escaping."""
    parts = []
    for key, (value, quoted) in params.items():
        if quoted:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
        else:
            parts.append(f"{key}={value}")
    return f"{scheme} {', '.join(parts)}" if parts else scheme


# -- Basic credentials --------------------------------------------------------------------


def basic_credentials() -> Strategy[tuple[str, str]]:
    """A user name (no ``:``, RFC 7617 §2) and a password (anything), both non-empty."""
    text = st.characters(codec="utf-8")
    return st.tuples(
        st.text(text.filter(lambda c: c != ":"), min_size=1, max_size=16),
        st.text(text, min_size=1, max_size=16),
    )


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` value for Basic credentials (UTF-8, RFC 7617 §2.1)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- scopes ---------------------------------------------------------------------------------


def _no_space(exclude: str = "") -> Strategy[str]:
    return st.characters(codec="utf-8").filter(
        lambda c: not c.isspace() and c not in exclude
    )


def scope_parts() -> Strategy[tuple[str, str, list[str]]]:
    """A resource type (no ``:``), a name (``:`` allowed: ``host:5000/repo``) and actions.

    Actions hold no ``:`` or ``,``; none of the parts holds whitespace, which
    separates scopes.
    """
    return st.tuples(
        st.text(_no_space(":"), min_size=1, max_size=10),
        st.text(_no_space(), min_size=1, max_size=20),
        st.lists(st.text(_no_space(":,"), min_size=1, max_size=8), max_size=4, unique=True),
    )


def format_scope(rtype: str, name: str, actions: Sequence[str]) -> str:
    """``type:name:action,action`` (scope.md)."""
    return f"{rtype}:{name}:{','.join(actions)}"


def scope_values() -> Strategy[list[str]]:
    """``scope`` query values: each one or more formatted scopes joined by a space."""
    one = scope_parts().map(lambda p: format_scope(*p))
    return st.lists(st.lists(one, min_size=1, max_size=3).map(" ".join), max_size=3)
