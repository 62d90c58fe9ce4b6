"""registries.conf on disk: default paths, $CONTAINERS_REGISTRIES_CONF, drop-in merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from criolib.image import _registries_conf
from criolib.image._errors import RegistriesConfError
from criolib.image._reference import parse_normalized
from criolib.image._registries_conf import RegistriesConf


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake /etc/containers and $HOME, so no test reads the machine's files."""
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.setattr(_registries_conf, "SYSTEM_REGISTRIES_CONF", etc / "registries.conf")
    monkeypatch.setattr(_registries_conf, "SYSTEM_REGISTRIES_CONF_D", etc / "registries.conf.d")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_files_at_all_is_an_empty_config(system: Path) -> None:
    c = RegistriesConf.load()
    assert c.sources == () and c.registries == ()


def test_system_file_then_system_and_user_dropins(system: Path) -> None:
    write(system / "etc/registries.conf", 'unqualified-search-registries = ["a.com"]\n'
                                          '[[registry]]\nlocation = "base.com"\n')
    write(system / "etc/registries.conf.d/10-x.conf", '[[registry]]\nlocation = "x.com"\n')
    write(system / "home/.config/containers/registries.conf.d/20-y.conf",
          'unqualified-search-registries = ["y.com"]\n')
    c = RegistriesConf.load()
    assert c.sources == (str(system / "etc/registries.conf"),
                         str(system / "etc/registries.conf.d/10-x.conf"),
                         str(system / "home/.config/containers/registries.conf.d/20-y.conf"))
    assert [r.prefix for r in c.registries] == ["base.com", "x.com"]
    assert c.unqualified_search_registries == ("y.com",)
    assert c.unqualified_search_registries_origin.endswith("20-y.conf")


def test_user_file_replaces_system_file_and_system_dropins(system: Path) -> None:
    """containers-registries.conf.d(5): with $HOME/.config/containers/registries.conf only
    the user's registries.conf.d is read."""
    write(system / "etc/registries.conf", '[[registry]]\nlocation = "system.com"\n')
    write(system / "etc/registries.conf.d/a.conf", '[[registry]]\nlocation = "sysdrop.com"\n')
    user = write(system / "home/.config/containers/registries.conf",
                 '[[registry]]\nlocation = "user.com"\n')
    write(system / "home/.config/containers/registries.conf.d/b.conf",
          '[[registry]]\nlocation = "userdrop.com"\n')
    c = RegistriesConf.load()
    assert c.sources[0] == str(user)
    assert [r.prefix for r in c.registries] == ["user.com", "userdrop.com"]


