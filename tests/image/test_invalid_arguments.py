"""Bad arguments passed in code raise InvalidArgument (a CriolibError and a ValueError).

Each names the argument (``argument``) and the object it was given for, so a
caller far from the call (copy_image → RegistryClient) sees which one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from criolib.errors import CriolibError
from criolib.image import Credentials, InvalidArgument, SystemContext, copy_image
from criolib.image._registry import MAX_MANIFEST_SIZE, RegistryClient
from tests.image.copy_support import write_conf, write_policy


def _never(request: httpx.Request) -> httpx.Response:  # pragma: no cover - not reached
    raise AssertionError(f"no request expected, got {request.url}")


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"retries": -1}, "retries"),
    ({"retries": True}, "retries"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"credentials": ("a:b", "p")}, "credentials"),
    ({"credentials": ("only-user",)}, "credentials"),
])
def test_registry_client_arguments(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(InvalidArgument, match="registry") as caught:
        RegistryClient("registry.test", transport=httpx.MockTransport(_never),
                       **kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, CriolibError)
    assert caught.value.argument == argument


def test_oversized_manifest_to_push_names_the_target() -> None:
    with RegistryClient("registry.test", transport=httpx.MockTransport(_never)) as client, \
            pytest.raises(InvalidArgument, match=r"registry\.test/a/b:v1") as caught:
        client.put_manifest("a/b", "v1", b" " * (MAX_MANIFEST_SIZE + 1),
                            "application/vnd.oci.image.manifest.v1+json")
    assert caught.value.argument == "data"


def test_copy_image_with_bad_credentials_raises_criolib_error(tmp_path: Path) -> None:
    ctx = SystemContext(registries_conf=write_conf(tmp_path), insecure=True,
                        credentials=Credentials(username="a:b", password="p"))
    with pytest.raises(InvalidArgument, match="contains ':'") as caught:
        copy_image("docker://127.0.0.1:1/a/b:v1", f"oci:{tmp_path / 'o'}:x",
                   policy=write_policy(tmp_path), ctx=ctx)
    assert caught.value.argument == "credentials"


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_copy_image_concurrency(tmp_path: Path, concurrency: object) -> None:
    with pytest.raises(InvalidArgument, match="copy_image: concurrency") as caught:
        copy_image("docker://127.0.0.1:1/a/b:v1", f"oci:{tmp_path / 'o'}:x",
                   policy=write_policy(tmp_path), concurrency=concurrency)  # type: ignore[arg-type]
    assert caught.value.argument == "concurrency"
