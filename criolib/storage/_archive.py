"""Layer archives: compression detection, safe streaming apply, reproducible export.

image-spec v1.1 layer.md (changesets, whiteouts, opaque directories) and
media-types.md (gzip and zstd layers). The public face of the archive engine; the
work is done in ``_archive_codec`` (compression and digests), ``_archive_tar``
(the tar reader), ``_archive_tree`` (descriptor-confined file operations),
``_archive_apply`` and ``_archive_export``. See docs/storage.md for the contract.
"""

from __future__ import annotations

from criolib.storage._archive_apply import OPAQUE_XATTR, apply_layer
from criolib.storage._archive_codec import (
    ApplyResult,
    Compression,
    WhiteoutMode,
    detect_compression,
)
from criolib.storage._archive_export import export_layer

__all__ = [
    "OPAQUE_XATTR",
    "ApplyResult",
    "Compression",
    "WhiteoutMode",
    "apply_layer",
    "detect_compression",
    "export_layer",
]
