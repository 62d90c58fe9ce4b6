"""The verbs of ``criolib storage`` (see :mod:`criolib.cli._storage`); they own the terminal."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import attrs

from criolib.storage import (
    CheckReport,
    Container,
    ContainerUnknown,
    DiskUsage,
    Image,
    ImageUnknown,
    Layer,
    StorageError,
    Store,
    check,
    disk_usage,
    gc,
    repair,
)

__all__ = [
    "check_store",
    "create_container",
    "df",
    "diff",
    "gc_store",
    "import_layer",
    "inspect",
    "list_objects",
    "mount",
    "names",
    "repair_store",
    "rm",
    "shutdown",
    "status",
    "unmount",
]

Record = Layer | Image | Container


# -- output helpers ----------------------------------------------------------------------


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON-ready copy: records as on disk, other attrs classes by field, times RFC 3339."""
    if isinstance(value, (Layer, Image, Container)):
        return value.to_json()
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))
                if f.name != "extra"}
    if isinstance(value, (dt.datetime, Path)):
        return _rfc3339(value) if isinstance(value, dt.datetime) else str(value)
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


def _id(value: str | None, full: bool) -> str:
    if not value:
        return "-"
    return value if full else value.removeprefix("sha256:")[:12]


def _when(value: dt.datetime | None) -> str:
    return _rfc3339(value.replace(microsecond=0)) if value else "-"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000
    return f"{n}B"


def _error(text: str) -> None:
    sys.stderr.write(f"criolib: error: {text}\n")


# -- reading -----------------------------------------------------------------------------


def list_objects(store: Store, args: argparse.Namespace) -> int:
    full = args.no_trunc
    if args.verb == "layers":
        layers = store.layers()
        if args.json:
            _print_json(layers)
            return 0
        _table(["ID", "PARENT", "DIFF ID", "SIZE", "CREATED", "NAMES"],
               [[_id(lay.id, full), _id(lay.parent, full), _id(lay.diff_id, full),
                 _size(lay.uncompressed_size), _when(lay.created), ",".join(lay.names)]
                for lay in layers])
    elif args.verb == "images":
        images = store.images()
        if args.json:
            _print_json(images)
            return 0
        _table(["ID", "TOP LAYER", "CREATED", "NAMES"],
               [[_id(i.id, full), _id(i.layer, full), _when(i.created), ",".join(i.names)]
                for i in images])
    else:
        containers = store.containers()
        if args.json:
            _print_json(containers)
            return 0
        _table(["ID", "IMAGE", "MOUNTS", "CREATED", "NAMES"],
               [[_id(c.id, full), _id(c.image, full), str(store.mounted(c.id)),
                 _when(c.created), ",".join(c.names)] for c in containers])
    return 0


def _find(store: Store, ref: str, kind: str | None) -> Record:
    """The container, image or layer ``ref`` names (in that order, or only ``kind``)."""
    if kind in (None, "container"):
        try:
            return store.container(ref)
        except ContainerUnknown:
            if kind is not None:
                raise
    if kind in (None, "image"):
        try:
            return store.image(ref)
        except ImageUnknown:
            if kind is not None:
                raise
    return store.layer(ref)


def inspect(store: Store, args: argparse.Namespace) -> int:
    _print_json(_find(store, args.id, args.type))
    return 0


def status(store: Store, args: argparse.Namespace) -> int:
    with store.reading():
        info = {
            "driver": store.driver.name, "graphroot": str(store.graphroot),
            "runroot": str(store.runroot), "driver-home": str(store.driver.home),
            "layers": len(store.layer_store.layers()),
            "images": len(store.image_store.images()),
            "containers": len(store.container_store.containers()),
            "mounts": len(store.layer_store.mounts()),
        }
    if args.json:
        _print_json(info)
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            sys.stdout.write(f"{key + ':':<{width + 1}} {value}\n")
    return 0


# -- objects -----------------------------------------------------------------------------


