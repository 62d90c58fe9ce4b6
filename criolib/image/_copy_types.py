"""What :func:`~criolib.image.copy_image` reports, and the capability it asks of storage.

containers/image ``copy`` (``copy.Options.Progress`` / ``types.ProgressProperties``
for the events, ``private.ImageDestination.TryReusingBlobWithOptions`` with a
layer index for :class:`LayerStackDestination`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import attrs

__all__ = [
    "CopyResult",
    "LayerStackDestination",
    "ProgressCallback",
    "ProgressEvent",
    "ProgressKind",
]

#: ``started``: the blob began to download; ``progress``: ``offset`` bytes are in;
#: ``done``: the destination has it; ``skipped``: the destination had it already.
ProgressKind = Literal["started", "progress", "done", "skipped"]


@attrs.frozen
class ProgressEvent:
    """One step of one blob's copy, for progress bars.

    ``index`` is the layer's position in the manifest (``None`` for the config);
    ``offset`` the bytes downloaded so far; ``size`` the blob's size (-1 unknown).
    ``image`` is the manifest digest being copied (several with ``all_platforms``).
    """

    kind: ProgressKind
    digest: str
    size: int
    offset: int = 0
    index: int | None = None
    media_type: str = ""
    image: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@attrs.frozen
class CopyResult:
    """What a copy did.

    ``manifest_digest``/``manifest``/``media_type`` describe what the destination
    now holds (an index with ``all_platforms``); ``config_digest`` the image's
    config (``None`` for an index). ``layers_copied``/``layers_skipped`` count
    layer blobs sent or found already present, ``bytes_copied`` the bytes read
    from the source for them. ``instances`` holds each instance's result when an
    index was copied whole. ``source_digest`` is the digest of the manifest read
    from the source (differs from ``manifest_digest`` after a conversion).
    """

    manifest_digest: str
    manifest: bytes
    media_type: str
    config_digest: str | None
    layers_copied: int = 0
    layers_skipped: int = 0
    bytes_copied: int = 0
    source_digest: str = ""
    instances: tuple[CopyResult, ...] = ()


@runtime_checkable
class LayerStackDestination(Protocol):
    """A destination that stacks every layer on the one before (containers-storage).

    Such a destination must see every layer in order, also those it already
    holds, so the engine asks it in two steps, like containers/image's
    ``TryReusingBlob`` with a layer index: :meth:`layer_present` before the
    downloads start (may the blob be skipped?), and :meth:`reuse_layer` in order
    (record the layer at this position without its bytes; ``False`` if that is
    not possible after all, and the engine sends the bytes). The config is read
    from the destination when it holds it (:meth:`stored_config`), so pulling an
    image that is present needs no blob request at all.
    """

    def layer_present(self, descriptor: Mapping[str, Any], diff_id: str | None) -> bool: ...

    def reuse_layer(self, descriptor: Mapping[str, Any], diff_id: str | None) -> bool: ...

    def stored_config(self, digest: str) -> bytes | None: ...

    def put_layer(self, stream: BinaryIO, descriptor: Mapping[str, Any],
                  diff_id: str) -> None: ...
