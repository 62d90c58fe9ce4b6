"""``criolib image``: the skopeo-like and podman-like verbs, checked against skopeo itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from criolib.cli import main
from criolib.testing import RegistryServer, TestImages, require_root
from tests.image.copy_support import (
    open_test_store,
    read_in_container,
    sha256,
    skopeo,
    skopeo_inspect,
    unmount_under,
)

pytestmark = pytest.mark.integration

REGISTRIES = ["criolib_registry", "criolib_registry_basic", "criolib_registry_token"]


def creds(registry: RegistryServer, flag: str = "--creds") -> list[str]:
    return [f"{flag}={':'.join(registry.credentials)}"] if registry.credentials else []


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["image", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def storage_flags(tmp_path: Path) -> list[str]:
    return ["--root", str(tmp_path / "graph"), "--runroot", str(tmp_path / "run"),
            "--storage-driver", "overlay"]


def same_as_skopeo(mine: dict[str, object], theirs: dict[str, object]) -> None:
    """Equal to skopeo's output, plus the newer skopeo's fields Debian 12's 1.9 lacks."""
    assert {k: v for k, v in mine.items() if k in theirs} == theirs
    assert set(mine) - set(theirs) <= {"LayersData", "Variant"}
    layers = mine["LayersData"]
    assert isinstance(layers, list)
    assert [d["Digest"] for d in layers] == mine["Layers"]


@pytest.fixture
def storage(tmp_path: Path) -> list[str]:
    require_root()
    yield storage_flags(tmp_path)  # type: ignore[misc]
    unmount_under(tmp_path)


