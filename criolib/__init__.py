"""criolib: CRI-O's machinery as a Python library.

The building blocks are separate subpackages, each usable alone:

- :mod:`criolib.runtime_spec`: the OCI runtime spec (config.json), a generator with
  secure defaults, validation, and a client for OCI runtimes (runc, crun).
- :mod:`criolib.storage`: layers, images and containers on disk (containers/storage).
- :mod:`criolib.image`: references, registries, manifests, transports, copying
  (containers/image, skopeo).
- :mod:`criolib.cni`: pod networking through CNI plugins (libcni, cnitool).
- :mod:`criolib.conmon`: the per-container monitor (conmon).
- :mod:`criolib.service`: the Kubernetes CRI on top of them (cri-o).

Every error the library raises is a :class:`criolib.errors.CriolibError`.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger("criolib").addHandler(logging.NullHandler())

__all__ = ["__version__"]
