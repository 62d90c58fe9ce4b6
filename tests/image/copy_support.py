"""Helpers for the copy, transport, CLI and end-to-end tests of criolib.image.

Each test writes its own policy.json and registries.conf under ``tmp_path``
(drop-in directories off, so the machine's files never leak in) and opens its
own :class:`~criolib.storage.Store`; :func:`open_test_store` unmounts and closes
it afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from criolib.image import Credentials, Policy, RegistriesConf, SystemContext
from criolib.storage import Store
from criolib.testing import RegistryServer, TestImages

ACCEPT_ANYTHING = {"default": [{"type": "insecureAcceptAnything"}]}


def write_policy(tmp_path: Path, doc: dict[str, Any] | None = None) -> Policy:
    """policy.json in ``tmp_path`` (accept anything by default), loaded."""
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc if doc is not None else ACCEPT_ANYTHING))
    return Policy.load(path)


def write_conf(tmp_path: Path, text: str = "") -> RegistriesConf:
    """registries.conf in ``tmp_path``, loaded without any drop-in directory."""
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return RegistriesConf.load(path, dropin_dirs=[])


def registry_ctx(tmp_path: Path, registry: RegistryServer | None = None, *, conf: str = "",
                 store: Store | None = None, **options: Any) -> SystemContext:
    """A context for the test bed's plain-http registries (credentials of ``registry``)."""
    creds = None
    if registry is not None and registry.credentials is not None:
        creds = Credentials(*registry.credentials)
    options.setdefault("credentials", creds)
    return SystemContext(registries_conf=write_conf(tmp_path, conf), insecure=True,
                         store=store, **options)


def unmount_under(path: Path) -> None:
    """Lazily unmount everything mounted at or below ``path`` (deepest first)."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split(" ")[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(point)
    for point in sorted(found, key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@contextlib.contextmanager
def open_test_store(root: Path, driver: str = "overlay") -> Iterator[Store]:
    """A store in ``root/graph`` (+ ``root/run``), unmounted and closed afterwards."""
    store = Store(root / "graph", root / "run", driver)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            store.shutdown(force=True)
        store.close()
        unmount_under(root)


def storage_name(store: Store, name: str) -> str:
    """``containers-storage:[overlay@GRAPH+RUN]name`` for ``store``."""
    return f"containers-storage:[{store.driver.name}@{store.graphroot}+{store.runroot}]{name}"


def read_in_container(store: Store, image: str, *paths: str) -> list[bytes]:
    """Mount a new container of ``image`` and read ``paths`` from its root."""
    container = store.create_container(image)
    try:
        root = store.mount(container.id)
        try:
            return [(root / p.lstrip("/")).read_bytes() for p in paths]
        finally:
            store.unmount(container.id, force=True)
    finally:
        store.delete_container(container.id)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skopeo(registry: RegistryServer | None, *args: str) -> bytes:
    """Run ``skopeo`` with the registry's credentials; its stdout."""
    argv = ["skopeo", *args]
    if registry is not None and registry.credentials is not None:
        argv.insert(2, "--creds=" + ":".join(registry.credentials))
    proc = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def skopeo_inspect(registry: RegistryServer, reference: str, *flags: str) -> bytes:
    """``skopeo inspect --tls-verify=false [flags] docker://host/reference``."""
    return skopeo(registry, "inspect", "--tls-verify=false", *flags,
                  f"docker://{registry.host}/{reference}")


def copy_layout(images: TestImages, dest: Path) -> Path:
    """A private copy of the test images' OCI layout (to break blobs in)."""
    shutil.copytree(images.layout, dest)
    return dest


def blob_file(layout: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return layout / "blobs" / algorithm / hex_


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte of ``path`` in place (same size, other digest)."""
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