def test_copy_shows_progress_unless_quiet(criolib_registry: RegistryServer, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = f"docker://{criolib_registry.host}/testbed/multilayer:latest"
    code, out, err = run(capsys, "copy", "--insecure-policy", "--src-tls-verify=false", src,
                         f"oci:{tmp_path / 'a'}:ml")
    assert code == 0
    assert out == ""
    assert err.count("Copying blob") == 6  # started and done for each of the 3 layers
    assert "Writing manifest to image destination" in err
    code, out, err = run(capsys, "copy", "-q", "--insecure-policy", "--src-tls-verify=false",
                         src, f"oci:{tmp_path / 'b'}:ml")
    assert (code, out, err) == (0, "", "")


@pytest.mark.parametrize("variant", REGISTRIES)
def test_inspect_says_what_skopeo_says(variant: str, request: pytest.FixtureRequest,
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    registry: RegistryServer = request.getfixturevalue(variant)
    ref = f"docker://{registry.host}/testbed/multilayer:latest"
    code, out, _ = run(capsys, "inspect", "--tls-verify=false", *creds(registry), ref)
    assert code == 0
    same_as_skopeo(json.loads(out), json.loads(skopeo_inspect(registry,
                                                               "testbed/multilayer:latest")))
    code, out, _ = run(capsys, "inspect", "--raw", "--tls-verify=false", *creds(registry), ref)
    assert out.encode() == skopeo_inspect(registry, "testbed/multilayer:latest", "--raw")
    raw_config = skopeo_inspect(registry, "testbed/multilayer:latest", "--config", "--raw")
    code, out, _ = run(capsys, "inspect", "--config", "--raw", "--tls-verify=false",
                       *creds(registry), ref)
    assert out.encode() == raw_config
    code, out, _ = run(capsys, "inspect", "--config", "--tls-verify=false", *creds(registry),
                       ref)
    assert json.loads(out) == json.loads(raw_config)  # skopeo re-marshals, dropping empties


def test_inspect_an_index_for_another_architecture(criolib_registry: RegistryServer,
                                                   criolib_test_images: TestImages,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"docker://{criolib_registry.host}/testbed/multiarch:latest"
    code, out, _ = run(capsys, "inspect", "--override-arch", "arm64", "--tls-verify=false", ref)
    mine = json.loads(out)
    same_as_skopeo(mine, json.loads(skopeo(None, "--override-arch", "arm64", "inspect",
                                           "--tls-verify=false", ref)))
    assert (mine["Architecture"], mine["Variant"]) == ("arm64", "v8")
    assert mine["Digest"] == criolib_test_images["multiarch"].digest
    code, _, err = run(capsys, "inspect", "--override-arch", "riscv64", "--tls-verify=false",
                       ref)
    assert code == 1
    assert "riscv64" in err


def test_pull_ls_push_rm(criolib_registry_basic: RegistryServer, storage: list[str],
                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = criolib_registry_basic
    name = f"{registry.host}/testbed/busybox:latest"
    code, out, _ = run(capsys, "pull", "--insecure-policy", "--tls-verify=false",
                       *creds(registry), *storage, name)
    assert code == 0
    image_id = out.strip()
    config = skopeo_inspect(registry, "testbed/busybox:latest", "--config", "--raw")
    assert image_id == sha256(config).partition(":")[2]
    code, out, _ = run(capsys, "ls", *storage)
    assert out.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert out.splitlines()[1].split()[:3] == [f"{registry.host}/testbed/busybox", "latest",
                                               image_id[:12]]
    code, out, _ = run(capsys, "ls", "--json", *storage)
    (listed,) = json.loads(out)
    assert (listed["Id"], listed["Names"]) == (image_id, [name])
    pushed = f"{registry.host}/criolib-cli/pushed:v1"
    code, _, err = run(capsys, "push", "-q", "--insecure-policy", "--tls-verify=false",
                       *creds(registry), *storage, name, pushed)
    assert code == 0, err
    assert json.loads(skopeo_inspect(registry, "criolib-cli/pushed:v1", "--config",
                                     "--raw")) == json.loads(config)
    code, out, _ = run(capsys, "rm", *storage, name)
    assert out.splitlines() == [f"Untagged: {name}", f"Deleted: {image_id}"]
    code, out, _ = run(capsys, "ls", "--json", *storage)
    assert json.loads(out) == []


def test_pull_another_architecture(criolib_registry: RegistryServer, storage: list[str],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{criolib_registry.host}/testbed/multiarch:latest"
    code, out, err = run(capsys, "pull", "-q", "--insecure-policy", "--tls-verify=false",
                         "--override-arch", "arm64", *storage, ref)
    assert code == 0, err
    image_id = out.strip()
    with open_test_store(tmp_path) as store:
        assert store.image(ref).id == image_id
        (marker,) = read_in_container(store, ref, "/etc/criolib-platform")
    assert marker == b"linux/arm64/v8\n"
    code, _, err = run(capsys, "pull", "-q", "--insecure-policy", "--tls-verify=false",
                       "--override-arch", "riscv64", *storage, ref)
    assert code == 1
    assert "no instance for platform linux/riscv64" in err


def test_pull_resolves_short_names(criolib_registry: RegistryServer, storage: list[str],
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text(f'unqualified-search-registries = ["{criolib_registry.host}"]\n')
    code, out, err = run(capsys, "pull", "--insecure-policy", "--tls-verify=false",
                         "--registries-conf", str(conf), *storage, "testbed/busybox")
    assert code == 0, err
    code, out, _ = run(capsys, "ls", "--json", *storage)
    assert json.loads(out)[0]["Names"] == [f"{criolib_registry.host}/testbed/busybox:latest"]


def test_tags_like_skopeo_list_tags(criolib_registry_token: RegistryServer,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    registry = criolib_registry_token
    code, out, _ = run(capsys, "tags", "--tls-verify=false", *creds(registry),
                       f"docker://{registry.host}/testbed/busybox")
    assert code == 0
    theirs = skopeo(registry, "list-tags", "--tls-verify=false",
                    f"docker://{registry.host}/testbed/busybox")
    assert json.loads(out) == json.loads(theirs)


def test_login_then_copy_with_the_auth_file(criolib_registry_basic: RegistryServer,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    registry = criolib_registry_basic
    assert registry.credentials is not None
    user, password = registry.credentials
    auth = tmp_path / "auth.json"
    code, _, err = run(capsys, "login", "--tls-verify=false", "--authfile", str(auth),
                       "-u", user, "-p", "wrong", registry.host)
    assert code == 1
    assert "failed" in err
    assert not auth.exists()
    code, out, _ = run(capsys, "login", "--tls-verify=false", "--authfile", str(auth),
                       "-u", user, "-p", password, registry.host)
    assert code == 0
    assert "Login Succeeded" in out
    assert registry.host in json.loads(auth.read_text())["auths"]
    assert auth.stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "copy", "-q", "--insecure-policy", "--src-tls-verify=false",
                       "--authfile", str(auth),
                       f"docker://{registry.host}/testbed/busybox:latest",
                       f"oci:{tmp_path / 'o'}:bb")
    assert code == 0, err
    code, out, _ = run(capsys, "logout", "--authfile", str(auth), registry.host)
    assert code == 0
    assert json.loads(auth.read_text())["auths"] == {}


def test_policy_rejects(criolib_registry: RegistryServer, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}]}))
    code, _, err = run(capsys, "copy", "--policy", str(policy), "--src-tls-verify=false",
                       f"docker://{criolib_registry.host}/testbed/busybox:latest",
                       f"oci:{tmp_path / 'o'}:bb")
    assert code == 1
    assert "rejected" in err
    assert not (tmp_path / "o").exists()


def test_the_command_runs_as_a_program() -> None:
    proc = subprocess.run([sys.executable, "-m", "criolib", "image", "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "skopeo" in proc.stdout
