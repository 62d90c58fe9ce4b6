"""criolib.runtime_spec: the OCI runtime spec, its generator, validation and runtime client.

See docs/runtime_spec.md.
"""

from __future__ import annotations

import logging

from criolib.runtime_spec._errors import RuntimeSpecError

logging.getLogger("criolib.runtime_spec").addHandler(logging.NullHandler())

__all__ = ["RuntimeSpecError"]
