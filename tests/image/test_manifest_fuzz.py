"""Properties of the manifest parser: random documents round-trip, junk raises only
ManifestError (criolib.testing.strategies_manifest, strategies_json)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criolib.image._errors import ManifestError
from criolib.image._manifest import (
    image_config_to_dict,
    manifest_digest,
    manifest_to_bytes,
    manifest_to_dict,
    parse_image_config,
    parse_manifest,
)
from criolib.testing import strategies_manifest as sm
from criolib.testing.strategies_json import corrupted, junk_values

HEADERS = st.sampled_from([None, "", "application/json", *sm.MANIFEST_MEDIA_TYPES,
                           "application/vnd.docker.distribution.manifest.v1+prettyjws",
                           "application/vnd.example+json"])
FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def dumps(doc: Any) -> bytes | None:
    """JSON bytes, or ``None`` for what JSON cannot hold (a 5000-digit integer)."""
    try:
        return json.dumps(doc).encode()
    except (ValueError, TypeError):
        return None


@FAST
@given(sm.manifest_documents())
def test_random_manifests_round_trip(doc_and_type: tuple[dict[str, Any], str]) -> None:
    doc, media_type = doc_and_type
    data = json.dumps(doc).encode()
    m = parse_manifest(data, media_type)
    assert manifest_to_dict(m) == doc
    # What criolib writes parses back to the same model.
    assert parse_manifest(manifest_to_bytes(m), media_type) == m
    if "mediaType" in doc:  # the document says what it is: no header needed
        assert parse_manifest(data, None) == m


@FAST
@given(sm.image_config_dicts())
def test_random_image_configs_round_trip(doc: dict[str, Any]) -> None:
    config = parse_image_config(json.dumps(doc).encode())
    assert image_config_to_dict(config) == doc
    assert config.diff_ids == tuple(doc["rootfs"]["diff_ids"])


@FAST
@given(junk_values(), HEADERS)
def test_junk_raises_only_manifest_error(junk: Any, header: str | None) -> None:
    data = dumps(junk)
    if data is None:
        return
    for parse in (lambda: parse_manifest(data, header), lambda: parse_image_config(data)):
        try:
            parse()
        except ManifestError as exc:
            assert exc.digest == manifest_digest(data)


@FAST
@given(st.binary(max_size=64), HEADERS)
def test_random_bytes_raise_only_manifest_error(data: bytes, header: str | None) -> None:
    with contextlib.suppress(ManifestError):
        parse_manifest(data, header)


@FAST
@given(st.data())
def test_damaged_documents_raise_only_manifest_error(data: st.DataObject) -> None:
    doc, media_type = data.draw(sm.manifest_documents())
    raw = dumps(data.draw(corrupted(doc)))
    if raw is None:
        return
    try:
        m = parse_manifest(raw, data.draw(HEADERS | st.just(media_type)))
    except ManifestError:
        return
    assert parse_manifest(manifest_to_bytes(m), type(m).MEDIA_TYPE) == m


@FAST
@given(st.data())
def test_damaged_configs_raise_only_manifest_error(data: st.DataObject) -> None:
    raw = dumps(data.draw(corrupted(data.draw(sm.image_config_dicts()))))
    if raw is None:
        return
    with contextlib.suppress(ManifestError):
        parse_image_config(raw)
