"""Running network lists (SPEC.md "Execution of Network Configurations").

The first half drives :class:`CNI` with a recording executor; the second with the
real reference plugins (root): bridge + host-local + portmap + firewall + tuning.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from criolib.cni import CNI, CNIError, ConfigError, PluginError, Result, ResultError, RuntimeConf
from criolib.testing import (
    drop_new_iptables_chains,
    iptables_chains,
    require_binaries,
    require_cni_plugins,
    require_root,
)


def _addr(plugin_type: str) -> str:
    """The address the fake plugin ``plugin_type`` adds to the result."""
    return f"10.0.0.{ord(plugin_type[0])}/32"


@attrs.define
class Recorder:
    """A fake PluginExecutor: records calls, fails a chosen plugin type."""

    fail: str | None = None
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = attrs.field(factory=list)

    def find_plugin(self, plugin_type: str, dirs: Sequence[str | os.PathLike[str]]) -> Path:
        return Path("/fake") / plugin_type

    def exec_plugin(
        self, path: Path, env: Mapping[str, str], stdin: bytes, *, timeout: float, what: str
    ) -> bytes:
        conf = json.loads(stdin)
        self.calls.append((env["CNI_COMMAND"], path.name, conf, dict(env)))
        if path.name == self.fail and env["CNI_COMMAND"] == "ADD":
            raise PluginError(f"{what} failed", code=11, msg="nope")
        if env["CNI_COMMAND"] != "ADD":
            return b""
        prev = conf.get("prevResult", {"cniVersion": conf["cniVersion"], "ips": []})
        prev = dict(prev, ips=[*prev.get("ips", []), {"address": _addr(path.name)}])
        return json.dumps(prev).encode()


NET = {
    "cniVersion": "1.0.0",
    "name": "n1",
    "plugins": [
        {"type": "a"},
        {"type": "b", "capabilities": {"portMappings": True}},
        {"type": "c"},
    ],
}
RT = RuntimeConf(
    "ctr1",
    "/proc/self/ns/net",
    "eth0",
    args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
    capability_args={"portMappings": [{"hostPort": 1}], "mac": "x"},
)


def test_add_chains_prev_result_and_runtime_config(tmp_path: Path) -> None:
    rec = Recorder()
    result = CNI(cache_dir=tmp_path, executor=rec).add_network_list(NET, RT)
    assert [c[1] for c in rec.calls] == ["a", "b", "c"]
    assert isinstance(result, Result) and result.cni_version == "1.0.0"
    assert [ip.address for ip in result.ips] == [_addr("a"), _addr("b"), _addr("c")]
    a, b, c = (call[2] for call in rec.calls)
    assert "prevResult" not in a and b["prevResult"]["ips"] == [{"address": _addr("a")}]
    assert b["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert "runtimeConfig" not in a and "runtimeConfig" not in c
    assert all(call[2]["name"] == "n1" and call[2]["cniVersion"] == "1.0.0" for call in rec.calls)
    assert rec.calls[0][3]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    cached = json.loads((tmp_path / "results" / "n1-ctr1-eth0").read_bytes())
    assert cached["kind"] == "cniCacheV1" and cached["result"] == result.to_dict()
    assert json.loads(base64.b64decode(cached["config"])) == NET
    assert (cached["containerId"], cached["ifName"], cached["networkName"]) == (
        "ctr1",
        "eth0",
        "n1",
    )
    assert cached["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]]


def test_failed_add_rolls_back_in_reverse(tmp_path: Path) -> None:
    rec = Recorder(fail="c")
    with pytest.raises(PluginError):
        CNI(cache_dir=tmp_path, executor=rec).add_network_list(NET, RT)
    assert [(c[0], c[1]) for c in rec.calls] == [
        ("ADD", "a"),
        ("ADD", "b"),
        ("ADD", "c"),
        ("DEL", "c"),
        ("DEL", "b"),
        ("DEL", "a"),
    ]
    assert not (tmp_path / "results" / "n1-ctr1-eth0").exists()
    assert list((tmp_path / "locks").iterdir()) == []


def test_del_uses_cache_reverse_and_removes_it(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    result = cni.add_network_list(NET, RT)
    rec.calls.clear()
    cni.del_network_list(NET, RT)
    assert [c[1] for c in rec.calls] == ["c", "b", "a"]
    assert all(c[2]["prevResult"] == result.to_dict() for c in rec.calls)
    assert not (tmp_path / "results" / "n1-ctr1-eth0").exists()
    rec.calls.clear()
    cni.del_network_list(NET, attrs.evolve(RT, netns="/nonexistent/netns"))
    assert all("prevResult" not in c[2] and c[3]["CNI_NETNS"] == "" for c in rec.calls)


def test_check_needs_cache_and_honours_disable_check(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    with pytest.raises(Exception, match="no cached result"):
        cni.check_network_list(NET, RT)
    cni.check_network_list(dict(NET, disableCheck=True), RT)
    cni.add_network_list(NET, RT)
    rec.calls.clear()
    cni.check_network_list(NET, RT)
    assert [(c[0], c[1]) for c in rec.calls] == [("CHECK", "a"), ("CHECK", "b"), ("CHECK", "c")]


def test_gc_deletes_stale_and_passes_valid_attachments(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    net = dict(NET, cniVersion="1.1.0")
    cni.add_network_list(net, RT)
    cni.add_network_list(net, attrs.evolve(RT, container_id="ctr2"))
    rec.calls.clear()
    cni.gc(net, [("ctr2", "eth0")])
    dels = [c for c in rec.calls if c[0] == "DEL"]
    assert {c[3]["CNI_CONTAINERID"] for c in dels} == {"ctr1"}
    gcs = [c for c in rec.calls if c[0] == "GC"]
    assert [c[1] for c in gcs] == ["a", "b", "c"]
    assert gcs[0][2]["cni.dev/valid-attachments"] == [{"containerID": "ctr2", "ifname": "eth0"}]
    assert set(gcs[0][3]) == {"CNI_COMMAND", "CNI_PATH", "PATH"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["n1-ctr2-eth0"]


def test_status_only_for_1_1_0(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    cni.status(NET)
    assert rec.calls == []
    cni.status(dict(NET, cniVersion="1.1.0"))
    assert [c[0] for c in rec.calls] == ["STATUS"] * 3


def test_single_conf_is_a_list_of_one(tmp_path: Path) -> None:
    rec = Recorder()
    CNI(cache_dir=tmp_path, executor=rec).add_network_list(
        {"cniVersion": "1.0.0", "name": "single", "type": "a"}, RT
    )
    assert [c[1] for c in rec.calls] == ["a"]


@attrs.define
class Printer(Recorder):
    """A fake executor whose last plugin prints a fixed document."""

    printed: dict[str, Any] = attrs.field(factory=dict)

    def exec_plugin(
        self, path: Path, env: Mapping[str, str], stdin: bytes, *, timeout: float, what: str
    ) -> bytes:
        out = super().exec_plugin(path, env, stdin, timeout=timeout, what=what)
        if path.name == "c" and env["CNI_COMMAND"] == "ADD":
            return json.dumps(self.printed).encode()
        return out


def test_add_converts_the_result_to_the_list_version(tmp_path: Path) -> None:
    printed = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.2/24"}]}
    result = CNI(cache_dir=tmp_path, executor=Printer(printed=printed)).add_network_list(NET, RT)
    assert result.cni_version == "1.0.0" and result.ips[0].address == "10.1.0.2/24"
    assert result.to_dict() == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}
    cached = json.loads((tmp_path / "results" / "n1-ctr1-eth0").read_bytes())
    assert cached["result"] == printed  # the cache keeps what the plugin printed


def test_add_with_an_invalid_result_rolls_back(tmp_path: Path) -> None:
    rec = Printer(printed={"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]})
    with pytest.raises(ResultError, match="not-an-ip"):
        CNI(cache_dir=tmp_path, executor=rec).add_network_list(NET, RT)
    assert [(c[0], c[1]) for c in rec.calls][3:] == [("DEL", "c"), ("DEL", "b"), ("DEL", "a")]
    assert not (tmp_path / "results" / "n1-ctr1-eth0").exists()


SLOW_PLUGIN = """#!/bin/sh
cat >/dev/null
echo "start $CNI_COMMAND $$" >>"$LOG"
sleep 0.3
echo "end $CNI_COMMAND $$" >>"$LOG"
[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}'
exit 0
"""

WORKER = """
import sys
from pathlib import Path
from criolib.cni import CNI, RuntimeConf
plugins, cache, verb = sys.argv[1:]
cni = CNI([plugins], cache_dir=cache)
net = {"cniVersion": "1.0.0", "name": "locked", "plugins": [{"type": "slow"}]}
rt = RuntimeConf("ctr", "/proc/self/ns/net", "eth0")
cni.add_network_list(net, rt) if verb == "add" else cni.del_network_list(net, rt)
"""


def test_two_processes_on_one_attachment_take_turns(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    log = tmp_path / "log"
    # plugins get an explicit environment, so the log path is written into the script
    (plugins / "slow").write_text(SLOW_PLUGIN.replace('"$LOG"', shlex.quote(str(log))))
    (plugins / "slow").chmod(0o755)
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(plugins), str(tmp_path / "c"), verb])
        for verb in ("add", "del", "add", "del")
    ]
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0, 0]
    lines = log.read_text().split("\n")[:-1]
    assert len(lines) == 8
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert start.replace("start", "end") == end, lines
    if lines[-1].startswith("end DEL"):  # a successful DEL drops the lock file
        assert not list((tmp_path / "c" / "locks").iterdir())


# -- the real plugins ---------------------------------------------------------------


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


@attrs.define
class Bed:
    """One test network: its conflist, bridge, subnet, plugin and data dirs."""

    tag: str
    net: dict[str, Any]
    bridge: str
    prefix: str
    ipam_dir: Path
    cni: CNI
    plugin_dir: Path
    netns: list[str] = attrs.field(factory=list)
    seen: set[str] = attrs.field(factory=set)

    def make_netns(self) -> tuple[str, str]:
        name = f"crl-{self.tag}-{len(self.netns)}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return name, f"/var/run/netns/{name}"

    def note_links(self) -> None:
        """Remember the links attached to the test's bridge now (its veths)."""
        out = sh("ip", "-o", "link", "show", "master", self.bridge, check=False)
        self.seen.update(_link_names(out))

    def host_state(self) -> tuple[list[str], list[str], list[str]]:
        """The test's own host state: its bridge and veths, rules and IPAM files.

        Other links, rules and files on the host are not looked at, so whatever
        else runs there cannot make the comparison fail.
        """
        self.note_links()
        links = sorted(n for n in _link_names(sh("ip", "-o", "link"))
                       if n == self.bridge or n in self.seen)
        rules = sorted(
            line
            for line in sh("iptables-save").splitlines()
            if self.net["name"] in line or self.prefix in line
        )
        files = sorted(
            p.name
            for p in self.ipam_dir.rglob("*")
            if p.is_file() and p.name not in {"lock", "last_reserved_ip.0"}
        )
        return links, rules, files


