"""Platforms: what an image instance runs on, and choosing one from an index.

image-spec v1.1 image-index.md "platform" (``architecture``, ``os``, ``os.version``,
``os.features``, ``variant``, ``features``) and config.md (the same fields at the top
of an image config). Names are normalised the way containerd's ``platforms``
package does (``x86_64`` → ``amd64``, ``aarch64`` → ``arm64``, ``armhf`` →
``arm/v7``...), except that criolib spells the default variant out: ``arm64`` is
``arm64/v8`` and ``arm`` is ``arm/v7``, so an index entry without a variant and one
with the default compare equal.

Choosing an instance is sans-I/O: :func:`choose_instance` takes a parsed index and
prefers, like containers/image's ``ChooseInstance``, the most specific compatible
platform (``arm/v7`` before ``arm/v6``), then the first entry in index order.
BuildKit attestation manifests (``unknown/unknown``) are never chosen.
"""

from __future__ import annotations

import functools
import platform as _host
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from criolib.image._errors import InvalidPlatform, NoMatchingPlatform

if TYPE_CHECKING:
    from criolib.image._manifest import Descriptor, DockerManifestList, OCIIndex

__all__ = [
    "ATTESTATION_REFERENCE_TYPE",
    "Platform",
    "choose_instance",
    "compatible_platforms",
    "host_platform",
    "instances_for",
    "is_attestation",
    "normalize_platform",
    "parse_platform",
    "platform_matches",
]

#: BuildKit's annotation value marking an attestation manifest inside an index.
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"
_REFERENCE_TYPE = "vnd.docker.reference.type"

_OS_ALIASES = {"macos": "darwin", "win32": "windows", "cygwin": "windows"}
_AMD64 = {"x86_64", "x86-64", "amd64", "x64"}
_ARM64 = {"aarch64", "arm64"}
_I386 = {"i386", "i486", "i586", "i686", "386", "x86"}
_ARM64_VARIANTS = {"": "v8", "8": "v8", "v8.0": "v8", "9": "v9", "v9.0": "v9"}
_ARM_VARIANTS = {"": "v7", "5": "v5", "6": "v6", "7": "v7", "8": "v8"}
_FIXED = {"armhf": ("arm", "v7"), "armel": ("arm", "v6")}
_ARM_MACHINES = {"armv5l": "v5", "armv6l": "v6", "armv7l": "v7", "armv8l": "v8"}


@attrs.frozen
class Platform:
    """An OS and CPU an image runs on (image-spec v1.1 image-index.md "platform").

    ``extra`` keeps wire properties criolib does not model (the reserved
    ``features``, vendor keys); it takes no part in equality or hashing.
    """

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = attrs.field(default=None, metadata={"wire": "os.version"})
    os_features: tuple[str, ...] = attrs.field(default=(), metadata={"wire": "os.features"})
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    def __str__(self) -> str:
        """``os/arch[/variant]``, the form :func:`parse_platform` reads."""
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)


def _normalize_arch(arch: str, variant: str | None) -> tuple[str, str | None]:
    """containerd platforms ``normalizeArch``, with the default variants spelled out."""
    arch = arch.lower()
    var = (variant or "").lower()
    if arch in _FIXED:
        return _FIXED[arch]
    if arch in _I386:
        arch, var = "386", ""
    elif arch in _AMD64:
        arch, var = "amd64", "" if var in ("v1", "1") else var
    elif arch in _ARM64:
        arch, var = "arm64", _ARM64_VARIANTS.get(var, var)
    elif arch == "arm":
        var = _ARM_VARIANTS.get(var, var)
    return arch, var or None


def normalize_platform(plat: Platform) -> Platform:
    """The canonical spelling of ``plat`` (containerd platforms ``Normalize``).

    OS names are lowercased (``macos`` → ``darwin``); architectures and variants
    follow containerd: ``x86_64``/``x86-64`` → ``amd64`` (``v1`` dropped),
    ``aarch64`` → ``arm64`` with ``v8`` when none is given, ``armhf`` → ``arm/v7``,
    ``armel`` → ``arm/v6``, ``arm`` → ``arm/v7`` by default, ``i386``/``i686`` → ``386``.
    """
    os_name = plat.os.lower()
    os_name = _OS_ALIASES.get(os_name, os_name)
    arch, variant = _normalize_arch(plat.architecture, plat.variant)
    return attrs.evolve(plat, os=os_name, architecture=arch, variant=variant)


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]`` (or just ``arch``, meaning linux), normalised.

    containerd platforms "Platform Specifier": ``linux/arm64/v8``, ``linux/amd64``,
    ``arm64``. Anything else raises :class:`InvalidPlatform`.
    """
    parts = text.strip().split("/")
    if not 1 <= len(parts) <= 3 or any(not p or not p.isprintable() or " " in p
                                       for p in parts):
        raise InvalidPlatform(f"platform {text!r}: want os/arch[/variant], such as linux/arm64/v8")
    if len(parts) == 1:
        if parts[0].lower() in ("linux", "windows", "darwin", "freebsd"):
            return normalize_platform(attrs.evolve(host_platform(), os=parts[0]))
        return normalize_platform(Platform("linux", parts[0]))
    return normalize_platform(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None))


def _host_arm_variant(machine: str) -> str | None:
    return _ARM_MACHINES.get(machine)


@functools.cache
def host_platform() -> Platform:
    """This machine's platform, normalised (``linux/amd64``, ``linux/arm64/v8``...)."""
    os_name = "linux" if sys.platform.startswith("linux") else sys.platform
    machine = _host.machine().lower()
    variant = _host_arm_variant(machine)
    arch = "arm" if variant is not None else machine
    return normalize_platform(Platform(os_name, arch, variant))


