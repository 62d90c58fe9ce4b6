"""criolib's main job: pull an image from a local registry and run a networked pod.

1. Build the test images on this machine from busybox-static and start the real
   distribution registry on 127.0.0.1 with bearer-token auth; push the images.
2. Pull ``testbed/busybox:latest`` with criolib.image's ``copy_image`` into a
   criolib.storage Store (every blob verified while streaming).
3. Give two pods their own pinned network/ipc/uts namespaces with criolib.cni and
   attach them to a private bridge network (loopback + bridge + host-local) with the
   real CNI plugins.
4. In pod a, create a container on the image, mount its root filesystem, generate
   its config.json with criolib.runtime_spec (CRI-O's secure defaults, the image
   config, the pod's namespaces, CAP_NET_RAW for ping) and run it under runc and
   then crun: it prints its hostname and address and pings pod b.
5. Tear everything down: containers, pods, the bridge, ``net.ipv4.ip_forward``.

Next: criolib.conmon monitors the containers and criolib.service serves the CRI.
Run it with ``scripts/demo`` (which sets the machine up first). Needs root.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from criolib.cni import CNI, PodNamespaces, RuntimeConf, load_networks
from criolib.errors import CriolibError
from criolib.image import Credentials, Policy, SystemContext, copy_image
from criolib.runtime_spec import Generator, RuntimeClient, apply_image_config, check
from criolib.storage import Store
from criolib.testing import build_test_images, serving_test_images

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SUBNET = "10.252.0.0/24"  # private, only on the demo's own bridge


def _conflist(conf_dir: Path, tag: str, bridge: str, ipam_dir: Path) -> None:
    conf_dir.mkdir()
    (conf_dir / "10-demo.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": f"criolib-demo-{tag}",
        "plugins": [
            {"type": "loopback"},
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": SUBNET}]]}},
        ],
    }))


def main() -> int:  # noqa: PLR0915 - one story, told in order
    tag = secrets.token_hex(3)
    bridge = f"cni-demo{tag}"
    saved_forward = FORWARD.read_text()
    with tempfile.TemporaryDirectory(prefix="criolib-demo-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        images = build_test_images(tmp / "images")
        print(f"built {len(images.images)} test images in {time.monotonic() - t0:.2f} s "
              f"(OCI layout at {images.layout})")
        pods: list[PodNamespaces] = []
        attached: list[RuntimeConf] = []
        _conflist(tmp / "net.d", tag, bridge, tmp / "ipam")
        found = load_networks(tmp / "net.d")
        assert found.default is not None
        net = found.networks[found.default]
        cni = CNI(["/usr/lib/cni"], cache_dir=tmp / "cni-cache")
        with serving_test_images(images, auth="token") as registry, \
                Store(tmp / "storage", tmp / "run", driver="overlay") as store:
            try:
                print(f"registry on {registry.url} with token auth")
                user, password = registry.credentials or ("", "")
                ctx = SystemContext(insecure=True, store=store,
                                    credentials=Credentials(username=user, password=password))
                name = f"{registry.host}/{images['busybox'].reference}"
                t0 = time.monotonic()
                result = copy_image(f"docker://{name}", f"containers-storage:{name}",
                                    policy=Policy.insecure_accept_anything(), ctx=ctx)
                print(f"pulled {name} ({result.manifest_digest[:19]}…) into criolib.storage in "
                      f"{time.monotonic() - t0:.2f} s, verified")
                config = json.loads(store.big_data(store.image(name).id, "config"))

                addresses = []
                for pod_name in ("a", "b"):
                    pod = PodNamespaces.create(f"criolib-demo-{tag}-{pod_name}",
                                               hostname=f"pod-{pod_name}")
                    pods.append(pod)
                    rt = RuntimeConf.for_pod(f"criolib-demo-{tag}-{pod_name}",
                                             str(pod.path("net")), pod_namespace="demo",
                                             pod_name=f"pod-{pod_name}")
                    attached.append(rt)
                    ip = cni.add_network_list(net, rt).ips[0].address
                    addresses.append(ip.split("/")[0])
                    print(f"pod {pod_name}: {ip} on bridge {bridge}")

                container = store.create_container(store.image(name).id, names=["demo"])
                rootfs = store.mount(container.id)
                try:
                    bundle = store.container_dir(container.id)
                    gen = Generator().set_root(str(rootfs))
                    for kind, ns in (("network", "net"), ("ipc", "ipc"), ("uts", "uts")):
                        gen.add_namespace(kind, str(pods[0].path(ns)))
                    gen.add_capability("NET_RAW")  # ping; CRI-O's defaults leave it out
                    script = ("hostname; ip -4 -o addr show eth0 | awk '{print $4}'; "
                              f"ping -c 1 -W 2 {addresses[1]} | grep 'packets transmitted'")
                    apply_image_config(gen, config, rootfs=rootfs, command=["sh", "-c", script])
                    check(gen.config(), rootfs=rootfs)
                    gen.save(bundle)
                    for runtime_name in ("runc", "crun"):
                        with RuntimeClient(runtime_name) as runtime, \
                                tempfile.TemporaryFile() as out:
                            code = runtime.run(f"criolib-demo-{tag}-{runtime_name}", bundle,
                                               stdout=out, stderr=out)
                            out.seek(0)
                            print(f"--- container in pod a under {runtime_name} "
                                  f"{runtime.version()}, exit {code}")
                            print(out.read().decode(), end="")
                            if code != 0:
                                return 1
                finally:
                    store.unmount(container.id)
                    store.delete_container(container.id)
            finally:
                for rt in reversed(attached):
                    cni.del_network_list(net, rt)
                for pod in pods:
                    pod.remove()
                subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
                FORWARD.write_text(saved_forward)
    print("demo finished: pulled from the local registry, ran a container in a networked pod "
          "and tore it all down.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CriolibError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
