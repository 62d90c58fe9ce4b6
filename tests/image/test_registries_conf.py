"""registries.conf: the man page's examples, prefix matching, rewriting, mirrors, errors."""

from __future__ import annotations

import textwrap

import pytest

from criolib.image._errors import BlockedRegistry, InvalidReference, RegistriesConfError
from criolib.image._reference import parse_normalized, parse_reference
from criolib.image._registries_conf import Mirror, RegistriesConf

A64 = "sha256:" + "a" * 64


def conf(text: str) -> RegistriesConf:
    return RegistriesConf.from_text(textwrap.dedent(text), "test.conf")


def sources(c: RegistriesConf, ref: str) -> list[tuple[str, str, bool, bool]]:
    return [(s.endpoint_location, s.reference_rewritten.string(), s.insecure, s.is_mirror)
            for s in c.pull_sources(parse_reference(ref))]


# -- containers-registries.conf(5) EXAMPLE ---------------------------------------------------

MAN_EXAMPLE = """
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
"""


def test_man_page_example_mirrors_then_location() -> None:
    c = conf(MAN_EXAMPLE)
    assert c.unqualified_search_registries == ("example.com",)
    assert sources(c, "example.com/foo/image:latest") == [
        ("example-mirror-0.local/mirror-for-foo",
         "example-mirror-0.local/mirror-for-foo/image:latest", False, True),
        ("example-mirror-1.local/mirrors/foo",
         "example-mirror-1.local/mirrors/foo/image:latest", True, True),
        ("internal-registry-for-example.com/bar",
         "internal-registry-for-example.com/bar/image:latest", False, False),
    ]


def test_man_page_example_mirror_belongs_to_its_table_only() -> None:
    """"pulling the image registry.com/image:latest will hence only reach out to
    mirror.registry.com", not to example.com/foo's mirrors."""
    assert sources(conf(MAN_EXAMPLE), "registry.com/image:latest") == [
        ("mirror.registry.com", "mirror.registry.com/image:latest", False, True),
        ("registry.com", "registry.com/image:latest", False, False),
    ]


def test_man_page_location_example() -> None:
    c = conf("""
        [[registry]]
        prefix = "example.com/foo"
        location = "internal-registry-for-example.net/bar"
    """)
    assert sources(c, "example.com/foo/myimage:latest") == [
        ("internal-registry-for-example.net/bar",
         "internal-registry-for-example.net/bar/myimage:latest", False, False)]


def test_man_page_prefix_defaults_to_location() -> None:
    c = conf('[[registry]]\nlocation = "registry.com"\ninsecure = true\n')
    reg = c.find_registry("registry.com/x:1")
    assert reg is not None and reg.prefix == "registry.com" and reg.insecure
    assert c.is_insecure(parse_reference("registry.com/x"))
    assert not c.is_insecure("other.com")


def test_man_page_wildcard_without_location_keeps_the_reference() -> None:
    """prefix = "*.example.com": no rewrite, but insecure/blocked/mirrors apply."""
    c = conf("""
        [[registry]]
        prefix = "*.example.com"
        insecure = true

        [[registry.mirror]]
        location = "mirror.local/m"
    """)
    assert sources(c, "blah.example.com/foo/myimage:latest") == [
        ("mirror.local/m", "mirror.local/m/foo/myimage:latest", False, True),
        ("", "blah.example.com/foo/myimage:latest", True, False),
    ]
    # "*" matches any number of subdomains, but not the domain itself.
    assert c.find_registry("foo.bar.example.com/x") is not None
    assert c.find_registry("example.com/x") is None


@pytest.mark.parametrize("prefix", ["*.example.com/foo", "*.example.com:5000/foo/bar:baz",
                                    "*.example.com@sha256:x"])
def test_man_page_wildcard_only_at_the_start_of_a_host(prefix: str) -> None:
    with pytest.raises(RegistriesConfError, match=r"format \*\.example\.com") as info:
        conf(f'[[registry]]\nprefix = "{prefix}"\nlocation = "x.com"\n')
    assert info.value.key == "registry[0].prefix"


