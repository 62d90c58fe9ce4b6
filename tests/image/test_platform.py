"""Platforms: containerd-style normalisation, parsing, and choosing an index instance."""

from __future__ import annotations

import pytest

from criolib import testing
from criolib.image._errors import ImageError, InvalidPlatform, NoMatchingPlatform
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    DockerManifestList,
    OCIIndex,
    parse_manifest,
)
from criolib.image._platform import (
    Platform,
    choose_instance,
    compatible_platforms,
    host_platform,
    instances_for,
    is_attestation,
    normalize_platform,
    parse_platform,
    platform_matches,
)
from criolib.testing import TestImages


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def entry(n: int, plat: Platform | None, **annotations: str) -> Descriptor:
    return Descriptor(media_type=MEDIA_TYPE_OCI_MANIFEST, digest=digest(n), size=n,
                      platform=plat, annotations=annotations or None)


def index(*entries: Descriptor) -> OCIIndex:
    return OCIIndex(manifests=entries)


@pytest.mark.parametrize("given, expected", [
    (("linux", "x86_64", None), ("linux", "amd64", None)),
    (("linux", "x86-64", None), ("linux", "amd64", None)),
    (("linux", "amd64", "v1"), ("linux", "amd64", None)),
    (("linux", "amd64", "v3"), ("linux", "amd64", "v3")),
    (("linux", "aarch64", None), ("linux", "arm64", "v8")),
    (("linux", "arm64", None), ("linux", "arm64", "v8")),
    (("linux", "arm64", "8"), ("linux", "arm64", "v8")),
    (("linux", "arm64", "v8.0"), ("linux", "arm64", "v8")),
    (("linux", "arm64", "9"), ("linux", "arm64", "v9")),
    (("linux", "armhf", None), ("linux", "arm", "v7")),
    (("linux", "armel", None), ("linux", "arm", "v6")),
    (("linux", "arm", None), ("linux", "arm", "v7")),
    (("linux", "arm", "6"), ("linux", "arm", "v6")),
    (("linux", "arm", "v5"), ("linux", "arm", "v5")),
    (("linux", "i386", None), ("linux", "386", None)),
    (("linux", "i686", None), ("linux", "386", None)),
    (("Linux", "AMD64", None), ("linux", "amd64", None)),
    (("macos", "arm64", None), ("darwin", "arm64", "v8")),
    (("linux", "s390x", None), ("linux", "s390x", None)),
    (("linux", "riscv64", ""), ("linux", "riscv64", None)),
])
def test_normalize_like_containerd(given: tuple[str, str, str | None],
                                   expected: tuple[str, str, str | None]) -> None:
    assert normalize_platform(Platform(*given)) == Platform(*expected)


def test_parse_platform() -> None:
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/arm64") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("arm64") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux") == host_platform()
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    for bad in ("", "/", "linux//v7", "a/b/c/d", "linux/am d64", "linux/\x00"):
        with pytest.raises(InvalidPlatform) as err:
            parse_platform(bad)
        assert isinstance(err.value, ValueError) and isinstance(err.value, ImageError)


def test_host_platform_is_the_test_beds() -> None:
    expected = testing.host_platform()
    host = host_platform()
    assert (host.os, host.architecture, host.variant) == (
        expected["os"], expected["architecture"], expected.get("variant"))


