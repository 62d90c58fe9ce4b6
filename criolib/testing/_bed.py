"""The test bed assembled: a registry serving the test images.

:func:`serving_test_images` is the plain context manager behind the pytest
fixtures, for users' own tests and for scripts (the demo, the benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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

    Each image goes to its own repository, so they are pushed in parallel (the
    registry spends most of a push's time on its own disk writes). An unknown name
    raises :class:`~criolib.testing.UnknownTestImage`; the first failed push raises
    its :class:`~criolib.testing.PushError` once every push has finished.
    """
    chosen = list(images) if names is None else [images[n] for n in names]
    if not chosen:
        return
    with ThreadPoolExecutor(max_workers=min(8, len(chosen)),
                            thread_name_prefix="criolib-push") as pool:
        futures = [pool.submit(push_layout, registry, images.layout, image.name,
                               image.repository, image.tag) for image in chosen]
    for future in futures:
        future.result()


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
