"""``criolib cni``: attach network namespaces to CNI networks (like cnitool).

Defaults follow cnitool: ``NETCONFPATH`` (the configuration directory),
``CNI_PATH`` (plugin directories, ``:``-separated), ``CNI_IFNAME``, ``CNI_ARGS``
and ``CAP_ARGS`` (JSON capability arguments) are read from the environment
when the options are not given; the container id defaults to one derived
from the namespace path, as cnitool's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from criolib.cni import (
    CNI,
    DEFAULT_PLUGIN_DIRS,
    CNIError,
    ConfigError,
    NetworkConfigList,
    RuntimeConf,
    load_networks,
)

HELP = "attach network namespaces to CNI networks (like cnitool)"

_VERBS = ("add", "check", "del", "status", "gc")


def _env_default(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--conf-dir", type=Path,
                        default=Path(_env_default("NETCONFPATH", "/etc/cni/net.d")),
                        help="network configuration directory (env NETCONFPATH; "
                        "default: %(default)s)")
    parser.add_argument("--plugin-dir", action="append", default=None, metavar="DIR",
                        help="plugin directory, repeatable (env CNI_PATH; default: "
                        f"{', '.join(DEFAULT_PLUGIN_DIRS)})")
    parser.add_argument("--cache-dir", type=Path, default=Path("/var/lib/cni"),
                        help="libcni result cache (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin call")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in _VERBS:
        p = sub.add_parser(verb, help=f"{verb.upper()} a network"
                           + (" attachment" if verb in {"add", "check", "del"} else ""))
        p.add_argument("network", help="the network's name")
        if verb in {"add", "check", "del"}:
            p.add_argument("netns", help="path of the network namespace (/var/run/netns/NAME)")
            p.add_argument("--container-id", help="default: derived from NETNS, as cnitool")
            p.add_argument("--ifname", default=_env_default("CNI_IFNAME", "eth0"),
                           help="interface name in the namespace (env CNI_IFNAME; "
                           "default: %(default)s)")
            p.add_argument("--args", default=os.environ.get("CNI_ARGS", ""), metavar="K=V;..",
                           help="CNI_ARGS (env CNI_ARGS)")
            p.add_argument("--cap-args", default=os.environ.get("CAP_ARGS", ""),
                           metavar="JSON", help="capability arguments as a JSON object "
                           "(env CAP_ARGS)")
        if verb == "gc":
            p.add_argument("--valid", action="append", default=[], metavar="CONTAINER[/IF]",
                           help="an attachment to keep (repeatable; IF defaults to eth0)")
        if verb == "add":
            p.add_argument("--json", action="store_true", help="print the result as JSON")
    ls = sub.add_parser("ls", help="list the networks in the configuration directory")
    ls.add_argument("--json", action="store_true", help="print JSON")
    return _run


def _plugin_dirs(args: argparse.Namespace) -> list[str]:
    if args.plugin_dir:
        return list(args.plugin_dir)
    env = os.environ.get("CNI_PATH")
    return [d for d in env.split(os.pathsep) if d] if env else list(DEFAULT_PLUGIN_DIRS)


def _network(args: argparse.Namespace) -> NetworkConfigList:
    found = load_networks(args.conf_dir)
    net = found.networks.get(args.network)
    if net is None:
        known = ", ".join(sorted(found.networks)) or "none"
        raise ConfigError(f"no network {args.network!r} in {args.conf_dir} (found: {known})")
    return net


def _runtime_conf(args: argparse.Namespace) -> RuntimeConf:
    netns = os.path.abspath(args.netns)
    if args.verb != "del" and not os.path.exists(netns):
        # DEL tolerates a vanished namespace (SPEC.md "DEL"); ADD and CHECK cannot
        raise CNIError(f"network namespace {netns} does not exist")
    container_id = args.container_id or (
        "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20])
    pairs: list[tuple[str, str]] = []
    for item in filter(None, args.args.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--args: {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    caps: dict[str, Any] = {}
    if args.cap_args:
        try:
            caps = json.loads(args.cap_args)
        except ValueError as exc:
            raise ConfigError(f"--cap-args is not JSON: {exc}") from exc
        if not isinstance(caps, dict):
            raise ConfigError("--cap-args must be a JSON object")
    return RuntimeConf(container_id, netns, args.ifname, args=pairs, capability_args=caps)


def _ls(args: argparse.Namespace) -> int:
    found = load_networks(args.conf_dir)
    if args.json:
        print(json.dumps({
            "default": found.default,
            "networks": {n: {"cniVersion": c.cni_version, "path": str(c.path or ""),
                             "plugins": [p["type"] for p in c.plugins]}
                         for n, c in sorted(found.networks.items())},
            "errors": {str(p): str(e) for p, e in sorted(found.errors.items())},
        }, indent=2))
        return 0
    for name, conf in sorted(found.networks.items()):
        mark = "*" if name == found.default else " "
        types = ",".join(str(p["type"]) for p in conf.plugins)
        print(f"{mark} {name}\t{conf.cni_version}\t{types}\t{conf.path or ''}")
    for path, err in sorted(found.errors.items()):
        print(f"criolib: warning: {path}: {err}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.verb == "ls":
        return _ls(args)
    cni = CNI(_plugin_dirs(args), cache_dir=args.cache_dir, timeout=args.timeout)
    net = _network(args)
    if args.verb == "status":
        cni.status(net)
        return 0
    if args.verb == "gc":
        valid = [(c, i or "eth0") for c, _, i in (v.partition("/") for v in args.valid)]
        cni.gc(net, valid)
        return 0
    rt = _runtime_conf(args)  # before any plugin runs: bad input fails cleanly
    if args.verb == "add":
        result = cni.add_network_list(net, rt)
        print(json.dumps(result.to_dict(), indent=None if args.json else 2))
    elif args.verb == "check":
        cni.check_network_list(net, rt)
    else:
        cni.del_network_list(net, rt)
    return 0