def test_man_page_docker_io_needs_the_library_namespace() -> None:
    """Normalization of docker.io references: prefix "docker.io/library/alpine", not
    "docker.io/alpine" (which matches docker.io/alpine/* instead)."""
    c = conf("""
        [[registry]]
        prefix = "docker.io/library/alpine"
        location = "mirror.local/alpine"

        [[registry]]
        prefix = "docker.io/alpine"
        location = "elsewhere.local/alpine"
    """)
    assert sources(c, parse_normalized("alpine:3").string())[0][1] == "mirror.local/alpine:3"
    assert sources(c, "docker.io/alpine/tools:1")[0][1] == "elsewhere.local/alpine/tools:1"


def test_man_page_blocked() -> None:
    c = conf('[[registry]]\nlocation = "registry.untrusted.com"\nblocked = true\n')
    blocked = r"registry\.untrusted\.com is blocked in test\.conf"
    with pytest.raises(BlockedRegistry, match=blocked) as info:
        c.pull_sources(parse_reference("registry.untrusted.com/x:1"))
    assert info.value.prefix == "registry.untrusted.com"
    assert info.value.reference == "registry.untrusted.com/x:1"
    assert isinstance(info.value, PermissionError)
    c.check_not_blocked("registry.com/x")
    with pytest.raises(BlockedRegistry):
        c.check_not_blocked("registry.untrusted.com")


def test_blocked_mirror_is_skipped() -> None:
    c = conf("""
        [[registry]]
        location = "registry.com"
        [[registry.mirror]]
        location = "bad-mirror.com"
        [[registry.mirror]]
        location = "good-mirror.com"

        [[registry]]
        location = "bad-mirror.com"
        blocked = true
    """)
    assert [s[0] for s in sources(c, "registry.com/x:1")] == ["good-mirror.com", "registry.com"]


def test_man_page_v1_example_is_converted() -> None:
    c = conf("""
        [registries.search]
        registries = ['registry1.com', 'registry2.com']

        [registries.insecure]
        registries = ['registry3.com']

        [registries.block]
        registries = ['registry.untrusted.com', 'registry.unsafe.com']
    """)
    assert c.unqualified_search_registries == ("registry1.com", "registry2.com")
    assert c.is_insecure("registry3.com/x")
    for host in ("registry.untrusted.com", "registry.unsafe.com"):
        with pytest.raises(BlockedRegistry):
            c.pull_sources(parse_reference(f"{host}/x:1"))
    assert [r.prefix for r in c.registries] == ["registry.unsafe.com", "registry.untrusted.com",
                                                "registry3.com"]


def test_v1_insecure_and_blocked_merge() -> None:
    """sysregistriesv2 TestV1BackwardsCompatibility: one entry, both flags."""
    c = conf("""
        [registries.insecure]
        registries = ['registry-b.com']
        [registries.block]
        registries = ['registry-b.com']
    """)
    reg = c.find_registry("registry-b.com/bar/foo/barfoo:latest")
    assert reg is not None and reg.insecure and reg.blocked


@pytest.mark.parametrize("text", [
    'unqualified-search-registries = ["a.com"]\n[registries.search]\nregistries = ["b.com"]\n',
    # sysregistriesv2 testdata/mixing-v1-v2-empty.conf: even empty arrays are mixing.
    "unqualified-search-registries = []\n[registries.search]\nregistries = []\n",
])
def test_mixing_v1_and_v2_is_refused(text: str) -> None:
    with pytest.raises(RegistriesConfError, match="mixing the version 1"):
        conf(text)


# -- prefix matching (sysregistriesv2 TestRefMatchingPrefix / SubdomainPrefix) -------------

