"""storage.conf: the containers-storage.conf(5) keys, defaults, search order and errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from criolib.storage import (
    ConfigError,
    InvalidDriverOption,
    StorageConfig,
    StorageError,
    Store,
)

FULL = """
# what Fedora ships, give or take
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
driver_priority = ["overlay", "vfs"]
transient_store = true
some_future_key = 1

[storage.options]
additionalimagestores = ["/usr/lib/containers/storage"]
pull_options = {enable_partial_images = "true", use_hard_links = "false"}
mountopt = "nodev"

[storage.options.overlay]
mountopt = "nodev,metacopy=on"

[storage.options.thinpool]
autoextend_percent = "20%"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "storage.conf"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, FULL)
    with caplog.at_level(logging.INFO, logger="criolib.storage"):
        cfg = StorageConfig.load(path)
    assert cfg.driver == "overlay"
    assert cfg.graphroot == Path("/var/lib/containers/storage")
    assert cfg.runroot == Path("/run/containers/storage")
    assert cfg.driver_priority == ("overlay", "vfs")
    assert cfg.transient_store is True
    # The driver's own table wins over the shared [storage.options] key.
    assert cfg.driver_options == ("mountopt=nodev,metacopy=on",)
    assert cfg.options["additionalimagestores"] == ["/usr/lib/containers/storage"]
    assert cfg.source == path
    assert "some_future_key" in caplog.text  # unknown keys: logged, ignored


def test_defaults_are_containers_storage_s() -> None:
    cfg = StorageConfig.parse("")
    assert (cfg.driver, cfg.graphroot, cfg.runroot) == (
        "overlay", Path("/var/lib/containers/storage"), Path("/run/containers/storage"))
    assert cfg.driver_options == () and cfg.source is None


def test_driver_priority_picks_when_driver_unset() -> None:
    cfg = StorageConfig.parse('[storage]\ndriver_priority = ["vfs", "overlay"]\n')
    assert cfg.driver == "vfs"


def test_paths_take_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIOLIB_TEST_HOME", "/home/someone")
    cfg = StorageConfig.parse('[storage]\ngraphroot = "$CRIOLIB_TEST_HOME/storage"\n')
    assert cfg.graphroot == Path("/home/someone/storage")


def test_environment_variable_names_the_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[storage]\ndriver = "vfs"\ngraphroot = "/srv/g"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(path))
    cfg = StorageConfig.load()
    assert (cfg.driver, cfg.graphroot, cfg.source) == ("vfs", Path("/srv/g"), path)


@pytest.mark.parametrize("text, key", [
    ('[storage]\ndriver = 1\n', "storage.driver"),
    ('[storage]\ngraphroot = ["a"]\n', "storage.graphroot"),
    ('[storage]\ngraphroot = "relative/path"\n', "storage.graphroot"),
    ('[storage]\ntransient_store = "yes"\n', "storage.transient_store"),
    ('[storage]\ndriver_priority = "overlay"\n', "storage.driver_priority"),
    ('storage = 3\n', "storage"),
    ('[storage.options]\nadditionalimagestores = "/x"\n',
     "storage.options.additionalimagestores"),
    ('[storage.options.overlay]\nmountopt = ["nodev"]\n', "storage.options.overlay.mountopt"),
    ('[storage.options]\noverlay = "nodev"\n', "storage.options.overlay"),
])
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        StorageConfig.load(path)
    assert str(path) in str(info.value) and key in str(info.value)
    assert isinstance(info.value, StorageError) and isinstance(info.value, ValueError)


def test_a_user_other_than_root_gets_a_store_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CONTAINERS_STORAGE_CONF", raising=False)
    system = '[storage]\ndriver = "vfs"\ngraphroot = "/var/lib/x"\nrunroot = "/run/x"\n'
    cfg = StorageConfig.parse(system, source=Path("/etc/containers/storage.conf"))
    assert cfg.graphroot == tmp_path / "data" / "containers" / "storage"  # not root's
    assert cfg.runroot == tmp_path / "run" / "containers" and cfg.driver == "vfs"
    cfg = StorageConfig.parse(system + 'rootless_storage_path = "$XDG_DATA_HOME/mine"\n',
                              source=Path("/etc/containers/storage.conf"))
    assert cfg.graphroot == tmp_path / "data" / "mine"
    own = tmp_path / "config" / "containers" / "storage.conf"
    own.parent.mkdir(parents=True)
    own.write_text(system)
    cfg = StorageConfig.load()
    assert (cfg.source, cfg.graphroot, cfg.runroot) == (own, Path("/var/lib/x"), Path("/run/x"))


def test_no_op_options_are_not_passed_on() -> None:
    cfg = StorageConfig.parse('[storage.options.overlay]\nignore_chown_errors = "false"\n'
                              'skip_mount_home = "true"\nmountopt = "nodev"\n')
    assert cfg.driver_options == ("mountopt=nodev",)


def test_not_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "[storage\ndriver = overlay\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        StorageConfig.load(path)
    assert str(path) in str(info.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        StorageConfig.load(tmp_path / "nope.conf")


def test_store_from_config(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/g"\n'
                            f'runroot = "{tmp_path}/r"\n'
                            '[storage.options.overlay]\nmountopt = "nodev"\n')
    with Store.from_config(StorageConfig.load(path)) as store:
        assert store.driver.name == "vfs"  # overlay's options do not reach vfs
        assert store.graphroot == tmp_path / "g" and store.runroot == tmp_path / "r"
        assert store.layers() == []


def test_driver_options_are_checked_by_the_driver(tmp_path: Path) -> None:
    # A prefixed option for another driver is dropped; one for this driver is passed on.
    with Store(tmp_path / "g", tmp_path / "r", "vfs", ["overlay.mountopt=nodev"]):
        pass
    with pytest.raises(InvalidDriverOption):
        Store(tmp_path / "g", tmp_path / "r", "vfs", ["vfs.size=10G"])


def test_refuses_a_containers_storage_graphroot(tmp_path: Path) -> None:
    (tmp_path / "g" / "overlay-layers").mkdir(parents=True)
    (tmp_path / "g" / "overlay-layers" / "layers.json").write_text("[]")
    with pytest.raises(ConfigError, match="containers/storage"):
        Store(tmp_path / "g", tmp_path / "r", "vfs")
