"""criolib's main job, end to end, as far as the project has come.

1. Build the test images on this machine from busybox-static and start the real
   distribution registry on 127.0.0.1 with bearer-token auth; push the images.
2. Pull ``testbed/busybox:latest`` from it into a criolib.storage Store: manifest,
   config and layers, each verified against its digest while streaming. (The HTTP
   requests go through the test bed's registry client until criolib.image lands;
   the layers are applied by criolib.storage.)
3. Create a container on the image, mount its root filesystem, generate its
   config.json with criolib.runtime_spec (CRI-O's secure defaults plus the image
   config) and run it under runc and then crun.

Next: criolib.image pulls, criolib.cni wires the pod's network, criolib.conmon
monitors it. Run it with ``scripts/demo`` (which sets the machine up first).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from criolib.errors import CriolibError
from criolib.runtime_spec import Generator, RuntimeClient, apply_image_config, check
from criolib.storage import Store
from criolib.testing import build_test_images, serving_test_images

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
])
SCRIPT = "echo hello from criolib; id; hostname; cat /proc/self/cgroup | head -1"


class DigestError(CriolibError):
    """A blob from the registry did not match its digest."""


def fetch(client: httpx.Client, repo: str, digest: str, sink: Path) -> Path:
    """Stream blob ``digest`` of ``repo`` into ``sink``, verifying it on the way."""
    sha = hashlib.sha256()
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as resp, sink.open("wb") as f:
        resp.raise_for_status()
        for chunk in resp.iter_bytes(1 << 20):
            sha.update(chunk)
            f.write(chunk)
    if f"sha256:{sha.hexdigest()}" != digest:
        raise DigestError(f"blob {digest} of {repo}: got sha256:{sha.hexdigest()}")
    return sink


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="criolib-demo-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        images = build_test_images(tmp / "images")
        print(f"built {len(images.images)} test images in {time.monotonic() - t0:.2f} s "
              f"(OCI layout at {images.layout})")
        with serving_test_images(images, auth="token") as registry, \
                registry.client() as client, \
                Store(tmp / "storage", tmp / "run", driver="overlay") as store:
            print(f"registry on {registry.url} with token auth, "
                  f"{len(client.get('/v2/_catalog').json()['repositories'])} repositories")
            image = images["busybox"]
            t0 = time.monotonic()
            resp = client.get(f"/v2/{image.repository}/manifests/{image.tag}",
                              headers={"Accept": ACCEPT})
            resp.raise_for_status()
            manifest_digest = f"sha256:{hashlib.sha256(resp.content).hexdigest()}"
            if manifest_digest != image.digest:
                raise DigestError(f"manifest of {image.reference}: {manifest_digest}")
            manifest = json.loads(resp.content)
            config_path = fetch(client, image.repository, manifest["config"]["digest"],
                                tmp / "config.json")
            config = json.loads(config_path.read_bytes())
            parent = None
            for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"],
                                      strict=True):
                blob = fetch(client, image.repository, layer["digest"], tmp / "layer")
                with blob.open("rb") as f:
                    parent = store.put_layer(f, parent, expected_diff_id=diff_id,
                                             expected_digest=layer["digest"]).id
            image_id = manifest["config"]["digest"].partition(":")[2]
            store.create_image(image_id, parent, names=[f"{registry.host}/{image.reference}"],
                               digest=manifest_digest,
                               big_data={"manifest": resp.content,
                                         "config": config_path.read_bytes()})
            print(f"pulled {registry.host}/{image.reference} ({manifest_digest[:19]}…) into "
                  f"criolib.storage in {time.monotonic() - t0:.2f} s, verified")

            container = store.create_container(image_id, names=["demo"])
            rootfs = store.mount(container.id)
            try:
                bundle = store.container_dir(container.id)
                gen = Generator().set_root(str(rootfs)).set_hostname("criolib-demo")
                apply_image_config(gen, config, rootfs=rootfs, command=["sh", "-c", SCRIPT],
                                   user="tester")
                check(gen.config(), rootfs=rootfs)
                gen.save(bundle)
                for name in ("runc", "crun"):
                    with RuntimeClient(name) as runtime, tempfile.TemporaryFile() as out:
                        code = runtime.run(f"criolib-demo-{name}", bundle, stdout=out,
                                           stderr=out)
                        out.seek(0)
                        print(f"--- container under {name} {runtime.version()}, exit {code}")
                        print(out.read().decode(), end="")
                        if code != 0:
                            return 1
            finally:
                store.unmount(container.id)
                store.delete_container(container.id)
                store.delete_image(image_id)
    print("demo finished: pulled, stored, mounted and ran; networked pods arrive with "
          "criolib.cni and criolib.conmon.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CriolibError, httpx.HTTPError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
