"""criolib's main job, end to end, as far as the project has come.

Today: build the test images on this machine from busybox-static, start the real
distribution registry on 127.0.0.1 with bearer-token auth, push the images, and
read them back through the registry API as a client would.
It grows with the project: pull into criolib.storage, generate the spec with
criolib.runtime_spec, wire the pod with criolib.cni and run it under criolib.conmon.

Run it with ``scripts/demo`` (which sets the machine up first).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

from criolib.errors import CriolibError
from criolib.testing import build_test_images, serving_test_images

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="criolib-demo-") as tmp:
        t0 = time.monotonic()
        images = build_test_images(Path(tmp) / "images")
        print(f"built {len(images.images)} test images in {time.monotonic() - t0:.2f} s "
              f"(OCI layout at {images.layout})")
        t0 = time.monotonic()
        with serving_test_images(images, auth="token") as registry:
            print(f"registry on {registry.url} with token auth; pushed in "
                  f"{time.monotonic() - t0:.2f} s")
            with registry.client() as client:
                catalog = client.get("/v2/_catalog").json()["repositories"]
                print(f"catalog: {', '.join(catalog)}")
                for image in images:
                    resp = client.get(f"/v2/{image.repository}/manifests/{image.tag}",
                                      headers={"Accept": ACCEPT})
                    resp.raise_for_status()
                    digest = f"sha256:{hashlib.sha256(resp.content).hexdigest()}"
                    ok = "verified" if digest == image.digest else "DIGEST MISMATCH"
                    print(f"  {registry.host}/{image.reference:<34} {digest[:19]}… {ok}")
                    if digest != image.digest:
                        return 1
            assert registry.token_server is not None
            print(f"token server issued {registry.token_server.tokens_issued} tokens")
    print("demo finished: the test bed works; pods arrive with criolib.runtime_spec, "
          "storage, image, cni and conmon.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CriolibError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
