"""hypothesis strategies for image manifests, indexes, descriptors and image configs.

This module imports hypothesis, a test-only dependency (``criolib[test]``): only
tests import it. Documents come in wire form, as the JSON objects a registry or a
layout holds (image-spec v1.1 manifest.md, image-index.md, descriptor.md,
config.md; Docker manifest-v2-2.md), *valid-shaped*: every property has the JSON
type its spec gives it, REQUIRED ones are present, digests are well formed, and an
embedded ``data`` matches its digest and size. Objects at every depth may carry
unknown vendor properties (``x-...`` keys with arbitrary JSON values) so a parser's
round trip can be checked. Pair them with :mod:`criolib.testing.strategies_json`
to break them.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from criolib.testing.strategies import json_values, unknown_keys

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "descriptor_dicts",
    "digests",
    "docker_manifest_dicts",
    "docker_manifest_list_dicts",
    "image_config_dicts",
    "manifest_documents",
    "media_types",
    "oci_index_dicts",
    "oci_manifest_dicts",
    "platform_dicts",
]

Strategy = st.SearchStrategy

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: The four manifest media types criolib reads, in the order of :func:`manifest_documents`.
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

_LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                 "application/vnd.docker.container.image.v1+json")
_text = st.text(max_size=16)
_words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
_annotations = st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz.-/", min_size=1,
                                       max_size=24), _text, max_size=3)


def _obj(required: Mapping[str, Strategy[Any]],
         optional: Mapping[str, Strategy[Any]] | None = None) -> Strategy[dict[str, Any]]:
    known = st.fixed_dictionaries(dict(required), optional=dict(optional or {}))
    vendor = st.dictionaries(unknown_keys(), json_values(), max_size=2)
    return st.builds(lambda k, v: {**k, **v}, known, st.just({}) | vendor)


def digests() -> Strategy[str]:
    """``sha256:<64 hex>`` and now and then ``sha512:<128 hex>``, lowercase."""
    return st.sampled_from(["sha256", "sha256", "sha256", "sha512"]).flatmap(
        lambda alg: st.binary(min_size=8, max_size=8).map(
            lambda seed: f"{alg}:{hashlib.new(alg, seed).hexdigest()}"))


def media_types(known: tuple[str, ...] = _LAYER_TYPES + _CONFIG_TYPES) -> Strategy[str]:
    """A known media type, or a made-up ``application/vnd.x-....+json`` one."""
    return st.sampled_from(known) | _words.map(lambda w: f"application/vnd.x-{w}+json")


def platform_dicts() -> Strategy[dict[str, Any]]:
    """An image-index.md ``platform`` object."""
    return _obj(
        {"architecture": st.sampled_from(["amd64", "arm64", "arm", "386", "s390x", "ppc64le"]),
         "os": st.sampled_from(["linux", "windows", "freebsd"])},
        {"variant": st.sampled_from(["v5", "v6", "v7", "v8"]),
         "os.version": st.sampled_from(["10.0.17763.1879", "10.0.20348.768"]),
         "os.features": st.lists(_words, min_size=1, max_size=2),
         "features": st.lists(_words, max_size=2)})


@st.composite
def _data_descriptor(draw: st.DrawFn) -> dict[str, Any]:
    blob = draw(st.binary(max_size=24))
    return {"digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob),
            "data": base64.b64encode(blob).decode()}


def descriptor_dicts(*, media: Strategy[str] | None = None,
                     platform: bool = False) -> Strategy[dict[str, Any]]:
    """A descriptor.md object; ``platform`` adds the index entries' ``platform`` sometimes."""
    optional: dict[str, Strategy[Any]] = {
        "urls": st.lists(_words.map(lambda w: f"https://example.com/{w}"), max_size=2),
        "annotations": _annotations,
        "artifactType": media_types(),
    }
    if platform:
        optional["platform"] = platform_dicts()
    plain = _obj({"mediaType": media if media is not None else media_types(), "digest": digests(),
                  "size": st.integers(0, 2**53)}, optional)
    embedded = st.builds(lambda d, e: {**d, **e}, plain, _data_descriptor())
    return st.one_of(plain, plain, embedded)


