"""criolib.conmon: the container monitor.

See docs/conmon.md.
"""

from __future__ import annotations

import logging

from criolib.conmon._errors import MonitorError

logging.getLogger("criolib.conmon").addHandler(logging.NullHandler())

__all__ = ["MonitorError"]