@pytest.mark.parametrize("ref, prefix, matches", [
    ("docker.io", "docker.io", True),
    ("docker.io", "example.com", False),
    ("example.com:5000", "example.com:5000", True),
    ("example.com:50000", "example.com:5000", False),
    ("example.com:5000", "example.com", True),  # containers/image: "don't rely on this"
    ("example.com/foo", "example.com", True),
    ("example.com/foo/bar", "example.com", True),
    ("example.com/foo/bar:baz", "example.com", True),
    (f"example.com/foo/bar@{A64}", "example.com", True),
    ("docker.io", "docker.io/library", False),
    ("docker.io/library", "docker.io/library", True),
    ("example.com/library", "docker.io/library", False),
    ("docker.io/libraryy", "docker.io/library", False),
    ("docker.io/library/busybox", "docker.io/library", True),
    ("docker.io", "docker.io/library/busybox", False),
    ("docker.io/library/busybox", "docker.io/library/busybox", True),
    ("example.com/library/busybox", "docker.io/library/busybox", False),
    ("docker.io/library/busybox2", "docker.io/library/busybox", False),
    ("example.com", "example.com/foo:bar", False),
    ("example.com/foo", "example.com/foo:bar", False),
    ("example.com/foo:bar", "example.com/foo:bar", True),
    ("example.com/foo:bar2", "example.com/foo:bar", False),
    ("example.com", f"example.com/foo@{A64}", False),
    ("example.com/foo", f"example.com/foo@{A64}", False),
    (f"example.com/foo@{A64}", f"example.com/foo@{A64}", True),
    ("example.com/foo@sha256:" + "b" * 64, f"example.com/foo@{A64}", False),
    # wildcards
    ("docker.io", "*.io", True),
    ("docker.io/foo", "*.com", False),
    ("example.com/foo", "*.co", False),
    ("example.com/foo", "*.example.com", False),
    ("example.com/foo", "*.com", True),
    ("example.com/foo:bar", "*.com", True),
    ("example.com/foo/bar:baz", "*.com", True),
    ("yet.another.example.com/foo/bar", "*.another.example.com", True),
    ("another.example.com/namespace.com/foo/bar/bbq:baz", "*.example.com", True),
    ("example.net/namespace-ends-in.com/foo/bar/bbq:baz", "*.com", False),
    ("another.example.com/namespace.com/foo/bar/bbq:baz", "*.namespace.com", False),
    ("sub.example.com/foo/bar", "*.com", True),
    ("sub.example.com/foo/bar", "*.example.com", True),
    ("another.sub.example.com/foo/bar/bbq:baz", "*.example.com", True),
    ("another.sub.example.com/foo/bar/bbq:baz", "*.sub.example.com", True),
    (f"yet.another.example.com/foo/bar@{A64}", "*.example.com", True),
])
def test_prefix_matching(ref: str, prefix: str, matches: bool) -> None:
    location = "" if prefix.startswith("*.") else 'location = "somewhere.com"'
    c = conf(f'[[registry]]\nprefix = "{prefix}"\n{location}\n')
    assert (c.find_registry(ref) is not None) is matches


def test_longest_prefix_wins() -> None:
    """sysregistriesv2 TestFindRegistry (testdata/find-registry.conf)."""
    c = conf("""
        [[registry]]
        location = "registry.com:5000"
        prefix = "simple-prefix.com"
        [[registry]]
        location = "another-registry.com:5000"
        prefix = "complex-prefix.com:4000/with/path"
        [[registry]]
        location = "no-prefix.com"
        [[registry]]
        location = "empty-prefix.com"
        prefix = ""
        [[registry]]
        location = "subdomain-prefix.com"
        prefix = "*.so.simple-prefix.com"
        [[registry]]
        location = "subdomain-prefix-2.com"
        prefix = "*.simple-prefix.com"
        [[registry]]
        location = "subdomain-prefix-2.com"
        prefix = "*.docker.io"
        [[registry]]
        location = "subdomain-prefix-4.com"
        prefix = "*.bar.docker.io"
        [[registry]]
        location = "subdomain-prefix-3.com"
        prefix = "*.bar.example.com"
        [[registry]]
        location = "subdomain-prefix-5.com"
        prefix = "foo.bar.example.com:5000"
    """)

    def location(ref: str) -> str | None:
        reg = c.find_registry(ref)
        return None if reg is None else reg.location

    assert location("simple-prefix.com/foo/bar:latest") == "registry.com:5000"
    assert location("simple-prefix.com/") == "registry.com:5000"
    assert location("simple-prefix.com") == "registry.com:5000"
    assert location("simple-prefix.comx") is None
    assert location("not.so.simple-prefix.com/") == "subdomain-prefix.com"
    assert location("not.quite.simple-prefix.com/") == "subdomain-prefix-2.com"
    assert location("not.quite.simple-prefix.com:5000/with/path/and/beyond:tag") == \
        "subdomain-prefix-2.com"
    assert location("foo.bar.docker.io:5000/omg/wtf/bbq:foo") == "subdomain-prefix-4.com"
    assert location("foo.bar.example.com:5000/omg/wtf/bbq:foo") == "subdomain-prefix-5.com"
    assert location(f"foo.bar.example.com:6000/omg/wtf/bbq@{A64}") == "subdomain-prefix-3.com"
    assert location("complex-prefix.com:4000/with/path/and/beyond:tag") == \
        "another-registry.com:5000"
    assert location("no-prefix.com/foo:tag") == "no-prefix.com"
    assert location("empty-prefix.com/foo:tag") == "empty-prefix.com"
    assert [r.prefix for r in c.registries] == sorted(r.prefix for r in c.registries)