def _link_names(ip_o_link: str) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0] for line in ip_o_link.splitlines()
            if line.count(":") >= 2]


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    require_root()
    plugin_dir = require_cni_plugins(
        "bridge", "host-local", "loopback", "portmap", "firewall", "tuning"
    )
    tag = secrets.token_hex(3)
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    saved_forward = forward.read_text()
    chains = iptables_chains()
    third = 1 + secrets.randbelow(250)
    prefix = f"10.250.{third}."
    ipam_dir = tmp_path / "ipam"
    net = {
        "cniVersion": "1.0.0",
        "name": f"crltest-{tag}",
        "plugins": [
            {"type": "loopback"},
            {
                "type": "bridge",
                "bridge": f"cni-crl{tag}",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": f"{prefix}0/24"}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}},
        ],
    }
    b = Bed(
        tag=tag,
        net=net,
        bridge=f"cni-crl{tag}",
        prefix=prefix,
        ipam_dir=ipam_dir,
        cni=CNI([plugin_dir], cache_dir=tmp_path / "cache"),
        plugin_dir=plugin_dir,
    )
    try:
        yield b
    finally:
        for name in b.netns:
            sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", b.bridge, check=False)
        drop_new_iptables_chains(chains)
        forward.write_text(saved_forward)


def test_two_pods_get_addresses_and_ping(bed: Bed) -> None:
    require_binaries("ping")  # Debian package iputils-ping
    before = bed.host_state()
    (na, pa), (nb, pb) = bed.make_netns(), bed.make_netns()
    ra = bed.cni.add_network_list(bed.net, RuntimeConf("ca", pa, "eth0"))
    rb = bed.cni.add_network_list(
        bed.net,
        RuntimeConf(
            "cb",
            pb,
            "eth0",
            capability_args={
                "portMappings": [
                    {
                        "hostPort": 38000 + secrets.randbelow(1000),
                        "containerPort": 80,
                        "protocol": "tcp",
                    }
                ]
            },
        ),
    )
    ip_a = ra.ips[0].address.split("/")[0]
    ip_b = rb.ips[0].address.split("/")[0]
    assert ip_a.startswith(bed.prefix) and ip_b.startswith(bed.prefix)
    sh("ip", "netns", "exec", na, "ping", "-c1", "-W1", ip_b)
    sh("ip", "netns", "exec", nb, "ping", "-c1", "-W1", ip_a)
    assert _tcp_roundtrip(server_ns=nb, client_ns=na, ip=ip_b) == b"pong"
    assert _tcp_roundtrip(server_ns=na, client_ns=nb, ip=ip_a) == b"pong"
    bed.cni.check_network_list(bed.net, RuntimeConf("ca", pa, "eth0"))
    assert (bed.cni.cache.path(bed.net["name"], "ca", "eth0")).exists()
    bed.cni.del_network_list(bed.net, RuntimeConf("ca", pa, "eth0"))
    bed.cni.del_network_list(bed.net, RuntimeConf("cb", pb, "eth0"))
    after = bed.host_state()
    assert after[0] in (before[0], sorted([*before[0], bed.bridge]))
    assert after[1:] == before[1:]
    assert not list(bed.cni.cache.dir.iterdir())


def test_del_is_idempotent(bed: Bed) -> None:
    name, path = bed.make_netns()
    rt = RuntimeConf("c1", path, "eth0")
    bed.cni.add_network_list(bed.net, rt)
    bed.cni.del_network_list(bed.net, rt)
    bed.cni.del_network_list(bed.net, rt)
    bed.cni.del_network_list(bed.net, RuntimeConf("never-added", path, "eth0"))
    bed.cni.add_network_list(bed.net, rt)
    sh("ip", "netns", "del", name)
    bed.cni.del_network_list(bed.net, rt)
    assert bed.host_state()[2] == []
    assert not list(bed.cni.cache.dir.iterdir())


def test_failing_third_plugin_leaves_nothing(bed: Bed, tmp_path: Path) -> None:
    fail_dir = tmp_path / "plugins"
    fail_dir.mkdir()
    script = fail_dir / "crlfail"
    script.write_text(
        '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion":"1.0.0","code":11,"msg":"refused","details":"x"}\''
        "\nexit 1\n"
    )
    script.chmod(0o755)
    net = dict(bed.net, plugins=[*bed.net["plugins"][:2], {"type": "crlfail"}])
    cni = CNI([fail_dir, bed.plugin_dir], cache_dir=bed.cni.cache.dir.parent)
    before = bed.host_state()
    _, path = bed.make_netns()
    with pytest.raises(PluginError, match="refused") as info:
        cni.add_network_list(net, RuntimeConf("c1", path, "eth0"))
    assert info.value.code == 11
    after = bed.host_state()
    assert [n for n in after[0] if n.startswith("veth")] == [
        n for n in before[0] if n.startswith("veth")
    ]
    assert after[1:] == before[1:]
    assert not cni.cache.path(net["name"], "c1", "eth0").exists()
    assert list(cni.cache.lock_dir.iterdir()) == []


def test_twenty_cycles_leave_nothing(bed: Bed) -> None:
    _, path = bed.make_netns()
    rt = RuntimeConf(
        "cycle",
        path,
        "eth0",
        capability_args={
            "portMappings": [
                {
                    "hostPort": 39000 + secrets.randbelow(1000),
                    "containerPort": 80,
                    "protocol": "tcp",
                }
            ]
        },
    )
    bed.cni.add_network_list(bed.net, rt)
    bed.cni.del_network_list(bed.net, rt)
    before = bed.host_state()  # the bridge exists now
    for _ in range(20):
        bed.cni.add_network_list(bed.net, rt)
        bed.note_links()
        bed.cni.del_network_list(bed.net, rt)
    assert bed.seen  # the veths were seen on the bridge, and are gone now
    assert bed.host_state() == before
    assert list(bed.cni.cache.lock_dir.iterdir()) == []


def test_version_of_a_real_plugin(bed: Bed) -> None:
    doc = bed.cni.version("bridge")
    assert "1.0.0" in doc["supportedVersions"]


_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
s.settimeout(10); c, _ = s.accept(); c.recv(16); c.sendall(b"pong"); c.close()
"""
_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"ping"); sys.stdout.buffer.write(c.recv(16))
"""


def _tcp_roundtrip(*, server_ns: str, client_ns: str, ip: str) -> bytes:
    """A TCP connection from inside ``client_ns`` to a server inside ``server_ns``."""
    import subprocess
    import sys

    port = str(20000 + secrets.randbelow(10000))
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", _SERVER,
                               ip, port], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        out = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", _CLIENT,
                              ip, port], capture_output=True, timeout=15, check=True).stdout
        assert server.wait(15) == 0
        return out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_runtime_conf_for_a_pod_carries_crio_cni_args() -> None:
    rt = RuntimeConf.for_pod("sandbox1", "/var/run/netns/p", pod_namespace="default",
                             pod_name="web", pod_uid="uid-1")
    assert rt.cni_args() == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                             "K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1")
    assert (rt.container_id, rt.netns, rt.ifname) == ("sandbox1", "/var/run/netns/p", "eth0")
    no_uid = RuntimeConf.for_pod("s2", "/p", pod_namespace="ns", pod_name="n")
    assert no_uid.cni_args().endswith(";K8S_POD_INFRA_CONTAINER_ID=s2;K8S_POD_UID=")


