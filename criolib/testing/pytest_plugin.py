"""pytest fixtures of the criolib test bed, registered through the ``pytest11`` entry point.

``criolib_test_images``
    every test image, built once per session (:func:`build_test_images`).
``criolib_registry``, ``criolib_registry_basic``, ``criolib_registry_token``
    the real distribution registry on 127.0.0.1, anonymous, with htpasswd basic
    auth, or with bearer tokens from a token server, each serving every test
    image; started once per session, stopped at its end.

They need the registry binary (Debian's docker-registry): without it they skip, or
fail when ``CRIOLIB_REQUIRE_INTEGRATION=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from criolib.testing._bed import serving_test_images
from criolib.testing._build import build_test_images
from criolib.testing._host import require_binaries
from criolib.testing._images import TestImages
from criolib.testing._registry import AuthKind, RegistryServer


@pytest.fixture(scope="session")
def criolib_test_images(tmp_path_factory: pytest.TempPathFactory) -> TestImages:
    """The test bed's images, built on this machine from busybox-static."""
    require_binaries("busybox")
    return build_test_images(tmp_path_factory.mktemp("criolib-testbed"))


def _serve(images: TestImages, auth: AuthKind) -> Iterator[RegistryServer]:
    require_binaries("docker-registry")
    with serving_test_images(images, auth=auth) as registry:
        yield registry


@pytest.fixture(scope="session")
def criolib_registry(criolib_test_images: TestImages) -> Iterator[RegistryServer]:
    """An anonymous registry serving every test image."""
    yield from _serve(criolib_test_images, "none")


@pytest.fixture(scope="session")
def criolib_registry_basic(criolib_test_images: TestImages) -> Iterator[RegistryServer]:
    """A registry demanding htpasswd basic auth (``registry.credentials``)."""
    yield from _serve(criolib_test_images, "basic")


@pytest.fixture(scope="session")
def criolib_registry_token(criolib_test_images: TestImages) -> Iterator[RegistryServer]:
    """A registry trusting bearer tokens from ``registry.token_server``."""
    yield from _serve(criolib_test_images, "token")
