"""``criolib storage``: listings, inspect, mounts, rm, diff, import, names, status, shutdown,
check, repair, gc and df from the command line, with containers-storage's and podman's
option names."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from criolib.cli import main
from criolib.storage import Store
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, require_root_for
from tests.storage.test_store import REPO, import_image, make_store, tar_of


def _cli(capsys: pytest.CaptureFixture[str], graphroot: Path, driver: str, *args: str
         ) -> tuple[int, str]:
    code = main(["storage", "--graphroot", str(graphroot / "graph"), "--runroot",
                 str(graphroot / "run"), "--driver", driver, *args])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("driver", DRIVERS)
def test_cli_round_trip(capsys: pytest.CaptureFixture[str], graphroot: Path, driver: str,
                        criolib_test_images: TestImages) -> None:
    require_root_for(driver)
    with make_store(graphroot, driver) as store:
        image = import_image(store, criolib_test_images, "multilayer", names=("app:1",))
        container = store.create_container(image.id, names=["web"])

    code, out = _cli(capsys, graphroot, driver, "layers")
    assert code == 0 and out.count("\n") == 5 and out.startswith("ID")  # 3 + the container's
    code, out = _cli(capsys, graphroot, driver, "layers", "--json")
    assert len(json.loads(out)) == 4
    code, out = _cli(capsys, graphroot, driver, "images")
    assert "app:1" in out and image.id[:12] in out
    code, out = _cli(capsys, graphroot, driver, "images", "--json")
    assert json.loads(out)[0]["id"] == image.id
    code, out = _cli(capsys, graphroot, driver, "containers", "--json")
    assert json.loads(out)[0]["names"] == ["web"]

    code, out = _cli(capsys, graphroot, driver, "mount", "web")
    root = Path(out.strip())
    assert code == 0 and (root / "data" / "layer3.txt").is_file()
    _cli(capsys, graphroot, driver, "mount", "web")
    code, out = _cli(capsys, graphroot, driver, "containers")
    assert "web" in out and " 2 " in out  # two mount references
    code, out = _cli(capsys, graphroot, driver, "unmount", "web")
    assert "still mounted" in out
    code, out = _cli(capsys, graphroot, driver, "umount", "web")
    assert code == 0 and out == ""

    code, out = _cli(capsys, graphroot, driver, "check")
    assert (code, out) == (0, "clean\n")
    (graphroot / "graph" / "staging" / "debris").mkdir(parents=True)
    code, out = _cli(capsys, graphroot, driver, "check", "--json")
    assert code == 1 and json.loads(out)[0]["kind"] == "staging-debris"
    code, out = _cli(capsys, graphroot, driver, "repair")
    assert "staging debris" in out
    code, out = _cli(capsys, graphroot, driver, "repair")
    assert out == "nothing to repair\n"

    code, out = _cli(capsys, graphroot, driver, "df", "-v")
    assert code == 0 and "Images" in out and "app:1" in out and "web" in out
    code, out = _cli(capsys, graphroot, driver, "df", "--json")
    assert json.loads(out)["total"] > 0

    code, out = _cli(capsys, graphroot, driver, "rm", image.id[:12])
    assert code == 1  # in use by "web": the library's error, printed by the CLI
    code = main(["storage", "--graphroot", str(graphroot / "graph"), "--runroot",
                 str(graphroot / "run"), "--driver", driver, "rm", "web", "app:1", "nope"])
    out, err = capsys.readouterr()
    assert code == 1 and f"container {container.id}" in out and "image" in out
    assert "'nope'" in err
    code, out = _cli(capsys, graphroot, driver, "gc", "--min-age", "0")
    assert out == "nothing to collect\n"
    code, out = _cli(capsys, graphroot, driver, "layers", "--json")
    assert json.loads(out) == []


def test_cli_errors_and_conf(capsys: pytest.CaptureFixture[str], graphroot: Path) -> None:
    conf = graphroot / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{graphroot}/g"\n'
                    f'runroot = "{graphroot}/r"\n')
    assert main(["storage", "--storage-conf", str(conf), "layers"]) == 0
    assert (graphroot / "g" / "storage.lock").exists()
    assert main(["storage", "--storage-conf", str(conf), "mount", "nothing"]) == 1
    assert "nothing" in capsys.readouterr().err
    conf.write_text('[storage]\ndriver = 7\n')
    assert main(["storage", "--storage-conf", str(conf), "layers"]) == 1
    err = capsys.readouterr().err
    assert str(conf) in err and "storage.driver" in err


def test_cli_runs_as_a_program(graphroot: Path) -> None:
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        store.create_layer(names=["one"])
    proc = subprocess.run([sys.executable, "-m", "criolib", "storage", "--graphroot",
                           str(graphroot / "g"), "--runroot", str(graphroot / "r"),
                           "--driver", "vfs", "layers"], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert "one" in proc.stdout


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["storage", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_containers_storage_verbs(capsys: pytest.CaptureFixture[str], graphroot: Path,
                                      tmp_path: Path) -> None:
    require_root_for("vfs")
    g = ["-g", str(graphroot / "g"), "-R", str(graphroot / "r"), "-s", "vfs"]
    data, diff_id = tar_of({"etc/hello": b"hi\n"})
    (tmp_path / "layer.tar").write_bytes(data)
    code, out, _ = _run(capsys, *g, "import-layer", str(tmp_path / "layer.tar"), "-n", "base")
    layer_id = out.strip()
    assert code == 0 and layer_id == diff_id.removeprefix("sha256:")
    code, out, _ = _run(capsys, *g, "layers", "--no-trunc")
    assert layer_id in out and "base" in out
    created = out.splitlines()[1].split()[-2]  # RFC 3339 with a zone
    assert dt.datetime.fromisoformat(created).tzinfo is not None and created.endswith("Z")
    code, out, _ = _run(capsys, *g, "layers", "--json")
    record = json.loads(out)[0]
    assert record["diff-digest"] == diff_id and record["compressed-diff-digest"] == diff_id
    assert "uncompressed_digest" not in record and record["created"].endswith("Z")
    code, out, _ = _run(capsys, *g, "inspect", "base")
    assert code == 0 and json.loads(out)["id"] == layer_id

    config = b'{"rootfs": {}}'
    image_id = hashlib.sha256(config).hexdigest()
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        store.create_image(image_id, layer_id, names=["app:1"], big_data={"config": config})
    code, out, _ = _run(capsys, *g, "inspect", "--type", "image", "app:1")
    assert json.loads(out)["big-data-names"] == ["config"]
    code, out, _ = _run(capsys, *g, "create-container", "app:1", "--name", "web")
    container_id = out.strip()
    assert code == 0 and len(container_id) == 64
    assert json.loads(_run(capsys, *g, "inspect", "web")[1])["image"] == image_id
    code, _, _ = _run(capsys, *g, "set-names", container_id, "-n", "web2")
    assert json.loads(_run(capsys, *g, "containers", "--json")[1])[0]["names"] == ["web2"]
    code, _, _ = _run(capsys, *g, "add-names", "app:1", "-n", "app:2")
    assert set(json.loads(_run(capsys, *g, "inspect", "app:2")[1])["names"]) == {
        "app:1", "app:2"}
    code, _, err = _run(capsys, *g, "set-names", "nothing", "-n", "x")
    assert code == 1 and "nothing" in err

    # A layer mounts read-only unless asked; a container writable.
    code, out, _ = _run(capsys, *g, "mount", "base")
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        assert store.mounted(layer_id) == 1
    code, out, _ = _run(capsys, *g, "mount", "web2")
    (Path(out.strip()) / "written").write_text("by the container")
    code, _, _ = _run(capsys, *g, "diff", "web2", "-o", str(tmp_path / "c.tar"))
    with tarfile.open(tmp_path / "c.tar") as tar:
        assert "written" in {n.removeprefix("./") for n in tar.getnames()}
    code, out, _ = _run(capsys, *g, "status", "--json")
    assert json.loads(out)["mounts"] == 2 and json.loads(out)["driver"] == "vfs"
    code, out, _ = _run(capsys, *g, "shutdown", "--force")
    assert code == 0 and out.count("unmounted") == 2

    # rm goes on over every id, reporting each failure (an ambiguous prefix too).
    with Store(graphroot / "g", graphroot / "r", "vfs") as store:
        store.create_layer(id="abc1")
        store.create_layer(id="abc2")
    code, out, err = _run(capsys, *g, "rm", "abc", "nope", "web2", "abc1")
    assert code == 1
    assert "abc" in err and "matches 2" in err and "'nope'" in err
    assert f"container {container_id}" in out and "layer abc1" in out


def test_cli_podman_names_and_timeout(capsys: pytest.CaptureFixture[str], graphroot: Path
                                      ) -> None:
    g = str(graphroot / "g")
    assert main(["storage", "--root", g, "--run", str(graphroot / "r"),
                 "--storage-driver", "vfs", "layers"]) == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom criolib.storage import StoreLock\n"
         "lock = StoreLock(sys.argv[1])\nwith lock.exclusive():\n"
         "    print('held', flush=True)\n    sys.stdin.readline()\n",
         str(graphroot / "g" / "storage.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        code = main(["storage", "--graph", g, "--runroot", str(graphroot / "r"), "--driver",
                     "vfs", "--timeout", "0.2", "layers"])
        assert code == 1 and "lock" in capsys.readouterr().err
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)


def test_cli_graphroot_alone_gets_its_own_runroot(capsys: pytest.CaptureFixture[str],
                                                  graphroot: Path) -> None:
    g = graphroot / "solo"
    assert main(["storage", "--graphroot", str(g), "--driver", "vfs", "status", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    digest = hashlib.sha256(os.fsencode(g)).hexdigest()[:12]
    assert info["runroot"] == f"/run/criolib/storage-{digest}"


def test_cli_mounts_a_layer_read_only(capsys: pytest.CaptureFixture[str], graphroot: Path,
                                      criolib_test_images: TestImages) -> None:
    require_root_for("overlay")
    with make_store(graphroot, "overlay") as store:
        image = import_image(store, criolib_test_images, "multilayer")
    top = image.layer or ""
    code, out = _cli(capsys, graphroot, "overlay", "mount", top)
    root = Path(out.strip())
    with pytest.raises(OSError) as info:
        (root / "data" / "new.txt").write_text("x")
    assert info.value.errno == errno.EROFS
    _cli(capsys, graphroot, "overlay", "unmount", top)
    code, out = _cli(capsys, graphroot, "overlay", "mount", "--rw", top)
    assert code == 0
    (Path(out.strip()) / "data" / "new.txt").write_text("x")  # asked for: writable
    _cli(capsys, graphroot, "overlay", "unmount", top)
