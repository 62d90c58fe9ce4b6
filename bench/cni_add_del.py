"""ADD + DEL of a bridge chain through criolib against the plugins invoked by hand.

The chain is the one CRI-O ships for a bridge network: loopback, bridge with
host-local IPAM, portmap (with a port mapping), firewall, tuning. N times each
(default 50, ``python bench/cni_add_del.py N``), interleaved in random order:

criolib
    ``CNI.add_network_list`` + ``CNI.del_network_list``: plugin lookup, stdin
    built per plugin, the audited exec helper, result parsing and conversion,
    the result cache (atomic write, fsync) and its per-attachment lock.
direct
    the floor: a minimal loop with ``subprocess.run`` feeding each plugin the same
    stdin and environment, chaining ``prevResult`` by hand, DEL in reverse with
    the last result.

Prints medians and means in ms and the ratio criolib / direct (target < 1.10).
The cache and host-local's data dir live on a tmpfs mounted for the run
(MACHINE-NOTES.md). Needs root; removes its namespace, bridge, iptables chains
and restores ``net.ipv4.ip_forward``. Traffic never leaves the bridge: nothing is sent.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from criolib.cni import CNI, RuntimeConf
from criolib.testing import drop_new_iptables_chains, iptables_chains

PLUGIN_DIR = Path("/usr/lib/cni")
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


@contextlib.contextmanager
def testbed() -> Iterator[tuple[Path, str, str]]:
    """A tmpfs, a netns and the name of a bridge; everything undone on exit."""
    tag = secrets.token_hex(3)
    where = Path(tempfile.mkdtemp(prefix="criolib-bench-cni-"))
    netns, bridge = f"crlbench-{tag}", f"cni-crlb{tag}"
    saved_forward, saved_chains = FORWARD.read_text(), iptables_chains()
    sh("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where))
    try:
        sh("ip", "netns", "add", netns)
        yield where, netns, bridge
    finally:
        sh("ip", "netns", "del", netns, check=False)
        sh("ip", "link", "del", bridge, check=False)
        drop_new_iptables_chains(saved_chains)
        FORWARD.write_text(saved_forward)
        sh("umount", str(where), check=False)
        where.rmdir()


def network(where: Path, bridge: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {"type": "loopback"},
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(where / "ipam"),
                    "ranges": [[{"subnet": "10.252.0.0/24"}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}},
        ],
    }


CAPS = {
    "portMappings": [
        {"hostPort": 41080, "containerPort": 80, "protocol": "tcp", "hostIP": "10.252.0.1"}
    ]
}


def direct(net: dict[str, Any], netns_path: str, container_id: str) -> None:
    """ADD then DEL, the plugins run by hand with the stdin and env libcni would give."""
    base = {
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "",
        "CNI_PATH": str(PLUGIN_DIR),
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }

    def call(command: str, plugin: dict[str, Any], prev: dict[str, Any] | None) -> bytes:
        conf = dict(plugin, name=net["name"], cniVersion=net["cniVersion"])
        if prev is not None:
            conf["prevResult"] = prev
        if plugin.get("capabilities", {}).get("portMappings"):
            conf["runtimeConfig"] = CAPS
        done = subprocess.run(
            [str(PLUGIN_DIR / plugin["type"])],
            input=json.dumps(conf).encode(),
            env=dict(base, CNI_COMMAND=command),
            capture_output=True,
            check=True,
        )
        return done.stdout

    prev: dict[str, Any] | None = None
    for plugin in net["plugins"]:
        out = call("ADD", plugin, prev)
        if out.strip():
            prev = json.loads(out)
    for plugin in reversed(net["plugins"]):
        call("DEL", plugin, prev)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with testbed() as (where, netns, bridge):
        net = network(where, bridge)
        path = f"/var/run/netns/{netns}"
        cni = CNI([PLUGIN_DIR], cache_dir=where / "cache")

        def via_criolib(container_id: str) -> None:
            rt = RuntimeConf(container_id, path, "eth0", capability_args=CAPS)
            cni.add_network_list(net, rt)
            cni.del_network_list(net, rt)

        runs: dict[str, list[float]] = {"criolib": [], "direct": []}
        via_criolib("warmup")  # creates the bridge and the plugins' chains
        direct(net, path, "warmup-direct")
        for i in range(n):
            order = [("criolib", via_criolib), ("direct", lambda c: direct(net, path, c))]
            random.shuffle(order)
            for label, fn in order:
                start = time.perf_counter()
                fn(f"{label}-{i}")
                runs[label].append((time.perf_counter() - start) * 1000)
        leftovers = list((where / "cache" / "results").iterdir())
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"ADD+DEL of loopback, bridge/host-local, portmap, firewall, tuning; N={n}")
    for label, values in runs.items():
        print(f"  {label:8} median {med[label]:7.1f} ms   mean {statistics.fmean(values):7.1f} ms")
    print(
        f"  ratio criolib / direct (medians): {med['criolib'] / med['direct']:.3f}  (target < 1.10)"
    )
    return verdict(med["criolib"] / med["direct"], leftovers)


#: The ratio criolib / direct (medians) the benchmark must stay under.
TARGET_RATIO = 1.10


def verdict(ratio: float, leftovers: list[Path]) -> int:
    """The exit status: 1 when the ratio misses the target or cache entries leaked."""
    status = 0
    if ratio >= TARGET_RATIO:
        print(f"  FAIL: ratio {ratio:.3f} >= {TARGET_RATIO}")
        status = 1
    if leftovers:
        print(f"  warning: cache entries left: {leftovers}")
        status = 1
    return status

if __name__ == "__main__":
    sys.exit(main())
