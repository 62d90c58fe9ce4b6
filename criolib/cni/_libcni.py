"""Running a network configuration list: the counterpart of libcni.

CNI SPEC.md v1.1.0, section "Execution of Network Configurations": plugins of a
list run in order for ADD and CHECK, in reverse for DEL; each gets the list's
``name`` and ``cniVersion``, the previous plugin's result as ``prevResult``, and
``runtimeConfig`` built from the capability arguments it declares
(CONVENTIONS.md "Dynamic Plugin specific fields"). Results are cached in libcni's
layout (see :mod:`criolib.cni._cache`) so DEL, CHECK and GC find them.

Networks are :class:`~criolib.cni.NetworkConfigList` or the parsed JSON of a
``.conflist`` (a single ``.conf`` is wrapped into a list of one, as libcni's
``ConfListFromConf``). ADD returns a :class:`~criolib.cni.Result` in the list's
``cniVersion``; the cache keeps the last plugin's JSON as it was printed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criolib.cni._cache import CachedAttachment, ResultCache
from criolib.cni._config import NetworkConfigList, load_conf_bytes
from criolib.cni._errors import CNIError, PluginError, ResultError
from criolib.cni._invoke import PluginExecutor, RawExecutor, build_env
from criolib.cni._result import Result, parse_result

__all__ = ["CNI", "DEFAULT_PLUGIN_DIRS", "Network", "RuntimeConf"]

log = logging.getLogger("criolib.cni")

DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
#: What VERSION asks with: plugins answer with every version they support.
_VERSION_QUERY = "1.0.0"


def _version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (0,)


def _pairs(args: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in args)


@attrs.frozen
class RuntimeConf:
    """The per-attachment parameters (libcni ``RuntimeConf``).

    ``args`` become ``CNI_ARGS`` (``K=V;K=V``, CONVENTIONS.md "CNI_ARGS"; CRI-O
    passes ``IgnoreUnknown=1``, ``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``,
    ``K8S_POD_INFRA_CONTAINER_ID``, ``K8S_POD_UID``); ``capability_args`` feed
    ``runtimeConfig`` (``portMappings``, ``bandwidth``, ``ipRanges``, ``dns``, ``mac``...).
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    capability_args: Mapping[str, Any] = attrs.field(factory=dict)

    def cni_args(self) -> str:
        """The ``CNI_ARGS`` value."""
        return ";".join(f"{k}={v}" for k, v in self.args)

    @classmethod
    def for_pod(cls, container_id: str, netns: str, *, pod_namespace: str, pod_name: str,
                pod_uid: str = "", ifname: str = "eth0",
                capability_args: Mapping[str, Any] | None = None) -> RuntimeConf:
        """The attachment of a Kubernetes pod, with the ``CNI_ARGS`` CRI-O passes.

        ``IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;
        K8S_POD_INFRA_CONTAINER_ID=<sandbox id>;K8S_POD_UID=..`` (cri-o
        internal/ocicni; CONVENTIONS.md "CNI_ARGS"): plugins that do not know a key
        must ignore it.
        """
        args = [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", pod_namespace),
                ("K8S_POD_NAME", pod_name), ("K8S_POD_INFRA_CONTAINER_ID", container_id)]
        args.append(("K8S_POD_UID", pod_uid))  # always, even empty, as CRI-O
        return cls(container_id, netns, ifname, args=tuple(args),
                   capability_args=dict(capability_args or {}))


@attrs.frozen
class _Net:
    name: str
    version: str
    plugins: list[dict[str, Any]]
    disable_check: bool
    disable_gc: bool
    raw: bytes


#: A network: loaded by :mod:`criolib.cni._config`, or the parsed JSON of a file.
Network = NetworkConfigList | Mapping[str, Any]


def _as_net(net: Network) -> _Net:
    if not isinstance(net, NetworkConfigList):
        # parsed JSON gets the same validation and version choice as a file
        doc = dict(net)
        single = "plugins" not in doc and "type" in doc
        net = load_conf_bytes(json.dumps(doc), single=single, path=Path("<dict>"))
    return _Net(name=net.name, version=net.cni_version, plugins=list(net.plugins),
                disable_check=net.disable_check, disable_gc=net.disable_gc,
                raw=net.to_json())


