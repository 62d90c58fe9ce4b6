"""Docker references: the distribution/reference test tables, normalisation, properties."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from criolib.errors import CriolibError
from criolib.image._errors import ImageError, InvalidReference
from criolib.image._reference import (
    Reference,
    is_short_name,
    parse_normalized,
    parse_reference,
)
from criolib.testing import strategies_image as sti

F64 = "sha256:" + "f" * 64
F128 = "sha512:" + "f" * 128
DIGEST = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"


# distribution/reference reference_test.go TestReferenceParse: (input, domain, name, tag, digest)
VALID = [
    ("test_com", "", "test_com", None, None),
    ("test.com:tag", "", "test.com", "tag", None),
    ("test.com:5000", "", "test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "test.com/repo", "tag", None),
    ("test:5000/repo", "test:5000", "test:5000/repo", None, None),
    ("test:5000/repo:tag", "test:5000", "test:5000/repo", "tag", None),
    ("test:5000/repo@" + F64, "test:5000", "test:5000/repo", None, F64),
    ("test:5000/repo:tag@" + F64, "test:5000", "test:5000/repo", "tag", F64),
    ("lowercase:Uppercase", "", "lowercase", "Uppercase", None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "a", "a/" * 127 + "a", "tag-puts-this-over-max",
     None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "sub-dom1.foo.com/bar/baz/quux", None,
     None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com",
     "sub-dom1.foo.com/bar/baz/quux", "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io",
     "b.gcr.io/test.example.com/my-app", "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "xn--n3h.com/myimage", "xn--n3h.com",
     None),
    ("xn--7o8h.com/myimage:xn--7o8h.com@" + F128, "xn--7o8h.com", "xn--7o8h.com/myimage",
     "xn--7o8h.com", F128),
    ("foo_bar.com:8080", "", "foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "foo", "foo/foo_bar.com", "8080", None),
    ("192.168.1.1", "", "192.168.1.1", None, None),
    ("192.168.1.1:tag", "", "192.168.1.1", "tag", None),
    ("192.168.1.1:5000", "", "192.168.1.1", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1", "192.168.1.1/repo", None, None),
    ("192.168.1.1:5000/repo", "192.168.1.1:5000", "192.168.1.1:5000/repo", None, None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "192.168.1.1:5000/repo", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "[2001:db8::1]/repo", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]",
     "[2001:db8:1:2:3:4:5:6]/repo", "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "[2001:db8::1]:5000/repo", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "[2001:db8::1]:5000/repo", "tag",
     None),
    ("[2001:db8::1]:5000/repo@" + F64, "[2001:db8::1]:5000", "[2001:db8::1]:5000/repo", None,
     F64),
    ("[2001:db8::1]:5000/repo:tag@" + F64, "[2001:db8::1]:5000", "[2001:db8::1]:5000/repo",
     "tag", F64),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "[2001:db8::]:5000/repo", None, None),
    ("[::1]:5000/repo", "[::1]:5000", "[::1]:5000/repo", None, None),
    ("example.com/a__b/c---d/e.f_g", "example.com", "example.com/a__b/c---d/e.f_g", None, None),
    ("repo@sha384:" + "a" * 96, "", "repo", None, "sha384:" + "a" * 96),
]


@pytest.mark.parametrize("text, domain, name, tag, digest", VALID)
def test_parse_reference_table(text: str, domain: str, name: str, tag: str | None,
                               digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.name, ref.tag, ref.digest) == (domain, name, tag, digest)
    assert ref.string() == str(ref) == text


# reference_test.go's failures, with the reason criolib gives.
INVALID = [
    ("", "at least one component"),
    (":justtag", "invalid reference format"),
    ("@" + F64, "invalid reference format"),
    ("repo@sha256:" + "f" * 34, "digest length"),
    ("validname@invaliddigest:" + "f" * 64, "unsupported digest algorithm"),
    ("repo@sha256:" + "F" * 64, "lowercase"),
    ("Uppercase:tag", "must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "must be lowercase"),
    ("a/" * 128 + "a:tag", "not be more than 255"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("[2001:db8::1]", "invalid reference format"),
    ("[2001:db8::1]:5000", "invalid reference format"),
    ("[2001:db8::1]:tag", "invalid reference format"),
    ("[fe80::1%eth0]:5000/repo", "invalid reference format"),
    ("[fe80::1%@invalidzone]:5000/repo", "invalid reference format"),
    ("repo:" + "t" * 129, "invalid reference format"),
    ("repo:-tag", "invalid reference format"),
    ("repo\n", "invalid reference format"),
    ("répo", "invalid reference format"),
    ("x" * 2000, "too long"),
]


@pytest.mark.parametrize("text, reason", INVALID)
def test_parse_reference_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference, match=reason) as info:
        parse_reference(text)
    assert info.value.reference == text
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ImageError)
    assert repr(text[:30])[1:-1] in str(info.value)


@pytest.mark.parametrize("text", [
    "docker/docker", "library/debian", "debian", "docker.io/docker/docker",
    "docker.io/library/debian", "docker.io/debian", "index.docker.io/docker/docker",
    "index.docker.io/library/debian", "index.docker.io/debian", "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1", "192.168.0.1:80",
    "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker", "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "docker-rules/docker", "docker---rules/docker", "doc/docker", "d/docker", "jess/t",
    "dock__er/docker",
])
def test_parse_normalized_accepts(text: str) -> None:
    """normalize_test.go TestValidateReferenceName / TestValidateRemoteName, valid ones."""
    ref = parse_normalized(text)
    assert ref.domain


@pytest.mark.parametrize("text", [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a", "docker-/docker",
    "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker", "dock_.er/docker",
    "dock-.er/docker", "docker/", "a_b.com/x",
    "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
    # containers/image, unlike distribution/reference v0.6, does not take "Docker" for a host.
    "Docker/docker", "DOCKER/docker",
])
def test_parse_normalized_rejects(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_normalized(text)


def test_uppercase_message_names_the_repository() -> None:
    with pytest.raises(InvalidReference, match=r"repository name \(Foo/bar\) must be lowercase"):
        parse_normalized("Foo/bar:Tag")
    with pytest.raises(InvalidReference, match="64-byte hexadecimal"):
        parse_normalized("a" * 64)


# normalize_test.go TestParseRepositoryInfo: (path, familiar, full, ambiguous, domain)
REPOSITORY_INFO = [
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "", "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", "", "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase",
     "", "127.0.0.1:8000"),
    ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "",
     "127.0.0.1:8000"),
    ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", "",
     "example.com"),
    ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", "",
     "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     "index.docker.io/library/ubuntu-12.04-base", "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", "", "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", "", "docker.io"),
    ("bar", "localhost/bar", "localhost/bar", "", "localhost"),
]


@pytest.mark.parametrize("path, familiar, full, ambiguous, domain", REPOSITORY_INFO)
def test_repository_info(path: str, familiar: str, full: str, ambiguous: str,
                         domain: str) -> None:
    for text in filter(None, [familiar, full, ambiguous]):
        ref = parse_normalized(text)
        assert ref.familiar_name == familiar
        assert ref.string() == full
        assert ref.domain == domain
        assert ref.path == path


@pytest.mark.parametrize("text, domain, path", [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "docker.io", "test_com/foo"),
    ("docker/migrator", "docker.io", "docker/migrator"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("foo", "docker.io", "library/foo"),
    ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
    ("localhost/foo", "localhost", "foo"),
    ("localhost:5000/foo", "localhost:5000", "foo"),
    ("[::1]/foo", "[::1]", "foo"),
])
def test_normalized_split(text: str, domain: str, path: str) -> None:
    """normalize_test.go TestNormalizedSplitHostname."""
    ref = parse_normalized(text)
    assert (ref.domain, ref.path) == (domain, path)
    assert ref.tag is None and ref.digest is None  # no default tag is added


@pytest.mark.parametrize("text, equivalent", [
    ("redis", "docker.io/library/redis"),
    ("redis:latest", "docker.io/library/redis:latest"),
    ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
    ("redis@" + DIGEST, "docker.io/library/redis@" + DIGEST),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp"),
    ("dmcgowan/myapp:latest", "docker.io/dmcgowan/myapp:latest"),
    ("docker.io/mcgowan/myapp:latest", "docker.io/mcgowan/myapp:latest"),
    ("dmcgowan/myapp@" + DIGEST, "docker.io/dmcgowan/myapp@" + DIGEST),
    (DIGEST[7:-1], "docker.io/library/" + DIGEST[7:-1]),  # 63 hex: a name, not an id
    ("dbcc1", "docker.io/library/dbcc1"),
    ("busybox:latest@" + DIGEST, "docker.io/library/busybox:latest@" + DIGEST),
])
def test_normalized_equivalents(text: str, equivalent: str) -> None:
    """normalize_test.go TestParseAnyReference (named cases)."""
    assert parse_normalized(text).string() == equivalent


@pytest.mark.parametrize("text, familiar, name", [
    ("docker.io/library/busybox:latest", "busybox:latest", "busybox"),
    ("docker.io/library/busybox", "busybox", "busybox"),
    ("busybox:latest@" + DIGEST, "busybox:latest@" + DIGEST, "busybox"),
    ("docker.io/user/app:1", "user/app:1", "user/app"),
    ("docker.io/library/a/b", "library/a/b", "library/a/b"),
    ("quay.io/library/busybox:1", "quay.io/library/busybox:1", "quay.io/library/busybox"),
    ("localhost:5000/x@" + DIGEST, "localhost:5000/x@" + DIGEST, "localhost:5000/x"),
])
def test_familiar(text: str, familiar: str, name: str) -> None:
    """FamiliarString / FamiliarName: docker.io and library/ dropped; familiar() keeps tags."""
    ref = parse_normalized(text)
    assert ref.familiar() == familiar
    assert ref.familiar_name == name


def test_with_tag_and_digest() -> None:
    """reference_test.go TestWithTag / TestWithDigest, with go-digest's strict lengths."""
    base = parse_reference("test.com:8000/foo")
    assert base.with_tag("TAG5").string() == "test.com:8000/foo:TAG5"
    both = base.with_digest(F64).with_tag("t")
    assert both.string() == f"test.com:8000/foo:t@{F64}"
    assert base.with_tag("t").with_digest(F64) == both
    assert both.name_only() == base
    assert base.with_default_tag().tag == "latest"
    assert both.with_default_tag() == both
    assert base.with_digest(F64).with_default_tag().tag is None
    with pytest.raises(InvalidReference, match="invalid tag"):
        base.with_tag("-foo")
    with pytest.raises(InvalidReference, match="invalid digest"):
        base.with_digest("foo")
    with pytest.raises(InvalidReference, match="digest length"):
        base.with_digest("sha256:1234567890098765432112345667890098765")


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_normalized("busybox")
    assert ref == Reference("docker.io", "library/busybox")
    assert {ref: 1}[Reference("docker.io", "library/busybox")] == 1
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize("text, short", [
    ("fedora", True), ("fedora:40", True), ("library/fedora", True), ("image:tag", True),
    ("image@" + DIGEST, True), ("quay.io/image", False), ("localhost/image:tag", False),
    ("server.org:5000/lib/image", False), ("localhost", True), ("a:5000/b", False),
    ("NotValid", False), ("", False),
])
def test_is_short_name(text: str, short: bool) -> None:
    """pkg/shortnames TestIsShortName (digest references count as short, as there)."""
    assert is_short_name(text) is short


