"""criolib.image: references, registries, manifests, transports and copying.

See docs/image.md.
"""

from __future__ import annotations

import logging

from criolib.image._errors import ImageError

logging.getLogger("criolib.image").addHandler(logging.NullHandler())

__all__ = ["ImageError"]
