"""Which overlay mount options the overlay driver takes, and which it must refuse.

The driver exports a layer by reading its upper directory (``<id>/diff``) as
overlayfs left it: whiteouts are 0/0 character devices and opaque directories
carry ``trusted.overlay.opaque``. Some overlayfs features (kernel
Documentation/filesystems/overlayfs.rst) keep part of a change outside the upper
directory or in a form an export cannot read, so a layer mounted with them would
be committed wrong. containers/storage falls back to a "naive diff" (mount both
trees and compare) when they are on; criolib refuses them instead:

``metacopy=on``
    a file whose metadata alone changes (chmod, chown) is copied up without its
    data: the upper file is a sparse placeholder with a ``trusted.overlay.metacopy``
    xattr, and an export writes zeros where the content was.
``redirect_dir=on``
    a renamed lower directory becomes an empty upper directory with a
    ``trusted.overlay.redirect`` xattr naming the old place; its content stays in
    the lower layers and an export loses it. ``follow``, ``nofollow`` and ``off``
    never create redirects and are accepted.
``index=on`` (and ``nfs_export=on``, which needs it)
    hard links copied up are tied together through ``work/index``, so a change made
    through one name shows through names the upper directory does not hold, and
    the upper directory is bound to these exact lower directories (the mount fails
    with ESTALE once a layer below is re-created).
``userxattr``
    overlayfs then keeps its state in ``user.overlay.*``: the layers' opaque
    directories (``trusted.overlay.opaque``) would not hide anything and the
    container's own would not be exported.

``volatile`` is accepted: it only skips syncing the upper directory, so what an
export reads is exactly what the container wrote. After a host crash such a
layer may have lost writes, as with podman's and CRI-O's volatile containers;
it is meant for containers that are thrown away.

A kernel may turn metacopy, redirect_dir or index on by default (module
parameters in ``/sys/module/overlay/parameters``); the driver then says ``=off``
explicitly on every mount.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from criolib.storage._errors import InvalidDriverOption

__all__ = [
    "OWN_KEYS",
    "PARAMETERS",
    "check_mount_options",
    "kernel_default_offs",
    "split_options",
]

#: Mount options that would change which directories the mount uses.
OWN_KEYS = frozenset({"lowerdir", "upperdir", "workdir", "datadir", "lowerdir+", "datadir+"})

#: Where the overlay module publishes its defaults (a test may point this elsewhere).
PARAMETERS = Path("/sys/module/overlay/parameters")

_WHY = {
    "metacopy": "a file whose metadata alone changes is copied up without its data, so "
                "exporting or committing the layer would write zeros for its content",
    "redirect_dir": "a renamed directory is recorded as a redirect in the upper layer with "
                    "its content left below, so exporting or committing the layer would "
                    "lose that content (follow, nofollow and off are accepted)",
    "index": "copied-up hard links are indexed outside the layer's diff, so an export "
             "misses changes seen through their other names, and the layer is bound to "
             "these exact lower directories",
    "nfs_export": "it needs index=on, whose copied-up hard links live outside the layer's "
                  "diff",
    "userxattr": "overlayfs would keep its state in user.overlay.* xattrs, while the "
                 "layers mark whiteouts and opaque directories with trusted.overlay.*",
}
#: option -> the values that are safe (``None``: the option takes no value and is refused).
_SAFE_VALUES: dict[str, frozenset[str] | None] = {
    "metacopy": frozenset({"off"}),
    "redirect_dir": frozenset({"off", "follow", "nofollow"}),
    "index": frozenset({"off"}),
    "nfs_export": frozenset({"off"}),
    "userxattr": None,
}
#: Module parameters whose default "Y" must be turned off on each mount.
_KERNEL_DEFAULTS = ("metacopy", "redirect_dir", "index")


def split_options(options: Sequence[str]) -> list[str]:
    """Comma-separated option strings as one list (empty items dropped)."""
    out = []
    for opt in options:
        out += [o.strip() for o in opt.split(",") if o.strip()]
    return out


def check_mount_options(options: Sequence[str], where: str) -> list[str]:
    """The options as a list; :class:`InvalidDriverOption` names one that is refused, and why.

    ``where`` says whose options they are ("mountopt", "mount options of layer X").
    """
    opts = split_options(options)
    for o in opts:
        key, sep, value = o.partition("=")
        if key in OWN_KEYS:
            raise InvalidDriverOption(
                f"overlay: {where} may not set {key}= (the driver chooses the layer "
                "directories)")
        if key in _SAFE_VALUES:
            safe = _SAFE_VALUES[key]
            if safe is None or not sep or value not in safe:
                raise InvalidDriverOption(
                    f"overlay: {where}: {o} is not supported: {_WHY[key]}")
    return opts


def kernel_default_offs(options: Sequence[str]) -> list[str]:
    """``key=off`` for each feature the overlay module turns on by default, unless set.

    Reads ``/sys/module/overlay/parameters`` (absent: nothing is on by default).
    """
    given = {o.partition("=")[0] for o in options}
    out = []
    for key in _KERNEL_DEFAULTS:
        if key in given:
            continue
        try:
            value = (PARAMETERS / key).read_text().strip()
        except OSError:
            continue
        if value.upper() in ("Y", "1", "ON"):
            out.append(f"{key}=off")
    return out
