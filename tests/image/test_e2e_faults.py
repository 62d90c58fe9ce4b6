"""copy_image through a FaultProxy in front of the real registry, into each destination.

Each fault of the table is injected on the image's last layer blob (or its
manifest) while ``copy_image`` pulls the test bed's multilayer image into a
containers-storage Store on ``tmp_path`` or an OCI layout. Whatever the fault,
there are two acceptable outcomes: the copy completes and the result verifies
(digests equal the test bed's), or it fails with a CriolibError and leaves no
image, no layer in the store and no index.json entry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from criolib.errors import CriolibError
from criolib.image import CopyResult, DigestMismatch, copy_image
from criolib.storage import Store
from criolib.testing import RegistryServer, TestImage, TestImages, require_root
from criolib.testing._faultproxy import FaultProxy
from tests.image.copy_support import open_test_store, registry_ctx, write_policy

pytestmark = pytest.mark.integration

Inject = Callable[[FaultProxy, TestImage], object]


def _blob(image: TestImage) -> str:
    return f"/blobs/{image.layers[-1].digest}$"


FAULTS: dict[str, Inject] = {
    "500-once": lambda p, i: p.status(500, path=_blob(i)),
    "429-retry-after-1": lambda p, i: p.status(429, retry_after=1, path=_blob(i)),
    "cut-mid-blob": lambda p, i: p.cut(i.layers[-1].size // 2, path=_blob(i)),
    "truncated-blob": lambda p, i: p.truncate(i.layers[-1].size // 2, path=_blob(i),
                                              times=None),
    "corrupt-blob": lambda p, i: p.corrupt(i.layers[-1].size // 2, path=_blob(i),
                                           times=None),
    "manifest-lies-about-size": lambda p, i: p.lie_length(7, path="/manifests/",
                                                          times=None),
}

#: Faults on every try that no retry or resume can heal (a truncated blob is resumed
#: with Range requests, so it heals), so the copy must fail.
LASTING = {"corrupt-blob", "manifest-lies-about-size"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


def _index_entries(layout: Path) -> list[dict[str, object]]:
    index = layout / "index.json"
    if not index.exists():
        return []
    return list(json.loads(index.read_text()).get("manifests", []))


def _verify_layout(layout: Path, result: CopyResult, image: TestImage) -> None:
    (entry,) = _index_entries(layout)
    assert entry["digest"] == image.digest
    manifest = json.loads(result.manifest)
    for d in [manifest["config"], *manifest["layers"]]:
        hex_ = str(d["digest"]).partition(":")[2]
        blob = (layout / "blobs" / "sha256" / hex_).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == hex_


@pytest.mark.parametrize("destination", ["containers-storage", "oci"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_either_heals_or_leaves_nothing(
        fault: str, destination: str, criolib_registry: RegistryServer,
        criolib_test_images: TestImages, store: Store, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    layout = tmp_path / "layout"
    dest = ("containers-storage:localhost/faulty:1" if destination == "containers-storage"
            else f"oci:{layout}:faulty")
    ctx = registry_ctx(tmp_path, store=store, retries=2, timeout=10.0)
    with FaultProxy(criolib_registry.url) as proxy:
        FAULTS[fault](proxy, image)
        try:
            result = copy_image(f"docker://{proxy.host}/{image.reference}", dest,
                                policy=write_policy(tmp_path), ctx=ctx)
        except CriolibError as exc:
            failure: CriolibError | None = exc
        else:
            failure = None
        assert any(r.faults for r in proxy.requests), "the fault never fired"
    assert (failure is not None) == (fault in LASTING), failure
    if failure is None:
        assert result.manifest_digest == image.digest
        assert result.config_digest == image.config_digest
        if destination == "containers-storage":
            stored = store.image("localhost/faulty:1")
            assert stored.digest == image.digest
            assert [la.diff_id for la in store.image_layers(stored.id)] == list(image.diff_ids)
        else:
            _verify_layout(layout, result, image)
    else:
        assert store.images() == []
        assert store.layers() == []
        assert _index_entries(layout) == []


@pytest.mark.parametrize("destination", ["containers-storage", "oci"])
def test_a_failed_layer_fails_the_copy_without_waiting_for_a_stuck_one(
        destination: str, criolib_registry: RegistryServer, criolib_test_images: TestImages,
        store: Store, tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    layout = tmp_path / "layout"
    dest = ("containers-storage:localhost/stuck:1" if destination == "containers-storage"
            else f"oci:{layout}:stuck")
    ctx = registry_ctx(tmp_path, store=store, retries=1, timeout=60.0)
    with FaultProxy(criolib_registry.url) as proxy:
        # The first layer's registry answers after 30 s; the last one is corrupt.
        proxy.delay(30, path=f"/blobs/{image.layers[0].digest}$", times=None)
        proxy.corrupt(10, path=_blob(image), times=None)
        began = time.monotonic()
        with pytest.raises(DigestMismatch, match=image.layers[-1].digest):
            copy_image(f"docker://{proxy.host}/{image.reference}", dest,
                       policy=write_policy(tmp_path), ctx=ctx)
        took = time.monotonic() - began
    assert took < 5, f"the copy took {took:.1f} s to fail"
    assert store.images() == []
    assert store.layers() == []
    assert _index_entries(layout) == []