def test_compatible_platforms_prefer_the_exact_one() -> None:
    assert [p.variant for p in compatible_platforms(Platform("linux", "arm", "v7"))] == [
        "v7", "v6", "v5"]
    assert [p.variant for p in compatible_platforms(Platform("linux", "amd64", "v3"))] == [
        "v3", "v2", None]
    assert [p.variant for p in compatible_platforms(Platform("linux", "arm64", "v9"))] == [
        "v9", "v8"]
    assert platform_matches(Platform("linux", "arm64"), Platform("linux", "aarch64", "v8"))
    assert not platform_matches(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"))
    assert not platform_matches(Platform("windows", "amd64"), Platform("linux", "amd64"))


# -- the test bed's multiarch index ----------------------------------------------------------


@pytest.fixture
def multiarch(criolib_test_images: TestImages) -> OCIIndex:
    image = criolib_test_images["multiarch"]
    data = (criolib_test_images.layout / "blobs" / "sha256" / image.digest[7:]).read_bytes()
    parsed = parse_manifest(data, image.descriptor.media_type)
    assert isinstance(parsed, OCIIndex)
    return parsed


def test_choose_amd64_and_arm64(multiarch: OCIIndex, criolib_test_images: TestImages) -> None:
    amd64, arm64 = criolib_test_images["multiarch"].instances
    assert choose_instance(multiarch, parse_platform("linux/amd64")).digest == amd64.digest
    assert choose_instance(multiarch, parse_platform("linux/arm64/v8")).digest == arm64.digest
    # arm64 without a variant means v8, on either side.
    assert choose_instance(multiarch, Platform("linux", "arm64")).digest == arm64.digest
    assert choose_instance(multiarch, Platform("linux", "aarch64")).digest == arm64.digest
    host = {"amd64": amd64, "arm64": arm64}.get(host_platform().architecture)
    if host is not None:
        assert choose_instance(multiarch).digest == host.digest


def test_no_instance_lists_the_choices(multiarch: OCIIndex) -> None:
    with pytest.raises(NoMatchingPlatform) as err:
        choose_instance(multiarch, parse_platform("linux/s390x"), image="oci:/x:multiarch")
    message = str(err.value)
    assert "linux/s390x" in message and "oci:/x:multiarch" in message
    assert "linux/amd64" in message and "linux/arm64/v8" in message
    assert "unknown" not in message  # the attestation is not a choice
    assert err.value.available == ("linux/amd64", "linux/arm64/v8")
    assert err.value.wanted == "linux/s390x"
    assert isinstance(err.value, LookupError)


def test_attestations_are_never_chosen(multiarch: OCIIndex) -> None:
    assert is_attestation(multiarch.manifests[2])
    with pytest.raises(NoMatchingPlatform):
        choose_instance(multiarch, Platform("unknown", "unknown"))
    marked = entry(9, Platform("linux", "amd64"),
                   **{"vnd.docker.reference.type": "attestation-manifest"})
    with pytest.raises(NoMatchingPlatform):
        choose_instance(index(marked), Platform("linux", "amd64"))


# -- selection rules -------------------------------------------------------------------------


def test_exact_variant_wins_over_order() -> None:
    idx = index(entry(1, Platform("linux", "arm", "v5")), entry(2, Platform("linux", "arm", "v6")),
                entry(3, Platform("linux", "arm", "v7")))
    assert choose_instance(idx, Platform("linux", "arm", "v7")).digest == digest(3)
    assert choose_instance(idx, Platform("linux", "arm", "v6")).digest == digest(2)
    older = index(entry(1, Platform("linux", "arm", "v5")),
                  entry(2, Platform("linux", "arm", "v6")))
    assert choose_instance(older, Platform("linux", "arm", "v7")).digest == digest(2)
    with pytest.raises(NoMatchingPlatform):
        choose_instance(index(entry(1, Platform("linux", "arm", "v7"))),
                        Platform("linux", "arm", "v6"))


def test_first_of_equals_and_platformless_last() -> None:
    idx = index(entry(1, None), entry(2, Platform("linux", "amd64")),
                entry(3, Platform("linux", "amd64")))
    assert choose_instance(idx, Platform("linux", "amd64")).digest == digest(2)
    assert choose_instance(idx, Platform("linux", "s390x")).digest == digest(1)


def test_os_version_is_a_preference() -> None:
    idx = index(entry(1, Platform("windows", "amd64", os_version="10.0.17763.1")),
                entry(2, Platform("windows", "amd64", os_version="10.0.20348.1")))
    want = Platform("windows", "amd64", os_version="10.0.20348.1")
    assert choose_instance(idx, want).digest == digest(2)
    assert choose_instance(idx, Platform("windows", "amd64")).digest == digest(1)


def test_docker_manifest_lists_work_too() -> None:
    lst = DockerManifestList(manifests=(
        Descriptor(media_type=MEDIA_TYPE_DOCKER_MANIFEST, digest=digest(1), size=1,
                   platform=Platform("linux", "amd64")),
        Descriptor(media_type=MEDIA_TYPE_DOCKER_MANIFEST, digest=digest(2), size=1,
                   platform=Platform("linux", "arm64", "v8"))))
    assert choose_instance(lst, Platform("linux", "arm64")).digest == digest(2)


def test_instances_for(multiarch: OCIIndex) -> None:
    plats = [parse_platform("linux/arm64"), parse_platform("linux/amd64"),
             parse_platform("linux/aarch64")]
    chosen = instances_for(multiarch, plats)
    assert [c.digest for c in chosen] == [multiarch.manifests[1].digest,
                                          multiarch.manifests[0].digest]
    with pytest.raises(NoMatchingPlatform, match="linux/ppc64le"):
        instances_for(multiarch, [parse_platform("linux/amd64"), parse_platform("ppc64le")])


def test_platform_values() -> None:
    p = Platform("linux", "arm64", "v8", extra={"features": ["sve"]})
    assert p == Platform("linux", "arm64", "v8") and hash(p) == hash(Platform("linux", "arm64",
                                                                             "v8"))
    assert {p, Platform("linux", "arm64", "v8")} == {p}
    assert str(Platform("linux", "amd64")) == "linux/amd64"
