"""The test bed assembled: a registry serving the test images.

:func:`serving_test_images` is the plain context manager behind the pytest
fixtures, for users' own tests and for scripts (the demo, the benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from criolib.testing._images import TestImages
from criolib.testing._push import push_layout
from criolib.testing._registry import AuthKind, RegistryServer

__all__ = ["push_test_images", "serving_test_images"]


def push_test_images(
    registry: RegistryServer, images: TestImages, names: Iterable[str] | None = None
) -> None:
    """Push the named test images (default: all) to ``registry`` as ``repository:tag``.

    An unknown name raises :class:`~criolib.testing.UnknownTestImage`.
    """
    chosen = list(images) if names is None else [images[n] for n in names]
    for image in chosen:
        push_layout(registry, images.layout, image.name, image.repository, image.tag)


@contextmanager
def serving_test_images(
    images: TestImages,
    *,
    auth: AuthKind = "none",
    names: Iterable[str] | None = None,
    **registry_options: Any,
) -> Iterator[RegistryServer]:
    """Start a registry with ``auth``, push ``images`` into it, stop it afterwards.

    ``registry_options`` go to :class:`RegistryServer`: ``users``, ``token_ttl``,
    ``acl`` (user to the only actions the token server grants them, e.g.
    ``{"reader": ["pull"]}``), ``anonymous_pull``, ``port``, ``workdir``...
    The images are pushed as the first of ``users``, who must be allowed to push.
    """
    with RegistryServer(auth=auth, **registry_options) as registry:
        push_test_images(registry, images, names)
        yield registry
