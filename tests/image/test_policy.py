"""policy.json: the man page's examples, scope matching per transport, strict parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from criolib.image import _policy
from criolib.image._errors import (
    PolicyDenied,
    PolicyError,
    UnsupportedPolicyRequirement,
)
from criolib.image._policy import Policy, policy_namespaces

ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]
D = "sha256:" + "a" * 64

# containers-policy.json(5) "A reasonably locked-down system", without the /* */ comments.
LOCKED_DOWN: dict[str, Any] = {
    "default": [{"type": "reject"}],
    "transports": {
        "docker": {
            "docker.io/openshift": [{"type": "insecureAcceptAnything"}],
            "docker.io/library/busybox": [{"type": "insecureAcceptAnything"}],
            "*.temporary-project.example.com": [{"type": "insecureAcceptAnything"}],
            "hostname:5000/myns/sigstore-signed-with-full-references": [
                {"type": "sigstoreSigned", "keyPath": "/path/to/sigstore-pubkey.pub"}],
            "hostname:5000/myns/sigstore-signed-allows-malicious-tag-substitution": [
                {"type": "sigstoreSigned", "keyPath": "/path/to/sigstore-pubkey.pub",
                 "signedIdentity": {"type": "matchRepository"}}],
        },
        "dir": {"": [{"type": "insecureAcceptAnything"}]},
        "atomic": {
            "hostname:5000/myns/official": [
                {"type": "signedBy", "keyType": "GPGKeys",
                 "keyPath": "/path/to/official-pubkey.gpg"}],
            "hostname:5000/vendor/product": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/path/to/vendor-pubkey.gpg",
                 "signedIdentity": {"type": "exactRepository",
                                    "dockerRepository": "vendor-hostname/product/repository"}},
                {"type": "signedBy", "keyType": "GPGKeys",
                 "keyPath": "/path/to/reviewer-pubkey.gpg"}],
            "private-mirror:5000/vendor-mirror": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/path/to/vendor-pubkey.gpg",
                 "signedIdentity": {"type": "remapIdentity",
                                    "prefix": "private-mirror:5000/vendor-mirror",
                                    "signedPrefix": "vendor.example.com"}}],
        },
    },
}


def policy(obj: Any) -> Policy:
    return Policy.from_bytes(json.dumps(obj), source="policy.json")


@pytest.mark.parametrize("transport, scope", [
    ("docker", "docker.io/openshift/hello-openshift:latest"),
    ("docker", "docker.io/openshift/origin@" + D),
    ("docker", "docker.io/library/busybox:latest"),
    ("docker", "docker.io/library/busybox@" + D),
    ("docker", "a.temporary-project.example.com/x:1"),
    ("docker", "deep.sub.temporary-project.example.com:5000/x/y:1"),
    ("dir", "/any/directory"),
])
def test_locked_down_allows(transport: str, scope: str) -> None:
    policy(LOCKED_DOWN).evaluate(transport, scope)


@pytest.mark.parametrize("transport, scope", [
    ("docker", "docker.io/library/alpine:latest"),
    ("docker", "docker.io/library/busybox2:latest"),
    ("docker", "docker.io/openshiftx/app:1"),
    ("docker", "temporary-project.example.com/x:1"),  # the wildcard needs a subdomain
    ("docker", "busybox:latest"),  # scopes are fully expanded names, never familiar ones
    ("oci", "/var/lib/images/app"),
    ("atomic", "hostname:5000/other/image:1"),
    ("containers-storage", "[overlay@/var/lib/containers/storage]docker.io/library/x:1"),
])
def test_locked_down_rejects_by_default(transport: str, scope: str) -> None:
    with pytest.raises(PolicyDenied, match="default") as info:
        policy(LOCKED_DOWN).evaluate(transport, scope)
    assert info.value.image == f"{transport}:{scope}"
    assert info.value.scope == "default"
    assert isinstance(info.value, PermissionError)
    assert "policy.json" in str(info.value)


@pytest.mark.parametrize("transport, scope, requirement, label", [
    ("docker", "hostname:5000/myns/sigstore-signed-with-full-references:1", "sigstoreSigned",
     'transports.docker["hostname:5000/myns/sigstore-signed-with-full-references"]'),
    ("docker", "hostname:5000/myns/sigstore-signed-allows-malicious-tag-substitution@" + D,
     "sigstoreSigned", None),
    ("atomic", "hostname:5000/myns/official:latest", "signedBy",
     'transports.atomic["hostname:5000/myns/official"]'),
    ("atomic", "hostname:5000/vendor/product:1", "signedBy", None),
    # The man page's "productA/image1" example, lowercased: references have no capitals.
    ("atomic", "private-mirror:5000/vendor-mirror/producta/image1:latest", "signedBy",
     'transports.atomic["private-mirror:5000/vendor-mirror"]'),
])
def test_locked_down_signature_requirements_are_never_accepted(
        transport: str, scope: str, requirement: str, label: str | None) -> None:
    with pytest.raises(UnsupportedPolicyRequirement, match="criolib cannot verify signatures") \
            as info:
        policy(LOCKED_DOWN).evaluate(transport, scope)
    assert info.value.requirement == requirement
    assert isinstance(info.value, PolicyError)
    if label is not None:
        assert info.value.field == label
    assert scope in str(info.value) and "insecureAcceptAnything" in str(info.value)


def test_man_page_completely_disable_security() -> None:
    p = policy({"default": [{"type": "insecureAcceptAnything"}]})
    for transport, scope in [("docker", "quay.io/x:1"), ("oci", "/x"), ("whatever", "")]:
        p.evaluate(transport, scope)
    Policy.insecure_accept_anything().evaluate("docker", "docker.io/library/busybox:latest")


def test_most_specific_scope_wins() -> None:
    """"only the requirements from the most specific match apply"."""
    p = policy({"default": ACCEPT, "transports": {"docker": {
        "": REJECT,
        "example.com": ACCEPT,
        "example.com/ns": REJECT,
        "example.com/ns/repo": ACCEPT,
        "example.com/ns/repo:bad": REJECT,
        f"example.com/ns/repo@{D}": REJECT,
        "*.example.com": REJECT,
        "*.sub.example.com": ACCEPT,
        "*.org": ACCEPT,
    }}})
    allowed = ["example.com/other:1", "example.com/ns/repo:good", "x.sub.example.com/a:1",
               "y.x.sub.example.com:5000/a:1", "anything.org/x:1"]
    denied = {"example.com/ns/other:1": 'transports.docker["example.com/ns"]',
              "example.com/ns/repo:bad": 'transports.docker["example.com/ns/repo:bad"]',
              f"example.com/ns/repo@{D}": f'transports.docker["example.com/ns/repo@{D}"]',
              "x.example.com/a:1": 'transports.docker["*.example.com"]',
              "quay.io/a:1": 'transports.docker[""]'}
    for scope in allowed:
        p.evaluate("docker", scope)
    for scope, label in denied.items():
        with pytest.raises(PolicyDenied) as info:
            p.evaluate("docker", scope)
        assert info.value.scope == label
        assert p.requirements_for("docker", scope)[0] == label


def test_docker_namespaces() -> None:
    """policyconfiguration DockerReferenceNamespaces, ports kept on names, not wildcards."""
    assert policy_namespaces("docker", "a.b.example.com:5000/ns/x@" + D) == [
        "a.b.example.com:5000/ns/x", "a.b.example.com:5000/ns", "a.b.example.com:5000",
        "*.b.example.com", "*.example.com", "*.com"]
    assert policy_namespaces("docker", "docker.io/library/busybox:latest") == [
        "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io"]
    assert policy_namespaces("docker", "not a reference") == []


@pytest.mark.parametrize("transport, identity, namespaces", [
    ("dir", "/a/b/c", ["/a/b", "/a"]),
    ("oci", "/a/b/c", ["/a/b", "/a"]),
    ("oci", "/a/b/c:tag", ["/a/b/c", "/a/b", "/a"]),
    ("oci-archive", "/a/b.tar", ["/a"]),
    ("containers-storage", f"[overlay@/var/lib/cs]docker.io/library/busybox:1@{'b' * 64}", [
        "[overlay@/var/lib/cs]docker.io/library/busybox:1",
        "[overlay@/var/lib/cs]docker.io/library/busybox",
        "[overlay@/var/lib/cs]docker.io/library", "[overlay@/var/lib/cs]docker.io",
        "[overlay@/var/lib/cs]", "[/var/lib/cs]"]),
    ("containers-storage", f"[overlay@/s]docker.io/x:1@{D}", [
        "[overlay@/s]docker.io/x:1", "[overlay@/s]docker.io/x", "[overlay@/s]docker.io",
        "[overlay@/s]", "[/s]"]),
    ("containers-storage", f"[vfs@/s]{'c' * 64}", ["[vfs@/s]", "[/s]"]),
    ("tarball", "/x", []),
    ("unknown", "/x", []),
])
def test_other_namespaces(transport: str, identity: str, namespaces: list[str]) -> None:
    assert policy_namespaces(transport, identity) == namespaces


def test_path_scopes_match_directories() -> None:
    p = policy({"default": REJECT, "transports": {
        "oci": {"/srv/images": ACCEPT, "/srv/images/bad": REJECT},
        "dir": {"/home/u": ACCEPT},
        "tarball": {"/ignored": ACCEPT},
        "containers-storage": {"[overlay@/var/lib/containers/storage]docker.io": ACCEPT},
    }})
    p.evaluate("oci", "/srv/images/app")
    p.evaluate("oci", "/srv/images")
    with pytest.raises(PolicyDenied):
        p.evaluate("oci", "/srv/images/bad/x")
    with pytest.raises(PolicyDenied):
        p.evaluate("oci", "/srv/imagesX")  # a path prefix must end at a "/"
    p.evaluate("dir", "/home/u/img")
    with pytest.raises(PolicyDenied):
        p.evaluate("tarball", "/ignored")  # "Scopes are ignored"
    p.evaluate("containers-storage",
               "[overlay@/var/lib/containers/storage]docker.io/library/busybox:latest")


@pytest.mark.parametrize("doc, field, message", [
    ({}, "default", "default policy is missing"),
    ({"default": None}, "default", "default policy is missing"),
    ({"default": []}, "default", "must not be empty"),
    ({"default": {"type": "reject"}}, "default", "must be an array"),
    ({"default": REJECT, "extra": 1}, "extra", "unknown field"),
    ({"default": [{"type": "reject", "x": 1}]}, "default[0]", "unknown field"),
    ({"default": [{"type": 1}]}, "default[0]", 'needs a string "type"'),
    ({"default": ["reject"]}, "default[0]", "must be an object"),
    ({"default": REJECT, "transports": []}, "transports", "object of transport names"),
    ({"default": REJECT, "transports": {"docker": []}}, "transports.docker", "object of scopes"),
    ({"default": REJECT, "transports": {"docker": {"x.io": []}}}, 'transports.docker["x.io"]',
     "must not be empty"),
    ({"default": REJECT, "transports": {"dir": {"/": ACCEPT}}}, 'transports.dir["/"]',
     'default scope ""'),
    ({"default": REJECT, "transports": {"dir": {"rel/path": ACCEPT}}},
     'transports.dir["rel/path"]', "absolute"),
    ({"default": REJECT, "transports": {"oci": {"/a/../b": ACCEPT}}},
     'transports.oci["/a/../b"]', "non-canonical"),
    ({"default": REJECT, "transports": {"oci": {"/a/": ACCEPT}}}, 'transports.oci["/a/"]',
     "non-canonical"),
    ({"default": REJECT, "transports": {"containers-storage": {"docker.io/x": ACCEPT}}},
     'transports.containers-storage["docker.io/x"]', "graph/root"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}, "default[0]",
     "exactly one of keyPath"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k", "keyData": "x"}]},
     "default[0]", "exactly one of keyPath"),
    ({"default": [{"type": "signedBy", "keyType": "Bogus", "keyPath": "/k"}]},
     "default[0].keyType", "invalid keyType"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k",
                   "signedIdentity": {"type": "matchEverything"}}]},
     "default[0].signedIdentity", "invalid signedIdentity"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k", "x": 1}]},
     "default[0]", "unknown field"),
])
def test_strict_parsing(doc: Any, field: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as info:
        policy(doc)
    assert info.value.field == field
    assert info.value.path == "policy.json"


def test_unknown_requirement_type_is_refused_at_load() -> None:
    with pytest.raises(UnsupportedPolicyRequirement, match="unknown policy requirement type") \
            as info:
        policy({"default": [{"type": "signedByQuantumKeys"}]})
    assert info.value.requirement == "signedByQuantumKeys"


@pytest.mark.parametrize("text, message", [
    ('{"default": [{"type": "reject"}], "default": []}', "duplicate field 'default'"),
    ("{not json", "invalid policy JSON"),
    ("[]", "must be a JSON object"),
])
def test_malformed_json(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_bytes(text, source="p.json")


@pytest.mark.parametrize("identity", [
    {"type": "matchExact"}, {"type": "matchRepoDigestOrExact"}, {"type": "matchRepository"},
    {"type": "exactReference", "dockerReference": "docker.io/library/busybox:latest"},
    {"type": "exactRepository", "dockerRepository": "docker.io/library/busybox"},
    {"type": "remapIdentity", "prefix": "a.io/ns", "signedPrefix": "b.io/ns"},
])
@pytest.mark.parametrize("keys", [{"keyPath": "/k.gpg"}, {"keyPaths": ["/1.gpg", "/2.gpg"]},
                                  {"keyData": "YmFzZTY0"}])
def test_man_page_signed_by_forms_parse_but_never_pass(identity: dict[str, str],
                                                       keys: dict[str, Any]) -> None:
    p = policy({"default": [{"type": "signedBy", "keyType": "GPGKeys", **keys,
                             "signedIdentity": identity}]})
    with pytest.raises(UnsupportedPolicyRequirement):
        p.evaluate("docker", "docker.io/library/busybox:latest")


def test_reject_wins_over_unverifiable_requirements() -> None:
    signed = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}
    for reqs in ([signed, {"type": "reject"}], [{"type": "reject"}, signed]):
        with pytest.raises(PolicyDenied):
            policy({"default": reqs}).evaluate("docker", "quay.io/x:1")
    with pytest.raises(UnsupportedPolicyRequirement):  # all requirements must hold
        policy({"default": [*ACCEPT, signed]}).evaluate("docker", "quay.io/x:1")
    with pytest.raises(UnsupportedPolicyRequirement, match="signedBaseLayer"):
        policy({"default": [{"type": "signedBaseLayer", "baseLayerIdentity": {}}]}).evaluate(
            "docker", "quay.io/x:1")


def test_load_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc/policy.json"
    monkeypatch.setattr(_policy, "SYSTEM_POLICY_PATH", system)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(PolicyError, match="does not exist") as info:
        Policy.load()
    assert info.value.path == str(system)
    assert "insecure_accept_anything" in str(info.value)
    system.parent.mkdir()
    system.write_text(json.dumps({"default": REJECT}))
    assert Policy.load().source == str(system)
    user = tmp_path / "home/.config/containers/policy.json"
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"default": ACCEPT}))
    assert Policy.load().source == str(user)
    Policy.load().evaluate("docker", "quay.io/x:1")
    explicit = tmp_path / "explicit.json"
    explicit.write_text('{"default": [{"type": "reject"}], "transports": {"docker": 1}}')
    with pytest.raises(PolicyError, match=r"explicit\.json: transports\.docker") as info:
        Policy.load(explicit)
    assert info.value.path == str(explicit)
