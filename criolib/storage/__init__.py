"""criolib.storage: layers, images and containers on disk.

See docs/storage.md.
"""

from __future__ import annotations

import logging

from criolib.storage._errors import StorageError

logging.getLogger("criolib.storage").addHandler(logging.NullHandler())

__all__ = ["StorageError"]