# -- rewriting (sysregistriesv2 TestRewriteReferenceSuccess / Failed) ------------------------

@pytest.mark.parametrize("ref, prefix, location, expected", [
    ("example.com/image", "example.com", "example.com", "example.com/image"),
    ("example.com/image:latest", "example.com", "example.com", "example.com/image:latest"),
    ("example.com:5000/image", "example.com:5000", "example.com:5000", "example.com:5000/image"),
    (f"example.com/foo@{A64}", "example.com", "example.com", f"example.com/foo@{A64}"),
    ("example.com/foo/image:latest", "example.com/foo", "example.com", "example.com/image:latest"),
    ("example.com/foo/image:latest", "example.com/foo", "example.com/path",
     "example.com/path/image:latest"),
    ("docker.io/library/image:latest", "docker.io", "docker.io", "docker.io/library/image:latest"),
    ("docker.io/library/image", "docker.io/library", "example.com", "example.com/image"),
    ("docker.io/library/image", "docker.io", "example.com", "example.com/library/image"),
    ("docker.io/library/prefix/image", "docker.io/library/prefix", "example.com",
     "example.com/image"),
    ("docker.io/namespace/image", "*.io", "example.com", "example.com/namespace/image"),
    ("sub.example.io/library/prefix/image", "*.example.io", "example.com",
     "example.com/library/prefix/image"),
    ("another.sub.example.io:5000/library/prefix/image:latest", "*.sub.example.io",
     "example.com", "example.com:5000/library/prefix/image:latest"),
    ("foo.bar.io/ns1/ns2/ns3/ns4", "*.bar.io", "omg.bbq.com/roflmao",
     "omg.bbq.com/roflmao/ns1/ns2/ns3/ns4"),
    ("abc.internal.registry.com/foo:bar", "*.internal.registry.com", "",
     "abc.internal.registry.com/foo:bar"),
    (f"alien.vs.predator.foobar.io:5000/foo@{A64}", "*.foobar.io", "",
     f"alien.vs.predator.foobar.io:5000/foo@{A64}"),
    # prefixes naming a single image
    ("example.com/foo:bar", "example.com/foo:bar", "mirror.com/foo:baz", "mirror.com/foo:baz"),
])
def test_rewrite(ref: str, prefix: str, location: str, expected: str) -> None:
    c = conf(f'[[registry]]\nprefix = "{prefix}"\nlocation = "{location}"\n')
    assert c.pull_sources(parse_reference(ref))[-1].reference_rewritten.string() == expected


@pytest.mark.parametrize("ref, prefix, location", [
    (f"example.com/foo@{A64}", "example.com/foo", "example.com"),
    ("example.com:5000/image:latest", "example.com", "example.com:5000"),
    ("docker.io/library/image", "docker.io/library", "docker.io"),  # not canonical
])
def test_rewrite_to_an_invalid_reference_is_a_config_error(ref: str, prefix: str,
                                                            location: str) -> None:
    c = conf(f'[[registry]]\nprefix = "{prefix}"\nlocation = "{location}"\n')
    with pytest.raises(RegistriesConfError, match=f"location {location!r}"):
        c.pull_sources(parse_reference(ref))


def test_unmatched_reference_is_its_own_source() -> None:
    ref = parse_reference("quay.io/a/b:1")
    [source] = RegistriesConf().pull_sources(ref)
    assert source.reference_rewritten == ref and not source.is_mirror and not source.insecure
    with pytest.raises(InvalidReference, match="fully qualified"):
        RegistriesConf().pull_sources(parse_reference("busybox"))


