"""Pinned namespaces: create, enter and remove network (and IPC, UTS) namespaces.

What ``ip netns add`` (iproute2 ``ip/ipnetns.c``) and CRI-O's ``pinns`` do, and
what CNI SPEC.md v1.1.0 "Parameters" (``CNI_NETNS``) expects to be handed: a
path that names a network namespace. The namespace directory is bind-mounted
onto itself and made shared once, the file is created, then a short-lived thread
``unshare``\\ s the namespace (namespaces are per task, so this is allowed in a
multi-threaded process and touches no other thread) and bind-mounts
``/proc/thread-self/ns/<kind>`` onto the file, which keeps the namespace alive
after the thread exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from criolib.cni._errors import NetNSError

__all__ = ["NS_KINDS", "NetNS", "PinnedNamespace", "PodNamespaces", "release_pin_dirs"]

CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h

#: Namespace kinds that can be pinned: clone flag and default pin directory.
NS_KINDS: dict[str, tuple[int, Path]] = {
    "net": (CLONE_NEWNET, Path("/var/run/netns")),
    "ipc": (CLONE_NEWIPC, Path("/var/run/ipcns")),
    "uts": (CLONE_NEWUTS, Path("/var/run/utsns")),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

_dir_lock = threading.Lock()


def _err(what: str, path: Path | str, err: int | None = None) -> NetNSError:
    code = ctypes.get_errno() if err is None else err
    return NetNSError(code, f"{what}: {os.strerror(code)}", str(path))


def _mount(src: str | None, target: Path, flags: int) -> None:
    if _libc.mount(src.encode() if src else None, os.fsencode(target), b"none", flags, None) != 0:
        raise _err(f"mount {src or ''} (flags {flags:#x})", target)


def _ensure_shared_dir(directory: Path) -> None:
    """Make ``directory`` a shared mount point, as ``ip netns add`` does.

    iproute2 first tries ``--make-shared``; EINVAL means it is not a mount point
    yet, so it bind-mounts the directory onto itself and tries again.
    """
    with _dir_lock:
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise NetNSError(exc.errno, f"cannot create {directory}", str(directory)) from exc
        if _libc.mount(b"", os.fsencode(directory), b"none", MS_SHARED | MS_REC, None) == 0:
            return
        if ctypes.get_errno() != errno.EINVAL:
            raise _err("make-shared", directory)
        _mount(str(directory), directory, MS_BIND | MS_REC)
        _mount(None, directory, MS_SHARED | MS_REC)


def _ns_type(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetNSError(exc.errno, "cannot open namespace", str(path)) from exc
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        raise NetNSError(exc.errno, "not a namespace file", str(path)) from exc
    finally:
        os.close(fd)


def _pin_in_thread(kind: str, path: Path, hostname: str | None) -> None:
    flag = NS_KINDS[kind][0]
    failure: list[NetNSError] = []

    def pin() -> None:
        if _libc.unshare(flag) != 0:
            failure.append(_err(f"unshare {kind} namespace", path))
            return
        if hostname is not None:
            name = hostname.encode()
            if _libc.sethostname(name, len(name)) != 0:
                failure.append(_err(f"sethostname {hostname!r}", path))
                return
        source = f"/proc/thread-self/ns/{kind}"
        if _libc.mount(source.encode(), os.fsencode(path), b"none", MS_BIND, None) != 0:
            failure.append(_err(f"bind {source}", path))

    # A fresh OS thread that exits right after: no other thread ever runs in the
    # new namespace.
    thread = threading.Thread(target=pin, name=f"criolib-pin-{kind}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _umount_unlink(path: Path) -> None:
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise _err("umount", path, err)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetNSError(exc.errno, "cannot remove", str(path)) from exc


class PinnedNamespace:
    """A namespace of kind ``net``, ``ipc`` or ``uts`` pinned by a bind mount."""

    kind = "net"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @classmethod
    def _create(
        cls, kind: str, name: str | None, directory: Path, hostname: str | None = None
    ) -> PinnedNamespace:
        name = name or f"criolib-{secrets.token_hex(8)}"
        if "/" in name or name in (".", ".."):
            raise NetNSError(errno.EINVAL, f"invalid namespace name {name!r}", name)
        directory = Path(directory)
        _ensure_shared_dir(directory)
        path = directory / name
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        except OSError as exc:
            raise NetNSError(exc.errno, f"cannot create {kind} namespace file", str(path)) from exc
        try:
            _pin_in_thread(kind, path, hostname)
        except BaseException:
            with contextlib.suppress(NetNSError):
                _umount_unlink(path)
            raise
        ns = cls(path)
        ns.kind = kind
        return ns

    @classmethod
    def open(cls, path: Path | str, kind: str | None = None) -> PinnedNamespace:
        """An existing pinned namespace; checks that ``path`` is one of ``kind``."""
        kind = kind or cls.kind
        if _ns_type(Path(path)) != NS_KINDS[kind][0]:
            raise NetNSError(errno.EINVAL, f"not a {kind} namespace", str(path))
        ns = cls(path)
        ns.kind = kind
        return ns

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Run the ``with`` body in this namespace, in the calling thread only (setns).

        The thread's original namespace is restored on exit, also after an
        exception. Only ``net`` and ``uts``/``ipc`` of this thread change.
        """
        flag = NS_KINDS[self.kind][0]
        own = f"/proc/thread-self/ns/{self.kind}"
        try:
            orig = os.open(own, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetNSError(exc.errno, "cannot open own namespace", own) from exc
        try:
            try:
                target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise NetNSError(exc.errno, "cannot open namespace", str(self.path)) from exc
            try:
                if _libc.setns(target, flag) != 0:
                    raise _err(f"setns into {self.kind} namespace", self.path)
            finally:
                os.close(target)
            try:
                yield
            finally:
                if _libc.setns(orig, flag) != 0:
                    # The thread is stranded in the pod's namespace: say so loudly.
                    raise _err(f"cannot restore the thread's {self.kind} namespace", own)
        finally:
            os.close(orig)

    def remove(self) -> None:
        """Unmount and unlink the pin; idempotent, a missing one is fine."""
        _umount_unlink(self.path)

    def exists(self) -> bool:
        """Whether the pin file is still there."""
        return self.path.exists()


class NetNS(PinnedNamespace):
    """A pinned network namespace, like one made by ``ip netns add``."""

    kind = "net"

    @classmethod
    def create(cls, name: str | None = None, dir: Path | str = Path("/var/run/netns")) -> NetNS:
        """Create and pin a new, empty network namespace at ``dir/name``.

        ``name`` defaults to a random ``criolib-<hex>``. Raises :class:`NetNSError`.
        """
        ns = cls._create("net", name, Path(dir))
        assert isinstance(ns, NetNS)
        return ns

    @classmethod
    def open(cls, path: Path | str, kind: str | None = "net") -> NetNS:
        """An existing network namespace file (checked with ``NS_GET_NSTYPE``)."""
        ns = super().open(path, "net")
        assert isinstance(ns, NetNS)
        return ns


class PodNamespaces:
    """A pod's namespaces, pinned together as CRI-O's ``pinns`` does.

    ``namespaces`` maps kind to its :class:`PinnedNamespace`; ``net`` is a
    :class:`NetNS`.
    """

    def __init__(self, namespaces: dict[str, PinnedNamespace]) -> None:
        self.namespaces = namespaces

    @property
    def net(self) -> NetNS | None:
        """The network namespace, if pinned."""
        ns = self.namespaces.get("net")
        return ns if isinstance(ns, NetNS) else None

    def path(self, kind: str) -> Path:
        """The pin path of ``kind``."""
        return self.namespaces[kind].path

    @classmethod
    def create(
        cls,
        pod_id: str,
        kinds: Sequence[str] = ("net", "ipc", "uts"),
        hostname: str | None = None,
        *,
        base: Path | str = Path("/var/run"),
    ) -> PodNamespaces:
        """Pin a new namespace of each kind as ``<base>/<kind>ns/<pod_id>``.

        The hostname is set inside the UTS namespace before it is pinned. On a
        failure the namespaces already pinned are removed again.
        """
        for kind in kinds:
            if kind not in NS_KINDS:
                raise NetNSError(errno.EINVAL, f"unknown namespace kind {kind!r}", pod_id)
        done: dict[str, PinnedNamespace] = {}
        try:
            for kind in kinds:
                directory = Path(base) / f"{kind}ns"
                factory = NetNS if kind == "net" else PinnedNamespace
                done[kind] = factory._create(
                    kind, pod_id, directory, hostname if kind == "uts" else None
                )
        except BaseException:
            for ns in done.values():
                with contextlib.suppress(NetNSError):
                    ns.remove()
            raise
        return cls(done)

    def remove(self) -> None:
        """Remove every pin; idempotent. Raises the first failure after trying all."""
        first: NetNSError | None = None
        for ns in self.namespaces.values():
            try:
                ns.remove()
            except NetNSError as exc:
                first = first or exc
        if first is not None:
            raise first


def release_pin_dirs(base: Path | str = Path("/var/run"),
                     kinds: Sequence[str] = tuple(NS_KINDS)) -> list[Path]:
    """Undo the shared bind mounts of ``<base>/<kind>ns`` that hold no pin any more.

    :meth:`PodNamespaces.create` makes each pin directory a shared mount point of
    itself, as ``ip netns add`` does, and leaves it so. A program that pinned under a
    directory of its own (a test, a service on a temporary root) calls this when it is
    done, so nothing stays mounted: each empty pin directory is unmounted (lazily) and
    removed; one still holding a pin is left alone. Returns the directories released.
    """
    released: list[Path] = []
    with _dir_lock:
        for kind in kinds:
            directory = Path(base) / f"{kind}ns"
            try:
                if any(directory.iterdir()):
                    continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise NetNSError(exc.errno, "cannot list", str(directory)) from exc
            if _libc.umount2(os.fsencode(directory), MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err != errno.EINVAL:  # EINVAL: not a mount point (never shared)
                    raise _err("umount", directory, err)
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise NetNSError(exc.errno, "cannot remove", str(directory)) from exc
            released.append(directory)
    return released
