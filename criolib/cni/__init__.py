"""criolib.cni: pod networking through CNI plugins.

See docs/cni.md.
"""

from __future__ import annotations

import logging

from criolib.cni._errors import CNIError

logging.getLogger("criolib.cni").addHandler(logging.NullHandler())

__all__ = ["CNIError"]