def _arm_variants(variant: str | None) -> list[str | None]:
    # An armv8 CPU in 32-bit mode runs v7, v6 and v5 code; a v7 runs v6 and v5.
    order = ["v8", "v7", "v6", "v5"]
    return list(order[order.index(variant):]) if variant in order else [variant]


def _amd64_variants(variant: str | None) -> list[str | None]:
    # x86-64 micro-architecture levels (v2, v3, v4) include every lower level.
    if variant is not None and len(variant) == 2 and variant[0] == "v" and variant[1].isdigit():
        level = int(variant[1])
        return [f"v{n}" for n in range(level, 1, -1)] + [None]
    return [variant] if variant is not None else [None]


def _arm64_variants(variant: str | None) -> list[str | None]:
    return [variant, "v8"] if variant not in (None, "v8") else ["v8"]


def compatible_platforms(plat: Platform) -> list[Platform]:
    """The platforms an image for ``plat``'s machine may have, most specific first.

    containerd ``platforms.Only`` / containers/image ``WantedPlatforms``: ``arm/v7``
    also runs ``arm/v6`` and ``arm/v5``; ``amd64/v3`` runs ``v2`` and plain
    ``amd64``; ``arm64/v9`` runs ``arm64/v8``.
    """
    want = normalize_platform(plat)
    if want.architecture == "arm":
        variants = _arm_variants(want.variant)
    elif want.architecture == "amd64":
        variants = _amd64_variants(want.variant)
    elif want.architecture == "arm64":
        variants = _arm64_variants(want.variant)
    else:
        variants = [want.variant]
    return [attrs.evolve(want, variant=v) for v in variants]


def platform_matches(candidate: Platform, wanted: Platform) -> bool:
    """True if an image for ``candidate`` runs on ``wanted`` (both normalised first)."""
    cand = normalize_platform(candidate)
    return any(cand.os == w.os and cand.architecture == w.architecture
               and cand.variant == w.variant for w in compatible_platforms(wanted))


def is_attestation(entry: Descriptor) -> bool:
    """True for a BuildKit attestation entry (``unknown/unknown`` or so annotated)."""
    plat = entry.platform
    if plat is not None and plat.os == "unknown" and plat.architecture == "unknown":
        return True
    return (entry.annotations or {}).get(_REFERENCE_TYPE) == ATTESTATION_REFERENCE_TYPE


def _rank(entry: Descriptor, wanted: Sequence[Platform]) -> tuple[int, int] | None:
    """(platform preference, os.version mismatch); ``None`` if ``entry`` cannot run."""
    if entry.platform is None:
        # containers/image: an entry without a platform is a last resort, not a mismatch.
        return (len(wanted), 0)
    cand = normalize_platform(entry.platform)
    for position, w in enumerate(wanted):
        if cand.os == w.os and cand.architecture == w.architecture and cand.variant == w.variant:
            version_off = int(bool(w.os_version) and cand.os_version != w.os_version)
            return (position, version_off)
    return None


def _available(index: OCIIndex | DockerManifestList) -> list[str]:
    return [str(normalize_platform(e.platform)) if e.platform is not None else "(no platform)"
            for e in index.manifests if not is_attestation(e)]


def choose_instance(index: OCIIndex | DockerManifestList, platform: Platform | None = None,
                    *, image: str = "") -> Descriptor:
    """The entry of ``index`` to run on ``platform`` (default: this machine).

    image-spec v1.1 image-index.md "platform"; selection as containers/image's
    ``OCI1Index.ChooseInstance``: the most specific compatible platform wins
    (exact before older variants, ``arm64`` without a variant counts as ``v8``),
    then the earliest entry. Attestations (``unknown/unknown``) are skipped. None
    fits → :class:`NoMatchingPlatform` naming ``image`` and the platforms there are.
    """
    wanted_platform = normalize_platform(platform if platform is not None else host_platform())
    wanted = compatible_platforms(wanted_platform)
    best: tuple[tuple[int, int, int], Descriptor] | None = None
    for position, entry in enumerate(index.manifests):
        if is_attestation(entry):
            continue
        rank = _rank(entry, wanted)
        if rank is None:
            continue
        key = (*rank, position)
        if best is None or key < best[0]:
            best = (key, entry)
    if best is None:
        available = _available(index)
        where = f"image {image}: " if image else ""
        raise NoMatchingPlatform(
            f"{where}no instance for platform {wanted_platform} in the index; it has "
            f"{', '.join(available) or 'no runnable instances'}",
            wanted=str(wanted_platform), available=available)
    return best[1]


def instances_for(index: OCIIndex | DockerManifestList, platforms: Iterable[Platform],
                  *, image: str = "") -> list[Descriptor]:
    """The entries to copy for each of ``platforms``, in order and without repeats.

    Every platform must be served: the first one that is not raises
    :class:`NoMatchingPlatform`.
    """
    chosen: list[Descriptor] = []
    seen: set[str] = set()
    for plat in platforms:
        entry = choose_instance(index, plat, image=image)
        if entry.digest not in seen:
            seen.add(entry.digest)
            chosen.append(entry)
    return chosen
