"""``criolib storage``: look after a store of layers, images and containers (containers-storage).

The verbs and options follow the ``containers-storage`` tool and podman where
they have one: ``-g/--graph`` (and podman's ``--root``) for the graphroot,
``-R/--run`` (``--runroot``), ``-s/--storage-driver``, ``--storage-opt``; verbs
``layers``, ``images``, ``containers``, ``inspect``, ``mount``, ``unmount``,
``rm``, ``diff``, ``import-layer``, ``create-container``, ``set-names``,
``add-names``, ``status``, ``shutdown``, plus ``check``, ``repair``, ``gc`` and
``df``. Listings shorten ids to 12 characters unless ``--no-trunc``; ``--json``
prints records with the field names of ``layers.json``, ``images.json`` and
``containers.json``; times are RFC 3339 with a zone.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from criolib.cli._storage_verbs import (
    check_store,
    create_container,
    df,
    diff,
    gc_store,
    import_layer,
    inspect,
    list_objects,
    mount,
    names,
    repair_store,
    rm,
    shutdown,
    status,
    unmount,
)
from criolib.storage import StorageConfig, Store

HELP = "look after layers, images and containers on disk (like containers-storage)"


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--storage-conf", type=Path, metavar="FILE",
                        help="storage.conf to read (default: $CONTAINERS_STORAGE_CONF, "
                        "/etc/containers/storage.conf, /usr/share/containers/storage.conf)")
    parser.add_argument("--graphroot", "-g", "--graph", "--root", dest="graphroot", type=Path,
                        help="where layers and metadata live")
    parser.add_argument("--runroot", "-R", "--run", dest="runroot", type=Path,
                        help="where mount counts live (a tmpfs; default: one derived from "
                        "--graphroot, else storage.conf's)")
    parser.add_argument("--driver", "-s", "--storage-driver", dest="driver",
                        help="graph driver: overlay, vfs, a plug-in")
    parser.add_argument("--storage-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="driver option, e.g. overlay.mountopt=nodev (repeatable)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="give up waiting for the store lock after this long "
                        "(default: wait)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _listings(sub)
    _objects(sub)
    _upkeep(sub)
    return _run


def _listings(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, what in (("layers", "list layers"), ("images", "list images"),
                       ("containers", "list containers")):
        p = sub.add_parser(verb, help=what)
        p.add_argument("--json", action="store_true", help="print the records as JSON")
        p.add_argument("--no-trunc", "--notruncate", dest="no_trunc", action="store_true",
                       help="print full ids")
        p.set_defaults(verb_handler=list_objects)

    p = sub.add_parser("inspect", help="print a layer's, image's or container's record (JSON)")
    p.add_argument("id", help="id, name or unique id prefix")
    p.add_argument("--type", choices=["container", "image", "layer"],
                   help="what the id names (default: a container, else an image, else a "
                   "layer)")
    p.set_defaults(verb_handler=inspect)

    p = sub.add_parser("status", help="the store's driver, places and counts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(verb_handler=status)


def _objects(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mount", help="mount a container's (or layer's) root filesystem")
    p.add_argument("id", help="container or layer: id, name or unique id prefix")
    p.add_argument("--option", "-o", action="append", default=[], help="mount option")
    p.add_argument("--rw", action="store_true",
                   help="mount a layer that is not a container's writable (default: "
                   "read-only, since images and child layers share it)")
    p.set_defaults(verb_handler=mount)

    p = sub.add_parser("unmount", aliases=["umount"], help="drop one mount reference")
    p.add_argument("id")
    p.add_argument("--force", "-f", action="store_true", help="drop every reference")
    p.set_defaults(verb_handler=unmount)

    p = sub.add_parser("rm", aliases=["delete"],
                       help="delete containers, images or layers (looked up in that order)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--force", "-f", action="store_true",
                   help="delete an image's containers with it")
    p.set_defaults(verb_handler=rm)

    p = sub.add_parser("diff", help="write a layer's or container's changes as a tarball")
    p.add_argument("id", help="layer or container")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="write here (default: standard output)")
    p.add_argument("--compression", "-c", choices=["none", "gzip", "zstd"], default="none")
    p.set_defaults(verb_handler=diff)

    p = sub.add_parser("import-layer", help="store a layer tarball (gzip, zstd or plain)")
    p.add_argument("file", type=Path, help="the tarball; - for standard input")
    p.add_argument("--parent", "-p", help="the layer it goes on")
    p.add_argument("--name", "-n", action="append", default=[], help="a name (repeatable)")
    p.add_argument("--diff-id", help="its expected diff_id (sha256:...)")
    p.set_defaults(verb_handler=import_layer)

    p = sub.add_parser("create-container", help="make a container on an image")
    p.add_argument("image", help="image id, name or digest")
    p.add_argument("--name", "-n", action="append", default=[], help="a name (repeatable)")
    p.add_argument("--id", help="the container's id (default: random)")
    p.add_argument("--metadata", "-m", default="", help="free-form metadata to keep")
    p.set_defaults(verb_handler=create_container)

    for verb, what in (("set-names", "replace the names of an image, container or layer"),
                       ("add-names", "add names to an image, container or layer")):
        p = sub.add_parser(verb, help=what)
        p.add_argument("id")
        p.add_argument("--name", "-n", action="append", default=[], required=True,
                       help="a name (repeatable)")
        p.set_defaults(verb_handler=names)


def _upkeep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="report what is broken or left over (exit 1 if any)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(verb_handler=check_store)

    p = sub.add_parser("repair", help="remove what check reports broken")
    p.set_defaults(verb_handler=repair_store)

    p = sub.add_parser("gc", help="remove unused layers and crash debris")
    p.add_argument("--min-age", type=float, default=300.0, metavar="SECONDS",
                   help="keep unused layers younger than this (default: %(default)s)")
    p.set_defaults(verb_handler=gc_store)

    p = sub.add_parser("df", help="disk usage of images, containers and layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per object")
    p.set_defaults(verb_handler=df)

    p = sub.add_parser("shutdown", help="unmount every layer and container")
    p.add_argument("--force", "-f", action="store_true",
                   help="unmount even what is still mounted (else: refuse)")
    p.set_defaults(verb_handler=shutdown)


def _run(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        handler: Callable[[Store, argparse.Namespace], int] = args.verb_handler
        return handler(store, args)


def _open_store(args: argparse.Namespace) -> Store:
    """The store the options and storage.conf name.

    ``--graphroot`` without ``--runroot`` gets a runroot of its own (derived from
    the graphroot), unless it is storage.conf's graphroot, which keeps
    storage.conf's runroot.
    """
    config = StorageConfig.load(args.storage_conf)
    driver = args.driver or config.driver
    options = [*(config.driver_options if driver == config.driver else ()), *args.storage_opt]
    graphroot = args.graphroot or config.graphroot
    runroot = args.runroot
    if runroot is None and os.path.abspath(graphroot) == os.path.abspath(config.graphroot):
        runroot = config.runroot
    return Store(graphroot, runroot, driver, options, lock_timeout=args.timeout)
