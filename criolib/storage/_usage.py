"""Measuring a store: bytes per layer, image and container (``podman system df -v``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs

from criolib.storage._store import Store

__all__ = ["ContainerUsage", "DiskUsage", "ImageUsage", "LayerUsage", "disk_usage"]


@attrs.frozen
class LayerUsage:
    """A layer's own directory: bytes of its files (hard links once)."""

    id: str
    size: int
    parent: str | None = None


@attrs.frozen
class ImageUsage:
    """An image's layers: all of them, those shared with others, those only it has.

    ``containers`` counts the containers made from it; ``layers`` are its layer ids.
    """

    id: str
    names: tuple[str, ...]
    size: int
    shared_size: int
    unique_size: int
    containers: int
    layers: tuple[str, ...] = ()


@attrs.frozen
class ContainerUsage:
    """A container's writable layer."""

    id: str
    names: tuple[str, ...]
    image: str | None
    size: int


@attrs.frozen
class DiskUsage:
    """Bytes used, per layer, image and container; ``total`` counts each layer once."""

    layers: tuple[LayerUsage, ...]
    images: tuple[ImageUsage, ...]
    containers: tuple[ContainerUsage, ...]
    total: int


def disk_usage(store: Store) -> DiskUsage:
    """Measure every layer, image and container (``podman system df -v``)."""
    with store.reading():
        ls, ims, cs = store.layer_store, store.image_store, store.container_store
        sizes = {}
        for layer in ls.layers():
            try:
                sizes[layer.id] = _tree_size(store.driver.diff_path(layer.id))
            except (KeyError, OSError):
                sizes[layer.id] = 0
        chains = {}
        for image in ims.images():
            chains[image.id] = ({lay.id for lay in ls.chain(image.layer)}
                                if image.layer is not None and image.layer in ls else set())
        images = []
        for image in ims.images():
            others: set[str] = set()
            for other, chain in chains.items():
                if other != image.id:
                    others |= chain
            mine = chains[image.id]
            size = sum(sizes.get(i, 0) for i in mine)
            shared = sum(sizes.get(i, 0) for i in mine & others)
            images.append(ImageUsage(image.id, image.names, size, shared, size - shared,
                                     len(cs.by_image(image.id)), tuple(sorted(mine))))
        containers = tuple(ContainerUsage(c.id, c.names, c.image, sizes.get(c.layer or "", 0))
                           for c in cs.containers())
        return DiskUsage(
            layers=tuple(LayerUsage(lay.id, sizes[lay.id], lay.parent) for lay in ls.layers()),
            images=tuple(images), containers=containers, total=sum(sizes.values()))


def _tree_size(root: Path) -> int:
    """Bytes of the files under ``root`` (apparent sizes; each inode once)."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
