"""Plugin results: parsing every supported version and converting between them.

Implements CNI SPEC.md v1.1.0 section "Section 5: Result Types" ("Success",
"Error") and the conversions of libcni's ``pkg/types/040`` and ``pkg/types/100``:
0.3.0, 0.3.1 and 0.4.0 results carry ``"version": "4"|"6"`` in each ``ips``
entry; 1.0.0 dropped it; 1.1.0 added ``mtu``, ``socketPath`` and ``pciID`` to
interfaces and ``mtu``, ``advmss``, ``priority``, ``table`` and ``scope`` to
routes (kept for any 1.x target, dropped for 0.x as libcni's 040 types do).
Sans-I/O: bytes or dicts in, dicts or bytes out.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from attrs import define, field

from criolib.cni._config import CNI_SPEC_VERSIONS
from criolib.cni._errors import PluginError, ResultError

__all__ = [
    "DNS",
    "ErrorResult",
    "IPConfig",
    "Interface",
    "Result",
    "Route",
    "parse_error_result",
    "parse_result",
]

_OLD = ("0.3.0", "0.3.1", "0.4.0")


def _opt_int(doc: Mapping[str, Any], key: str, where: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ResultError(f"{where}.{key} must be an integer, not {value!r}")
    return value


def _str(doc: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = doc.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ResultError(f"{where}.{key} must be a string, not {value!r}")
    return value


def _strs(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ResultError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _objects(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ResultError(f"{key} must be a list of objects")
    return value


@define(frozen=True)
class Interface:
    """SPEC.md "Success": an entry of ``interfaces``."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    socket_path: str = ""
    pci_id: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "interface") -> Interface:
        name = _str(doc, "name", where)
        if not name:
            raise ResultError(f"{where}.name is required")
        return cls(
            name=name,
            mac=_str(doc, "mac", where),
            sandbox=_str(doc, "sandbox", where),
            mtu=_opt_int(doc, "mtu", where),
            socket_path=_str(doc, "socketPath", where),
            pci_id=_str(doc, "pciID", where),
        )

    def to_dict(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if version not in _OLD:
            if self.mtu is not None:
                out["mtu"] = self.mtu
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out


def _cidr(value: str, where: str) -> str:
    try:
        ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ResultError(f"{where}: {value!r} is not an address in CIDR notation") from exc
    if "/" not in value:
        raise ResultError(f"{where}: {value!r} lacks a prefix length")
    return value


def _ip(value: str, where: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise ResultError(f"{where}: {value!r} is not an IP address") from exc
    return value


@define(frozen=True)
class IPConfig:
    """SPEC.md "Success": an entry of ``ips``; ``interface`` indexes ``interfaces``."""

    address: str
    gateway: str | None = None
    interface: int | None = None

    @property
    def family(self) -> str:
        """``"4"`` or ``"6"``, the ``version`` field of 0.x results."""
        return str(ipaddress.ip_interface(self.address).version)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "ips") -> IPConfig:
        address = _cidr(_str(doc, "address", where), f"{where}.address")
        gateway = doc.get("gateway")
        if gateway is not None:
            gateway = _ip(_str(doc, "gateway", where), f"{where}.gateway")
        index = _opt_int(doc, "interface", where)
        if index is not None and index < 0:
            raise ResultError(f"{where}.interface must not be negative")
        return cls(address=address, gateway=gateway, interface=index)

    def to_dict(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if version in _OLD:
            out["version"] = self.family
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = self.address
        if self.gateway is not None:
            out["gateway"] = self.gateway
        return out


@define(frozen=True)
class Route:
    """SPEC.md "Success": an entry of ``routes`` (the 1.1.0 fields are optional)."""

    dst: str
    gw: str | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "routes") -> Route:
        dst = _cidr(_str(doc, "dst", where), f"{where}.dst")
        gw = doc.get("gw")
        if gw is not None:
            gw = _ip(_str(doc, "gw", where), f"{where}.gw")
        return cls(
            dst=dst,
            gw=gw,
            **{k: _opt_int(doc, k, where) for k in ("mtu", "advmss", "priority", "table", "scope")},
        )

    def to_dict(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": self.dst}
        if self.gw is not None:
            out["gw"] = self.gw
        if version not in _OLD:
            for key in ("mtu", "advmss", "priority", "table", "scope"):
                value = getattr(self, key)
                if value is not None:
                    out[key] = value
        return out


@define(frozen=True)
class DNS:
    """SPEC.md "Success": the ``dns`` object."""

    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DNS:
        return cls(
            nameservers=_strs(doc, "nameservers", "dns"),
            domain=_str(doc, "domain", "dns"),
            search=_strs(doc, "search", "dns"),
            options=_strs(doc, "options", "dns"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


def _check_version(version: Any) -> str:
    if version not in CNI_SPEC_VERSIONS:
        raise ResultError(
            f"unsupported result cniVersion {version!r}; "
            f"criolib reads {', '.join(CNI_SPEC_VERSIONS)}"
        )
    return str(version)


@define(frozen=True)
class Result:
    """A success result (SPEC.md v1.1.0 "Success"), independent of its wire version.

    ``cni_version`` is the version it was parsed from or built for.
    """

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(factory=DNS)

    def to_version(self, version: str) -> Result:
        """The same result labelled for ``version`` (fields that version lacks drop)."""
        _check_version(version)
        return parse_result(self.to_dict(version))

    def to_dict(self, version: str | None = None) -> dict[str, Any]:
        """The wire form in ``version`` (default: :attr:`cni_version`)."""
        v = _check_version(version or self.cni_version)
        out: dict[str, Any] = {"cniVersion": v}
        if self.interfaces:
            out["interfaces"] = [i.to_dict(v) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_dict(v) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict(v) for r in self.routes]
        dns = self.dns.to_dict()
        if dns:
            out["dns"] = dns
        return out

    def to_json(self, version: str | None = None) -> bytes:
        """The wire form in ``version`` as JSON bytes."""
        return json.dumps(self.to_dict(version)).encode()


def _load(data: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ResultError(f"result is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ResultError("a result must be a JSON object")
    return doc


def parse_result(data: bytes | str | Mapping[str, Any]) -> Result:
    """Parse a success result of any supported version; raises :class:`ResultError`."""
    doc = _load(data)
    if "code" in doc and "cniVersion" in doc and "ips" not in doc:
        raise ResultError(f"an error result, not a success: {parse_error_result(doc)}")
    version = _check_version(doc.get("cniVersion"))
    interfaces = tuple(
        Interface.from_dict(d, f"interfaces[{n}]")
        for n, d in enumerate(_objects(doc, "interfaces"))
    )
    ips = tuple(IPConfig.from_dict(d, f"ips[{n}]") for n, d in enumerate(_objects(doc, "ips")))
    routes = tuple(
        Route.from_dict(d, f"routes[{n}]") for n, d in enumerate(_objects(doc, "routes"))
    )
    dns_doc = doc.get("dns") or {}
    if not isinstance(dns_doc, dict):
        raise ResultError("dns must be an object")
    return Result(
        cni_version=version,
        interfaces=interfaces,
        ips=ips,
        routes=routes,
        dns=DNS.from_dict(dns_doc),
    )


@define(frozen=True)
class ErrorResult:
    """An error result (SPEC.md v1.1.0 "Error"): codes 1-99 are the spec's."""

    cni_version: str
    code: int
    msg: str
    details: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        out: dict[str, Any] = {"cniVersion": self.cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_exception(self, what: str = "CNI plugin") -> PluginError:
        """A :class:`PluginError` carrying this result."""
        text = f"{self.msg}: {self.details}" if self.details else self.msg
        return PluginError(
            f"{what} failed (code {self.code}): {text}",
            code=self.code,
            msg=self.msg,
            details=self.details,
        )

    def __str__(self) -> str:
        return f"code {self.code}: {self.msg}" + (f" ({self.details})" if self.details else "")


def parse_error_result(data: bytes | str | Mapping[str, Any]) -> ErrorResult:
    """Parse an error result; raises :class:`ResultError` when it is not one."""
    doc = _load(data)
    code = doc.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ResultError(f"error result code must be an integer, not {code!r}")
    return ErrorResult(
        cni_version=_str(doc, "cniVersion", "error"),
        code=code,
        msg=_str(doc, "msg", "error"),
        details=_str(doc, "details", "error"),
    )
