"""Pull an image from a registry into criolib.storage and into an OCI layout.

Starts the test bed's registry on 127.0.0.1 with bearer-token auth, then uses
criolib.image's one front door, ``copy_image``, twice: into a containers-storage
Store (layers applied in order while later ones download) and into an ``oci:``
layout; a second pull of the same image is one manifest request. Needs root (the
store's overlay driver).

    .venv/bin/python examples/pull_image.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from criolib.errors import CriolibError
from criolib.image import Credentials, Policy, ProgressEvent, SystemContext, copy_image
from criolib.storage import Store
from criolib.testing import build_test_images, serving_test_images


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="criolib-pull-") as tmp_name:
        tmp = Path(tmp_name)
        images = build_test_images(tmp / "images")
        with serving_test_images(images, auth="token", names=["multilayer"]) as registry, \
                Store(tmp / "storage", tmp / "run") as store:
            user, password = registry.credentials or ("", "")
            ctx = SystemContext(insecure=True, store=store,
                                credentials=Credentials(username=user, password=password))
            policy = Policy.insecure_accept_anything()
            name = f"{registry.host}/testbed/multilayer:latest"
            src, dest = f"docker://{name}", f"containers-storage:{name}"
            downloaded: dict[str, int] = {}

            def progress(event: ProgressEvent) -> None:
                if event.index is not None:  # a layer (the config has no index)
                    downloaded[event.digest] = max(event.offset, downloaded.get(
                        event.digest, 0))

            result = copy_image(src, dest, policy=policy, ctx=ctx, progress=progress)
            print(f"pulled {src} into storage: manifest {result.manifest_digest[:19]}…, "
                  f"{result.layers_copied} layers, {sum(downloaded.values())} bytes")
            image = store.image(name)
            print(f"stored image {image.id[:12]} names={list(image.names)}")
            again = copy_image(src, dest, policy=policy, ctx=ctx)
            print(f"second pull: {again.layers_copied} layers copied, "
                  f"{again.layers_skipped} skipped")
            layout = tmp / "layout"
            copy_image(src, f"oci:{layout}:multilayer", policy=policy, ctx=ctx)
            print(f"copied into oci:{layout.name}: {sorted(p.name for p in layout.iterdir())}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CriolibError as exc:
        print(f"example failed: {exc}", file=sys.stderr)
        sys.exit(1)
