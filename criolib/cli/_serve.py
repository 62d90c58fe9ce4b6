"""``criolib serve``: the Kubernetes CRI on a unix socket (like ``crio``).

Reads a crio.conf-shaped TOML file (``--config``; the defaults without one), applies
the command line's overrides, and serves CRI v1 RuntimeService and ImageService until
SIGTERM or SIGINT, then stops gracefully: calls in flight finish, containers keep
running. Needs the ``cri`` extra (grpcio and the CRI stubs).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from criolib.service import Server, load_config, serve

HELP = "serve the Kubernetes CRI on a unix socket (like crio)"

#: option dest -> the config key it overrides.
_OVERRIDES = {
    "listen": "crio.api.listen",
    "root": "crio.root",
    "runroot": "crio.runroot",
    "state_dir": "crio.state_dir",
    "storage_driver": "crio.storage_driver",
    "default_runtime": "crio.runtime.default_runtime",
    "log_dir": "crio.runtime.log_dir",
    "network_dir": "crio.network.network_dir",
}


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="crio.conf-shaped TOML file (default: built-in defaults)")
    parser.add_argument("--listen", metavar="PATH", help="unix socket to listen on "
                        "([crio.api] listen; default /run/criolib/criolib.sock)")
    parser.add_argument("--root", metavar="DIR", help="storage root ([crio] root)")
    parser.add_argument("--runroot", metavar="DIR", help="storage run root ([crio] runroot)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="sandbox and container records ([crio] state_dir)")
    parser.add_argument("--storage-driver", metavar="NAME",
                        help="overlay or vfs ([crio] storage_driver)")
    parser.add_argument("--default-runtime", metavar="NAME",
                        help="runtime handler for pods that name none "
                        "([crio.runtime] default_runtime)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="pod logs when the kubelet gives no directory "
                        "([crio.runtime] log_dir)")
    parser.add_argument("--network-dir", metavar="DIR",
                        help="CNI configuration directory ([crio.network] network_dir)")
    parser.add_argument("--log-level", dest="serve_log_level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="what the service logs to stderr (default: info)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                        help="how long calls in flight may finish on SIGTERM "
                        "(default: %(default)s)")
    return _run


def _run(args: argparse.Namespace) -> int:
    level = (args.serve_log_level or "info").upper()
    logging.basicConfig(level=level, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {key: getattr(args, dest) for dest, key in _OVERRIDES.items()
                                 if getattr(args, dest) is not None}
    config = load_config(args.config, overrides=overrides)
    log = logging.getLogger("criolib.cli")

    def ready(server: Server) -> None:
        log.info("criolib serve: listening on %s", server.address)

    serve(config, ready=ready, grace=args.grace)
    return 0