def test_env_var_and_explicit_path(system: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = write(system / "custom.conf", '[[registry]]\nlocation = "custom.com"\n')
    write(system / "etc/registries.conf.d/a.conf", '[[registry]]\nlocation = "drop.com"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(custom))
    c = RegistriesConf.load()
    # As containers/image: an explicit file still gets the default drop-in directories.
    assert [r.prefix for r in c.registries] == ["custom.com", "drop.com"]
    assert [r.prefix for r in RegistriesConf.load(dropin_dirs=[]).registries] == ["custom.com"]
    other = write(system / "other.conf", '[[registry]]\nlocation = "other.com"\n')
    assert [r.prefix for r in RegistriesConf.load(other, dropin_dirs=()).registries] == [
        "other.com"]


def test_explicit_missing_file_is_an_error(system: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistriesConfError, match="cannot read") as info:
        RegistriesConf.load(system / "nope.conf")
    assert info.value.path == str(system / "nope.conf")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(system / "gone.conf"))
    with pytest.raises(RegistriesConfError, match=r"gone\.conf"):
        RegistriesConf.load()


def test_dropins_sorted_conf_only_no_subdirectories(system: Path) -> None:
    d = system / "d"
    write(d / "b.conf", 'short-name-mode = "disabled"\n')
    write(d / "a.conf", 'short-name-mode = "enforcing"\n')
    write(d / "c.ignore", 'short-name-mode = "xxx"\n')
    write(d / "sub/z.conf", 'short-name-mode = "xxx"\n')
    (d / "dir.conf").mkdir()
    c = RegistriesConf.load(write(system / "main.conf", ""), dropin_dirs=[d, system / "none"])
    assert c.short_name_mode == "disabled"  # b.conf after a.conf
    assert [Path(s).name for s in c.sources] == ["main.conf", "a.conf", "b.conf"]


def test_dropin_merge_rules(system: Path) -> None:
    """sysregistriesv2 TestRegistriesConfDirectory: tables replaced by prefix, other settings
    replaced when set (an empty array too), aliases merged and erased with ""."""
    main = write(system / "main.conf", """
unqualified-search-registries = ["example.com"]
credential-helpers = ["helper-1"]
short-name-mode = "enforcing"

[[registry]]
location = "base.com"

[[registry]]
prefix = "*.example.com"
location = "subdomain-prefix-1.com"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"ubi" = "registry.access.redhat.com/ubi9"
""")
    d = system / "d"
    write(d / "config-1.conf", """
unqualified-search-registries = ["example-overwrite.com"]

[[registry]]
location = "base.com"
blocked = true

[[registry]]
prefix = "*.example.com"
location = "subdomain-prefix-1-overridden-by-dropin-location.com"

[[registry]]
location = "1.com"

[aliases]
"ubi" = ""
"alpine" = "docker.io/alpine"
""")
    write(d / "config-2.conf", 'credential-helpers = []\n[[registry]]\nlocation = "2.com"\n')
    c = RegistriesConf.load(main, dropin_dirs=[d])
    assert c.unqualified_search_registries == ("example-overwrite.com",)
    assert c.unqualified_search_registries_origin == str(d / "config-1.conf")
    assert c.credential_helpers == ("containers-auth.json",)  # [] resets to the default
    assert c.short_name_mode == "enforcing"  # not set by the drop-ins
    assert [r.prefix for r in c.registries] == ["*.example.com", "1.com", "2.com", "base.com"]
    base = c.find_registry("base.com/test:latest")
    assert base is not None and base.blocked and base.origin == str(d / "config-1.conf")
    sub = c.find_registry("a.example.com/x")
    assert sub is not None and sub.location == \
        "subdomain-prefix-1-overridden-by-dropin-location.com"
    assert c.aliases["fedora"].value == parse_normalized("registry.fedoraproject.org/fedora")
    assert c.aliases["fedora"].origin == str(main)
    assert c.aliases["ubi"].value is None
    assert c.aliases["alpine"].value == parse_normalized("docker.io/library/alpine")


def test_search_registries_survive_dropins_that_do_not_set_them(system: Path) -> None:
    main = write(system / "main.conf", 'unqualified-search-registries = ["a.com", "c.com"]\n')
    write(system / "d1/no-usr.conf", '[[registry]]\nlocation = "x.com"\n')
    write(system / "d2/empty-usr.conf", "unqualified-search-registries = []\n")
    assert RegistriesConf.load(main, dropin_dirs=[system / "d1"]) \
        .unqualified_search_registries == ("a.com", "c.com")
    assert RegistriesConf.load(main, dropin_dirs=[system / "d2"]) \
        .unqualified_search_registries == ()


def test_dropins_must_be_version_2(system: Path) -> None:
    main = write(system / "main.conf", "")
    write(system / "d/old.conf", "[registries.search]\nregistries = ['a.com']\n")
    with pytest.raises(RegistriesConfError, match="version 2") as info:
        RegistriesConf.load(main, dropin_dirs=[system / "d"])
    assert info.value.path == str(system / "d/old.conf")


def test_bad_dropin_names_its_file(system: Path) -> None:
    main = write(system / "main.conf", "")
    write(system / "d/bad.conf", '[[registry]]\nlocation = "http://a.com"\n')
    with pytest.raises(RegistriesConfError, match=r"bad\.conf: registry\[0\]\.location"):
        RegistriesConf.load(main, dropin_dirs=[system / "d"])


def test_unreadable_file(system: Path) -> None:
    bad = system / "bad.conf"
    bad.write_bytes(b"\xff\xfe[[registry]]")
    with pytest.raises(RegistriesConfError, match="not UTF-8"):
        RegistriesConf.load(bad, dropin_dirs=[])