# -- mirrors and pull-from-mirror (testdata/pull-sources-from-reference.conf) -----------------

PULL_SOURCES = """
[[registry]]
prefix = "registry-a.com/foo"
location = "registry-a.com/bar"
[[registry.mirror]]
location = "mirror-1.registry-a.com"
[[registry.mirror]]
location = "mirror-2.registry-a.com"
insecure = true

[[registry]]
prefix = "registry-b.com/foo"
location = "registry-b.com/bar"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror-1.registry-b.com"
[[registry.mirror]]
location = "mirror-2.registry-b.com"

[[registry]]
prefix = "registry-b.com/baz"
location = "registry-b.com/bar"
[[registry.mirror]]
pull-from-mirror = "digest-only"
location = "mirror-1.registry-b.com"
[[registry.mirror]]
pull-from-mirror = "digest-only"
location = "mirror-2.registry-b.com"

[[registry]]
prefix = "registry-c.com/baz"
location = "registry-c.com/bar"
[[registry.mirror]]
location = "mirror-1.registry-c.com"
[[registry.mirror]]
pull-from-mirror = "digest-only"
location = "mirror-2.registry-c.com"

[[registry]]
prefix = "registry-e.com/baz"
location = "registry-e.com/bar"
[[registry.mirror]]
pull-from-mirror = "tag-only"
location = "mirror-1.registry-e.com"
[[registry.mirror]]
pull-from-mirror = "tag-only"
location = "mirror-2.registry-e.com"

[[registry]]
prefix = "registry-g.com/baz"
location = "registry-g.com/bar"
[[registry.mirror]]
pull-from-mirror = "digest-only"
location = "mirror-1.registry-g.com"
[[registry.mirror]]
pull-from-mirror = "tag-only"
location = "mirror-2.registry-g.com"
[[registry.mirror]]
location = "mirror-3.registry-g.com"
[[registry.mirror]]
pull-from-mirror = "all"
location = "mirror-4.registry-g.com"
"""


@pytest.mark.parametrize("prefix, by_digest, by_tag", [
    ("registry-a.com/foo", ["mirror-1.registry-a.com", "mirror-2.registry-a.com"],
     ["mirror-1.registry-a.com", "mirror-2.registry-a.com"]),
    ("registry-b.com/foo", ["mirror-1.registry-b.com", "mirror-2.registry-b.com"], []),
    ("registry-b.com/baz", ["mirror-1.registry-b.com", "mirror-2.registry-b.com"], []),
    ("registry-c.com/baz", ["mirror-1.registry-c.com", "mirror-2.registry-c.com"],
     ["mirror-1.registry-c.com"]),
    ("registry-e.com/baz", [], ["mirror-1.registry-e.com", "mirror-2.registry-e.com"]),
    ("registry-g.com/baz", ["mirror-1.registry-g.com", "mirror-3.registry-g.com",
                            "mirror-4.registry-g.com"],
     ["mirror-2.registry-g.com", "mirror-3.registry-g.com", "mirror-4.registry-g.com"]),
])
def test_pull_from_mirror(prefix: str, by_digest: list[str], by_tag: list[str]) -> None:
    c = conf(PULL_SOURCES)
    primary = prefix.replace("/foo", "/bar").replace("/baz", "/bar")
    for suffix, mirrors in ((f"@{A64}", by_digest), (":aaa", by_tag)):
        got = sources(c, f"{prefix}/image{suffix}")
        assert [g[0] for g in got] == [*mirrors, primary]
        assert [g[1] for g in got] == [f"{m}/image{suffix}" for m in [*mirrors, primary]]
        assert [g[3] for g in got] == [True] * len(mirrors) + [False]
    assert c.find_registry(f"{prefix}/x") is not None
    reg = conf(PULL_SOURCES).find_registry("registry-g.com/baz/x")
    assert reg is not None and reg.mirrors[2] == Mirror("mirror-3.registry-g.com")


