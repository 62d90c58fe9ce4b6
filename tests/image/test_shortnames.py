"""Short-name resolution: aliases, search registries, modes, the alias cache."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from criolib.image._errors import (
    AmbiguousShortName,
    InvalidReference,
    RegistriesConfError,
    ShortNameError,
)
from criolib.image._reference import Reference, parse_reference
from criolib.image._registries_conf import RegistriesConf
from criolib.image._shortnames import (
    add_alias,
    load_alias_cache,
    record_alias,
    remove_alias,
    resolve_short_name,
    short_name_aliases_path,
)

D = "sha256:d366a4665ab44f0648d7a00ae3fae139d55e32f9712c67accd604bb55df9d05a"

# pkg/shortnames testdata/aliases.conf
ALIASES = """
short-name-mode="enforcing"

[aliases]
docker="docker.io/library/foo"
"quay/foo"="quay.io/library/foo"
example="example.com/library/foo"
empty=""
"""
TWO_REG = 'unqualified-search-registries = ["quay.io", "registry.com"]\n'
ONE_REG = 'unqualified-search-registries = ["quay.io"]\n'


def conf(text: str, name: str = "registries.conf") -> RegistriesConf:
    return RegistriesConf.from_text(textwrap.dedent(text), name)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache/containers/short-name-aliases.conf"


def names(candidates: list[Reference]) -> list[str]:
    return [c.string() for c in candidates]


@pytest.mark.parametrize("name, value", [
    ("docker", "docker.io/library/foo:latest"),
    ("docker:tag", "docker.io/library/foo:tag"),
    (f"docker@{D}", f"docker.io/library/foo@{D}"),
    ("quay/foo", "quay.io/library/foo:latest"),
    ("quay/foo:tag", "quay.io/library/foo:tag"),
    (f"quay/foo@{D}", f"quay.io/library/foo@{D}"),
    ("example", "example.com/library/foo:latest"),
    ("example:tag", "example.com/library/foo:tag"),
    (f"example@{D}", f"example.com/library/foo@{D}"),
    (f"example:tag@{D}", f"example.com/library/foo:tag@{D}"),
])
def test_alias_wins(name: str, value: str, cache: Path) -> None:
    """pkg/shortnames TestResolve: tags and digests are stripped, then put on the alias."""
    r = resolve_short_name(name, conf(ALIASES), aliases_file=cache)
    assert names(r.candidates) == [value]
    assert r.alias == "registries.conf"
    assert not r.prompt
    assert r.short_name == name.partition("@")[0].partition(":")[0]
    assert r.description == f"Resolved {r.short_name!r} as an alias (registries.conf)"


def test_erased_alias_and_no_search_registries(cache: Path) -> None:
    with pytest.raises(ShortNameError, match="did not resolve to an alias") as info:
        resolve_short_name("empty", conf(ALIASES), aliases_file=cache)
    assert isinstance(info.value, LookupError)
    with pytest.raises(ShortNameError, match=r"no containers-registries\.conf"):
        resolve_short_name("doesnotexist", RegistriesConf(), aliases_file=cache)


@pytest.mark.parametrize("name", ["", "Invalid#$", "docker://quay.io/library/foo:bar"])
def test_invalid_names(name: str, cache: Path) -> None:
    with pytest.raises(InvalidReference):
        resolve_short_name(name, conf(ALIASES), aliases_file=cache)


@pytest.mark.parametrize("name, value", [
    ("quay.io/repo/fedora", "quay.io/repo/fedora:latest"),
    ("localhost/repo/fedora:sometag", "localhost/repo/fedora:sometag"),
    ("docker.io/fedora", "docker.io/library/fedora:latest"),
    (f"docker.io/fedora@{D}", f"docker.io/library/fedora@{D}"),
])
def test_fully_qualified_names_are_returned_as_is(name: str, value: str, cache: Path) -> None:
    r = resolve_short_name(name, conf(TWO_REG + 'short-name-mode = "enforcing"'),
                           aliases_file=cache)
    assert names(r.candidates) == [value]
    assert r.short_name is None and r.alias is None and r.description == ""


# pkg/shortnames TestResolveWithVaryingShortNameModes: (conf, mode, name, candidates or None)
MODES = [
    ("", "permissive", "repo/image", 1), (ONE_REG, "permissive", "repo/image", 1),
    (TWO_REG, "permissive", "repo/image", 1),
    ("", "permissive", "doesnotexist", None), (ONE_REG, "permissive", "doesnotexist", 1),
    (TWO_REG, "permissive", "doesnotexist", 2),
    ("", "disabled", "repo/image", 1), (TWO_REG, "disabled", "repo/image", 1),
    ("", "disabled", "doesnotexist", None), (ONE_REG, "disabled", "doesnotexist", 1),
    (TWO_REG, "disabled", "doesnotexist", 2),
    ("", "enforcing", "repo/image", 1), (TWO_REG, "enforcing", "repo/image", 1),
    ("", "enforcing", "doesnotexist", None), (ONE_REG, "enforcing", "doesnotexist", 1),
    (TWO_REG, "enforcing", "doesnotexist", None),
]


@pytest.mark.parametrize("search, mode, name, count", MODES)
def test_modes_without_a_terminal(search: str, mode: str, name: str, count: int | None,
                                  cache: Path) -> None:
    c = conf(search + '[aliases]\n"repo/image" = "quay.io/repo/image"\n')
    if count is None:
        with pytest.raises(ShortNameError):
            resolve_short_name(name, c, mode=mode, aliases_file=cache)
        return
    r = resolve_short_name(name, c, mode=mode, aliases_file=cache)
    assert len(r.candidates) == count
    assert not r.prompt


def test_mode_comes_from_the_conf_and_is_validated(cache: Path) -> None:
    c = conf(TWO_REG + 'short-name-mode = "enforcing"\n')
    with pytest.raises(AmbiguousShortName):
        resolve_short_name("foo", c, aliases_file=cache)
    assert len(resolve_short_name("foo", c, mode="permissive", aliases_file=cache)
               .candidates) == 2
    with pytest.raises(ShortNameError, match="unsupported short-name mode 'xxx'"):
        resolve_short_name("foo", c, mode="xxx", aliases_file=cache)


def test_ambiguous_message_lists_candidates_and_fixes(cache: Path) -> None:
    c = conf(TWO_REG + 'short-name-mode = "enforcing"\n', "/etc/containers/registries.conf")
    with pytest.raises(AmbiguousShortName) as info:
        resolve_short_name("foo:1", c, aliases_file=cache)
    e = info.value
    assert e.candidates == ("quay.io/foo:1", "registry.com/foo:1")
    assert e.name == "foo:1"
    text = str(e)
    assert "quay.io/foo:1, registry.com/foo:1" in text
    assert "/etc/containers/registries.conf" in text
    assert "fully qualified" in text and '"foo" = "quay.io/foo"' in text


@pytest.mark.parametrize("name, expected", [
    ("foo", ["quay.io/foo:latest", "registry.com/foo:latest"]),
    ("foo:tag", ["quay.io/foo:tag", "registry.com/foo:tag"]),
    (f"foo@{D}", [f"quay.io/foo@{D}", f"registry.com/foo@{D}"]),
    ("repo/foo", ["quay.io/repo/foo:latest", "registry.com/repo/foo:latest"]),
])
def test_search_registries_in_order(name: str, expected: list[str], cache: Path) -> None:
    """pkg/shortnames TestResolveAndRecord, candidates part."""
    r = resolve_short_name(name, conf(TWO_REG), aliases_file=cache)
    assert names(r.candidates) == expected
    assert r.alias is None
    assert r.description.startswith("Resolving")


def test_docker_io_search_registry_normalises() -> None:
    r = resolve_short_name("fedora", conf('unqualified-search-registries = ["docker.io"]\n'),
                           aliases_file="/nonexistent/aliases.conf")
    assert names(r.candidates) == ["docker.io/library/fedora:latest"]


def test_interactive_prompt_then_record(cache: Path) -> None:
    """Only a choice made at a prompt is recorded (PullCandidate.Record); the recorded
    alias then wins over the search registries, and has precedence over the conf files."""
    c = conf(TWO_REG + 'short-name-mode = "enforcing"\n')
    r = resolve_short_name("repo/foo:tag", c, interactive=True, aliases_file=cache)
    assert r.prompt and r.description == ""
    assert names(r.candidates) == ["quay.io/repo/foo:tag", "registry.com/repo/foo:tag"]
    assert record_alias(r, r.candidates[1], aliases_file=cache)
    assert load_alias_cache(cache)["repo/foo"].value == parse_reference("registry.com/repo/foo")
    again = resolve_short_name("repo/foo", c, aliases_file=cache)
    assert names(again.candidates) == ["registry.com/repo/foo:latest"]
    assert again.alias == str(cache)
    # The cache has precedence over registries.conf aliases.
    with_alias = conf(TWO_REG + '[aliases]\n"repo/foo" = "quay.io/other/foo"\n')
    assert names(resolve_short_name("repo/foo", with_alias, aliases_file=cache).candidates) == \
        ["registry.com/repo/foo:latest"]
    with pytest.raises(ShortNameError, match="not a candidate"):
        record_alias(r, parse_reference("elsewhere.com/repo/foo"), aliases_file=cache)


def test_no_record_without_a_prompt(cache: Path) -> None:
    for mode in ("permissive", "disabled", "enforcing"):
        c = conf(ONE_REG if mode == "enforcing" else TWO_REG)
        r = resolve_short_name("foo", c, mode=mode, aliases_file=cache)
        assert not record_alias(r, r.candidates[0], aliases_file=cache)
    r = resolve_short_name("foo", conf(TWO_REG), mode="disabled", interactive=True,
                           aliases_file=cache)
    assert not r.prompt  # disabled never prompts
    assert not cache.exists()


def test_add_and_remove_aliases(cache: Path) -> None:
    """pkg/shortnames TestResolveWithDropInConfigs, Add/Remove part."""
    for i in (1, 2, 3):
        add_alias(f"added{i}", f"aliases.conf/added{i}", aliases_file=cache)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700
    for name, value in [("added3", "aliases.conf/added3:tag"), ("added3:tag", "a.conf/x"),
                        ("added3", f"aliases.conf/added3@{D}"), (f"added3@{D}", "a.conf/x"),
                        ("quay.io/x", "a.conf/x"), ("x", "noregistry/x")]:
        with pytest.raises(InvalidReference):
            add_alias(name, value, aliases_file=cache)
    r = resolve_short_name("added2:tag", RegistriesConf(), aliases_file=cache)
    assert names(r.candidates) == ["aliases.conf/added2:tag"]
    remove_alias("added1", aliases_file=cache)
    with pytest.raises(ShortNameError, match="not found in"):
        remove_alias("added1", aliases_file=cache)
    with pytest.raises(ShortNameError):
        remove_alias("docker", aliases_file=cache)  # only in registries.conf: not ours
    assert sorted(load_alias_cache(cache)) == ["added2", "added3"]
    assert cache.read_text().startswith("[aliases]\n")


def test_corrupt_cache_is_reported(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text('[aliases]\n"x" = "noregistry/x"\n')
    with pytest.raises(RegistriesConfError, match="must contain registry") as info:
        resolve_short_name("x", RegistriesConf(), aliases_file=cache)
    assert info.value.path == str(cache)
    cache.write_text("[aliases\n")
    with pytest.raises(RegistriesConfError, match="not valid TOML"):
        load_alias_cache(cache)


@pytest.mark.parametrize("table, message", [
    ('"image:tag" = "registry.com/image"', "must not contain tag"),
    (f'"image@{D}" = "registry.com/image"', "must not contain digest"),
    ('"registry.com/image" = "registry.com/image"', "must not contain registry"),
    ('"localhost/image" = "localhost/image"', "must not contain registry"),
    ('"image" = "registry.com/image:tag"', "must not contain tag"),
    ('"image" = "image"', "must contain registry"),
    ('"image" = 1', "must be a string"),
])
def test_man_page_alias_rules(table: str, message: str) -> None:
    """"neither name nor value can include a tag or digest ... name must be a short name"."""
    with pytest.raises(RegistriesConfError, match=message):
        conf(f"[aliases]\n{table}\n")


def test_a_name_only_once_per_file() -> None:
    """"a given name may only be specified once in a single config file" (TOML forbids it)."""
    with pytest.raises(RegistriesConfError, match="not valid TOML"):
        conf('[aliases]\n"a" = "x.com/a"\n"a" = "y.com/a"\n')


def test_every_bad_alias_is_reported_at_once() -> None:
    with pytest.raises(RegistriesConfError) as info:
        conf('[aliases]\n"a:1" = "x.com/a"\n"b" = "b"\n')
    assert "'a:1'" in str(info.value) and "'b'" in str(info.value)


def test_default_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        assert short_name_aliases_path() == Path(
            "/var/cache/containers/short-name-aliases.conf")
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert short_name_aliases_path() == tmp_path / "xdg/containers/short-name-aliases.conf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert short_name_aliases_path() == tmp_path / "home/.cache/containers/short-name-aliases.conf"
