"""criolib.testing: the test bed, public so users can test their own code with it.

- Test images built on this machine, reproducibly, from Debian's busybox-static
  (:func:`build_test_images`), as an OCI image layout and docker-archive tarballs,
  into a directory it locks, swaps in whole and reuses while valid;
  :func:`unpack_test_image` makes a root filesystem of one.
- The real distribution registry on 127.0.0.1 (:class:`RegistryServer`), anonymous,
  with basic auth, or with bearer tokens from a :class:`TokenServer` (with per-user
  ACLs and anonymous pull); :func:`serving_test_images` starts one with the test
  images pushed.
- ``criolib serve`` as a subprocess (:func:`running_service`, :func:`start_service`)
  and :class:`CRIClient`, the kubelet's side of the CRI (needs the ``cri`` extra).
- pytest fixtures (``criolib_test_images``, ``criolib_registry``,
  ``criolib_registry_basic``, ``criolib_registry_token``) registered as a pytest
  plugin, and helpers that skip, or fail under ``CRIOLIB_REQUIRE_INTEGRATION=1``,
  when a real part is missing.

Needs the ``testing`` extra (``pip install 'criolib[testing]'``): zstandard, bcrypt
and cryptography; without them the calls that need one raise :class:`MissingHostPart`.
hypothesis strategies for the auth texts live in :mod:`criolib.testing.strategies_http`.
See docs/testing.md.
"""

from __future__ import annotations

import logging

from criolib.testing._bed import push_test_images, serving_test_images
from criolib.testing._build import build_test_images
from criolib.testing._errors import (
    BuildDirError,
    ImageBuildError,
    MissingHostPart,
    PushError,
    RegistryStartError,
    TestbedError,
    TestbedValueError,
    UnknownTestImage,
)
from criolib.testing._host import (
    REQUIRE_INTEGRATION_ENV,
    find_cni_plugin_dir,
    integration_required,
    missing_binaries,
    require_binaries,
    require_cni_plugins,
    require_root,
)
from criolib.testing._images import (
    GROUP,
    MULTILAYER_FILES,
    PASSWD,
    TestImage,
    TestImages,
    host_platform,
)
from criolib.testing._netfilter import drop_new_iptables_chains, iptables_chains
from criolib.testing._push import PushedImage, RegistryAuth, push_layout
from criolib.testing._registry import AuthKind, RegistryServer
from criolib.testing._rootfs import unpack_test_image
from criolib.testing._service import (
    CRIClient,
    ServiceProcess,
    running_service,
    service_config_toml,
    start_service,
)
from criolib.testing._tar import Entry, write_layer
from criolib.testing._tokens import TokenServer

logging.getLogger("criolib.testing").addHandler(logging.NullHandler())

__all__ = [
    "GROUP",
    "MULTILAYER_FILES",
    "PASSWD",
    "REQUIRE_INTEGRATION_ENV",
    "AuthKind",
    "BuildDirError",
    "CRIClient",
    "Entry",
    "ImageBuildError",
    "MissingHostPart",
    "PushError",
    "PushedImage",
    "RegistryAuth",
    "RegistryServer",
    "RegistryStartError",
    "ServiceProcess",
    "TestImage",
    "TestImages",
    "TestbedError",
    "TestbedValueError",
    "TokenServer",
    "UnknownTestImage",
    "build_test_images",
    "drop_new_iptables_chains",
    "find_cni_plugin_dir",
    "host_platform",
    "integration_required",
    "iptables_chains",
    "missing_binaries",
    "push_layout",
    "push_test_images",
    "require_binaries",
    "require_cni_plugins",
    "require_root",
    "running_service",
    "service_config_toml",
    "serving_test_images",
    "start_service",
    "unpack_test_image",
    "write_layer",
]