def oci_manifest_dicts() -> Strategy[dict[str, Any]]:
    """An OCI image manifest (manifest.md), sometimes an artifact with a subject."""
    return _obj(
        {"schemaVersion": st.just(2),
         "config": descriptor_dicts(media=st.sampled_from(_CONFIG_TYPES[:1]) | media_types()),
         "layers": st.lists(descriptor_dicts(media=st.sampled_from(_LAYER_TYPES)), max_size=4)},
        {"mediaType": st.just(OCI_MANIFEST), "artifactType": media_types(),
         "subject": descriptor_dicts(media=st.just(OCI_MANIFEST)), "annotations": _annotations})


def oci_index_dicts() -> Strategy[dict[str, Any]]:
    """An OCI image index (image-index.md)."""
    return _obj(
        {"schemaVersion": st.just(2),
         "manifests": st.lists(descriptor_dicts(media=st.sampled_from(MANIFEST_MEDIA_TYPES),
                                                platform=True), max_size=4)},
        {"mediaType": st.just(OCI_INDEX), "artifactType": media_types(),
         "subject": descriptor_dicts(media=st.just(OCI_MANIFEST)), "annotations": _annotations})


def _docker_descriptor(media: Strategy[str], *, platform: bool = False) -> Strategy[dict[str, Any]]:
    required: dict[str, Strategy[Any]] = {"mediaType": media, "digest": digests(),
                                          "size": st.integers(0, 2**53)}
    if platform:
        required["platform"] = platform_dicts()
    return st.fixed_dictionaries(required, optional={
        "urls": st.lists(_words.map(lambda w: f"https://example.com/{w}"), max_size=2)})


def docker_manifest_dicts() -> Strategy[dict[str, Any]]:
    """A Docker image manifest, schema 2 (manifest-v2-2.md)."""
    return st.fixed_dictionaries({
        "schemaVersion": st.just(2), "mediaType": st.just(DOCKER_MANIFEST),
        "config": _docker_descriptor(st.just(_CONFIG_TYPES[1])),
        "layers": st.lists(_docker_descriptor(st.sampled_from(_LAYER_TYPES[3:]) | st.just(
            "application/vnd.docker.image.rootfs.diff.tar")), max_size=4)})


def docker_manifest_list_dicts() -> Strategy[dict[str, Any]]:
    """A Docker manifest list (manifest-v2-2.md "Manifest List")."""
    return st.fixed_dictionaries({
        "schemaVersion": st.just(2), "mediaType": st.just(DOCKER_LIST),
        "manifests": st.lists(_docker_descriptor(st.just(DOCKER_MANIFEST), platform=True),
                              max_size=4)})


def image_config_dicts() -> Strategy[dict[str, Any]]:
    """An image config (config.md), with Docker's extra keys now and then."""
    strings = st.lists(_text, max_size=3)
    container = _obj({}, {
        "User": _text, "ExposedPorts": st.dictionaries(st.sampled_from(["80/tcp", "53/udp"]),
                                                       st.just({}), max_size=2),
        "Env": st.lists(_words.map(lambda w: f"{w.upper()}=x"), max_size=3),
        "Entrypoint": strings, "Cmd": strings,
        "Volumes": st.dictionaries(_words.map(lambda w: f"/{w}"), st.just({}), max_size=2),
        "WorkingDir": _text, "Labels": st.dictionaries(_words, _text, max_size=2),
        "StopSignal": st.sampled_from(["SIGTERM", "SIGQUIT", "9"]), "ArgsEscaped": st.booleans(),
    })
    history = _obj({}, {"created": st.just("2000-01-01T00:00:00Z"), "author": _text,
                        "created_by": _text, "comment": _text, "empty_layer": st.booleans()})
    return _obj(
        {"architecture": st.sampled_from(["amd64", "arm64"]), "os": st.just("linux"),
         "rootfs": _obj({"type": st.just("layers"), "diff_ids": st.lists(digests(),
                                                                         max_size=3)})},
        {"created": st.just("2000-01-01T00:00:00Z"), "author": _text, "variant": st.just("v8"),
         "os.version": _text, "os.features": st.lists(_words, max_size=2), "config": container,
         "history": st.lists(history, max_size=3), "docker_version": st.just("24.0.7")})


def manifest_documents() -> Strategy[tuple[dict[str, Any], str]]:
    """``(document, media type)`` of any of the four kinds."""
    return st.one_of(
        oci_manifest_dicts().map(lambda d: (d, OCI_MANIFEST)),
        oci_index_dicts().map(lambda d: (d, OCI_INDEX)),
        docker_manifest_dicts().map(lambda d: (d, DOCKER_MANIFEST)),
        docker_manifest_list_dicts().map(lambda d: (d, DOCKER_LIST)),
    )
