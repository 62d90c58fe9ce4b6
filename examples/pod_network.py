"""Two pods on one bridge network: pin their namespaces, ADD, ping, DEL.

Writes a conflist (loopback, then bridge with host-local IPAM on a private
subnet, 10.251.0.0/24, and a bridge name of its own) into a temp dir, loads it
with criolib.cni, pins each pod's net, ipc and uts namespaces as CRI-O's pinns
does, attaches both pods, pings the second from inside the first, and undoes
everything: DEL, namespaces, the bridge, and ``net.ipv4.ip_forward`` (which the
bridge plugin turns on). Nothing leaves the bridge. Needs root, the CNI plugins
in /usr/lib/cni and ping.

    .venv/bin/python examples/pod_network.py
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from criolib.cni import CNI, PodNamespaces, RuntimeConf, load_networks
from criolib.errors import CriolibError

FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def main() -> int:
    tag = secrets.token_hex(3)
    bridge = f"cni-ex{tag}"
    saved_forward = FORWARD.read_text()
    pods: list[tuple[str, PodNamespaces]] = []
    with tempfile.TemporaryDirectory(prefix="criolib-pod-network-") as tmp:
        conf_dir = Path(tmp) / "net.d"
        conf_dir.mkdir()
        (conf_dir / "10-example.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": f"example-{tag}",
                    "plugins": [
                        {"type": "loopback"},
                        {
                            "type": "bridge",
                            "bridge": bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": f"{tmp}/ipam",
                                "ranges": [[{"subnet": "10.251.0.0/24"}]],
                            },
                        },
                    ],
                }
            )
        )
        found = load_networks(conf_dir)
        assert found.default is not None
        net = found.networks[found.default]
        cni = CNI(["/usr/lib/cni"], cache_dir=Path(tmp) / "cache")
        attached: list[RuntimeConf] = []
        try:
            addresses = []
            for name in ("a", "b"):
                pod_id = f"example-{tag}-{name}"
                pod = PodNamespaces.create(pod_id, hostname=f"pod-{name}")
                pods.append((pod_id, pod))
                rt = RuntimeConf(
                    pod_id,
                    str(pod.path("net")),
                    "eth0",
                    args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", f"pod-{name}")],
                )
                result = cni.add_network_list(net, rt)
                attached.append(rt)
                addresses.append(result.ips[0].address)
                print(
                    f"pod {name}: {result.ips[0].address} via {result.ips[0].gateway} "
                    f"on {bridge} (netns {pod.path('net')})"
                )
            target = addresses[1].split("/")[0]
            pod_a = pods[0][1].net
            assert pod_a is not None
            with pod_a.enter():  # this thread, and the ping it forks, are in pod a
                ping = subprocess.run(
                    ["ping", "-c", "1", "-W", "2", target],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            summary = next(
                (line for line in ping.stdout.splitlines() if "received" in line),
                ping.stderr.strip(),
            )
            print(f"ping from pod a to pod b ({target}): {summary}")
            ok = ping.returncode == 0
        except CriolibError as exc:
            print(f"error: {exc}", file=sys.stderr)
            ok = False
        finally:
            for rt in reversed(attached):
                cni.del_network_list(net, rt)
            for _, pod in pods:
                pod.remove()
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
            FORWARD.write_text(saved_forward)
    print(
        f"deleted {len(attached)} attachments, removed {len(pods)} pods and bridge {bridge}"
        + (", ping worked" if ok else ", ping FAILED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
