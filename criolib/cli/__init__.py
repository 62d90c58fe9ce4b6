"""The ``criolib`` command: one subcommand group per package.

Each group lives in its own module (``criolib/cli/_<group>.py``), imports only
its package's public API and owns the terminal: the library never prints.
Groups arrive with their packages; ``testbed`` drives :mod:`criolib.testing`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from criolib import __version__
from criolib.errors import CriolibError

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse.ArgumentParser], Handler]

#: group name -> (module, one-line help). The module (and with it its package, which
#: may cost a quarter of a second of imports) is loaded only when its group runs;
#: tests/test_package.py checks each help line against the module's HELP.
GROUPS: dict[str, tuple[str, str]] = {
    "cni": ("criolib.cli._cni", "attach network namespaces to CNI networks (like cnitool)"),
    "conmon": ("criolib.cli._conmon",
               "create containers under a monitor; status, wait, exec, attach (like conmon)"),
    "image": ("criolib.cli._image",
              "copy, inspect, pull and push images (like skopeo and podman)"),
    "serve": ("criolib.cli._serve", "serve the Kubernetes CRI on a unix socket (like crio)"),
    "spec": ("criolib.cli._spec", "generate, validate and run OCI runtime configs (config.json)"),
    "storage": ("criolib.cli._storage",
                "look after layers, images and containers on disk (like containers-storage)"),
    "testbed": ("criolib.cli._testbed",
                "build the test bed's images and serve them from a local registry"),
}


def _register(name: str) -> Register:
    register: Register = importlib.import_module(GROUPS[name][0]).register
    return register


def _chosen_group(argv: Sequence[str]) -> str | None:
    """The group named on the command line (the first word that is one), if any."""
    return next((a for a in argv if a in GROUPS), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the group named in ``argv`` (all, when ``argv`` is None) is loaded."""
    parser = argparse.ArgumentParser(
        prog="criolib",
        description="CRI-O's machinery as a Python library: specs, storage, images, "
        "CNI, a container monitor and the Kubernetes CRI.",
    )
    parser.add_argument("--version", action="version", version=f"criolib {__version__}")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="what the library logs to stderr (default: %(default)s)")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    chosen = None if argv is None else _chosen_group(argv)
    for name, (_, help_text) in GROUPS.items():
        group = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == chosen:
            group.set_defaults(handler=_register(name)(group))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except CriolibError as exc:
        print(f"criolib: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