class CNI:
    """Runs network configuration lists against plugins on disk (libcni ``CNIConfig``).

    ``executor`` finds and runs plugins (a :class:`PluginExecutor`; tests swap it);
    ``timeout`` bounds each plugin call in seconds. ADD, CHECK and DEL of one
    attachment hold its lock in the cache dir (:meth:`ResultCache.lock`), so
    processes sharing that dir run them one at a time.
    """

    def __init__(
        self,
        plugin_dirs: Sequence[str | os.PathLike[str]] = DEFAULT_PLUGIN_DIRS,
        cache_dir: str | os.PathLike[str] = Path("/var/lib/cni"),
        executor: PluginExecutor | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.plugin_dirs = tuple(os.fspath(d) for d in plugin_dirs)
        self.cache = ResultCache(Path(cache_dir))
        self.executor: PluginExecutor = executor or RawExecutor()
        self.timeout = timeout

    # -- one plugin -------------------------------------------------------------

    def _stdin(self, net: _Net, plugin: Mapping[str, Any], rt: RuntimeConf | None,
               prev: Mapping[str, Any] | None, extra: Mapping[str, Any] | None = None) -> bytes:
        """SPEC.md "Deriving execution configuration from plugin configuration"."""
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.version
        if prev is not None:
            conf["prevResult"] = dict(prev)
        if rt is not None:
            caps = plugin.get("capabilities") or {}
            runtime = {k: v for k, v in rt.capability_args.items() if caps.get(k) is True}
            if runtime:
                conf["runtimeConfig"] = runtime
        if extra:
            conf.update(extra)
        return json.dumps(conf).encode()

    def _call(self, command: str, net: _Net, plugin: Mapping[str, Any],
              rt: RuntimeConf | None, prev: Mapping[str, Any] | None, *,
              extra: Mapping[str, Any] | None = None) -> bytes:
        ptype = str(plugin["type"])
        path = self.executor.find_plugin(ptype, self.plugin_dirs)
        env = build_env(command, path=self.plugin_dirs) if rt is None else build_env(
            command, container_id=rt.container_id, netns=rt.netns, ifname=rt.ifname,
            args=rt.cni_args(), path=self.plugin_dirs)
        what = f"CNI plugin {ptype} ({command}) of network {net.name}"
        return self.executor.exec_plugin(path, env, self._stdin(net, plugin, rt, prev, extra),
                                         timeout=self.timeout, what=what)

    # -- ADD / DEL / CHECK ------------------------------------------------------

    def add_network_list(self, net: Network, rt: RuntimeConf) -> Result:
        """ADD the attachment: run the plugins in order, chaining ``prevResult``.

        SPEC.md "Attachment (ADD)". When plugin *k* fails, or the last result is
        not a valid success result, plugins *k*..0 get a best-effort DEL (so
        nothing leaks) and the error is raised. The last plugin's result is
        cached as printed and returned parsed, converted to the list's
        ``cniVersion`` (libcni's ``convertResult``).
        """
        n = _as_net(net)
        with self.cache.lock(n.name, rt.container_id, rt.ifname):
            return self._add(n, rt)

    def _add(self, n: _Net, rt: RuntimeConf) -> Result:
        result: dict[str, Any] | None = None
        last = len(n.plugins) - 1
        parsed_result = Result(cni_version=n.version)
        for k, plugin in enumerate(n.plugins):
            try:
                out = self._call("ADD", n, plugin, rt, result)
                parsed = json.loads(out) if out.strip() else None
                if isinstance(parsed, dict):
                    result = parsed
                if k == last and result is not None:
                    parsed_result = parse_result(result)
                    if parsed_result.cni_version != n.version:
                        parsed_result = parsed_result.to_version(n.version)
            except (CNIError, ValueError) as exc:
                # cache first, so a DEL or GC can finish what the rollback cannot
                self._put(n, rt, result)
                if self._rollback(n, rt, k, result):
                    self.cache.remove(n.name, rt.container_id, rt.ifname)
                if not isinstance(exc, CNIError):
                    raise ResultError(f"CNI plugin {plugin['type']} of network {n.name} "
                                      f"returned an unparsable result: {exc}") from exc
                raise
        self._put(n, rt, result)
        return parsed_result

    def _put(self, n: _Net, rt: RuntimeConf, result: Mapping[str, Any] | None) -> None:
        self.cache.put(CachedAttachment(
            network=n.name, container_id=rt.container_id, ifname=rt.ifname, config=n.raw,
            netns=rt.netns, cni_args=rt.args, capability_args=dict(rt.capability_args),
            result=dict(result) if result is not None else {"cniVersion": n.version}))

    def _rollback(self, n: _Net, rt: RuntimeConf, k: int,
                  prev: Mapping[str, Any] | None) -> bool:
        """Best-effort DEL of plugins *k*..0; whether every DEL succeeded."""
        ok = True
        for plugin in reversed(n.plugins[: k + 1]):
            try:
                self._call("DEL", n, plugin, rt, prev)
            except CNIError as exc:
                log.warning("rollback of network %s: %s", n.name, exc)
                ok = False
        return ok

    def del_network_list(self, net: Network, rt: RuntimeConf,
                         prev_result: Mapping[str, Any] | None = None) -> None:
        """DEL the attachment: the plugins in reverse, with the cached result.

        SPEC.md "Detachment (DEL)": idempotent; the cached capability arguments are
        used when ``rt`` has none. A DEL for an unknown attachment or
        after the namespace is gone succeeds (a vanished ``netns`` is passed as
        empty, which the spec allows for DEL). Every plugin is tried; the first
        error is raised after that and the cache entry is kept for a retry.
        """
        n = _as_net(net)
        with self.cache.lock(n.name, rt.container_id, rt.ifname, remove=True):
            self._del(n, rt, prev_result)

    def _del(self, n: _Net, rt: RuntimeConf, prev_result: Mapping[str, Any] | None) -> None:
        cached = self.cache.get(n.name, rt.container_id, rt.ifname)
        if prev_result is None and cached is not None:
            prev_result = cached.result
        if cached is not None and not rt.capability_args and cached.capability_args:
            # portmap and bandwidth only clean up what runtimeConfig names
            rt = attrs.evolve(rt, capability_args=dict(cached.capability_args))
        if rt.netns and not os.path.exists(rt.netns):
            rt = attrs.evolve(rt, netns="")
        if _version_tuple(n.version) < (0, 4, 0):
            prev_result = None
        first: CNIError | None = None
        for plugin in reversed(n.plugins):
            try:
                self._call("DEL", n, plugin, rt, prev_result)
            except CNIError as exc:
                log.warning("DEL of network %s: %s", n.name, exc)
                first = first or exc
        if first is not None:
            raise first
        self.cache.remove(n.name, rt.container_id, rt.ifname)

    def check_network_list(self, net: Network, rt: RuntimeConf) -> None:
        """CHECK the attachment against its cached result (SPEC.md "Check").

        Skipped for ``disableCheck`` lists and versions before 0.4.0; with no
        cached result it is an error, as in libcni.
        """
        n = _as_net(net)
        if n.disable_check or _version_tuple(n.version) < (0, 4, 0):
            return
        with self.cache.lock(n.name, rt.container_id, rt.ifname):
            cached = self.cache.get(n.name, rt.container_id, rt.ifname)
            if cached is None or cached.result is None:
                raise CNIError(f"network {n.name}: no cached result for container "
                               f"{rt.container_id} interface {rt.ifname}; was it added?")
            try:
                prev = parse_result(cached.result).to_dict(n.version)
            except ValueError as exc:
                raise ResultError(f"network {n.name}: cached result of container "
                                  f"{rt.container_id} interface {rt.ifname} does not "
                                  f"convert to {n.version}: {exc}") from exc
            for plugin in n.plugins:
                self._call("CHECK", n, plugin, rt, prev)

    # -- STATUS / GC / VERSION --------------------------------------------------

    def status(self, net: Network) -> None:
        """STATUS of every plugin (SPEC.md "Status", 1.1.0); older lists are skipped."""
        n = _as_net(net)
        if _version_tuple(n.version) < (1, 1, 0):
            return
        for plugin in n.plugins:
            self._call("STATUS", n, plugin, None, None)

    def gc(self, net: Network,
           valid_attachments: Iterable[tuple[str, str]]) -> None:
        """Garbage-collect attachments of ``net`` not in ``valid_attachments``.

        ``valid_attachments`` are ``(container_id, ifname)`` pairs. Cached entries
        outside it get a DEL (with the cached runtime parameters); then, for 1.1.0
        lists without ``disableGC``, every plugin gets GC with
        ``cni.dev/valid-attachments`` (SPEC.md "Garbage Collection").
        """
        n = _as_net(net)
        valid = {(c, i) for c, i in valid_attachments}
        first: CNIError | None = None
        for entry in list(self.cache.entries(n.name)):
            if (entry.container_id, entry.ifname) in valid:
                continue
            rt = RuntimeConf(entry.container_id, entry.netns, entry.ifname,
                             entry.cni_args, dict(entry.capability_args))
            try:
                # the configuration the attachment was added with (as libcni)
                stale: Network = net
                if entry.config:
                    try:
                        stale = load_conf_bytes(entry.config, path=Path("<cache>"))
                    except CNIError as exc:
                        log.warning("GC of network %s: cached config unusable, using "
                                    "the current one: %s", n.name, exc)
                self.del_network_list(stale, rt)
            except CNIError as exc:
                first = first or exc
        if not n.disable_gc and _version_tuple(n.version) >= (1, 1, 0):
            extra = {"cni.dev/valid-attachments": [
                {"containerID": c, "ifname": i} for c, i in sorted(valid)]}
            for plugin in n.plugins:
                try:
                    self._call("GC", n, plugin, None, None, extra=extra)
                except CNIError as exc:
                    first = first or exc
        if first is not None:
            raise first

    def version(self, plugin_type: str) -> dict[str, Any]:
        """The plugin's VERSION answer (SPEC.md "Version"): ``supportedVersions``..."""
        path = self.executor.find_plugin(plugin_type, self.plugin_dirs)
        out = self.executor.exec_plugin(
            path, build_env("VERSION", path=self.plugin_dirs),
            json.dumps({"cniVersion": _VERSION_QUERY}).encode(),
            timeout=self.timeout, what=f"CNI plugin {plugin_type} (VERSION)")
        try:
            doc = json.loads(out)
        except ValueError as exc:
            raise PluginError(f"CNI plugin {plugin_type} (VERSION) printed no JSON: {exc}",
                              code=999, msg=str(exc)) from exc
        if not isinstance(doc, dict):
            raise PluginError(f"CNI plugin {plugin_type} (VERSION) printed {doc!r}",
                              code=999, msg="not an object")
        return doc
