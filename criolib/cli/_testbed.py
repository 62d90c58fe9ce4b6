"""``criolib testbed``: build the test images, serve them from a local registry."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from criolib.testing import TestImages, build_test_images, serving_test_images

HELP = "build the test bed's images and serve them from a local registry"

_DEFAULT_DIR = Path.home() / ".cache" / "criolib" / "testbed"


def _port(text: str) -> int:
    """argparse type: a TCP port number, 1..65535."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, not {value}")
    return value


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    large_help = ("also build the large image (300 MiB in 20,000 files, for benchmarks); "
                  "a build that has it is reused without this flag too")
    build = sub.add_parser("build", help="build the test images (reused when unchanged)")
    build.add_argument("dir", nargs="?", type=Path, default=_DEFAULT_DIR,
                       help="where to build (default: %(default)s)")
    build.add_argument("--large", action="store_true", help=large_help)
    build.add_argument("--json", action="store_true", help="print the images as JSON")
    build.set_defaults(verb_handler=_build)

    serve = sub.add_parser("serve", help="run a registry on 127.0.0.1 with the images pushed")
    serve.add_argument("--dir", type=Path, default=_DEFAULT_DIR,
                       help="where the images are built (default: %(default)s)")
    serve.add_argument("--large", action="store_true", help="also build and serve the "
                       "large image")
    serve.add_argument("--auth", choices=["none", "basic", "token"], default="none")
    serve.add_argument("--port", type=_port, default=None,
                       help="1..65535 (default: a free port)")
    serve.set_defaults(verb_handler=_serve)
    return _dispatch


def _dispatch(args: argparse.Namespace) -> int:
    result: int = args.verb_handler(args)
    return result


def _table(images: TestImages) -> list[dict[str, object]]:
    return [{"name": i.name, "reference": i.reference, "digest": i.digest,
             "archive": str(i.archive) if i.archive else None} for i in images]


def _build(args: argparse.Namespace) -> int:
    images = build_test_images(args.dir, large=args.large)
    if args.json:
        print(json.dumps({"layout": str(images.layout), "images": _table(images)}, indent=2))
        return 0
    print(f"OCI layout: {images.layout}")
    for row in _table(images):
        print(f"  {row['name']:<26} {row['digest']}")
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived: unwind whatever runs (build, registry start, serving)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # One is enough: a second SIGTERM must not cut the cleanup the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


def _serve(args: argparse.Namespace) -> int:
    # Installed before anything starts: a SIGTERM during the build or the registry's
    # start unwinds through their cleanup (temp build dir, registry process, workdir).
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        images = build_test_images(args.dir, large=args.large)
        with serving_test_images(images, auth=args.auth, port=args.port) as registry:
            print(f"registry: {registry.url} (auth: {registry.auth})")
            if registry.credentials:
                user, password = registry.credentials
                print(f"user: {user}  password: {password}")
            for image in images:
                print(f"  {registry.host}/{image.reference}  {image.digest}")
            print("Ctrl-C or SIGTERM stops it.", flush=True)
            threading.Event().wait()
    except (_Terminated, KeyboardInterrupt):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0  # pragma: no cover - the wait above ends only by a signal