@attrs.define
class FlakyDel(Recorder):
    """Fails ADD of ``fail`` and the first ``del_failures`` DELs of ``flaky``."""

    flaky: str = "b"
    del_failures: int = 1

    def exec_plugin(
        self, path: Path, env: Mapping[str, str], stdin: bytes, *, timeout: float, what: str
    ) -> bytes:
        if env["CNI_COMMAND"] == "DEL" and path.name == self.flaky and self.del_failures:
            self.del_failures -= 1
            self.calls.append(("DEL", path.name, json.loads(stdin), dict(env)))
            raise PluginError(f"{what} failed", code=11, msg="busy")
        return super().exec_plugin(path, env, stdin, timeout=timeout, what=what)


def test_failed_rollback_keeps_the_cache_entry_for_del_and_gc(tmp_path: Path) -> None:
    rec = FlakyDel(fail="c")
    cni = CNI(cache_dir=tmp_path, executor=rec)
    with pytest.raises(PluginError, match=r"CNI plugin c \(ADD\)"):
        cni.add_network_list(NET, RT)
    entry = cni.cache.get("n1", "ctr1", "eth0")
    assert entry is not None  # the rollback DEL of b failed: a later DEL finishes it
    assert entry.result is not None
    assert [ip["address"] for ip in entry.result["ips"]] == [_addr("a"), _addr("b")]
    assert entry.capability_args == RT.capability_args
    rec.calls.clear()
    cni.gc(NET, [])
    assert [(c[0], c[1]) for c in rec.calls] == [("DEL", "c"), ("DEL", "b"), ("DEL", "a")]
    assert rec.calls[1][2]["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    assert cni.cache.get("n1", "ctr1", "eth0") is None
    assert list((tmp_path / "locks").iterdir()) == []


def test_non_json_plugin_output_is_a_result_error(tmp_path: Path) -> None:
    @attrs.define
    class Garbage(Recorder):
        def exec_plugin(
            self, path: Path, env: Mapping[str, str], stdin: bytes, *, timeout: float, what: str
        ) -> bytes:
            out = super().exec_plugin(path, env, stdin, timeout=timeout, what=what)
            return b"not json" if path.name == "b" and env["CNI_COMMAND"] == "ADD" else out

    rec = Garbage()
    with pytest.raises(ResultError, match=r"CNI plugin b of network n1") as info:
        CNI(cache_dir=tmp_path, executor=rec).add_network_list(NET, RT)
    assert isinstance(info.value, ValueError)
    assert [(c[0], c[1]) for c in rec.calls][2:] == [("DEL", "b"), ("DEL", "a")]
    assert not (tmp_path / "results" / "n1-ctr1-eth0").exists()


def test_dict_networks_are_validated_and_pick_cni_versions(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    only_versions = {"cniVersions": ["0.4.0", "1.0.0", "9.9.9"], "name": "v",
                     "plugins": [{"type": "a"}]}
    result = cni.add_network_list(only_versions, RT)
    assert result.cni_version == "1.0.0"
    assert rec.calls[0][2]["cniVersion"] == "1.0.0"
    with pytest.raises(ConfigError, match=r"^<dict>: invalid network name"):
        cni.add_network_list(dict(NET, name="bad name"), RT)
    with pytest.raises(ConfigError, match=r"^<dict>: unsupported cniVersion"):
        cni.add_network_list(dict(NET, cniVersion="7.0.0"), RT)


def test_gc_deletes_with_the_config_the_attachment_was_added_with(tmp_path: Path) -> None:
    rec = Recorder()
    cni = CNI(cache_dir=tmp_path, executor=rec)
    old = dict(NET, cniVersion="1.1.0")
    cni.add_network_list(old, RT)
    new = dict(old, plugins=[{"type": "x"}])  # the config changed since the ADD
    rec.calls.clear()
    cni.gc(new, [])
    dels = [(c[1], c[2]["cniVersion"]) for c in rec.calls if c[0] == "DEL"]
    assert dels == [("c", "1.1.0"), ("b", "1.1.0"), ("a", "1.1.0")]
    assert [c[1] for c in rec.calls if c[0] == "GC"] == ["x"]
    assert cni.cache.get("n1", "ctr1", "eth0") is None


def test_del_and_check_of_an_unknown_attachment_leave_no_lock(tmp_path: Path) -> None:
    cni = CNI(cache_dir=tmp_path, executor=Recorder())
    cni.del_network_list(NET, attrs.evolve(RT, container_id="nobody"))
    with pytest.raises(CNIError, match="no cached result"):
        cni.check_network_list(NET, attrs.evolve(RT, container_id="nobody"))
    assert list((tmp_path / "locks").iterdir()) == []
    cni.add_network_list(NET, RT)  # a live attachment keeps its lock file
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["n1-ctr1-eth0"]
    cni.del_network_list(NET, RT)
    assert list((tmp_path / "locks").iterdir()) == []


def test_check_gets_the_cached_result_in_the_list_version(tmp_path: Path) -> None:
    printed = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.2/24"}]}
    rec = Printer(printed=printed)
    cni = CNI(cache_dir=tmp_path, executor=rec)
    cni.add_network_list(NET, RT)
    assert cni.cache.get("n1", "ctr1", "eth0").result == printed  # type: ignore[union-attr]
    rec.calls.clear()
    cni.check_network_list(NET, RT)
    prevs = [c[2]["prevResult"] for c in rec.calls]
    assert prevs == [{"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}] * 3


def test_capability_args_reach_only_plugins_declaring_them(tmp_path: Path) -> None:
    rec = Recorder()
    net = {"cniVersion": "1.0.0", "name": "caps", "plugins": [
        {"type": "ipam-ish", "capabilities": {"ipRanges": True}},
        {"type": "bw", "capabilities": {"bandwidth": True, "dns": False}},
        {"type": "dnsy", "capabilities": {"dns": True}},
        {"type": "none"},
    ]}
    caps = {"ipRanges": [[{"subnet": "10.9.0.0/24"}]], "bandwidth": {"ingressRate": 1000},
            "dns": {"servers": ["10.9.0.10"]}}
    CNI(cache_dir=tmp_path, executor=rec).add_network_list(
        net, RuntimeConf("ctr", "/proc/self/ns/net", "eth0", capability_args=caps))
    runtime = {c[1]: c[2].get("runtimeConfig") for c in rec.calls}
    assert runtime == {"ipam-ish": {"ipRanges": caps["ipRanges"]},
                       "bw": {"bandwidth": caps["bandwidth"]},
                       "dnsy": {"dns": caps["dns"]}, "none": None}


def test_tuning_sets_the_mac_capability(bed: Bed) -> None:
    ns, path = bed.make_netns()
    net = json.loads(json.dumps(bed.net))
    net["plugins"][-1]["capabilities"] = {"mac": True}
    mac = "02:42:ac:11:00:" + secrets.token_hex(1)
    rt = RuntimeConf("macpod", path, "eth0", capability_args={"mac": mac})
    result = bed.cni.add_network_list(net, rt)
    shown = sh("ip", "-n", ns, "-o", "link", "show", "eth0")
    assert f"link/ether {mac} " in shown
    assert mac in [i.mac for i in result.interfaces if i.name == "eth0"]
    bed.cni.del_network_list(net, rt)
