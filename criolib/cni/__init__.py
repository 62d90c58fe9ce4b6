"""criolib.cni: pod networking through CNI plugins.

See docs/cni.md.
"""

from __future__ import annotations

import logging

from criolib.cni._cache import CachedAttachment
from criolib.cni._config import (
    CNI_SPEC_VERSIONS,
    CONF_EXTENSIONS,
    NetworkConfigList,
    NetworkSet,
    NetworkWatcher,
    load_conf_bytes,
    load_conf_file,
    load_networks,
    pick_version,
)
from criolib.cni._errors import (
    CNIError,
    ConfigError,
    NetNSError,
    PluginError,
    PluginNotFound,
    PluginTimeout,
    ResultError,
)
from criolib.cni._invoke import PluginExecutor, RawExecutor, find_plugin
from criolib.cni._libcni import CNI, DEFAULT_PLUGIN_DIRS, Network, RuntimeConf
from criolib.cni._netns import (
    NS_KINDS,
    NetNS,
    PinnedNamespace,
    PodNamespaces,
    release_pin_dirs,
)
from criolib.cni._result import (
    DNS,
    ErrorResult,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_error_result,
    parse_result,
)

logging.getLogger("criolib.cni").addHandler(logging.NullHandler())

__all__ = [
    "CNI",
    "CNI_SPEC_VERSIONS",
    "CONF_EXTENSIONS",
    "DEFAULT_PLUGIN_DIRS",
    "DNS",
    "NS_KINDS",
    "CNIError",
    "CachedAttachment",
    "ConfigError",
    "ErrorResult",
    "IPConfig",
    "Interface",
    "NetNS",
    "NetNSError",
    "Network",
    "NetworkConfigList",
    "NetworkSet",
    "NetworkWatcher",
    "PinnedNamespace",
    "PluginError",
    "PluginExecutor",
    "PluginNotFound",
    "PluginTimeout",
    "PodNamespaces",
    "RawExecutor",
    "Result",
    "ResultError",
    "Route",
    "RuntimeConf",
    "find_plugin",
    "load_conf_bytes",
    "load_conf_file",
    "load_networks",
    "parse_error_result",
    "parse_result",
    "pick_version",
    "release_pin_dirs",
]