# -- properties ---------------------------------------------------------------------------


@given(sti.reference_parts())
def test_valid_references_round_trip(parts: tuple[str, str, str | None, str | None]) -> None:
    text = sti.format_reference(*parts)
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == parts
    assert ref.string() == text


@given(sti.reference_texts())
def test_text_parses_or_raises_invalid_reference(text: str) -> None:
    for parse in (parse_reference, parse_normalized):
        try:
            ref = parse(text)
        except InvalidReference as e:
            assert isinstance(e, CriolibError)
        else:
            assert parse_reference(ref.string()) == ref


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_invalid_reference(text: str) -> None:
    for parse in (parse_reference, parse_normalized):
        with contextlib.suppress(InvalidReference):
            parse(text)
    assert isinstance(is_short_name(text), bool)


@given(sti.reference_strings() | sti.short_names())
def test_normalisation_is_idempotent(text: str) -> None:
    try:
        ref = parse_normalized(text)
    except InvalidReference:
        return  # e.g. an uppercase first component: containers/image refuses it
    assert ref.domain
    assert parse_normalized(ref.string()) == ref
    assert parse_normalized(ref.familiar()) == ref


@given(sti.short_names())
def test_short_names_are_short(text: str) -> None:
    assert is_short_name(text)
    assert parse_normalized(text).domain == "docker.io"


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["a", "a-", "a.", "a-a", "0"]), st.integers(200, 1024))
def test_hostile_input_stays_fast(unit: str, count: int) -> None:
    """The backtracking engine must not blow up on long near-misses (Go's RE2 cannot)."""
    text = (unit * count)[:1024] + "!"
    start = time.perf_counter()
    with pytest.raises(InvalidReference):
        parse_reference(text)
    with pytest.raises(InvalidReference):
        parse_reference(text.replace("a", "A"))
    assert time.perf_counter() - start < 0.5
