"""``criolib storage``: look after a store of layers, images and containers (containers-storage)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.storage import (
    CheckReport,
    ContainerUnknown,
    DiskUsage,
    ImageUnknown,
    LayerUnknown,
    StorageConfig,
    Store,
    check,
    disk_usage,
    gc,
    repair,
)

HELP = "look after layers, images and containers on disk (like containers-storage)"


def register(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--storage-conf", type=Path, metavar="FILE",
                        help="storage.conf to read (default: $CONTAINERS_STORAGE_CONF, "
                        "/etc/containers/storage.conf, /usr/share/containers/storage.conf)")
    parser.add_argument("--graphroot", type=Path, help="where layers and metadata live")
    parser.add_argument("--runroot", type=Path, help="where mount counts live (a tmpfs)")
    parser.add_argument("--driver", help="graph driver: overlay, vfs, a plug-in")
    parser.add_argument("--storage-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="driver option, e.g. overlay.mountopt=nodev (repeatable)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    for verb, what in (("layers", "list layers"), ("images", "list images"),
                       ("containers", "list containers")):
        p = sub.add_parser(verb, help=what)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(verb_handler=_list)

    p = sub.add_parser("mount", help="mount a container's (or layer's) root filesystem")
    p.add_argument("id", help="container or layer: id, name or unique id prefix")
    p.add_argument("--option", "-o", action="append", default=[], help="mount option")
    p.set_defaults(verb_handler=_mount)

    p = sub.add_parser("unmount", aliases=["umount"], help="drop one mount reference")
    p.add_argument("id")
    p.add_argument("--force", "-f", action="store_true", help="drop every reference")
    p.set_defaults(verb_handler=_unmount)

    p = sub.add_parser("rm", help="delete containers, images or layers (in that order of "
                       "lookup)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--force", "-f", action="store_true",
                   help="delete an image's containers with it")
    p.set_defaults(verb_handler=_rm)

    p = sub.add_parser("check", help="report what is broken or left over (exit 1 if any)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(verb_handler=_check)

    p = sub.add_parser("repair", help="remove what check reports broken")
    p.set_defaults(verb_handler=_repair)

    p = sub.add_parser("gc", help="remove unused layers and crash debris")
    p.add_argument("--min-age", type=float, default=300.0, metavar="SECONDS",
                   help="keep unused layers younger than this (default: %(default)s)")
    p.set_defaults(verb_handler=_gc)

    p = sub.add_parser("df", help="disk usage of images, containers and layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per object")
    p.set_defaults(verb_handler=_df)
    return _run


def _run(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        handler: Callable[[Store, argparse.Namespace], int] = args.verb_handler
        return handler(store, args)


def _open_store(args: argparse.Namespace) -> Store:
    config = StorageConfig.load(args.storage_conf)
    driver = args.driver or config.driver
    options = [*(config.driver_options if driver == config.driver else ()), *args.storage_opt]
    return Store(args.graphroot or config.graphroot, args.runroot or config.runroot,
                 driver, options)


# -- output helpers ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready copy of records (attrs classes), dates and paths."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))
                if f.name != "extra"}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2) + "\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [header, *rows]:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                         .rstrip() + "\n")


def _short(value: str | None) -> str:
    if not value:
        return "-"
    return value.removeprefix("sha256:")[:12]


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{n}B"


# -- verbs -------------------------------------------------------------------------------


def _list(store: Store, args: argparse.Namespace) -> int:
    if args.verb == "layers":
        layers = store.layers()
        if args.json:
            _print_json(layers)
            return 0
        _table(["ID", "PARENT", "DIFF ID", "SIZE", "CREATED", "NAMES"],
               [[_short(lay.id), _short(lay.parent), _short(lay.diff_id),
                 _size(lay.uncompressed_size), _when(lay.created), ",".join(lay.names)]
                for lay in layers])
    elif args.verb == "images":
        images = store.images()
        if args.json:
            _print_json(images)
            return 0
        _table(["ID", "TOP LAYER", "CREATED", "NAMES"],
               [[_short(i.id), _short(i.layer), _when(i.created), ",".join(i.names)]
                for i in images])
    else:
        containers = store.containers()
        if args.json:
            _print_json(containers)
            return 0
        _table(["ID", "IMAGE", "MOUNTS", "CREATED", "NAMES"],
               [[_short(c.id), _short(c.image), str(store.mounted(c.id)), _when(c.created),
                 ",".join(c.names)] for c in containers])
    return 0


def _mount(store: Store, args: argparse.Namespace) -> int:
    print(store.mount(args.id, options=args.option))
    return 0


def _unmount(store: Store, args: argparse.Namespace) -> int:
    still = store.unmount(args.id, force=args.force)
    if still:
        print(f"{args.id}: still mounted ({store.mounted(args.id)} reference(s) left)")
    return 0


def _rm(store: Store, args: argparse.Namespace) -> int:
    failed = 0
    for ref in args.ids:
        try:
            print(_remove_one(store, ref, force=args.force))
        except (ContainerUnknown, ImageUnknown, LayerUnknown):
            print(f"criolib: error: no container, image or layer {ref!r}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _remove_one(store: Store, ref: str, *, force: bool) -> str:
    try:
        container = store.container(ref)
    except ContainerUnknown:
        pass
    else:
        store.delete_container(container.id)
        return f"container {container.id}"
    try:
        image = store.image(ref)
    except ImageUnknown:
        pass
    else:
        removed = store.delete_image(image.id, force=force)
        return f"image {image.id} (and {len(removed)} layer(s))"
    layer = store.layer(ref)
    store.delete_layer(layer.id)
    return f"layer {layer.id}"


def _check(store: Store, args: argparse.Namespace) -> int:
    report: CheckReport = check(store)
    if args.json:
        _print_json(report.problems)
    elif report.clean:
        print("clean")
    else:
        for problem in report.problems:
            print(problem)
    return 0 if report.clean else 1


def _repair(store: Store, args: argparse.Namespace) -> int:
    del args
    done = repair(store)
    for line in done:
        print(line)
    if not done:
        print("nothing to repair")
    return 0


def _gc(store: Store, args: argparse.Namespace) -> int:
    done = gc(store, min_age=args.min_age)
    for line in done:
        print(line)
    if not done:
        print("nothing to collect")
    return 0


def _df(store: Store, args: argparse.Namespace) -> int:
    usage: DiskUsage = disk_usage(store)
    if args.json:
        _print_json(usage)
        return 0
    sizes = {lay.id: lay.size for lay in usage.layers}
    image_bytes = sum(sizes.get(i, 0) for i in {i for im in usage.images for i in im.layers})
    _table(["TYPE", "TOTAL", "SIZE"], [
        ["Images", str(len(usage.images)), _size(image_bytes)],
        ["Containers", str(len(usage.containers)),
         _size(sum(c.size for c in usage.containers))],
        ["Layers", str(len(usage.layers)), _size(usage.total)],
    ])
    if args.verbose:
        print()
        _table(["IMAGE ID", "SIZE", "SHARED", "UNIQUE", "CONTAINERS", "NAMES"],
               [[_short(i.id), _size(i.size), _size(i.shared_size), _size(i.unique_size),
                 str(i.containers), ",".join(i.names)] for i in usage.images])
        print()
        _table(["CONTAINER ID", "IMAGE", "SIZE", "NAMES"],
               [[_short(c.id), _short(c.image), _size(c.size), ",".join(c.names)]
                for c in usage.containers])
    return 0
