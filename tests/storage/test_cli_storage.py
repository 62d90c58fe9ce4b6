"""``criolib storage``: listings, mounts, rm, check, repair, gc and df from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from criolib.cli import main
from criolib.storage import Store
from criolib.testing import TestImages
from tests.storage.conftest import DRIVERS, require_root_for
from tests.storage.test_store import REPO, import_image, make_store


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
