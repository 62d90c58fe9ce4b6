"""The ``criolib`` command: one subcommand group per package.

Each group lives in its own module (``criolib/cli/_<group>.py``), imports only
its package's public API and owns the terminal: the library never prints.
Groups arrive with their packages; ``testbed`` drives :mod:`criolib.testing`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from criolib import __version__
from criolib.errors import CriolibError

__all__ = ["main"]

#: group name -> (help, function adding its arguments; returns the handler)
Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse.ArgumentParser], Handler]


def _groups() -> dict[str, tuple[str, Register]]:
    from criolib.cli import _cni, _image, _spec, _storage, _testbed

    return {
        "cni": (_cni.HELP, _cni.register),
        "image": (_image.HELP, _image.register),
        "spec": (_spec.HELP, _spec.register),
        "storage": (_storage.HELP, _storage.register),
        "testbed": (_testbed.HELP, _testbed.register),
    }


def build_parser() -> argparse.ArgumentParser:
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
    for name, (help_text, register) in _groups().items():
        group = sub.add_parser(name, help=help_text, description=help_text)
        group.set_defaults(handler=register(group))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