def mount(store: Store, args: argparse.Namespace) -> int:
    options = list(args.option)
    if not args.rw and not store.is_container(args.id) and "rw" not in options:
        options.append("ro")  # a layer images or children share: never written by accident
    print(store.mount(args.id, options=options))
    return 0


def unmount(store: Store, args: argparse.Namespace) -> int:
    still = store.unmount(args.id, force=args.force)
    if still:
        print(f"{args.id}: still mounted ({store.mounted(args.id)} reference(s) left)")
    return 0


def rm(store: Store, args: argparse.Namespace) -> int:
    """Delete each id in turn; report every failure and go on; exit 1 if any failed."""
    failed = 0
    for ref in args.ids:
        try:
            print(_remove_one(store, ref, force=args.force))
        except KeyError as exc:  # unknown or ambiguous
            _error(f"{ref!r}: {exc}" if "prefix" in str(exc)
                   else f"no container, image or layer {ref!r}")
            failed += 1
        except StorageError as exc:
            _error(f"{ref}: {exc}")
            failed += 1
    return 1 if failed else 0


def _remove_one(store: Store, ref: str, *, force: bool) -> str:
    record = _find(store, ref, None)
    if isinstance(record, Container):
        store.delete_container(record.id)
        return f"container {record.id}"
    if isinstance(record, Image):
        removed = store.delete_image(record.id, force=force)
        return f"image {record.id} (and {len(removed)} layer(s))"
    store.delete_layer(record.id)
    return f"layer {record.id}"


def diff(store: Store, args: argparse.Namespace) -> int:
    compression: Literal["none", "gzip", "zstd"] = args.compression
    if args.output is None:
        sink: BinaryIO = sys.stdout.buffer
        store.diff_to(args.id, sink, compression=compression)
        sink.flush()
        return 0
    with open(args.output, "wb") as out:
        store.diff_to(args.id, out, compression=compression)
    return 0


def import_layer(store: Store, args: argparse.Namespace) -> int:
    if str(args.file) == "-":
        layer = store.put_layer(sys.stdin.buffer, args.parent, names=args.name,
                                expected_diff_id=args.diff_id)
    else:
        with open(args.file, "rb") as source:
            layer = store.put_layer(source, args.parent, names=args.name,
                                    expected_diff_id=args.diff_id)
    print(layer.id)
    return 0


def create_container(store: Store, args: argparse.Namespace) -> int:
    container = store.create_container(args.image, names=args.name, id=args.id,
                                       metadata=args.metadata)
    print(container.id)
    return 0


def names(store: Store, args: argparse.Namespace) -> int:
    if args.verb == "set-names":
        store.set_names(args.id, args.name)
    else:
        store.add_names(args.id, args.name)
    return 0


# -- upkeep ------------------------------------------------------------------------------


def check_store(store: Store, args: argparse.Namespace) -> int:
    report: CheckReport = check(store)
    if args.json:
        _print_json(report.problems)
    elif report.clean:
        print("clean")
    else:
        for problem in report.problems:
            print(problem)
    return 0 if report.clean else 1


def repair_store(store: Store, args: argparse.Namespace) -> int:
    del args
    done = repair(store)
    for line in done:
        print(line)
    if not done:
        print("nothing to repair")
    return 0


def gc_store(store: Store, args: argparse.Namespace) -> int:
    done = gc(store, min_age=args.min_age)
    for line in done:
        print(line)
    if not done:
        print("nothing to collect")
    return 0


def df(store: Store, args: argparse.Namespace) -> int:
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
               [[_id(i.id, False), _size(i.size), _size(i.shared_size),
                 _size(i.unique_size), str(i.containers), ",".join(i.names)]
                for i in usage.images])
        print()
        _table(["CONTAINER ID", "IMAGE", "SIZE", "NAMES"],
               [[_id(c.id, False), _id(c.image, False), _size(c.size), ",".join(c.names)]
                for c in usage.containers])
    return 0


def shutdown(store: Store, args: argparse.Namespace) -> int:
    for layer_id in store.shutdown(force=args.force):
        print(f"unmounted {layer_id}")
    return 0
