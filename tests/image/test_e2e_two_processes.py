"""Two processes pulling the same image into one store at once.

The in-process lock of ``copy_image`` does not reach across processes. What
holds there: each layer is re-checked at the destination right before its
download (a process that started later skips what the other stored by then),
and criolib.storage creates a layer under a per-layer-id lock and adopts one
that exists, so the store ends with each layer once and both pulls succeed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from criolib.storage import Store
from criolib.testing import RegistryServer, TestImages, require_root
from criolib.testing._faultproxy import FaultProxy
from tests.image.copy_support import open_test_store

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

PULL = textwrap.dedent("""
    import sys
    from pathlib import Path
    from criolib.image import copy_image
    from criolib.storage import Store
    from tests.image.copy_support import registry_ctx, write_policy

    root, work, source, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    work.mkdir()
    store = Store(root / "graph", root / "run", "overlay")
    try:
        copy_image(source, f"containers-storage:{name}", policy=write_policy(work),
                   ctx=registry_ctx(work, store=store))
    finally:
        store.close()
""")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    require_root()
    with open_test_store(tmp_path / "store") as s:
        yield s


def test_two_processes_pull_the_same_image_into_one_store(
        criolib_registry: RegistryServer, criolib_test_images: TestImages, store: Store,
        tmp_path: Path) -> None:
    image = criolib_test_images["multilayer"]
    with FaultProxy(criolib_registry.url) as proxy:
        proxy.delay(0.3, path="/blobs/", times=None)  # keep both pulls in flight together
        source = f"docker://{proxy.host}/{image.reference}"
        procs = [subprocess.Popen(
            [sys.executable, "-c", PULL, str(tmp_path / "store"), str(tmp_path / f"w{i}"),
             source, f"localhost/twice:{i}"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)]
        outcomes = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outcomes, strict=True):
        assert p.returncode == 0, err.decode()
    stored = store.image("localhost/twice:0")
    assert set(stored.names) == {"localhost/twice:0", "localhost/twice:1"}
    assert stored.digest == image.digest
    per_diff_id = Counter(layer.diff_id for layer in store.layers())
    assert per_diff_id == Counter(image.diff_ids)
