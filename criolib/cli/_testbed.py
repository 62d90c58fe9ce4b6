"""``criolib testbed``: build the test images, serve them from a local registry."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from criolib.testing import TestImages, build_test_images, serving_test_images

HELP = "build the test bed's images and serve them from a local registry"

_DEFAULT_DIR = Path.home() / ".cache" / "criolib" / "testbed"


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    build = sub.add_parser("build", help="build the test images (reused when unchanged)")
    build.add_argument("dir", nargs="?", type=Path, default=_DEFAULT_DIR,
                       help="where to build (default: %(default)s)")
    build.add_argument("--large", action="store_true", help="also build the large image")
    build.add_argument("--json", action="store_true", help="print the images as JSON")
    build.set_defaults(verb_handler=_build)

    serve = sub.add_parser("serve", help="run a registry on 127.0.0.1 with the images pushed")
    serve.add_argument("--dir", type=Path, default=_DEFAULT_DIR,
                       help="where the images are built (default: %(default)s)")
    serve.add_argument("--auth", choices=["none", "basic", "token"], default="none")
    serve.add_argument("--port", type=int, default=None, help="default: a free port")
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


def _serve(args: argparse.Namespace) -> int:
    images = build_test_images(args.dir)
    with serving_test_images(images, auth=args.auth, port=args.port) as registry:
        print(f"registry: {registry.url} (auth: {registry.auth})")
        if registry.credentials:
            user, password = registry.credentials
            print(f"user: {user}  password: {password}")
        for image in images:
            print(f"  {registry.host}/{image.reference}  {image.digest}")
        print("Ctrl-C stops it.", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
