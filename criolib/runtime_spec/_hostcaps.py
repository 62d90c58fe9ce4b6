"""What this process may grant a container: its own capability sets, read from /proc.

A runtime cannot give a container a capability its caller lacks, nor do what needs
one on its behalf: without CAP_SYS_RESOURCE (MACHINE-NOTES.md) no hard rlimit can be
raised and no ``oom_score_adj`` lowered. The generator, the validator and the runtime
client's diagnosis all ask here (capabilities(7); proc(5) ``/proc/pid/status``
``CapEff`` and ``CapBnd``, hexadecimal masks of capability bits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from criolib.runtime_spec import _defaults

__all__ = ["capability_mask", "has_cap_sys_resource", "has_capability", "host_capabilities"]

#: A capability-set line of /proc/self/status.
CapabilitySet = Literal["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]


def capability_mask(which: CapabilitySet = "CapEff") -> int | None:
    """This process's capability set ``which`` as a bit mask; None if /proc cannot say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{which}:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def has_capability(name: str, which: CapabilitySet = "CapEff") -> bool:
    """Whether this process holds capability ``name`` (``CAP_SYS_RESOURCE``) in ``which``."""
    mask = capability_mask(which)
    bit = _defaults.CAPABILITY_BITS.get(name)
    return mask is not None and bit is not None and bool(mask >> bit & 1)


def has_cap_sys_resource() -> bool:
    """Whether this process may raise hard rlimits and lower ``oom_score_adj``."""
    return has_capability("CAP_SYS_RESOURCE")


def host_capabilities() -> tuple[str, ...]:
    """The capabilities in this process's bounding set, by name, in bit order.

    What "all capabilities" can mean on this host: a runtime cannot grant one the
    caller lacks (these machines have no CAP_SYS_RESOURCE; runc then fails with
    "unable to apply caps"), so privileged containers get this set, as podman's
    do. Every capability when /proc cannot tell.
    """
    mask = capability_mask("CapBnd")
    if mask is None:
        return _defaults.ALL_CAPABILITIES
    return tuple(c for c in _defaults.ALL_CAPABILITIES
                 if mask & (1 << _defaults.CAPABILITY_BITS[c]))
