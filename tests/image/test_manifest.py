"""Manifests, indexes and image configs: the test bed's documents, detection, checks,
conversions (image-spec v1.1; Docker manifest-v2-2.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from criolib.image._errors import (
    ImageError,
    InvalidDigest,
    ManifestError,
    UnsupportedConversion,
    UnsupportedManifest,
)
from criolib.image._manifest import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_TAR,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    DockerManifest,
    DockerManifestList,
    OCIIndex,
    OCIManifest,
    config_descriptor,
    detect_media_type,
    image_config_to_dict,
    is_index,
    layers,
    manifest_digest,
    manifest_to_bytes,
    manifest_to_dict,
    parse_image_config,
    parse_manifest,
    to_docker,
    to_oci,
    validate_digest,
)
from criolib.image._platform import Platform
from criolib.testing import TestImage, TestImages

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def blob(images: TestImages, digest: str) -> bytes:
    return (images.layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def oci_doc(**more: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 7},
        "layers": [{"mediaType": MEDIA_TYPE_OCI_LAYER_GZIP, "digest": D2, "size": 9}],
    }
    doc.update(more)
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- the test bed --------------------------------------------------------------------


def _single(images: TestImages) -> list[TestImage]:
    return [i for i in images if not i.is_index]


def test_every_test_bed_manifest_parses_and_matches(criolib_test_images: TestImages) -> None:
    for image in _single(criolib_test_images):
        data = blob(criolib_test_images, image.digest)
        assert manifest_digest(data) == image.digest
        m = parse_manifest(data, image.descriptor.media_type)
        assert isinstance(m, OCIManifest)
        assert config_descriptor(m).digest == image.config_digest
        assert [d.digest for d in layers(m)] == [d.digest for d in image.layers]
        assert manifest_to_dict(m) == json.loads(data)
        config = parse_image_config(blob(criolib_test_images, m.config.digest))
        assert config.diff_ids == image.diff_ids
        plat = image.platform or {}
        assert (config.os, config.architecture) == (plat["os"], plat["architecture"])
        assert image_config_to_dict(config) == json.loads(blob(criolib_test_images,
                                                               m.config.digest))


def test_test_bed_index(criolib_test_images: TestImages) -> None:
    image = criolib_test_images["multiarch"]
    data = blob(criolib_test_images, image.digest)
    index = parse_manifest(data, None)  # detected from the mediaType property
    assert isinstance(index, OCIIndex) and is_index(index)
    plats = [str(e.platform) for e in index.manifests]
    assert plats == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    assert [e.digest for e in index.manifests[:2]] == [i.digest for i in image.instances]
    assert manifest_to_dict(index) == json.loads(data)
    with pytest.raises(ManifestError, match="no layers"):
        layers(index)
    with pytest.raises(ManifestError, match="no config"):
        config_descriptor(index)


def test_multilayer_config_fields(criolib_test_images: TestImages) -> None:
    m = parse_manifest(blob(criolib_test_images, criolib_test_images["multilayer"].digest))
    assert isinstance(m, OCIManifest)
    config = parse_image_config(blob(criolib_test_images, m.config.digest))
    c = config.config
    assert c is not None
    assert c.entrypoint == ("/bin/sh", "-c") and c.cmd == ("cat /data/keep.txt",)
    assert "GREETING=hello world" in (c.env or ())
    assert c.working_dir == "/data" and c.stop_signal == "SIGQUIT"
    assert dict(c.volumes or {}) == {"/data/volume": {}}
    assert dict(c.exposed_ports or {}) == {"8080/tcp": {}}
    assert dict(c.labels or {}) == {"org.criolib.test": "multilayer"}
    assert config.history is not None and config.history[-1].empty_layer is True
    assert config.rootfs.type == "layers" and len(config.diff_ids) == 3


# -- kind detection ---------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "application/json", "text/plain",
                                    "application/octet-stream",
                                    f"{MEDIA_TYPE_OCI_MANIFEST}; charset=utf-8"])
def test_generic_or_missing_header_reads_the_document(header: str | None) -> None:
    assert isinstance(parse_manifest(raw(oci_doc()), header), OCIManifest)


def test_detection_by_shape() -> None:
    no_type = oci_doc()
    del no_type["mediaType"]
    assert detect_media_type(raw(no_type)) == MEDIA_TYPE_OCI_MANIFEST
    m = parse_manifest(raw(no_type))
    assert isinstance(m, OCIManifest) and m.media_type is None
    assert "mediaType" not in manifest_to_dict(m)  # absent stays absent
    index = {"schemaVersion": 2, "manifests": []}
    assert isinstance(parse_manifest(raw(index)), OCIIndex)
    docker = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
              "config": {"mediaType": MEDIA_TYPE_DOCKER_CONFIG, "digest": D1, "size": 1},
              "layers": []}
    assert isinstance(parse_manifest(raw(docker), "application/json"), DockerManifest)
    assert detect_media_type(b"not json") is None
    assert detect_media_type(b"[]") is None


def test_schema1_is_refused_clearly() -> None:
    doc = {"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": [], "signatures": []}
    for header in (None, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED, "application/json"):
        with pytest.raises(UnsupportedManifest, match="schema 1"):
            parse_manifest(raw(doc), header)


def test_unknown_media_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedManifest, match=r"application/vnd\.example"):
        parse_manifest(raw(oci_doc(mediaType="application/vnd.example+json")))
    with pytest.raises(UnsupportedManifest, match="unknown kind"):
        parse_manifest(raw({"schemaVersion": 2}))


def test_header_and_document_must_agree() -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw(oci_doc()), MEDIA_TYPE_DOCKER_MANIFEST)
    assert err.value.field == "mediaType"
    assert err.value.digest == manifest_digest(raw(oci_doc()))


def test_ambiguous_documents_are_refused() -> None:
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(raw(oci_doc(manifests=[])), MEDIA_TYPE_OCI_MANIFEST)
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(raw({"schemaVersion": 2, "manifests": [], "layers": []}),
                       MEDIA_TYPE_OCI_INDEX)


# -- checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["sha256:" + "A" * 64, "sha256:" + "1" * 63, "sha1:" + "1" * 40,
                                 "sha256:../../../etc/passwd", "1" * 64, "", "sha512:" + "1" * 64])
def test_bad_digests_name_the_field(bad: str) -> None:
    doc = oci_doc()
    doc["layers"][0]["digest"] = bad
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw(doc), MEDIA_TYPE_OCI_MANIFEST)
    assert err.value.field == "layers[0].digest"
    assert manifest_digest(raw(doc)) in str(err.value)
    with pytest.raises(InvalidDigest):
        validate_digest(bad)


def test_good_digests() -> None:
    assert validate_digest(D1) == D1
    assert validate_digest("sha512:" + "a" * 128)
    assert manifest_digest(b"x", "sha512").startswith("sha512:")
    with pytest.raises(InvalidDigest):
        manifest_digest(b"x", "md5")


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(schemaVersion=3), "schemaVersion"),
    (lambda d: d.update(schemaVersion=True), "schemaVersion"),
    (lambda d: d.update(layers="x"), "layers"),
    (lambda d: d["layers"][0].update(size=-1), "layers[0].size"),
    (lambda d: d["layers"][0].update(size=1.5), "layers[0].size"),
    (lambda d: d["layers"][0].pop("digest"), "layers[0]"),
    (lambda d: d["config"].update(mediaType="not a type"), "config.mediaType"),
    (lambda d: d["config"].update(annotations={"a": 1}), "config.annotations.a"),
    (lambda d: d["config"].update(data="!!"), "config.data"),
    (lambda d: d["config"].update(data=base64.b64encode(b"1234567").decode()), "config.data"),
    (lambda d: d.pop("config"), ""),
])
def test_malformed_manifests_name_the_field(edit: Any, field: str) -> None:
    doc = oci_doc()
    edit(doc)
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw(doc), MEDIA_TYPE_OCI_MANIFEST)
    assert err.value.field == field
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImageError)


def test_embedded_data_that_matches_is_accepted() -> None:
    content = b"config!"
    doc = oci_doc()
    doc["config"] = {"mediaType": MEDIA_TYPE_OCI_CONFIG, "size": len(content),
                     "digest": "sha256:" + hashlib.sha256(content).hexdigest(),
                     "data": base64.b64encode(content).decode()}
    m = parse_manifest(raw(doc))
    assert isinstance(m, OCIManifest) and m.config.data == doc["config"]["data"]


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[1]", b"null", b"{", b"[" * 100000])
def test_not_json_objects(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data, MEDIA_TYPE_OCI_MANIFEST)
    with pytest.raises(ManifestError):
        parse_image_config(data)


def test_unknown_properties_are_kept_at_every_depth() -> None:
    doc = oci_doc(**{"x-vendor": {"a": [1, 2.5, None]}})
    doc["layers"][0]["x-layer"] = True
    doc["subject"] = {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": D1, "size": 3,
                      "platform": {"os": "linux", "architecture": "amd64", "features": ["f"]}}
    m = parse_manifest(raw(doc))
    assert isinstance(m, OCIManifest)
    assert m.extra == {"x-vendor": {"a": [1, 2.5, None]}}
    assert m.subject is not None and m.subject.platform == Platform("linux", "amd64")
    assert manifest_to_dict(m) == doc
    assert json.loads(manifest_to_bytes(m)) == doc


def test_image_config_checks_diff_ids() -> None:
    doc = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                              "diff_ids": ["sha256:nope"]}}
    with pytest.raises(ManifestError) as err:
        parse_image_config(raw(doc))
    assert err.value.field == "rootfs.diff_ids[0]"
    del doc["rootfs"]
    with pytest.raises(ManifestError, match="rootfs"):
        parse_image_config(raw(doc))


# -- conversions ----------------------------------------------------------------------------


def test_oci_to_docker_and_back(criolib_test_images: TestImages) -> None:
    for name in ("busybox", "multilayer", "multilayer-uncompressed"):
        m = parse_manifest(blob(criolib_test_images, criolib_test_images[name].digest))
        assert isinstance(m, OCIManifest)
        d = to_docker(m)
        assert d.media_type == MEDIA_TYPE_DOCKER_MANIFEST
        assert d.config.media_type == MEDIA_TYPE_DOCKER_CONFIG
        assert {layer.media_type for layer in d.layers} <= {MEDIA_TYPE_DOCKER_LAYER_GZIP,
                                                            MEDIA_TYPE_DOCKER_LAYER_TAR}
        assert [x.digest for x in d.layers] == [x.digest for x in m.layers]
        # Docker schema 2 has no annotations; everything else comes back.
        assert to_oci(d) == OCIManifest(config=m.config, layers=tuple(
            Descriptor(media_type=x.media_type, digest=x.digest, size=x.size)
            for x in m.layers))
        assert to_docker(to_oci(d)) == d
        again = parse_manifest(manifest_to_bytes(d), MEDIA_TYPE_DOCKER_MANIFEST)
        assert again == d


def test_zstd_layers_cannot_become_docker(criolib_test_images: TestImages) -> None:
    m = parse_manifest(blob(criolib_test_images, criolib_test_images["multilayer-zstd"].digest))
    assert isinstance(m, OCIManifest)
    assert {x.media_type for x in m.layers} == {MEDIA_TYPE_OCI_LAYER_ZSTD}
    with pytest.raises(UnsupportedConversion, match="zstd") as err:
        to_docker(m)
    assert err.value.field == "layers[0].mediaType"


def test_artifacts_cannot_become_docker() -> None:
    m = parse_manifest(raw(oci_doc(artifactType="application/vnd.example+json")))
    assert isinstance(m, OCIManifest)
    with pytest.raises(UnsupportedConversion, match="artifact"):
        to_docker(m)
    doc = oci_doc()
    doc["config"]["mediaType"] = "application/vnd.example.config+json"
    with pytest.raises(UnsupportedConversion, match="not an image config"):
        to_docker(parse_manifest(raw(doc)))  # type: ignore[call-overload]
    doc = oci_doc()
    doc["layers"][0]["mediaType"] = "application/vnd.in-toto+json"
    with pytest.raises(UnsupportedConversion, match="cannot hold"):
        to_docker(parse_manifest(raw(doc)))  # type: ignore[call-overload]


def test_index_and_list_convert(criolib_test_images: TestImages) -> None:
    index = parse_manifest(blob(criolib_test_images, criolib_test_images["multiarch"].digest))
    assert isinstance(index, OCIIndex)
    lst = to_docker(index)
    assert isinstance(lst, DockerManifestList)
    assert lst.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
    assert [e.digest for e in lst.manifests] == [e.digest for e in index.manifests]
    assert all(e.annotations is None for e in lst.manifests)
    back = to_oci(lst)
    assert [e.platform for e in back.manifests] == [e.platform for e in index.manifests]
    assert parse_manifest(manifest_to_bytes(lst)) == lst
    bare = OCIIndex(manifests=(Descriptor(media_type=MEDIA_TYPE_OCI_MANIFEST, digest=D1,
                                          size=1),))
    with pytest.raises(UnsupportedConversion, match="platform"):
        to_docker(bare)


def test_docker_layer_types_map_to_oci() -> None:
    docker = DockerManifest(
        config=Descriptor(media_type=MEDIA_TYPE_DOCKER_CONFIG, digest=D1, size=1),
        layers=(Descriptor(media_type=MEDIA_TYPE_DOCKER_LAYER_TAR, digest=D2, size=2),
                Descriptor(media_type=MEDIA_TYPE_DOCKER_LAYER_GZIP, digest=D2, size=2)))
    oci = to_oci(docker)
    assert [x.media_type for x in oci.layers] == [MEDIA_TYPE_OCI_LAYER_TAR,
                                                  MEDIA_TYPE_OCI_LAYER_GZIP]
    assert oci.config.media_type == MEDIA_TYPE_OCI_CONFIG
    assert to_docker(oci) == docker
    odd = DockerManifest(config=docker.config, layers=(
        Descriptor(media_type="application/x-weird", digest=D2, size=2),))
    with pytest.raises(UnsupportedConversion, match="no OCI layer counterpart"):
        to_oci(odd)


def test_models_are_frozen() -> None:
    m = OCIManifest(config=Descriptor(media_type=MEDIA_TYPE_OCI_CONFIG, digest=D1, size=1),
                    layers=())
    with pytest.raises(AttributeError):
        m.layers = ()  # type: ignore[misc]
    assert manifest_to_dict(m) == {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                                   "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG,
                                              "digest": D1, "size": 1}, "layers": []}
