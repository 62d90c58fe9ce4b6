"""criolib.service: the Kubernetes CRI service.

See docs/service.md.
"""

from __future__ import annotations

import logging

from criolib.service._errors import ServiceError

logging.getLogger("criolib.service").addHandler(logging.NullHandler())

__all__ = ["ServiceError"]
