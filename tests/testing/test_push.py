"""push_layout on malformed layouts: a PushError naming the file and the fault, nothing else."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from criolib.testing import PushError, RegistryServer, push_layout, require_binaries

pytestmark = pytest.mark.integration

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
REF = "org.opencontainers.image.ref.name"


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    require_binaries("docker-registry")
    with RegistryServer() as server:
        yield server


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(layout: Path, index: Any, blobs: dict[str, bytes], raw_index: bytes | None = None
           ) -> None:
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for digest, data in blobs.items():
        (layout / "blobs" / "sha256" / digest.partition(":")[2]).write_bytes(data)
    (layout / "index.json").write_bytes(raw_index if raw_index is not None
                                        else json.dumps(index).encode())


def _good(layer: bytes = b"layer") -> tuple[dict[str, Any], dict[str, bytes], bytes]:
    """A one-layer image: its manifest document, the blobs, the config."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    blobs = {_digest(layer): layer, _digest(config): config}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": _digest(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": _digest(layer), "size": len(layer)}]}
    return manifest, blobs, config


def _named(manifest: Any, blobs: dict[str, bytes], **override: Any) -> dict[str, Any]:
    data = json.dumps(manifest).encode()
    blobs[_digest(data)] = data
    desc = {"mediaType": MANIFEST, "digest": _digest(data), "size": len(data),
            "annotations": {REF: "x"}, **override}
    return {"schemaVersion": 2, "manifests": [desc]}


@pytest.mark.parametrize("case, match", [
    ("index is a list", r"index\.json: the image index is a JSON array, not an object"),
    ("index not json", r"index\.json: cannot read the image index"),
    ("manifests not a list", r"'manifests' is a JSON object, not an array"),
    ("entry not an object", r"manifests\[0\]: descriptor is a JSON string"),
    ("int digest", r"descriptor digest 5 is not sha256"),
    ("missing digest", r"descriptor digest None is not sha256"),
    ("uppercase digest", r"is not sha256: and 64 lowercase hex"),
    ("missing size", r"has size None, not an int"),
    ("string size", r"has size '12', not an int"),
    ("bool size", r"has size True, not an int"),
    ("annotations a list", r"has a annotations of the wrong type"),
    ("manifest is a list", r"a JSON array, not an object"),
    ("layers an object", r"'layers' is a JSON object, not an array"),
    ("layer without digest", r"layers\[0\]: descriptor digest None"),
    ("config a string", r"config: descriptor is a JSON string"),
    ("children not descriptors", r"manifests\[0\]: descriptor is a JSON number"),
    ("bad media type", r"mediaType 'a\\nb' is not a media type"),
])
def test_malformed_layouts(registry: RegistryServer, tmp_path: Path, case: str,
                           match: str) -> None:
    manifest, blobs, _ = _good()
    raw = None
    index: Any
    if case == "index is a list":
        index = []
    elif case == "index not json":
        index, raw = None, b"{nope"
    elif case == "manifests not a list":
        index = {"manifests": {}}
    elif case == "entry not an object":
        index = {"manifests": ["sha256:abc"]}
    elif case == "manifest is a list":
        index = _named([manifest], blobs)
    elif case == "layers an object":
        index = _named({**manifest, "layers": {}}, blobs)
    elif case == "layer without digest":
        index = _named({**manifest, "layers": [{"size": 1}]}, blobs)
    elif case == "config a string":
        index = _named({**manifest, "config": "sha256:abc"}, blobs)
    elif case == "children not descriptors":
        index = _named({"schemaVersion": 2, "mediaType": INDEX, "manifests": [1]}, blobs,
                       mediaType=INDEX)
    elif case == "bad media type":
        index = _named(manifest, blobs, mediaType="a\nb")
    else:
        index = _named(manifest, blobs)
        desc = index["manifests"][0]
        if case == "int digest":
            desc["digest"] = 5
        elif case == "missing digest":
            del desc["digest"]
        elif case == "uppercase digest":
            desc["digest"] = desc["digest"].upper().replace("SHA256", "sha256")
        elif case == "missing size":
            del desc["size"]
        elif case == "string size":
            desc["size"] = "12"
        elif case == "bool size":
            desc["size"] = True
        elif case == "annotations a list":
            desc["annotations"] = [REF, "x"]
    _write(tmp_path, index, blobs, raw)
    with pytest.raises(PushError, match=match) as info:
        push_layout(registry, tmp_path, "x", "malformed/x", "t")
    assert type(info.value) is PushError
    assert str(tmp_path) in str(info.value)


def test_a_good_layout_pushes(registry: RegistryServer, tmp_path: Path) -> None:
    manifest, blobs, _ = _good(b"good")
    _write(tmp_path, _named(manifest, blobs), blobs)
    pushed = push_layout(registry, tmp_path, "x", "good/x", "t")
    assert pushed.blobs_uploaded == 2 and pushed.manifests == 1


# -- junk from hypothesis ---------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@st.composite
def _descriptor(draw: st.DrawFn, digest: str, size: int, media_type: str) -> Any:
    """A descriptor of a real blob, maybe with one field spoiled."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    # Mostly right: a layout wrong everywhere is refused at its first fault only.
    spoil = draw(st.sampled_from(["none"] * 12 + ["digest", "size", "mediaType", "drop",
                                                   "junk"]))
    if spoil == "junk":
        return draw(_json)
    if spoil == "drop":
        del desc[draw(st.sampled_from(sorted(desc)))]
    elif spoil != "none":
        desc[spoil] = draw(_json | st.text(max_size=70))
    return desc


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[Any, dict[str, bytes]]:
    """An index.json document and blobs: right, a little wrong, or nonsense."""
    layer = draw(st.binary(max_size=16))
    manifest, blobs, config = _good(layer)
    shape = draw(st.sampled_from(["image", "index", "junk"]))
    if shape == "image":
        doc: Any = {**manifest,
                    "config": draw(_descriptor(_digest(config), len(config),
                                               "application/vnd.oci.image.config.v1+json")),
                    "layers": draw(st.lists(_descriptor(_digest(layer), len(layer),
                                                        "application/vnd.oci.image.layer.v1.tar"),
                                            max_size=2) | _json)}
    elif shape == "index":
        child = json.dumps(manifest).encode()
        blobs[_digest(child)] = child
        doc = {"schemaVersion": 2, "mediaType": INDEX,
               "manifests": draw(st.lists(_descriptor(_digest(child), len(child), MANIFEST),
                                          max_size=2) | _json)}
    else:
        doc = draw(_json)
    data = json.dumps(doc).encode()
    blobs[_digest(data)] = data
    top = draw(_descriptor(_digest(data), len(data), INDEX if shape == "index" else MANIFEST))
    if isinstance(top, dict) and draw(st.integers(0, 9)):
        top["annotations"] = {REF: "x"}
    form = draw(st.sampled_from(["index"] * 8 + ["bare", "junk"]))
    index = {"index": {"schemaVersion": 2, "manifests": [top]}, "bare": top}.get(form)
    return (draw(_json) if form == "junk" else index), blobs


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(layout=_layouts())
def test_junk_layouts_give_push_errors_only(
    registry: RegistryServer, tmp_path: Path, layout: tuple[Any, dict[str, bytes]]
) -> None:
    index, blobs = layout
    root = tmp_path / "junk"
    _write(root, index, blobs)
    try:
        push_layout(registry, root, "x", "junk/x", "t", timeout=10)
        event("pushed")
    except PushError as exc:
        event("refused by the registry" if "HTTP " in str(exc) else "refused locally")