# -- malformed files -------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, message", [
    ("[[registry]\n", "", "not valid TOML"),
    ('[[registry]]\nlocation = "https://example.com"\n', "registry[0].location",
     "URI schemes are not supported"),
    ('[[registry]]\ninsecure = true\n', "registry[0]", "both location and prefix are unset"),
    ('[[registry]]\nprefix = "example.com"\n', "registry[0].location", "location is unset"),
    ('[[registry]]\nlocation = "a.com"\ninsecure = "yes"\n', "registry[0].insecure",
     "must be a bool"),
    ('[[registry]]\nlocation = "a.com"\n[[registry.mirror]]\ninsecure = true\n',
     "registry[0].mirror[0].location", "mirror location is unset"),
    ('[[registry]]\nlocation = "a.com"\npull-from-mirror = "all"\n',
     "registry[0].pull-from-mirror", "non-mirror registry 'a.com'"),
    ('[[registry]]\nlocation = "a.com"\nmirror-by-digest-only = true\n'
     '[[registry.mirror]]\nlocation = "m.com"\npull-from-mirror = "tag-only"\n',
     "registry[0].mirror[0].pull-from-mirror", "mirror-by-digest-only"),
    ('[[registry]]\nlocation = "a.com"\n[[registry.mirror]]\nlocation = "m.com"\n'
     'pull-from-mirror = "notvalid"\n', "registry[0].mirror[0].pull-from-mirror",
     "unsupported value 'notvalid'"),
    ('[[registry]]\nlocation = "registry.com"\n[[registry]]\nprefix = "x.com"\n'
     'location = "registry.com"\ninsecure = true\n', "registry",
     "'registry.com' is defined multiple times with conflicting 'insecure'"),
    ('[[registry]]\nlocation = "registry.com"\n[[registry]]\nprefix = "x.com"\n'
     'location = "registry.com"\nblocked = true\n', "registry", "conflicting 'blocked'"),
    ('unqualified-search-registries = ["example.com/ns"]\n', "unqualified-search-registries",
     "must be host"),
    ('unqualified-search-registries = "example.com"\n', "unqualified-search-registries",
     "array of strings"),
    ('short-name-mode = "xxx"\n', "short-name-mode", "invalid short-name mode 'xxx'"),
    ('credential-helpers = [1]\n', "credential-helpers", "array of strings"),
    ('registry = 1\n', "registry", "array of tables"),
])
def test_bad_files_name_file_and_key(text: str, key: str, message: str) -> None:
    with pytest.raises(RegistriesConfError, match=message) as info:
        conf(text)
    assert info.value.path == "test.conf"
    assert info.value.key == key
    assert str(info.value).startswith("test.conf: ")


def test_unknown_keys_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    c = conf('[[registry]]\nlocation = "a.com"\ninsecrue = true\n')
    assert not c.is_insecure("a.com")
    assert "registry[0].insecrue" in caplog.text


def test_duplicate_prefix_first_wins_within_a_file() -> None:
    c = conf('[[registry]]\nlocation = "a.com"\n[[registry]]\nprefix = "a.com"\n'
             'location = "b.com"\n')
    assert [(r.prefix, r.location) for r in c.registries] == [("a.com", "a.com")]


def test_locations_lose_trailing_slashes() -> None:
    c = conf('[[registry]]\nprefix = "example.com//////"\nlocation = "example.com:5000/p/"\n')
    assert [(r.prefix, r.location) for r in c.registries] == [("example.com",
                                                               "example.com:5000/p")]


def test_global_settings_and_defaults() -> None:
    empty = conf("")
    assert empty.short_name_mode == "permissive"
    assert empty.credential_helpers == ("containers-auth.json",)
    assert empty.registries == () and empty.unqualified_search_registries == ()
    c = conf("""
        unqualified-search-registries = ["registry.fedoraproject.org", "docker.io/"]
        short-name-mode = "enforcing"
        credential-helpers = ["helper-1", "helper-2"]
        additional-layer-store-auth-helper = "als-helper"
    """)
    assert c.unqualified_search_registries == ("registry.fedoraproject.org", "docker.io")
    assert c.unqualified_search_registries_origin == "test.conf"
    assert c.short_name_mode == "enforcing"
    assert c.credential_helpers == ("helper-1", "helper-2")
    assert c.additional_layer_store_auth_helper == "als-helper"
