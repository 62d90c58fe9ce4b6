"""A tour of criolib.storage: store an image, give a container a root filesystem, diff it.

1. Build the test bed's multilayer image on this machine (criolib.testing).
2. Store its layers with ``Store.put_layer`` (each blob checked against its digest
   and diff_id while it is applied) and record the image with ``create_image``.
3. Create a container on the image and mount its root filesystem.
4. Write a file and delete one in the container, unmount, and read the container
   layer's diff: an OCI layer tarball holding exactly those two changes.
5. ``check()`` the store, then remove the container and the image.

Everything happens in a temporary directory; the driver is overlay unless the first
argument says ``vfs``. Needs root (overlay mounts, and layers own files as other
users). Prints what it does.

    .venv/bin/python examples/storage_tour.py [overlay|vfs]
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from criolib.errors import CriolibError
from criolib.storage import Store, check
from criolib.testing import build_test_images

NAME = "localhost/tour/multilayer:latest"


def main(argv: list[str]) -> int:
    driver = argv[1] if len(argv) > 1 else "overlay"
    with tempfile.TemporaryDirectory(prefix="criolib-storage-tour-") as tmp:
        start = time.monotonic()
        images = build_test_images(Path(tmp) / "images")
        image = images["multilayer"]
        blobs = images.layout / "blobs" / "sha256"

        def blob(digest: str) -> Path:
            return blobs / digest.partition(":")[2]

        print(f"built the test image {image.reference} ({len(image.layers)} layers) "
              f"in {time.monotonic() - start:.1f} s")

        with Store(Path(tmp) / "graph", Path(tmp) / "run", driver=driver) as store:
            print(f"opened a store at {store.graphroot} with the {store.driver.name} driver")
            parent = None
            for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
                with blob(desc.digest).open("rb") as f:
                    layer = store.put_layer(f, parent, expected_diff_id=diff_id,
                                            expected_digest=desc.digest)
                print(f"stored layer {layer.id[:12]}: {layer.compression}, "
                      f"{layer.uncompressed_size} bytes of tar")
                parent = layer.id

            assert image.config_digest is not None
            config_hex = image.config_digest.partition(":")[2]
            stored = store.create_image(
                config_hex, parent, names=[NAME],
                big_data={"manifest": blob(image.digest).read_bytes(),
                          "config": blob(image.config_digest).read_bytes()})
            print(f"created image {stored.id[:12]} named {NAME}")

            container = store.create_container(NAME, names=["tour"])
            root = store.mount(container.id)
            print(f"mounted container {container.id[:12]} at {root}")
            print(f"  /data holds {len(os.listdir(root / 'data'))} entries; "
                  f"keep.txt says {(root / 'data' / 'keep.txt').read_text().strip()!r}")
            (root / "data" / "hello.txt").write_text("written in the container\n")
            os.unlink(root / "data" / "keep.txt")
            print("  wrote /data/hello.txt and deleted /data/keep.txt")
            store.unmount(container.id)

            with store.diff(container.id) as diff, tarfile.open(fileobj=diff) as tar:
                changes = sorted(m.name for m in tar if not m.isdir())
            print(f"the container layer's diff: {', '.join(changes)}")

            report = check(store)
            print(f"check: {report}")

            store.delete_container(container.id)
            removed = store.delete_image(NAME)
            print(f"deleted the container, then the image and its {len(removed)} layers")
    print("tour finished")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except CriolibError as exc:
        print(f"storage tour failed: {exc}", file=sys.stderr)
        sys.exit(1)
