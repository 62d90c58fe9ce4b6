"""Lazy package exports (PEP 562), shared by the packages whose import must stay cheap.

``criolib.runtime_spec`` (a monitor needs only its runtime client), ``criolib.conmon``
(its monitor process imports nothing heavy) and ``criolib.service`` (171 CRI classes)
name each public attribute's private module in a table; the attribute is imported on
first use and then kept in the package's namespace.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    table: Mapping[str, str],
    public: Collection[str],
    namespace: dict[str, Any],
    *,
    default: str | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``public`` is imported from
    ``package.<table[name]>`` (or ``package.<default>`` when the table has no entry) and
    stored in ``namespace`` (the package's ``globals()``); any other name is an
    AttributeError."""
    names = frozenset(public)

    def getattr_(name: str) -> Any:
        module = table.get(name, default) if name in names else None
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | names)

    return getattr_, dir_
