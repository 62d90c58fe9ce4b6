"""The auth texts' parsers under hypothesis, and the token server's claims, without a registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.testing import TestbedValueError, TokenServer
from criolib.testing._push import parse_challenge
from criolib.testing._tokens import REGISTRY_LEEWAY, parse_scopes
from criolib.testing.strategies_http import (
    basic_authorization,
    basic_credentials,
    challenges,
    format_challenge,
    format_scope,
    header_texts,
    scope_parts,
    scope_values,
)

USERS = {"alice": "wonderland", "bob": "b:o:b", "ünï": "çødé"}


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer(users=USERS, acl={"bob": ["pull"]}, ttl=10) as server:
        yield server


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return doc


# -- WWW-Authenticate ------------------------------------------------------------------------


@given(challenges())
def test_challenge_round_trip(challenge: tuple[str, dict[str, tuple[str, bool]]]) -> None:
    scheme, params = challenge
    assert parse_challenge(format_challenge(scheme, params)) == (
        scheme.lower(), {k.lower(): v for k, (v, _) in params.items()})


@given(header_texts())
def test_any_challenge_text_parses_without_error(text: str) -> None:
    scheme, params = parse_challenge(text)
    assert scheme == scheme.lower()
    assert all(k == k.lower() for k in params)


def test_registry_challenge() -> None:
    header = ('Bearer realm="http://127.0.0.1:1/token",service="svc",'
              'scope="repository:a/b:pull,push",error="insufficient_scope"')
    assert parse_challenge(header) == ("bearer", {
        "realm": "http://127.0.0.1:1/token", "service": "svc",
        "scope": "repository:a/b:pull,push", "error": "insufficient_scope"})


# -- scopes ----------------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.lists(scope_parts(), max_size=4, unique_by=lambda p: (p[0], p[1])))
def test_scope_round_trip(parts: list[tuple[str, str, list[str]]]) -> None:
    values = [format_scope(*p) for p in parts]
    assert parse_scopes(values) == {(t, n): a for t, n, a in parts}
    assert parse_scopes([" ".join(values)]) == parse_scopes(values)


@given(st.lists(st.text(max_size=30), max_size=3))
def test_any_scope_text_parses_or_is_a_value_error(values: list[str]) -> None:
    try:
        parsed = parse_scopes(values)
    except TestbedValueError as exc:
        assert isinstance(exc, ValueError) and "malformed scope" in str(exc)
        return
    for (rtype, name), actions in parsed.items():
        assert rtype and name and ":" not in rtype
        assert all(a and ":" not in a and "," not in a for a in actions)


def test_scope_with_a_registry_port() -> None:
    assert parse_scopes(["repository:localhost:5000/x:pull"]) == {
        ("repository", "localhost:5000/x"): ["pull"]}


# -- Authorization at the token server ----------------------------------------------------------


@settings(max_examples=50)
@given(basic_credentials())
def test_basic_credentials_round_trip(tokens: TokenServer, creds: tuple[str, str]) -> None:
    user, password = creds
    tokens.users[user] = password
    try:
        assert tokens.authenticate(basic_authorization(user, password)) == user
        assert tokens.authenticate(basic_authorization(user, password + "x")) is None
    finally:
        del tokens.users[user]


@pytest.mark.parametrize("user", sorted(USERS))
def test_known_users_authenticate(tokens: TokenServer, user: str) -> None:
    assert tokens.authenticate(basic_authorization(user, USERS[user])) == user
    assert tokens.authenticate("basic  " + basic_authorization(user, USERS[user])[6:]) == user


@given(header_texts())
def test_any_authorization_text_is_refused_or_a_user(tokens: TokenServer, text: str) -> None:
    assert tokens.authenticate(text) in (None, *USERS)
    assert tokens.authenticate("Basic " + text) in (None, *USERS)


@settings(max_examples=50, deadline=None)
@given(query=st.dictionaries(st.sampled_from(["service", "scope", "account", "x"]),
                             st.lists(header_texts(), max_size=2) | scope_values(), max_size=3),
       authorization=st.none() | header_texts())
def test_any_token_request_gets_an_answer(
    tokens: TokenServer, query: dict[str, list[str]], authorization: str | None
) -> None:
    status, body = tokens.handle_token_request(query, authorization)
    assert status in (200, 400, 401)
    if status == 200:
        assert _claims(body["token"])["aud"] == tokens.service


# -- lifetime --------------------------------------------------------------------------------


@pytest.mark.parametrize("issued_at", [1_000_000_000.0, 1_000_000_000.001, 1_000_000_000.999])
def test_a_token_lives_at_least_its_ttl(tokens: TokenServer, issued_at: float) -> None:
    claims = _claims(tokens.mint("alice", [], issued_at=issued_at))
    # The registry accepts a token while now <= exp + leeway (distribution 2.8 token.go).
    accepted_until = claims["exp"] + REGISTRY_LEEWAY
    assert tokens.ttl <= accepted_until - issued_at < tokens.ttl + 1
    assert claims["nbf"] + REGISTRY_LEEWAY <= issued_at
    assert all(isinstance(claims[c], int) for c in ("exp", "nbf", "iat"))
