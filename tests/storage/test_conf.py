"""storage.conf: the containers-storage.conf(5) keys, defaults, search order and errors."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import uuid
from pathlib import Path

import pytest

from criolib.storage import (
    ConfigError,
    DriverUnsupported,
    InvalidDriverOption,
    StorageConfig,
    StorageError,
    Store,
    register_driver,
)

FULL = """
# what Fedora ships, give or take
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
driver_priority = ["overlay", "vfs"]
transient_store = false
some_future_key = 1

[storage.options]
additionalimagestores = []
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
    assert cfg.transient_store is False
    # The driver's own table wins over the shared [storage.options] key.
    assert cfg.driver_options == ("mountopt=nodev,metacopy=on",)
    assert cfg.options["additionalimagestores"] == []
    assert cfg.source == path
    assert "some_future_key" in caplog.text  # unknown keys: logged, ignored


def test_defaults_are_criolib_s_own_not_podman_s() -> None:
    cfg = StorageConfig.parse("")
    assert (cfg.driver, cfg.graphroot, cfg.runroot) == (
        "overlay", Path("/var/lib/criolib/storage"), Path("/run/criolib/storage"))
    assert cfg.driver_options == () and cfg.source is None
    assert "containers" not in str(cfg.graphroot) + str(cfg.runroot)


def test_a_graphroot_without_runroot_gets_its_own_runroot() -> None:
    one = StorageConfig.parse('[storage]\ngraphroot = "/srv/one"\n')
    two = StorageConfig.parse('[storage]\ngraphroot = "/srv/two"\n')
    digest = hashlib.sha256(b"/srv/one").hexdigest()[:12]
    assert one.runroot == Path(f"/run/criolib/storage-{digest}")
    assert two.runroot != one.runroot and two.runroot.parent == Path("/run/criolib")
    both = StorageConfig.parse('[storage]\ngraphroot = "/srv/one"\nrunroot = "/run/x"\n')
    assert both.runroot == Path("/run/x")


def test_driver_priority_picks_the_first_that_works(tmp_path: Path) -> None:
    cfg = StorageConfig.parse('[storage]\ndriver_priority = ["vfs", "overlay"]\n')
    assert cfg.driver == "vfs"
    # Unknown and unsupported entries are skipped, in order.
    name = f"broken-{uuid.uuid4().hex[:8]}"
    register_driver(name, _Unsupported)
    cfg = StorageConfig.parse(f'[storage]\ngraphroot = "{tmp_path}"\n'
                              f'driver_priority = ["no-such-driver", "{name}", "vfs"]\n')
    assert cfg.driver == "vfs"
    with pytest.raises(ConfigError, match=r"no driver of storage\.driver_priority") as info:
        StorageConfig.parse(f'[storage]\ndriver_priority = ["{name}", "nope"]\n')
    assert "cannot work here" in str(info.value) and "nope" in str(info.value)
    # An explicit driver is used as it is: no fallback.
    cfg = StorageConfig.parse(f'[storage]\ndriver = "{name}"\ndriver_priority = ["vfs"]\n')
    assert cfg.driver == name


class _Unsupported:
    """A driver that never works here (for driver_priority)."""

    name = "unsupported"

    def __init__(self, home: Path, options: object) -> None:
        self.home = home

    def check_support(self) -> None:
        raise DriverUnsupported("unsupported: cannot work here")


@pytest.mark.parametrize("text, what", [
    ("[storage]\ntransient_store = true\n", "transient_store"),
    ('[storage]\nimagestore = "/srv/images"\n', "imagestore"),
    ('[storage.options]\nadditionalimagestores = ["/usr/lib/containers/storage"]\n',
     "additionalimagestores"),
])
def test_settings_criolib_does_not_implement_are_refused(tmp_path: Path, text: str,
                                                         what: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="not supported by criolib") as info:
        StorageConfig.load(path)
    assert what in str(info.value) and str(path) in str(info.value)


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
    monkeypatch.setenv("USER", "someone")
    system = '[storage]\ndriver = "vfs"\ngraphroot = "/var/lib/x"\nrunroot = "/run/x"\n'
    cfg = StorageConfig.parse(system, source=Path("/etc/containers/storage.conf"))
    assert cfg.graphroot == tmp_path / "data" / "criolib" / "storage"  # not root's
    assert cfg.runroot == tmp_path / "run" / "criolib" / "storage" and cfg.driver == "vfs"
    cfg = StorageConfig.parse(system + 'rootless_storage_path = "$XDG_DATA_HOME/mine"\n',
                              source=Path("/etc/containers/storage.conf"))
    assert cfg.graphroot == tmp_path / "data" / "mine"
    assert cfg.runroot.parent == tmp_path / "run" / "criolib"  # its own runroot
    assert cfg.runroot.name.startswith("storage-")
    # containers-storage.conf(5): $UID and $USER in rootless_storage_path.
    cfg = StorageConfig.parse(
        system + 'rootless_storage_path = "/srv/$UID/${USER}/s"\n',
        source=Path("/etc/containers/storage.conf"))
    user = pwd.getpwuid(1000).pw_name if _uid_known(1000) else "someone"
    assert cfg.graphroot == Path(f"/srv/1000/{user}/s")
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


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
