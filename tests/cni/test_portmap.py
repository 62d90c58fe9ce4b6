"""Port mappings through the real portmap plugin (CONVENTIONS.md "Port mappings").

A TCP server runs in a pod namespace; the host reaches it through a mapping whose
``hostIP`` is the bridge gateway, an address inside the test's private subnet, so
no traffic leaves the bridge. After DEL the port is closed and the DNAT rules gone.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time

from criolib.cni import RuntimeConf
from tests.cni.test_libcni import Bed, bed, sh

__all__ = ["bed"]  # the fixture, shared with test_libcni

SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from the pod\\n")
    c.close()
"""


def _fetch(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=2) as conn:
        return conn.recv(100)


def _nat_rules_for(port: int) -> list[str]:
    return [
        line
        for line in sh("iptables-save", "-t", "nat").splitlines()
        if f"--dport {port}" in line or f":{port}" in line
    ]


def test_host_reaches_pod_through_port_mapping(bed: Bed) -> None:
    name, path = bed.make_netns()
    gateway = f"{bed.prefix}1"
    port = 40000 + secrets.randbelow(1000)
    rt = RuntimeConf(
        "pm",
        path,
        "eth0",
        capability_args={
            "portMappings": [
                {"hostPort": port, "containerPort": 8080, "protocol": "tcp", "hostIP": gateway}
            ]
        },
    )
    result = bed.cni.add_network_list(bed.net, rt)
    assert result.ips[0].gateway == gateway
    server = subprocess.Popen(
        ["ip", "netns", "exec", name, sys.executable, "-c", SERVER], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == b"listening\n"
        assert _fetch(gateway, port) == b"hello from the pod\n"
        assert _nat_rules_for(port)
        bed.cni.del_network_list(bed.net, RuntimeConf("pm", path, "eth0"))
        assert _nat_rules_for(port) == []
        deadline = time.monotonic() + 2
        while True:
            try:
                _fetch(gateway, port)
            except OSError:
                break
            assert time.monotonic() < deadline, "the mapping still answers after DEL"
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
